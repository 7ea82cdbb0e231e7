//! MPNet encoders (`model_type = "mpnet"`, e.g. all-mpnet-base-v2) from a Hugging Face folder: a
//! config that mirrors `config.json`, modules named after the upstream tensor tree
//! (`encoder.layer.N.attention.attn.q`, `encoder.relative_attention_bias`), and the forward pass.
//! What makes MPNet itself: a relative position bias, bucketed as T5 does and shared by every
//! layer, added to the attention scores; position ids after padding index 1, counted over the
//! tokens whose id is not 1 whatever `pad_token_id` is (transformers' rule); an
//! attention block whose output projection `o` sits inside `attn`; no token types.

use std::path::Path;

use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::adapters;
use crate::backbone::{Architecture, ExportTarget, Inputs, Preprocessing, TextTransform};
use crate::bert::{self, BertIntermediate, BertOutput, BertPooler, HiddenAct};
use crate::weights::{self, WeightsIndex};
use crate::{ModelError, ModelFolder, NativeHead, PoolingOptions};

/// The fields of an MPNet `config.json` that shape the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MpnetConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
}

fn default_hidden_act() -> String {
    "gelu".into()
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_dropout() -> f64 {
    0.1
}
fn default_buckets() -> usize {
    32
}

/// transformers' MPNet numbers positions after this index, whatever `pad_token_id` says, and
/// gives a token of this id (an `[UNK]` where `[PAD]` is 0) this position.
const PADDING_IDX: usize = 1;
/// transformers computes the buckets for 32, whatever `relative_attention_num_buckets` says.
const NUM_BUCKETS: i64 = 32;
const MAX_DISTANCE: f64 = 128.0;

impl MpnetConfig {
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        crate::read_config(path, Self::check)
    }

    fn check(&self) -> Result<(), String> {
        bert::check_heads(self.hidden_size, self.num_attention_heads)?;
        if self.max_position_embeddings <= PADDING_IDX + 1 {
            return Err(format!(
                "max_position_embeddings {} leaves no position after the padding index",
                self.max_position_embeddings
            ));
        }
        if (self.relative_attention_num_buckets as i64) < NUM_BUCKETS {
            return Err(format!(
                "relative_attention_num_buckets {} is below the {NUM_BUCKETS} buckets MPNet uses",
                self.relative_attention_num_buckets
            ));
        }
        bert::HiddenAct::parse(&self.hidden_act)
            .map(|_| ())
            .ok_or_else(|| format!("hidden_act \"{}\" is not supported", self.hidden_act))
    }

    pub fn init(&self, with_pooler: bool, device: &Device) -> Mpnet {
        let h = self.hidden_size;
        let (norm_eps, dropout_prob) = (self.layer_norm_eps, self.hidden_dropout_prob);
        let layer_norm = || LayerNormConfig::new(h).with_epsilon(norm_eps).init(device);
        let dropout = || DropoutConfig::new(dropout_prob).init();
        let act = bert::HiddenAct::parse(&self.hidden_act).unwrap_or(HiddenAct::Gelu);
        let layer = (0..self.num_hidden_layers)
            .map(|_| MpnetLayer {
                attention: MpnetAttention {
                    attn: MpnetSelfAttention {
                        q: LinearConfig::new(h, h).init(device),
                        k: LinearConfig::new(h, h).init(device),
                        v: LinearConfig::new(h, h).init(device),
                        o: LinearConfig::new(h, h).init(device),
                        dropout: DropoutConfig::new(self.attention_probs_dropout_prob).init(),
                        num_heads: self.num_attention_heads,
                    },
                    layer_norm: layer_norm(),
                    dropout: dropout(),
                    layer_norm_eps: self.layer_norm_eps,
                },
                intermediate: BertIntermediate {
                    dense: LinearConfig::new(h, self.intermediate_size).init(device),
                },
                output: BertOutput::new(self.intermediate_size, h, norm_eps, dropout_prob, device),
                act,
            })
            .collect();
        Mpnet {
            embeddings: MpnetEmbeddings {
                word_embeddings: EmbeddingConfig::new(self.vocab_size, h).init(device),
                position_embeddings: EmbeddingConfig::new(self.max_position_embeddings, h)
                    .init(device),
                layer_norm: layer_norm(),
                dropout: dropout(),
            },
            encoder: MpnetEncoder {
                layer,
                relative_attention_bias: EmbeddingConfig::new(
                    self.relative_attention_num_buckets,
                    self.num_attention_heads,
                )
                .init(device),
            },
            pooler: with_pooler.then(|| BertPooler {
                dense: LinearConfig::new(h, h).init(device),
            }),
        }
    }
}

#[derive(Module, Debug)]
pub struct MpnetEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub layer_norm: LayerNorm,
    pub dropout: Dropout,
}

/// `attention.attn` upstream: q, k, v and the output projection o.
#[derive(Module, Debug)]
pub struct MpnetSelfAttention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub dropout: Dropout,
    pub num_heads: usize,
}

impl MpnetSelfAttention {
    /// `pad_mask` is `[batch, heads, seq, seq]`, true where the key is padding; `bias` is the
    /// relative position bias `[batch, heads, seq, seq]`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        pad_mask: Option<Tensor<4, Bool>>,
        bias: Tensor<4>,
    ) -> Tensor<3> {
        let [q, k, v] = bert::project_qkv([&self.q, &self.k, &self.v], x);
        let context = bert::attend_rows(
            q,
            k,
            v,
            self.num_heads,
            pad_mask,
            Some(bias),
            None,
            &self.dropout,
        );
        adapters::linear(&self.o, context)
    }
}

/// The attention block: `attn`, then dropout and LayerNorm over the residual.
#[derive(Module, Debug)]
pub struct MpnetAttention {
    pub attn: MpnetSelfAttention,
    pub layer_norm: LayerNorm,
    pub dropout: Dropout,
    /// `layer_norm`'s epsilon (burn keeps it private), for the fused kernel.
    #[module(skip)]
    pub layer_norm_eps: f64,
}

impl MpnetAttention {
    /// `layer_norm(attn(x) + x)`. On the fused CPU kernels this is one kernel over a few whole
    /// sequences at a time, in `x`'s buffer.
    fn forward(
        &self,
        x: Tensor<3>,
        pad_mask: Option<Tensor<4, Bool>>,
        bias: Tensor<4>,
    ) -> Tensor<3> {
        if graft_kernels::serves(&x.device()) {
            let attn = &self.attn;
            let layer = graft_kernels::SelfAttention {
                query: bert::dense(&attn.q),
                key: bert::dense(&attn.k),
                value: bert::dense(&attn.v),
                output: bert::dense(&attn.o),
                heads: attn.num_heads,
            };
            let norm = bert::norm_params(&self.layer_norm, self.layer_norm_eps);
            return graft_kernels::self_attention(x, layer, pad_mask, Some(bias), norm);
        }
        let attended = self.attn.forward(x.clone(), pad_mask, bias);
        self.layer_norm.forward(self.dropout.forward(attended) + x)
    }
}

#[derive(Module, Debug)]
pub struct MpnetLayer {
    pub attention: MpnetAttention,
    pub intermediate: BertIntermediate,
    pub output: BertOutput,
    #[module(skip)]
    pub act: HiddenAct,
}

impl MpnetLayer {
    fn forward(
        &self,
        x: Tensor<3>,
        pad_mask: Option<Tensor<4, Bool>>,
        bias: Tensor<4>,
    ) -> Tensor<3> {
        let x = self.attention.forward(x, pad_mask, bias);
        bert::feed_forward(self.act, &self.intermediate, &self.output, x)
    }
}

#[derive(Module, Debug)]
pub struct MpnetEncoder {
    pub layer: Vec<MpnetLayer>,
    /// One bias per bucket and head, shared by every layer.
    pub relative_attention_bias: Embedding,
}

/// T5's bucket of a relative position (`key - query`), as transformers' MPNet computes it: 16
/// buckets each way, the first 8 exact, then logarithmic up to 128, in f32 as PyTorch does.
fn relative_position_bucket(relative_position: i64) -> i64 {
    let half = NUM_BUCKETS / 2;
    let n = -relative_position;
    let mut bucket = if n < 0 { half } else { 0 };
    let n = n.abs();
    let max_exact = half / 2;
    bucket += if n < max_exact {
        n
    } else {
        let scaled = (n as f32 / max_exact as f32).ln()
            / (MAX_DISTANCE / max_exact as f64).ln() as f32
            * (half - max_exact) as f32;
        (max_exact + scaled as i64).min(half - 1)
    };
    bucket
}

impl MpnetEncoder {
    /// The bias `[1, heads, seq, seq]` of every query/key pair.
    fn position_bias(&self, seq_len: usize, device: &Device) -> Tensor<4> {
        let buckets: Vec<i64> = (0..seq_len as i64)
            .flat_map(|query| {
                (0..seq_len as i64).map(move |key| relative_position_bucket(key - query))
            })
            .collect();
        let buckets =
            Tensor::<2, Int>::from_data(TensorData::new(buckets, [seq_len, seq_len]), device);
        // [seq, seq, heads] -> [1, heads, seq, seq]
        self.relative_attention_bias
            .forward(buckets)
            .permute([2, 0, 1])
            .unsqueeze_dim(0)
    }

    fn forward(&self, mut x: Tensor<3>, attention_mask: Option<Tensor<2, Int>>) -> Tensor<3> {
        let [batch, seq_len, _] = x.dims();
        let heads = self.relative_attention_bias.weight.dims()[1];
        let bias = self
            .position_bias(seq_len, &x.device())
            .expand([batch, heads, seq_len, seq_len]);
        let pad_mask = attention_mask.map(|mask| {
            mask.equal_elem(0)
                .reshape([batch, 1, 1, seq_len])
                .expand([batch, heads, seq_len, seq_len])
        });
        for layer in &self.layer {
            x = layer.forward(x, pad_mask.clone(), bias.clone());
        }
        x
    }
}

/// The encoder. Field names follow the upstream tensor names.
#[derive(Module, Debug)]
pub struct Mpnet {
    pub embeddings: MpnetEmbeddings,
    pub encoder: MpnetEncoder,
    pub pooler: Option<BertPooler>,
}

impl Mpnet {
    /// The last hidden state `[batch, seq, hidden]`. `attention_mask` is 1 for tokens, 0 for
    /// padding; `None` means no row is padded.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        let positions =
            crate::roberta::position_ids(&input_ids, attention_mask.as_ref(), PADDING_IDX);
        let e = &self.embeddings;
        let x = e.word_embeddings.forward(input_ids) + e.position_embeddings.forward(positions);
        let x = e.dropout.forward(e.layer_norm.forward(x));
        self.encoder.forward(x, attention_mask)
    }

    fn num_layers(&self) -> usize {
        self.encoder.layer.len()
    }
}

/// What an `MPNetForSequenceClassification` (or `...ForMaskedLM`) checkpoint puts before the
/// encoder's names.
const PREFIXES: [&str; 2] = ["mpnet.", "model."];

/// Maps a module path to its upstream name (burn's `layer_norm` is upstream's `LayerNorm`).
pub fn upstream_name(path: &str) -> String {
    path.replace(".layer_norm.", ".LayerNorm.")
}

impl Architecture for Mpnet {
    fn name() -> &'static str {
        "mpnet"
    }

    fn detects(config: &Value) -> bool {
        config.get("model_type").and_then(Value::as_str) == Some("mpnet")
    }

    fn preprocessing(folder: &ModelFolder) -> Result<Preprocessing, ModelError> {
        let config = MpnetConfig::from_file(&folder.config_path())?;
        Ok(Preprocessing::Text(TextTransform {
            tokenizer: folder.tokenizer_path(),
            vocab_size: config.vocab_size,
            max_positions: config.max_position_embeddings - PADDING_IDX - 1,
            has_pooler: bert::has_pooler(&folder.weights_index()?, &PREFIXES),
        }))
    }

    fn native_head(folder: &ModelFolder) -> Result<Option<NativeHead>, ModelError> {
        let config = MpnetConfig::from_file(&folder.config_path())?;
        Ok(Some(NativeHead::dense_out_proj(
            "MPNetForSequenceClassification",
            "mpnet.",
            config.hidden_size,
            HiddenAct::Tanh,
        )))
    }

    fn load(folder: &ModelFolder, _classifier: bool, device: &Device) -> Result<Self, ModelError> {
        let config = MpnetConfig::from_file(&folder.config_path())?;
        let weights_path = folder.weights_path();
        let index = WeightsIndex::read(&weights_path)?;
        let mut model = config.init(bert::has_pooler(&index, &PREFIXES), device);
        weights::check_sizes(&model, &weights_path)?;
        let names = weights::param_names(&model, upstream_name);
        weights::load_renamed(&mut model, &weights_path, &names, &PREFIXES)?;
        Ok(model)
    }

    fn describe(&self) -> String {
        format!("mpnet ({} layers)", self.num_layers())
    }

    fn feature_size(&self) -> usize {
        self.embeddings.word_embeddings.weight.dims()[1]
    }

    fn forward_features(&self, inputs: Inputs, pooling: PoolingOptions) -> Tensor<2> {
        bert::pool_tokens(self, inputs, self.pooler.as_ref(), pooling)
    }

    fn forward_tokens(&self, inputs: Inputs) -> Option<Tensor<3>> {
        let (input_ids, _, attention_mask) = inputs.into_text();
        Some(self.forward(input_ids, attention_mask))
    }

    fn upstream_name(&self, path: &str) -> String {
        upstream_name(path)
    }

    /// The embeddings and the shared relative attention bias are block 0; layer i is block
    /// i + 1; the pooler counts with the last layer.
    fn block_of(&self, path: &str) -> usize {
        if path.starts_with("encoder.relative_attention_bias") {
            0
        } else {
            bert::block_of(path, "encoder.layer.", self.num_layers())
        }
    }

    fn num_blocks(&self) -> usize {
        self.num_layers() + 1
    }

    /// PEFT has no default for MPNet: the attention's query and value, as for BERT.
    fn lora_targets(&self) -> &'static [&'static str] {
        &["q", "v"]
    }

    /// Sentence-transformers only: transformers' `MPNetForSequenceClassification` head is dense +
    /// tanh + out_proj on `<s>`, not a linear layer on graft's features.
    fn exports(&self) -> Vec<ExportTarget> {
        bert::text_exports("MPNetModel", None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_t5s() {
        // Exact within 8 each way, keys after the query in the upper 16.
        assert_eq!(relative_position_bucket(0), 0);
        assert_eq!(relative_position_bucket(-3), 3);
        assert_eq!(relative_position_bucket(3), 19);
        // Logarithmic beyond: 8 + floor(ln(n / 8) / ln(16) * 8), capped at 15.
        assert_eq!(relative_position_bucket(-16), 10);
        assert_eq!(relative_position_bucket(-63), 13);
        assert_eq!(relative_position_bucket(-128), 15);
        assert_eq!(relative_position_bucket(-1000), 15);
        assert_eq!(relative_position_bucket(1000), 31);
    }
}
