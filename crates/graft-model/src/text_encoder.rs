//! The text backbone graft trains on: a BERT-family encoder followed by pooling and optional L2
//! normalization, producing one feature vector per text.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};

use crate::bert::{self, Bert, BertConfig};
use crate::{ModelError, ModelFolder, Pooling, l2_normalize};

/// How the encoder's hidden states become features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolingOptions {
    pub pooling: Pooling,
    /// With CLS pooling: pass the first token through the pretrained pooler (dense + tanh), as
    /// `BertForSequenceClassification` does.
    pub use_pooler: bool,
    pub normalize: bool,
}

#[derive(Module, Debug)]
pub struct TextEncoder {
    pub bert: Bert,
    #[module(skip)]
    pub options: PoolingOptions,
}

impl TextEncoder {
    /// Loads the encoder of a model folder. `use_pooler` needs pooler weights in the folder.
    pub fn load(
        folder: &ModelFolder,
        options: PoolingOptions,
        device: &Device,
    ) -> Result<(BertConfig, Self), ModelError> {
        let (config, bert) = bert::load(&folder.dir, device)?;
        if options.use_pooler && bert.pooler.is_none() {
            return Err(ModelError::MissingTensors {
                path: folder.weights_path(),
                names: vec!["pooler.dense.weight".into(), "pooler.dense.bias".into()],
                available: folder.weights_index()?.tensors.len(),
            });
        }
        Ok((config, Self { bert, options }))
    }

    /// Features `[batch, hidden]` for a padded batch.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<2> {
        let hidden = self
            .bert
            .forward(input_ids, token_type_ids, attention_mask.clone());
        let pooled = match (&self.bert.pooler, self.options) {
            (
                Some(pooler),
                PoolingOptions {
                    pooling: Pooling::Cls,
                    use_pooler: true,
                    ..
                },
            ) => pooler.forward(Pooling::Cls.pool(hidden, attention_mask)),
            (_, options) => options.pooling.pool(hidden, attention_mask),
        };
        if self.options.normalize {
            l2_normalize(pooled)
        } else {
            pooled
        }
    }

    pub fn output_size(&self) -> usize {
        self.bert.hidden_size()
    }
}
