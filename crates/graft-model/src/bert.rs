//! BERT-family encoders (BERT, MiniLM, and other `model_type = "bert"` checkpoints) from a Hugging
//! Face folder: a config that mirrors `config.json`, modules named after the upstream tensor tree,
//! the forward pass, and its [`Architecture`] impl: detection, loading through the upstream
//! names, blocks (the embeddings, then each layer), tokenizer and export layouts.

use std::path::Path;

use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::tensor::{Bool, Device, Int, Tensor, activation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::adapters;
use crate::backbone::{
    Architecture, ExportFormat, ExportTarget, Inputs, Preprocessing, TextTransform,
};
use crate::weights::{self, WeightsIndex};
use crate::{ModelError, ModelFolder, NativeHead, Pooling, PoolingOptions};

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
    /// A decoder attends causally (and may cross-attend); graft's encoders do not.
    #[serde(default)]
    pub is_decoder: bool,
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

/// An activation as transformers' `ACT2FN` names it (feed-forward blocks, classifier heads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenAct {
    /// Exact GELU with erf (`gelu`).
    Gelu,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
    Tanh,
    /// `x * sigmoid(1.702 x)` (`quick_gelu`, CLIP's).
    QuickGelu,
}

impl HiddenAct {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            "relu" => Some(Self::Relu),
            "tanh" => Some(Self::Tanh),
            "quick_gelu" => Some(Self::QuickGelu),
            _ => None,
        }
    }

    /// `act(layer(x))`; exact GELU after a linear layer runs fused on the CPU kernels.
    pub fn apply_linear<const D: usize>(self, layer: &Linear, x: Tensor<D>) -> Tensor<D> {
        if self == Self::Gelu && graft_kernels::serves(&x.device()) {
            let bias = layer.bias.as_ref().map(|b| b.val());
            return graft_kernels::gelu(graft_kernels::linear(x, layer.weight.val(), None), bias);
        }
        self.apply(adapters::linear(layer, x))
    }

    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Gelu => activation::gelu(x),
            Self::GeluTanh => activation::gelu_approximate(x),
            Self::Relu => activation::relu(x),
            Self::Tanh => activation::tanh(x),
            Self::QuickGelu => x.clone() * activation::sigmoid(x * 1.702),
        }
    }
}

impl BertConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        crate::read_config(path, Self::check)
    }

    pub(crate) fn check(&self) -> Result<(), String> {
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
                "hidden_act \"{}\" is not supported (gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, \
                 relu, tanh, quick_gelu)",
                self.hidden_act
            ));
        }
        if self.is_decoder {
            return Err(
                "is_decoder true (causal self-attention) is not supported: graft reads encoders"
                    .into(),
            );
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
        let (norm_eps, dropout_prob) = (self.layer_norm_eps, self.hidden_dropout_prob);
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
                    output: BertOutput::new(h, h, norm_eps, dropout_prob, device),
                },
                intermediate: BertIntermediate {
                    dense: LinearConfig::new(h, self.intermediate_size).init(device),
                },
                output: BertOutput::new(self.intermediate_size, h, norm_eps, dropout_prob, device),
                act: self.hidden_act(),
            })
            .collect();
        Bert {
            embeddings: BertEmbeddings {
                word_embeddings: EmbeddingConfig::new(self.vocab_size, h).init(device),
                position_embeddings: EmbeddingConfig::new(self.max_position_embeddings, h)
                    .init(device),
                token_type_embeddings: EmbeddingConfig::new(self.type_vocab_size, h).init(device),
                layer_norm: LayerNormConfig::new(h)
                    .with_epsilon(self.layer_norm_eps)
                    .init(device),
                dropout: DropoutConfig::new(self.hidden_dropout_prob).init(),
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
        self.forward_at(input_ids, token_type_ids, positions)
    }

    /// The embeddings with explicit position ids (`[batch or 1, seq]`).
    pub fn forward_at(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Tensor<2, Int>,
        positions: Tensor<2, Int>,
    ) -> Tensor<3> {
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
        let [q, k, v] = project_qkv([&self.query, &self.key, &self.value], x);
        attend_rows(q, k, v, self.num_heads, pad_mask, None, None, &self.dropout)
    }
}

/// The query, key and value projections of `x`. On the fused CPU kernels this is one gemm with
/// the three weights side by side, and the three results are views of its output.
pub fn project_qkv(layers: [&Linear; 3], x: Tensor<3>) -> [Tensor<3>; 3] {
    if !graft_kernels::serves(&x.device()) {
        return layers.map(|layer| adapters::linear(layer, x.clone()));
    }
    let width = |layer: &Linear| layer.weight.dims()[1];
    let weight = Tensor::cat(layers.iter().map(|l| l.weight.val()).collect(), 1);
    let bias = layers
        .iter()
        .map(|l| l.bias.as_ref().map(|b| b.val()))
        .collect::<Option<Vec<_>>>()
        .map(|biases| Tensor::cat(biases, 0));
    let qkv = graft_kernels::linear(x, weight, bias);
    let mut start = 0;
    layers.map(|layer| {
        let part = qkv.clone().narrow(2, start, width(layer));
        start += width(layer);
        part
    })
}

/// Scaled dot-product attention over queries, keys and values in the projections' layout,
/// `[batch, seq, heads·head_dim]`, giving the context in that layout: graft's fused attention
/// (burn's elsewhere), or while training with dropout on the probabilities, the explicit path
/// transformers takes. `pad_mask` (`[batch, heads, seq, seq]`) is true where a key may not be
/// seen; `bias` is added to the scores; `divisor` divides them (default `sqrt(head_dim)`).
#[allow(clippy::too_many_arguments)]
pub fn attend_rows(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    pad_mask: Option<Tensor<4, Bool>>,
    bias: Option<Tensor<4>>,
    divisor: Option<f64>,
    dropout: &Dropout,
) -> Tensor<3> {
    if !attention_dropout(dropout, &q) {
        return graft_kernels::attention(q, k, v, heads, pad_mask, bias, divisor.map(|d| 1.0 / d));
    }
    let [batch, seq_q, width] = q.dims();
    let seq_k = k.dims()[1];
    let head_dim = width / heads;
    let split = |x: Tensor<3>, seq: usize| x.reshape([batch, seq, heads, head_dim]).swap_dims(1, 2);
    let divisor = divisor.unwrap_or_else(|| (head_dim as f64).sqrt());
    let mut scores = split(q, seq_q).matmul(split(k, seq_k).swap_dims(2, 3)) / divisor;
    if let Some(bias) = bias {
        scores = scores + bias;
    }
    if let Some(mask) = pad_mask {
        scores = scores.mask_fill(mask, f32::MIN);
    }
    let context = dropout
        .forward(activation::softmax(scores, 3))
        .matmul(split(v, seq_k));
    context.swap_dims(1, 2).reshape([batch, seq_q, width])
}

/// Whether dropout applies to the attention probabilities (training on an autodiff device).
fn attention_dropout(dropout: &Dropout, q: &Tensor<3>) -> bool {
    dropout.prob > 0.0 && dropout.training.is_enabled() && q.device().is_autodiff()
}

/// That `hidden_size` splits into `num_attention_heads` heads (MPNet's and DeBERTa's check).
pub(crate) fn check_heads(hidden_size: usize, num_attention_heads: usize) -> Result<(), String> {
    if hidden_size == 0
        || num_attention_heads == 0
        || !hidden_size.is_multiple_of(num_attention_heads)
    {
        return Err(format!(
            "hidden_size {hidden_size} must be a positive multiple of num_attention_heads \
             {num_attention_heads}"
        ));
    }
    Ok(())
}

/// The layer index in a path under `prefix` (`encoder.layer.` + `3.attention...` gives 3).
pub fn layer_index(path: &str, prefix: &str) -> Option<usize> {
    path.strip_prefix(prefix)?.split('.').next()?.parse().ok()
}

/// A dense layer, dropout, then layer norm over the residual (`attention.output` and `output`).
#[derive(Module, Debug)]
pub struct BertOutput {
    pub dense: Linear,
    pub layer_norm: LayerNorm,
    pub dropout: Dropout,
    /// `layer_norm`'s epsilon (burn keeps it private), for the fused kernel.
    #[module(skip)]
    pub layer_norm_eps: f64,
}

impl BertOutput {
    /// `dense` from `input` to `output` features, then dropout and a layer norm of `output`.
    pub fn new(
        input: usize,
        output: usize,
        layer_norm_eps: f64,
        dropout: f64,
        device: &Device,
    ) -> Self {
        Self {
            dense: LinearConfig::new(input, output).init(device),
            layer_norm: LayerNormConfig::new(output)
                .with_epsilon(layer_norm_eps)
                .init(device),
            dropout: DropoutConfig::new(dropout).init(),
            layer_norm_eps,
        }
    }

    /// `layer_norm` as the fused kernels take it.
    fn norm_params(&self) -> graft_kernels::LayerNormParams {
        norm_params(&self.layer_norm, self.layer_norm_eps)
    }

    pub fn forward(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        if graft_kernels::serves(&x.device()) {
            // The product and bias land in the residual's buffer, normalized there in place.
            let sum = graft_kernels::linear_add(
                x,
                self.dense.weight.val(),
                self.dense.bias.as_ref().map(|b| b.val()),
                residual,
            );
            return graft_kernels::add_layer_norm(
                sum,
                None,
                None,
                self.layer_norm.gamma.val(),
                self.layer_norm.beta.as_ref().map(|b| b.val()),
                self.layer_norm_eps,
            );
        }
        let x = self.dropout.forward(adapters::linear(&self.dense, x));
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

impl BertAttention {
    /// `output(self_attn(x), x)`. On the fused CPU kernels this is one kernel over a few whole
    /// sequences at a time, in `x`'s buffer.
    pub fn forward(&self, x: Tensor<3>, pad_mask: Option<Tensor<4, Bool>>) -> Tensor<3> {
        if graft_kernels::serves(&x.device()) {
            let attn = &self.self_attn;
            let layer = graft_kernels::SelfAttention {
                query: dense(&attn.query),
                key: dense(&attn.key),
                value: dense(&attn.value),
                output: dense(&self.output.dense),
                heads: attn.num_heads,
            };
            return graft_kernels::self_attention(
                x,
                layer,
                pad_mask,
                None,
                self.output.norm_params(),
            );
        }
        let attended = self.self_attn.forward(x.clone(), pad_mask);
        self.output.forward(attended, x)
    }
}

impl BertLayer {
    pub fn forward(&self, x: Tensor<3>, pad_mask: Option<Tensor<4, Bool>>) -> Tensor<3> {
        let x = self.attention.forward(x, pad_mask);
        feed_forward(self.act, &self.intermediate, &self.output, x)
    }
}

/// A layer norm with its epsilon (burn keeps it private) as the fused kernels take it.
pub fn norm_params(layer_norm: &LayerNorm, epsilon: f64) -> graft_kernels::LayerNormParams {
    graft_kernels::LayerNormParams {
        gamma: layer_norm.gamma.val(),
        beta: layer_norm.beta.as_ref().map(|b| b.val()),
        epsilon,
    }
}

/// A linear layer as the fused kernels take it.
pub fn dense(layer: &Linear) -> graft_kernels::Dense {
    graft_kernels::Dense {
        weight: layer.weight.val(),
        bias: layer.bias.as_ref().map(|b| b.val()),
    }
}

/// A post-norm layer's feed-forward block, `output(act(intermediate(x)), x)`. With exact GELU on
/// the fused CPU kernels it runs as one kernel over chunks of rows, in `x`'s buffer.
pub fn feed_forward(
    act: HiddenAct,
    intermediate: &BertIntermediate,
    output: &BertOutput,
    x: Tensor<3>,
) -> Tensor<3> {
    if act == HiddenAct::Gelu && graft_kernels::serves(&x.device()) {
        return graft_kernels::feed_forward(
            x,
            dense(&intermediate.dense),
            dense(&output.dense),
            output.norm_params(),
        );
    }
    let inner = act.apply_linear(&intermediate.dense, x.clone());
    output.forward(inner, x)
}

#[derive(Module, Debug)]
pub struct BertEncoder {
    pub layer: Vec<BertLayer>,
}

impl BertEncoder {
    /// Runs every layer on the embeddings `x`; `attention_mask` is 1 for tokens, 0 for padding
    /// (`None`: no row is padded).
    pub fn forward(&self, mut x: Tensor<3>, attention_mask: Option<Tensor<2, Int>>) -> Tensor<3> {
        let [batch, seq_len, _] = x.dims();
        let heads = self
            .layer
            .first()
            .map_or(1, |layer| layer.attention.self_attn.num_heads);
        // Built once for all layers: true where the key position is padding.
        let pad_mask = attention_mask.map(|mask| {
            mask.equal_elem(0)
                .reshape([batch, 1, 1, seq_len])
                .expand([batch, heads, seq_len, seq_len])
        });
        for layer in &self.layer {
            x = layer.forward(x, pad_mask.clone());
        }
        x
    }

    /// The block of a parameter path inside an encoder of this layout (see [`block_of`]).
    pub fn block_of(&self, path: &str) -> usize {
        block_of(path, "encoder.layer.", self.layer.len())
    }
}

/// The block of a parameter path in an encoder whose layers are under `layers`
/// (`encoder.layer.`): the embeddings are block 0, layer i is block i + 1, and anything else (a
/// pooler, a final norm) counts with the last layer.
pub fn block_of(path: &str, layers: &str, num_layers: usize) -> usize {
    if path.starts_with("embeddings.") {
        0
    } else if path.starts_with(layers) {
        layer_index(path, layers).map_or(0, |i| i + 1)
    } else {
        num_layers
    }
}

/// `pooler.dense` followed by tanh on the first token, as `BertPooler` upstream.
#[derive(Module, Debug)]
pub struct BertPooler {
    pub dense: Linear,
}

impl BertPooler {
    pub fn forward(&self, cls: Tensor<2>) -> Tensor<2> {
        activation::tanh(adapters::linear(&self.dense, cls))
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
        let x = self.embeddings.forward(input_ids, token_type_ids);
        self.encoder.forward(x, attention_mask)
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

/// Module path segments that upstream spells otherwise (`self` is a keyword; burn's fields are
/// snake case), and upstream's spelling. Everything else is named as upstream.
const RENAMES: &[(&str, &str)] = &[
    (".attention.self_attn.", ".attention.self."),
    (".layer_norm.", ".LayerNorm."),
];

/// Maps a module path (`encoder.layer.0.attention.self_attn.query.weight`) to its upstream name.
pub fn upstream_name(module_path: &str) -> String {
    rename_segments(module_path, RENAMES)
}

/// `path` with every `(ours, upstream)` segment of `renames` replaced, in order.
pub fn rename_segments(path: &str, renames: &[(&str, &str)]) -> String {
    renames
        .iter()
        .fold(path.to_string(), |name, (ours, upstream)| {
            name.replace(ours, upstream)
        })
}

/// Builds the encoder from `config.json` and loads `model.safetensors` from `dir`; the pooler is
/// built when the checkpoint has one.
pub fn load(dir: &Path, device: &Device) -> Result<(BertConfig, Bert), ModelError> {
    let config = BertConfig::from_file(&dir.join("config.json"))?;
    let weights_path = dir.join("model.safetensors");
    let index = WeightsIndex::read(&weights_path)?;
    let mut model = config.init(has_pooler(&index, &PREFIXES), device);
    weights::check_sizes(&model, &weights_path)?;
    let names = weights::param_names(&model, upstream_name);
    weights::load_renamed(&mut model, &weights_path, &names, &PREFIXES)?;
    Ok((config, model))
}

/// What a `BertForSequenceClassification` or `BertModel` checkpoint puts before the encoder's names.
const PREFIXES: [&str; 2] = ["bert.", "model."];

/// Whether a checkpoint has `pooler.dense`, bare or under one of `prefixes`.
pub fn has_pooler(index: &WeightsIndex, prefixes: &[&str]) -> bool {
    std::iter::once("")
        .chain(prefixes.iter().copied())
        .any(|prefix| index.contains_any(&[&format!("{prefix}pooler.dense.weight")]))
}

/// Pooled features of an encoder's last hidden state: the shared pooling, with the pretrained
/// pooler when there is one.
pub fn pool(
    hidden: Tensor<3>,
    attention_mask: Option<Tensor<2, Int>>,
    pooler: Option<&BertPooler>,
    pooling: PoolingOptions,
) -> Tensor<2> {
    let pooler = pooler.map(|p| move |cls: Tensor<2>| p.forward(cls));
    let pooler = pooler
        .as_ref()
        .map(|p| p as &dyn Fn(Tensor<2>) -> Tensor<2>);
    pooling.pool(hidden, attention_mask, pooler)
}

/// A text family's features: its [`Architecture::forward_tokens`] pooled over the mask, with the
/// pretrained pooler when there is one. Every text family's `forward_features` is this, so the
/// pooled and the per-token outputs cannot drift apart.
pub fn pool_tokens(
    model: &dyn Architecture,
    inputs: Inputs,
    pooler: Option<&BertPooler>,
    pooling: PoolingOptions,
) -> Tensor<2> {
    let attention_mask = inputs.attention_mask();
    let hidden = model
        .forward_tokens(inputs)
        .expect("a text family gives per-token states");
    pool(hidden, attention_mask, pooler, pooling)
}

/// A text family's export layouts: when `sequence_classifier` names one (its class and the
/// backbone's prefix in it, `("BertForSequenceClassification", "bert.")`), transformers' sequence
/// classifier whose head is one linear `classifier` on graft's features; then sentence-transformers
/// over transformers' bare encoder class `base_model` (`BertModel`).
pub fn text_exports(
    base_model: &str,
    sequence_classifier: Option<(&str, &str)>,
) -> Vec<ExportTarget> {
    let transformers = sequence_classifier.map(|(model, prefix)| ExportTarget {
        format: ExportFormat::Transformers,
        model: model.into(),
        prefix: prefix.into(),
        classifier: "classifier".into(),
        classifier_copies: Vec::new(),
    });
    let sentence_transformers = ExportTarget {
        format: ExportFormat::SentenceTransformers,
        model: base_model.into(),
        prefix: String::new(),
        classifier: String::new(),
        classifier_copies: Vec::new(),
    };
    transformers
        .into_iter()
        .chain([sentence_transformers])
        .collect()
}

impl Architecture for Bert {
    fn name() -> &'static str {
        "bert"
    }

    fn detects(config: &Value) -> bool {
        let model_type = config.get("model_type").and_then(Value::as_str);
        let bert_class = config
            .get("architectures")
            .and_then(Value::as_array)
            .is_some_and(|list| {
                list.iter()
                    .filter_map(Value::as_str)
                    .any(|name| name.starts_with("Bert"))
            });
        model_type == Some("bert") || (model_type.is_none() && bert_class)
    }

    fn preprocessing(folder: &ModelFolder) -> Result<Preprocessing, ModelError> {
        let config = BertConfig::from_file(&folder.config_path())?;
        Ok(Preprocessing::Text(TextTransform {
            tokenizer: folder.tokenizer_path(),
            vocab_size: config.vocab_size,
            max_positions: config.max_position_embeddings,
            has_pooler: has_pooler(&folder.weights_index()?, &PREFIXES),
        }))
    }

    fn recognise(index: &WeightsIndex) -> Option<String> {
        let layers = index
            .tensors
            .keys()
            .filter(|k| k.ends_with("attention.self.query.weight"))
            .count();
        let embeddings = index
            .tensors
            .keys()
            .any(|k| k.ends_with("embeddings.word_embeddings.weight"));
        (layers > 0 && embeddings).then(|| format!("bert ({layers} layers)"))
    }

    fn native_head(folder: &ModelFolder) -> Result<Option<NativeHead>, ModelError> {
        // The pooler is the encoder's own, pretrained: the head is the classifier alone.
        let pooled = has_pooler(&folder.weights_index()?, &PREFIXES);
        Ok(pooled.then(|| NativeHead {
            model: "BertForSequenceClassification".into(),
            prefix: "bert.".into(),
            pooling: Pooling::Cls,
            use_pooler: true,
            transform: None,
            classifier: "classifier".into(),
        }))
    }

    fn load(folder: &ModelFolder, _classifier: bool, device: &Device) -> Result<Self, ModelError> {
        load(&folder.dir, device).map(|(_, model)| model)
    }

    fn describe(&self) -> String {
        format!("bert ({} layers)", self.num_layers())
    }

    fn feature_size(&self) -> usize {
        self.hidden_size()
    }

    fn forward_features(&self, inputs: Inputs, pooling: PoolingOptions) -> Tensor<2> {
        pool_tokens(self, inputs, self.pooler.as_ref(), pooling)
    }

    fn forward_tokens(&self, inputs: Inputs) -> Option<Tensor<3>> {
        let (input_ids, token_type_ids, attention_mask) = inputs.into_text();
        Some(self.forward(input_ids, token_type_ids, attention_mask))
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

    fn lora_targets(&self) -> &'static [&'static str] {
        &["query", "value"]
    }

    /// transformers' `BertForSequenceClassification` (its pooler, then a linear classifier), and
    /// sentence-transformers.
    fn exports(&self) -> Vec<ExportTarget> {
        text_exports(
            "BertModel",
            Some(("BertForSequenceClassification", "bert.")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_upstream_names_and_blocks() {
        let config = BertConfig {
            vocab_size: 10,
            hidden_size: 4,
            num_hidden_layers: 6,
            num_attention_heads: 2,
            intermediate_size: 8,
            hidden_act: "gelu".into(),
            max_position_embeddings: 16,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            pad_token_id: 0,
            position_embedding_type: None,
            is_decoder: false,
        };
        assert_eq!(config.check(), Ok(()));
        let decoder = BertConfig {
            is_decoder: true,
            ..config.clone()
        };
        assert!(decoder.check().unwrap_err().starts_with("is_decoder true"));
        #[allow(deprecated)]
        let bert = config.init(true, &Device::flex());
        assert_eq!(
            bert.upstream_name("encoder.layer.3.attention.self_attn.query.weight"),
            "encoder.layer.3.attention.self.query.weight"
        );
        assert_eq!(
            bert.block_of("encoder.layer.3.attention.self_attn.query.weight"),
            4
        );
        assert_eq!(
            Architecture::upstream_name(&bert, "embeddings.layer_norm.weight"),
            "embeddings.LayerNorm.weight"
        );
        assert_eq!(bert.block_of("embeddings.layer_norm.weight"), 0);
        assert_eq!(bert.block_of("pooler.dense.bias"), 6);
        assert_eq!(bert.num_blocks(), 7);
    }
}
