//! ELECTRA discriminators (`model_type = "electra"`) from a Hugging Face folder. The encoder layers
//! are BERT's (see [`crate::bert`]); what makes ELECTRA itself is that its embeddings may be
//! narrower than the encoder (`embedding_size` < `hidden_size`), in which case `embeddings_project`
//! maps them up, and that it has no pooler.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};
use serde_json::Value;

use crate::adapters;
use crate::backbone::{Architecture, ExportTarget, Inputs, Preprocessing, TextTransform};
use crate::bert::HiddenAct;
use crate::bert::{self, BertConfig, BertEmbeddings, BertEncoder};
use crate::weights;
use crate::{ModelError, ModelFolder, NativeHead, PoolingOptions};

/// What an `ElectraForSequenceClassification` (or `...ForPreTraining`) checkpoint puts before the
/// encoder's names.
const PREFIXES: [&str; 2] = ["electra.", "model."];

/// The encoder. Field names follow the upstream tensor names.
#[derive(Module, Debug)]
pub struct Electra {
    pub embeddings: BertEmbeddings,
    /// Present when `embedding_size` differs from `hidden_size`.
    pub embeddings_project: Option<Linear>,
    pub encoder: BertEncoder,
}

/// `config.json`: BERT's fields plus `embedding_size` (transformers' default 128).
fn read_config(folder: &ModelFolder) -> Result<(BertConfig, usize), ModelError> {
    let config = BertConfig::from_file(&folder.config_path())?;
    let embedding_size = match folder.config.get("embedding_size") {
        None => 128,
        Some(value) => {
            value
                .as_u64()
                .filter(|&size| size > 0)
                .ok_or_else(|| ModelError::Config {
                    path: folder.config_path(),
                    message: format!("embedding_size must be a positive integer, found {value}"),
                })? as usize
        }
    };
    Ok((config, embedding_size))
}

impl Electra {
    /// The last hidden state `[batch, seq, hidden]`. `attention_mask` is 1 for tokens, 0 for
    /// padding; `None` means no row is padded.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        let mut x = self.embeddings.forward(input_ids, token_type_ids);
        if let Some(project) = &self.embeddings_project {
            x = adapters::linear(project, x);
        }
        self.encoder.forward(x, attention_mask)
    }

    fn num_layers(&self) -> usize {
        self.encoder.layer.len()
    }
}

impl Architecture for Electra {
    fn name() -> &'static str {
        "electra"
    }

    fn detects(config: &Value) -> bool {
        config.get("model_type").and_then(Value::as_str) == Some("electra")
    }

    fn preprocessing(folder: &ModelFolder) -> Result<Preprocessing, ModelError> {
        let (config, _) = read_config(folder)?;
        Ok(Preprocessing::Text(TextTransform {
            tokenizer: folder.tokenizer_path(),
            vocab_size: config.vocab_size,
            max_positions: config.max_position_embeddings,
            has_pooler: false,
        }))
    }

    fn native_head(folder: &ModelFolder) -> Result<Option<NativeHead>, ModelError> {
        let (config, _) = read_config(folder)?;
        // ELECTRA's head uses GELU where BERT's pooler has tanh.
        Ok(Some(NativeHead::dense_out_proj(
            "ElectraForSequenceClassification",
            "electra.",
            config.hidden_size,
            HiddenAct::Gelu,
        )))
    }

    fn load(folder: &ModelFolder, _classifier: bool, device: &Device) -> Result<Self, ModelError> {
        let (config, embedding_size) = read_config(folder)?;
        // The embeddings are built at their own width; the layers at the hidden size.
        let narrow = BertConfig {
            hidden_size: embedding_size,
            num_attention_heads: 1,
            ..config.clone()
        };
        let mut model = Electra {
            embeddings: narrow.init(false, device).embeddings,
            embeddings_project: (embedding_size != config.hidden_size)
                .then(|| LinearConfig::new(embedding_size, config.hidden_size).init(device)),
            encoder: config.init(false, device).encoder,
        };
        weights::check_sizes(&model, &folder.weights_path())?;
        let names = weights::param_names(&model, bert::upstream_name);
        weights::load_renamed(&mut model, &folder.weights_path(), &names, &PREFIXES)?;
        Ok(model)
    }

    fn describe(&self) -> String {
        format!("electra ({} layers)", self.num_layers())
    }

    fn feature_size(&self) -> usize {
        self.encoder
            .layer
            .first()
            .map_or(0, |layer| layer.output.dense.weight.dims()[1])
    }

    fn forward_features(&self, inputs: Inputs, pooling: PoolingOptions) -> Tensor<2> {
        bert::pool_tokens(self, inputs, None, pooling)
    }

    fn forward_tokens(&self, inputs: Inputs) -> Option<Tensor<3>> {
        let (input_ids, token_type_ids, attention_mask) = inputs.into_text();
        Some(self.forward(input_ids, token_type_ids, attention_mask))
    }

    fn upstream_name(&self, path: &str) -> String {
        bert::upstream_name(path)
    }

    /// The projection counts with the embeddings (block 0).
    fn block_of(&self, path: &str) -> usize {
        if path.starts_with("embeddings_project.") {
            0
        } else {
            self.encoder.block_of(path)
        }
    }

    fn num_blocks(&self) -> usize {
        self.num_layers() + 1
    }

    fn lora_targets(&self) -> &'static [&'static str] {
        &["query", "value"]
    }

    /// Sentence-transformers only: transformers' `ElectraForSequenceClassification` head is its
    /// own (dense + GELU + out_proj), not a linear layer on graft's features.
    fn exports(&self) -> Vec<ExportTarget> {
        bert::text_exports("ElectraModel", None)
    }
}
