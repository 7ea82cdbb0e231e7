//! Turning a last hidden state into one vector per text: masked mean, CLS, or masked max, and the
//! L2 normalization sentence-transformers applies after it.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The mean over real tokens (padding excluded).
    Mean,
    /// The hidden state of the first token (`[CLS]`).
    Cls,
    /// The element-wise max over real tokens.
    Max,
}

impl Pooling {
    pub const NAMES: &'static str = "mean, cls, max";

    pub fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Cls => "cls",
            Self::Max => "max",
        }
    }

    /// `hidden` is `[batch, seq, hidden]`; `attention_mask` is 1 for tokens, 0 for padding, and
    /// `None` when nothing is padded.
    pub fn pool(self, hidden: Tensor<3>, attention_mask: Option<Tensor<2, Int>>) -> Tensor<2> {
        let [batch, seq_len, width] = hidden.dims();
        let Some(attention_mask) = attention_mask else {
            return match self {
                Self::Cls => hidden.narrow(1, 0, 1).reshape([batch, width]),
                Self::Mean => hidden.mean_dim(1).reshape([batch, width]),
                Self::Max => hidden.max_dim(1).reshape([batch, width]),
            };
        };
        match self {
            Self::Cls => hidden.narrow(1, 0, 1).reshape([batch, width]),
            Self::Mean => {
                let mask = attention_mask
                    .float()
                    .cast(hidden.dtype())
                    .reshape([batch, seq_len, 1]);
                let summed = (hidden * mask.clone()).sum_dim(1).reshape([batch, width]);
                let counts = mask.sum_dim(1).reshape([batch, 1]).clamp_min(1e-9);
                summed / counts
            }
            Self::Max => {
                // As sentence-transformers: padding is set to -1e9 before the max.
                let padding = attention_mask
                    .equal_elem(0)
                    .reshape([batch, seq_len, 1])
                    .expand([batch, seq_len, width]);
                hidden
                    .mask_fill(padding, -1e9)
                    .max_dim(1)
                    .reshape([batch, width])
            }
        }
    }
}

/// How a text encoder's hidden states become features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolingOptions {
    pub pooling: Pooling,
    /// With CLS pooling: pass the first token through the pretrained pooler (dense + tanh), as
    /// `BertForSequenceClassification` does.
    pub use_pooler: bool,
    /// L2-normalize the features (sentence-transformers' `Normalize`).
    pub normalize: bool,
}

impl Default for PoolingOptions {
    fn default() -> Self {
        Self {
            pooling: Pooling::Mean,
            use_pooler: false,
            normalize: false,
        }
    }
}

impl PoolingOptions {
    /// Pools `hidden` `[batch, seq, width]`; `pooler` is the checkpoint's pretrained pooler, used
    /// with CLS pooling when `use_pooler` is set.
    pub fn pool(
        self,
        hidden: Tensor<3>,
        attention_mask: Option<Tensor<2, Int>>,
        pooler: Option<&dyn Fn(Tensor<2>) -> Tensor<2>>,
    ) -> Tensor<2> {
        match (pooler, self.pooling, self.use_pooler) {
            (Some(pooler), Pooling::Cls, true) => pooler(Pooling::Cls.pool(hidden, attention_mask)),
            _ => self.pooling.pool(hidden, attention_mask),
        }
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Pooling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mean" => Ok(Self::Mean),
            "cls" => Ok(Self::Cls),
            "max" => Ok(Self::Max),
            other => Err(format!(
                "unknown pooling \"{other}\" (expected {})",
                Self::NAMES
            )),
        }
    }
}

/// Divides each row by its L2 norm (at least 1e-12), as `torch.nn.functional.normalize`.
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}
