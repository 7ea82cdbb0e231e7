//! DistilBERT (`model_type = "distilbert"`) from a Hugging Face folder: a config that mirrors its
//! own `config.json` (`dim`, `n_layers`, `n_heads`, `hidden_dim`, `activation`), embeddings without
//! token types, and post-norm layers that compute what BERT's do under other names
//! (`transformer.layer.N.attention.q_lin`, `sa_layer_norm`, `ffn.lin1`, `output_layer_norm`). The
//! layers reuse [`crate::bert`]'s modules; [`upstream_name`] maps their paths to DistilBERT's
//! names, which are the names users see, freeze and target with LoRA.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig};
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backbone::{Architecture, ExportTarget, Inputs, Preprocessing, TextTransform};
use crate::bert::HiddenAct;
use crate::bert::{self, BertConfig, BertEncoder};
use crate::weights;
use crate::{ModelError, ModelFolder, NativeHead, Pooling, PoolingOptions, TransformSpec};

/// The fields of a DistilBERT `config.json` that shape the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistilBertConfig {
    pub vocab_size: usize,
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub hidden_dim: usize,
    #[serde(default = "default_activation")]
    pub activation: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    #[serde(default = "default_dropout")]
    pub attention_dropout: f64,
    #[serde(default)]
    pub pad_token_id: usize,
}

fn default_activation() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}

impl DistilBertConfig {
    /// Reads `config.json` and checks it as BERT's (the same numbers under other names).
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        // BERT's messages, in DistilBERT's key names.
        crate::read_config(path, |config: &Self| {
            config
                .as_bert()
                .check()
                .map_err(|message| message.replace("hidden_act", "activation"))
        })
    }

    /// The same network in BERT's terms (DistilBERT's LayerNorm epsilon is 1e-12).
    fn as_bert(&self) -> BertConfig {
        BertConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.dim,
            num_hidden_layers: self.n_layers,
            num_attention_heads: self.n_heads,
            intermediate_size: self.hidden_dim,
            hidden_act: self.activation.clone(),
            max_position_embeddings: self.max_position_embeddings,
            type_vocab_size: 1,
            layer_norm_eps: 1e-12,
            hidden_dropout_prob: self.dropout,
            attention_probs_dropout_prob: self.attention_dropout,
            pad_token_id: self.pad_token_id,
            position_embedding_type: None,
            is_decoder: false,
        }
    }
}

/// Word and position embeddings, then LayerNorm (no token types).
#[derive(Module, Debug)]
pub struct DistilBertEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub layer_norm: LayerNorm,
    pub dropout: Dropout,
}

impl DistilBertEmbeddings {
    pub fn forward(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        let [_, seq_len] = input_ids.dims();
        let device = input_ids.device();
        let positions = Tensor::<1, Int>::arange(0..seq_len as i64, &device).reshape([1, seq_len]);
        let x =
            self.word_embeddings.forward(input_ids) + self.position_embeddings.forward(positions);
        self.dropout.forward(self.layer_norm.forward(x))
    }
}

/// The encoder: `embeddings` and `transformer` upstream (here BERT's `encoder` modules).
#[derive(Module, Debug)]
pub struct DistilBert {
    pub embeddings: DistilBertEmbeddings,
    pub encoder: BertEncoder,
}

/// BERT module path segments and DistilBERT's names for them.
const RENAMES: &[(&str, &str)] = &[
    (".attention.self_attn.query.", ".attention.q_lin."),
    (".attention.self_attn.key.", ".attention.k_lin."),
    (".attention.self_attn.value.", ".attention.v_lin."),
    (".attention.output.dense.", ".attention.out_lin."),
    (".attention.output.layer_norm.", ".sa_layer_norm."),
    (".intermediate.dense.", ".ffn.lin1."),
    (".output.dense.", ".ffn.lin2."),
    (".output.layer_norm.", ".output_layer_norm."),
];

/// Maps a module path (`encoder.layer.0.attention.self_attn.query.weight`) to DistilBERT's name
/// (`transformer.layer.0.attention.q_lin.weight`).
pub fn upstream_name(path: &str) -> String {
    let path = match path.strip_prefix("encoder.layer.") {
        Some(rest) => format!("transformer.layer.{rest}"),
        None => path.replace("embeddings.layer_norm.", "embeddings.LayerNorm."),
    };
    RENAMES.iter().fold(path, |name, (ours, upstream)| {
        name.replacen(ours, upstream, 1)
    })
}

/// What a `DistilBertForSequenceClassification` checkpoint puts before the encoder's names.
const PREFIXES: [&str; 1] = ["distilbert."];

impl DistilBert {
    /// The last hidden state `[batch, seq, dim]`. `attention_mask` is 1 for tokens, 0 for padding;
    /// `None` means no row is padded.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        self.encoder
            .forward(self.embeddings.forward(input_ids), attention_mask)
    }

    fn num_layers(&self) -> usize {
        self.encoder.layer.len()
    }
}

impl Architecture for DistilBert {
    fn name() -> &'static str {
        "distilbert"
    }

    fn detects(config: &Value) -> bool {
        config.get("model_type").and_then(Value::as_str) == Some("distilbert")
    }

    fn preprocessing(folder: &ModelFolder) -> Result<Preprocessing, ModelError> {
        let config = DistilBertConfig::from_file(&folder.config_path())?;
        Ok(Preprocessing::Text(TextTransform {
            tokenizer: folder.tokenizer_path(),
            vocab_size: config.vocab_size,
            max_positions: config.max_position_embeddings,
            has_pooler: false,
        }))
    }

    fn native_head(folder: &ModelFolder) -> Result<Option<NativeHead>, ModelError> {
        let config = DistilBertConfig::from_file(&folder.config_path())?;
        Ok(Some(NativeHead {
            model: "DistilBertForSequenceClassification".into(),
            prefix: "distilbert.".into(),
            pooling: Pooling::Cls,
            use_pooler: false,
            transform: Some(TransformSpec::dense(
                "pre_classifier",
                config.dim,
                HiddenAct::Relu,
                false,
            )),
            classifier: "classifier".into(),
        }))
    }

    fn load(folder: &ModelFolder, _classifier: bool, device: &Device) -> Result<Self, ModelError> {
        let config = DistilBertConfig::from_file(&folder.config_path())?;
        let bert = config.as_bert();
        let mut model = DistilBert {
            embeddings: DistilBertEmbeddings {
                word_embeddings: EmbeddingConfig::new(config.vocab_size, config.dim).init(device),
                position_embeddings: EmbeddingConfig::new(
                    config.max_position_embeddings,
                    config.dim,
                )
                .init(device),
                layer_norm: LayerNormConfig::new(config.dim)
                    .with_epsilon(bert.layer_norm_eps)
                    .init(device),
                dropout: DropoutConfig::new(config.dropout).init(),
            },
            encoder: bert.init(false, device).encoder,
        };
        weights::check_sizes(&model, &folder.weights_path())?;
        let names = weights::param_names(&model, upstream_name);
        weights::load_renamed(&mut model, &folder.weights_path(), &names, &PREFIXES)?;
        Ok(model)
    }

    fn describe(&self) -> String {
        format!("distilbert ({} layers)", self.num_layers())
    }

    fn feature_size(&self) -> usize {
        self.embeddings.word_embeddings.weight.dims()[1]
    }

    fn forward_features(&self, inputs: Inputs, pooling: PoolingOptions) -> Tensor<2> {
        bert::pool_tokens(self, inputs, None, pooling)
    }

    fn forward_tokens(&self, inputs: Inputs) -> Option<Tensor<3>> {
        let (input_ids, _, attention_mask) = inputs.into_text();
        Some(self.forward(input_ids, attention_mask))
    }

    fn upstream_name(&self, path: &str) -> String {
        upstream_name(path)
    }

    fn block_of(&self, path: &str) -> usize {
        self.encoder.block_of(path)
    }

    fn num_blocks(&self) -> usize {
        self.num_layers() + 1
    }

    /// PEFT has no default for DistilBERT: the attention's query and value, as for BERT.
    fn lora_targets(&self) -> &'static [&'static str] {
        &["q_lin", "v_lin"]
    }

    /// Sentence-transformers only: transformers' `DistilBertForSequenceClassification` head is
    /// pre_classifier + ReLU + classifier, not a linear layer on graft's features.
    fn exports(&self) -> Vec<ExportTarget> {
        bert::text_exports("DistilBertModel", None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distilberts() {
        for (ours, theirs) in [
            (
                "encoder.layer.1.attention.self_attn.query.weight",
                "transformer.layer.1.attention.q_lin.weight",
            ),
            (
                "encoder.layer.0.attention.output.dense.bias",
                "transformer.layer.0.attention.out_lin.bias",
            ),
            (
                "encoder.layer.0.attention.output.layer_norm.gamma",
                "transformer.layer.0.sa_layer_norm.gamma",
            ),
            (
                "encoder.layer.3.intermediate.dense.weight",
                "transformer.layer.3.ffn.lin1.weight",
            ),
            (
                "encoder.layer.3.output.dense.weight",
                "transformer.layer.3.ffn.lin2.weight",
            ),
            (
                "encoder.layer.3.output.layer_norm.beta",
                "transformer.layer.3.output_layer_norm.beta",
            ),
            ("embeddings.layer_norm.gamma", "embeddings.LayerNorm.gamma"),
            (
                "embeddings.word_embeddings.weight",
                "embeddings.word_embeddings.weight",
            ),
        ] {
            assert_eq!(upstream_name(ours), theirs);
        }
    }
}
