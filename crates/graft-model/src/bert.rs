//! BERT-family encoders (BERT, MiniLM, and other `model_type = "bert"` checkpoints) from a Hugging
//! Face folder: a config that mirrors `config.json`, modules named after the upstream tensor tree,
//! the forward pass, and a loader that maps the upstream names onto the modules.

use std::path::Path;

use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::store::{
    FloatCastAdapter, KeyRemapper, ModuleAdapter, PyTorchToBurnAdapter, SafetensorsStore,
};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, DType, Device, Int, Tensor, activation};
use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::weights::{self, WeightsIndex};

/// The fields of a BERT `config.json` that shape the network. Unknown fields are ignored, as
/// transformers does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default)]
    pub pad_token_id: usize,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_hidden_act() -> String {
    "gelu".into()
}
fn default_type_vocab_size() -> usize {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_dropout() -> f64 {
    0.1
}

/// The activation of the feed-forward block, as named by transformers' `ACT2FN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenAct {
    /// Exact GELU with erf (`gelu`).
    Gelu,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
}

impl HiddenAct {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            "relu" => Some(Self::Relu),
            _ => None,
        }
    }
}

impl BertConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        crate::read_config(path, Self::check)
    }

    fn check(&self) -> Result<(), String> {
        if self.hidden_size == 0 || self.num_attention_heads == 0 {
            return Err("hidden_size and num_attention_heads must be positive".into());
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if HiddenAct::parse(&self.hidden_act).is_none() {
            return Err(format!(
                "hidden_act \"{}\" is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu)",
                self.hidden_act
            ));
        }
        match self.position_embedding_type.as_deref() {
            None | Some("absolute") => Ok(()),
            Some(other) => Err(format!(
                "position_embedding_type \"{other}\" is not supported (absolute)"
            )),
        }
    }

    pub fn hidden_act(&self) -> HiddenAct {
        HiddenAct::parse(&self.hidden_act).unwrap_or(HiddenAct::Gelu)
    }

    /// Builds a randomly initialised encoder; `with_pooler` adds the `pooler.dense` layer.
    pub fn init(&self, with_pooler: bool, device: &Device) -> Bert {
        let h = self.hidden_size;
        let layer_norm = || {
            LayerNormConfig::new(h)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let hidden_dropout = || DropoutConfig::new(self.hidden_dropout_prob).init();
        let layers = (0..self.num_hidden_layers)
            .map(|_| BertLayer {
                attention: BertAttention {
                    self_attn: BertSelfAttention {
                        query: LinearConfig::new(h, h).init(device),
                        key: LinearConfig::new(h, h).init(device),
                        value: LinearConfig::new(h, h).init(device),
                        dropout: DropoutConfig::new(self.attention_probs_dropout_prob).init(),
                        num_heads: self.num_attention_heads,
                    },
                    output: BertOutput {
                        dense: LinearConfig::new(h, h).init(device),
                        layer_norm: layer_norm(),
                        dropout: hidden_dropout(),
                    },
                },
                intermediate: BertIntermediate {
                    dense: LinearConfig::new(h, self.intermediate_size).init(device),
                },
                output: BertOutput {
                    dense: LinearConfig::new(self.intermediate_size, h).init(device),
                    layer_norm: layer_norm(),
                    dropout: hidden_dropout(),
                },
                act: self.hidden_act(),
            })
            .collect();
        Bert {
            embeddings: BertEmbeddings {
                word_embeddings: EmbeddingConfig::new(self.vocab_size, h).init(device),
                position_embeddings: EmbeddingConfig::new(self.max_position_embeddings, h)
                    .init(device),
                token_type_embeddings: EmbeddingConfig::new(self.type_vocab_size, h).init(device),
                layer_norm: layer_norm(),
                dropout: hidden_dropout(),
            },
            encoder: BertEncoder { layer: layers },
            pooler: with_pooler.then(|| BertPooler {
                dense: LinearConfig::new(h, h).init(device),
            }),
        }
    }
}

#[derive(Module, Debug)]
pub struct BertEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    pub layer_norm: LayerNorm,
    pub dropout: Dropout,
}

impl BertEmbeddings {
    pub fn forward(&self, input_ids: Tensor<2, Int>, token_type_ids: Tensor<2, Int>) -> Tensor<3> {
        let [_, seq_len] = input_ids.dims();
        let device = input_ids.device();
        let positions = Tensor::<1, Int>::arange(0..seq_len as i64, &device).reshape([1, seq_len]);
        let x = self.word_embeddings.forward(input_ids)
            + self.position_embeddings.forward(positions)
            + self.token_type_embeddings.forward(token_type_ids);
        self.dropout.forward(self.layer_norm.forward(x))
    }
}

/// `attention.self` upstream (`self` is a Rust keyword).
#[derive(Module, Debug)]
pub struct BertSelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub dropout: Dropout,
    pub num_heads: usize,
}

impl BertSelfAttention {
    /// `pad_mask` is `[batch, heads, seq, seq]`, true where the key is padding.
    pub fn forward(&self, x: Tensor<3>, pad_mask: Option<Tensor<4, Bool>>) -> Tensor<3> {
        let [batch, seq_len, hidden] = x.dims();
        let head_dim = hidden / self.num_heads;
        let heads = |linear: &Linear| {
            linear
                .forward(x.clone())
                .reshape([batch, seq_len, self.num_heads, head_dim])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (heads(&self.query), heads(&self.key), heads(&self.value));
        let dropout_active = self.dropout.prob > 0.0
            && self.dropout.training.is_enabled()
            && x.device().is_autodiff();
        let context = if dropout_active {
            // Training: dropout on the attention probabilities, as transformers does.
            let scores = q.matmul(k.swap_dims(2, 3)) / (head_dim as f64).sqrt();
            let scores = match pad_mask {
                Some(mask) => scores.mask_fill(mask, f32::MIN),
                None => scores,
            };
            let probs = self.dropout.forward(activation::softmax(scores, 3));
            probs.matmul(v)
        } else {
            attention(q, k, v, pad_mask, None, AttentionModuleOptions::default())
        };
        context.swap_dims(1, 2).reshape([batch, seq_len, hidden])
    }
}

/// A dense layer, dropout, then layer norm over the residual (`attention.output` and `output`).
#[derive(Module, Debug)]
pub struct BertOutput {
    pub dense: Linear,
    pub layer_norm: LayerNorm,
    pub dropout: Dropout,
}

impl BertOutput {
    pub fn forward(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        let x = self.dropout.forward(self.dense.forward(x));
        self.layer_norm.forward(x + residual)
    }
}

#[derive(Module, Debug)]
pub struct BertAttention {
    pub self_attn: BertSelfAttention,
    pub output: BertOutput,
}

#[derive(Module, Debug)]
pub struct BertIntermediate {
    pub dense: Linear,
}

#[derive(Module, Debug)]
pub struct BertLayer {
    pub attention: BertAttention,
    pub intermediate: BertIntermediate,
    pub output: BertOutput,
    #[module(skip)]
    pub act: HiddenAct,
}

impl BertLayer {
    pub fn forward(&self, x: Tensor<3>, pad_mask: Option<Tensor<4, Bool>>) -> Tensor<3> {
        let attended = self.attention.self_attn.forward(x.clone(), pad_mask);
        let x = self.attention.output.forward(attended, x);
        let inner = self.intermediate.dense.forward(x.clone());
        let inner = match self.act {
            HiddenAct::Gelu => activation::gelu(inner),
            HiddenAct::GeluTanh => activation::gelu_approximate(inner),
            HiddenAct::Relu => activation::relu(inner),
        };
        self.output.forward(inner, x)
    }
}

#[derive(Module, Debug)]
pub struct BertEncoder {
    pub layer: Vec<BertLayer>,
}

/// `pooler.dense` followed by tanh on the first token, as `BertPooler` upstream.
#[derive(Module, Debug)]
pub struct BertPooler {
    pub dense: Linear,
}

impl BertPooler {
    pub fn forward(&self, cls: Tensor<2>) -> Tensor<2> {
        activation::tanh(self.dense.forward(cls))
    }
}

/// The encoder. Field names follow the upstream tensor names.
#[derive(Module, Debug)]
pub struct Bert {
    pub embeddings: BertEmbeddings,
    pub encoder: BertEncoder,
    pub pooler: Option<BertPooler>,
}

impl Bert {
    /// The last hidden state `[batch, seq, hidden]`. `attention_mask` is 1 for tokens, 0 for
    /// padding; `None` means no row is padded.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        let [batch, seq_len] = input_ids.dims();
        let heads = self
            .encoder
            .layer
            .first()
            .map_or(1, |layer| layer.attention.self_attn.num_heads);
        // Built once for all layers: true where the key position is padding.
        let pad_mask = attention_mask.map(|mask| {
            mask.equal_elem(0)
                .reshape([batch, 1, 1, seq_len])
                .expand([batch, heads, seq_len, seq_len])
        });
        let mut x = self.embeddings.forward(input_ids, token_type_ids);
        for layer in &self.encoder.layer {
            x = layer.forward(x, pad_mask.clone());
        }
        x
    }

    pub fn hidden_size(&self) -> usize {
        self.embeddings.word_embeddings.weight.dims()[1]
    }

    pub fn vocab_size(&self) -> usize {
        self.embeddings.word_embeddings.weight.dims()[0]
    }

    pub fn max_positions(&self) -> usize {
        self.embeddings.position_embeddings.weight.dims()[0]
    }

    pub fn num_layers(&self) -> usize {
        self.encoder.layer.len()
    }
}

/// Upstream name segments that differ from this module tree (`self` is a keyword; burn's fields
/// are snake case). Everything else is named as upstream.
const RENAMES: &[(&str, &str)] = &[
    (".attention.self.", ".attention.self_attn."),
    (".LayerNorm.", ".layer_norm."),
];

/// Maps a module path (`encoder.layer.0.attention.self_attn.query.weight`) to its upstream name.
pub fn upstream_name(module_path: &str) -> String {
    RENAMES
        .iter()
        .fold(module_path.to_string(), |name, (upstream, ours)| {
            name.replace(ours, upstream)
        })
}

fn escaped(segment: &str) -> String {
    segment.replace('.', r"\.")
}

/// Remaps upstream names (with or without a `bert.` prefix) onto module paths, for loading.
fn load_remapper() -> KeyRemapper {
    let mut patterns = vec![(r"^(?:bert|model)\.(.+)$".to_string(), "$1".to_string())];
    patterns.extend(
        RENAMES
            .iter()
            .map(|(upstream, ours)| (escaped(upstream), ours.to_string())),
    );
    KeyRemapper::from_patterns(patterns).expect("static patterns are valid")
}

/// Remaps module paths onto upstream names for saving: paths under `module_prefix` (the encoder's
/// place in a larger module, `""` for the encoder itself) get `upstream_prefix` (`""` or
/// `"bert."`) instead; other paths keep their names.
pub fn save_remapper(module_prefix: &str, upstream_prefix: &str) -> KeyRemapper {
    let mut patterns = vec![(
        format!("^{}(.+)$", escaped(module_prefix)),
        format!("{upstream_prefix}$1"),
    )];
    patterns.extend(
        RENAMES
            .iter()
            .map(|(upstream, ours)| (escaped(ours), upstream.to_string())),
    );
    KeyRemapper::from_patterns(patterns).expect("static patterns are valid")
}

/// Builds the encoder from `config.json` and loads `model.safetensors` from `dir`.
pub fn load(dir: &Path, device: &Device) -> Result<(BertConfig, Bert), ModelError> {
    let config = BertConfig::from_file(&dir.join("config.json"))?;
    let weights_path = dir.join("model.safetensors");
    let index = WeightsIndex::read(&weights_path)?;
    let with_pooler = index.contains_any(&["pooler.dense.weight", "bert.pooler.dense.weight"]);
    let mut model = config.init(with_pooler, device);
    load_weights(&mut model, &weights_path, &index)?;
    Ok((config, model))
}

/// Loads weights in upstream names into `model`. Every tensor of the model must be present with
/// its exact shape; extra tensors (an MLM head, `position_ids`) are ignored.
pub fn load_weights(
    model: &mut Bert,
    weights_path: &Path,
    index: &WeightsIndex,
) -> Result<(), ModelError> {
    let mut store = SafetensorsStore::from_file(weights_path)
        .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32)))
        .remap(load_remapper())
        .allow_partial(true);
    let expected = weights::expected_tensors(model, upstream_name);
    weights::check_expected(weights_path, index, &expected, &["bert.", "model."])?;
    weights::apply(model, &mut store, weights_path)
}
