//! ModernBERT encoders (`model_type = "modernbert"`, e.g. ModernBERT-base, gte-modernbert) from a
//! Hugging Face folder: a config that reads `config.json` as older and current transformers write
//! it, modules named after the upstream tensor tree (`layers.N.attn.Wqkv`, `layers.N.mlp.Wi`), and
//! the forward pass. What makes ModernBERT itself: rotary position embeddings with separate thetas
//! for global and local layers, pre-norm layers without biases (the first layer has no attention
//! norm), a fused QKV projection, GeGLU, alternating global attention and sliding-window local
//! attention (`|query - key| <= local_attention / 2`), and a final norm.

use std::collections::BTreeMap;
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
use crate::bert::{self, HiddenAct};
use crate::native_head;
use crate::weights;
use crate::{ModelError, ModelFolder, NativeHead, Pooling, PoolingOptions, TransformSpec};

/// A layer's attention: over every token, or over a window around each token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerType {
    FullAttention,
    SlidingAttention,
}

/// One entry of `rope_parameters` (transformers 5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeParameters {
    /// transformers also takes the type from the older spelling `type`.
    #[serde(default, alias = "type")]
    pub rope_type: Option<String>,
    #[serde(default)]
    pub rope_theta: Option<f64>,
}

/// The fields of a ModernBERT `config.json` that shape the network, with transformers' defaults.
/// Older configs give `global_attn_every_n_layers`, `global_rope_theta` and `local_rope_theta`;
/// current ones `layer_types` and `rope_parameters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModernBertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_activation")]
    pub hidden_activation: String,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    #[serde(default)]
    pub norm_bias: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default = "default_local_attention")]
    pub local_attention: usize,
    #[serde(default = "default_global_every")]
    pub global_attn_every_n_layers: usize,
    #[serde(default)]
    pub layer_types: Option<Vec<LayerType>>,
    #[serde(default)]
    pub rope_parameters: Option<BTreeMap<String, RopeParameters>>,
    #[serde(default)]
    pub global_rope_theta: Option<f64>,
    #[serde(default)]
    pub local_rope_theta: Option<f64>,
    /// Older configs' RoPE scaling, which transformers merges into `rope_parameters`.
    #[serde(default)]
    pub rope_scaling: Option<Value>,
    #[serde(default)]
    pub embedding_dropout: f64,
    #[serde(default)]
    pub mlp_dropout: f64,
    #[serde(default)]
    pub attention_dropout: f64,
    #[serde(default = "default_classifier_pooling")]
    pub classifier_pooling: String,
    #[serde(default = "default_activation")]
    pub classifier_activation: String,
    #[serde(default)]
    pub classifier_bias: bool,
}

fn default_classifier_pooling() -> String {
    "cls".into()
}

fn default_activation() -> String {
    "gelu".into()
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_local_attention() -> usize {
    128
}
fn default_global_every() -> usize {
    3
}

impl ModernBertConfig {
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        crate::read_config(path, Self::check)
    }

    fn check(&self) -> Result<(), String> {
        if self.hidden_size == 0
            || self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
            || !(self.hidden_size / self.num_attention_heads).is_multiple_of(2)
        {
            return Err(format!(
                "hidden_size {} must be a multiple of num_attention_heads {} with an even head size",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.global_attn_every_n_layers == 0 {
            return Err("global_attn_every_n_layers must be positive".into());
        }
        if let Some(types) = &self.layer_types
            && types.len() != self.num_hidden_layers
        {
            return Err(format!(
                "layer_types has {} entries for {} layers",
                types.len(),
                self.num_hidden_layers
            ));
        }
        if let Some(scaling) = self.rope_scaling.as_ref().filter(|v| !v.is_null()) {
            let kind = scaling
                .get("rope_type")
                .or_else(|| scaling.get("type"))
                .and_then(Value::as_str);
            if kind != Some("default") {
                return Err(format!(
                    "rope_scaling {scaling} is not supported (graft computes default RoPE)"
                ));
            }
        }
        for (name, params) in self.rope_parameters.iter().flatten() {
            if params.rope_type.as_deref().is_some_and(|t| t != "default") {
                return Err(format!(
                    "rope_parameters.{name}.rope_type \"{}\" is not supported (default)",
                    params.rope_type.as_deref().unwrap_or_default()
                ));
            }
        }
        HiddenAct::parse(&self.hidden_activation)
            .map(|_| ())
            .ok_or_else(|| {
                format!(
                    "hidden_activation \"{}\" is not supported",
                    self.hidden_activation
                )
            })
    }

    /// Each layer's type: `layer_types`, else global every `global_attn_every_n_layers` from 0.
    pub fn layer_types(&self) -> Vec<LayerType> {
        self.layer_types.clone().unwrap_or_else(|| {
            (0..self.num_hidden_layers)
                .map(|i| {
                    if i % self.global_attn_every_n_layers == 0 {
                        LayerType::FullAttention
                    } else {
                        LayerType::SlidingAttention
                    }
                })
                .collect()
        })
    }

    /// The rotary theta of a layer type: `rope_parameters`, else the older keys, else
    /// transformers' defaults (160000 global, 10000 local).
    pub fn rope_theta(&self, layer_type: LayerType) -> f64 {
        let (key, older, default) = match layer_type {
            LayerType::FullAttention => ("full_attention", self.global_rope_theta, 160_000.0),
            LayerType::SlidingAttention => ("sliding_attention", self.local_rope_theta, 10_000.0),
        };
        self.rope_parameters
            .as_ref()
            .and_then(|p| p.get(key))
            .and_then(|p| p.rope_theta)
            .or(older)
            .unwrap_or(default)
    }

    pub fn init(&self, device: &Device) -> ModernBert {
        let h = self.hidden_size;
        let norm = || {
            LayerNormConfig::new(h)
                .with_epsilon(self.norm_eps)
                .with_bias(self.norm_bias)
                .init(device)
        };
        let act = HiddenAct::parse(&self.hidden_activation).unwrap_or(HiddenAct::Gelu);
        let layers = self
            .layer_types()
            .into_iter()
            .enumerate()
            .map(|(i, layer_type)| ModernBertLayer {
                attn_norm: (i > 0).then(norm),
                attn: ModernBertAttention {
                    wqkv: LinearConfig::new(h, 3 * h)
                        .with_bias(self.attention_bias)
                        .init(device),
                    wo: LinearConfig::new(h, h)
                        .with_bias(self.attention_bias)
                        .init(device),
                    dropout: DropoutConfig::new(self.attention_dropout).init(),
                    num_heads: self.num_attention_heads,
                },
                mlp_norm: norm(),
                mlp: ModernBertMlp {
                    wi: LinearConfig::new(h, 2 * self.intermediate_size)
                        .with_bias(self.mlp_bias)
                        .init(device),
                    wo: LinearConfig::new(self.intermediate_size, h)
                        .with_bias(self.mlp_bias)
                        .init(device),
                    drop: DropoutConfig::new(self.mlp_dropout).init(),
                    act,
                },
                layer_type,
            })
            .collect();
        ModernBert {
            embeddings: ModernBertEmbeddings {
                tok_embeddings: EmbeddingConfig::new(self.vocab_size, h).init(device),
                norm: norm(),
                drop: DropoutConfig::new(self.embedding_dropout).init(),
            },
            layers,
            final_norm: norm(),
            rope: Rope {
                global_theta: self.rope_theta(LayerType::FullAttention),
                local_theta: self.rope_theta(LayerType::SlidingAttention),
                window: self.local_attention / 2,
            },
        }
    }
}

#[derive(Module, Debug)]
pub struct ModernBertEmbeddings {
    pub tok_embeddings: Embedding,
    pub norm: LayerNorm,
    pub drop: Dropout,
}

/// `attn` upstream: the fused `Wqkv` and the output `Wo`.
#[derive(Module, Debug)]
pub struct ModernBertAttention {
    pub wqkv: Linear,
    pub wo: Linear,
    /// On the attention probabilities and the output (`attention_dropout`).
    pub dropout: Dropout,
    pub num_heads: usize,
}

/// Rotates each head's halves: `[-x2, x1]`.
fn rotate_half(x: Tensor<4>) -> Tensor<4> {
    let half = x.dims()[3] / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    Tensor::cat(vec![x2.neg(), x1], 3)
}

impl ModernBertAttention {
    /// `mask` is `[batch, heads, seq, seq]`, true where a key may not be seen; `cos` and `sin`
    /// are `[1, 1, seq, head_dim]`.
    fn forward(
        &self,
        x: Tensor<3>,
        mask: Option<Tensor<4, Bool>>,
        (cos, sin): (Tensor<4>, Tensor<4>),
    ) -> Tensor<3> {
        let [batch, seq_len, hidden] = x.dims();
        let head_dim = hidden / self.num_heads;
        // [batch, seq, 3, heads, head_dim] -> three [batch, heads, seq, head_dim]
        let qkv = adapters::linear(&self.wqkv, x.clone()).reshape([
            batch,
            seq_len,
            3,
            self.num_heads,
            head_dim,
        ]);
        // Q, K and V stay in the projection's [batch, seq, heads, head_dim] layout.
        let part = |i: usize| {
            qkv.clone()
                .narrow(2, i, 1)
                .reshape([batch, seq_len, self.num_heads, head_dim])
        };
        // The tables are f32; a model cast to half precision rotates in its own type.
        let dtype = qkv.dtype();
        let (cos, sin) = (
            cos.swap_dims(1, 2).cast(dtype),
            sin.swap_dims(1, 2).cast(dtype),
        );
        let rotate = |t: Tensor<4>| {
            let rotated = t.clone() * cos.clone() + rotate_half(t) * sin.clone();
            rotated.reshape([batch, seq_len, hidden])
        };
        let (q, k) = (rotate(part(0)), rotate(part(1)));
        let v = part(2).reshape([batch, seq_len, hidden]);
        let context = bert::attend_rows(q, k, v, self.num_heads, mask, None, None, &self.dropout);
        self.dropout.forward(adapters::linear(&self.wo, context))
    }
}

/// GeGLU: `Wo(act(input) * gate)`, input and gate the halves of `Wi`'s output.
#[derive(Module, Debug)]
pub struct ModernBertMlp {
    pub wi: Linear,
    pub wo: Linear,
    pub drop: Dropout,
    #[module(skip)]
    pub act: HiddenAct,
}

impl ModernBertMlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let both = adapters::linear(&self.wi, x);
        let half = both.dims()[2] / 2;
        let input = both.clone().narrow(2, 0, half);
        let gate = both.narrow(2, half, half);
        adapters::linear(&self.wo, self.drop.forward(self.act.apply(input) * gate))
    }
}

#[derive(Module, Debug)]
pub struct ModernBertLayer {
    /// Absent in the first layer (an identity upstream).
    pub attn_norm: Option<LayerNorm>,
    pub attn: ModernBertAttention,
    pub mlp_norm: LayerNorm,
    pub mlp: ModernBertMlp,
    #[module(skip)]
    pub layer_type: LayerType,
}

/// Rotary tables and the local window, from the config.
#[derive(Debug, Clone)]
pub struct Rope {
    pub global_theta: f64,
    pub local_theta: f64,
    /// Half the local window: a local layer sees keys at most this far away.
    pub window: usize,
}

impl Rope {
    /// `cos` and `sin` `[1, 1, seq, head_dim]` for positions `0..seq`, in f32 as transformers.
    fn tables(
        &self,
        theta: f64,
        seq_len: usize,
        head_dim: usize,
        device: &Device,
    ) -> (Tensor<4>, Tensor<4>) {
        let inv_freq: Vec<f32> = (0..head_dim / 2)
            .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
            .collect();
        let mut cos = Vec::with_capacity(seq_len * head_dim);
        let mut sin = Vec::with_capacity(seq_len * head_dim);
        for position in 0..seq_len {
            for _ in 0..2 {
                for &f in &inv_freq {
                    let angle = position as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        let table = |values: Vec<f32>| {
            Tensor::<4>::from_data(TensorData::new(values, [1, 1, seq_len, head_dim]), device)
        };
        (table(cos), table(sin))
    }

    /// `[1, 1, seq, seq]`, true where a key lies outside the local window.
    fn outside_window(&self, seq_len: usize, device: &Device) -> Tensor<4, Bool> {
        let outside: Vec<bool> = (0..seq_len)
            .flat_map(|q| (0..seq_len).map(move |k| q.abs_diff(k) > self.window))
            .collect();
        Tensor::<4, Bool>::from_data(TensorData::new(outside, [1, 1, seq_len, seq_len]), device)
    }
}

/// The encoder. Field names follow the upstream tensor names.
#[derive(Module, Debug)]
pub struct ModernBert {
    pub embeddings: ModernBertEmbeddings,
    pub layers: Vec<ModernBertLayer>,
    pub final_norm: LayerNorm,
    #[module(skip)]
    pub rope: Rope,
}

impl ModernBert {
    /// The last hidden state `[batch, seq, hidden]`. `attention_mask` is 1 for tokens, 0 for
    /// padding; `None` means no row is padded.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        let [batch, seq_len] = input_ids.dims();
        let device = input_ids.device();
        let e = &self.embeddings;
        let mut x = e
            .drop
            .forward(e.norm.forward(e.tok_embeddings.forward(input_ids)));
        let heads = self.layers.first().map_or(1, |l| l.attn.num_heads);
        let head_dim = self.hidden_size() / heads;
        let full = [batch, heads, seq_len, seq_len];
        let pad_mask = attention_mask.map(|mask| {
            mask.equal_elem(0)
                .reshape([batch, 1, 1, seq_len])
                .expand(full)
        });
        let local_mask = match (&pad_mask, seq_len > self.rope.window + 1) {
            (Some(pad), true) => Some(
                pad.clone()
                    .bool_or(self.rope.outside_window(seq_len, &device).expand(full)),
            ),
            (None, true) => Some(self.rope.outside_window(seq_len, &device).expand(full)),
            (pad, false) => pad.clone(),
        };
        let global_rope = self
            .rope
            .tables(self.rope.global_theta, seq_len, head_dim, &device);
        let local_rope = self
            .rope
            .tables(self.rope.local_theta, seq_len, head_dim, &device);
        for layer in &self.layers {
            let (mask, rope) = match layer.layer_type {
                LayerType::FullAttention => (pad_mask.clone(), global_rope.clone()),
                LayerType::SlidingAttention => (local_mask.clone(), local_rope.clone()),
            };
            let normed = match &layer.attn_norm {
                Some(norm) => norm.forward(x.clone()),
                None => x.clone(),
            };
            x = x + layer.attn.forward(normed, mask, rope);
            x = x.clone() + layer.mlp.forward(layer.mlp_norm.forward(x));
        }
        self.final_norm.forward(x)
    }

    fn hidden_size(&self) -> usize {
        self.embeddings.tok_embeddings.weight.dims()[1]
    }
}

/// Upstream names of the fields burn spells in snake case.
const RENAMES: &[(&str, &str)] = &[
    (".attn.wqkv.", ".attn.Wqkv."),
    (".attn.wo.", ".attn.Wo."),
    (".mlp.wi.", ".mlp.Wi."),
    (".mlp.wo.", ".mlp.Wo."),
];

/// Maps a module path (`layers.1.attn.wqkv.weight`) to its upstream name (`layers.1.attn.Wqkv.weight`).
pub fn upstream_name(path: &str) -> String {
    bert::rename_segments(path, RENAMES)
}

/// What a `ModernBertForSequenceClassification` or `...ForMaskedLM` checkpoint puts before the
/// encoder's names.
const PREFIXES: [&str; 1] = ["model."];

impl Architecture for ModernBert {
    fn name() -> &'static str {
        "modernbert"
    }

    fn detects(config: &Value) -> bool {
        config.get("model_type").and_then(Value::as_str) == Some("modernbert")
    }

    fn preprocessing(folder: &ModelFolder) -> Result<Preprocessing, ModelError> {
        let config = ModernBertConfig::from_file(&folder.config_path())?;
        Ok(Preprocessing::Text(TextTransform {
            tokenizer: folder.tokenizer_path(),
            vocab_size: config.vocab_size,
            max_positions: config.max_position_embeddings,
            has_pooler: false,
        }))
    }

    fn native_head(folder: &ModelFolder) -> Result<Option<NativeHead>, ModelError> {
        let config = ModernBertConfig::from_file(&folder.config_path())?;
        let pooling = match config.classifier_pooling.as_str() {
            "cls" => Pooling::Cls,
            "mean" => Pooling::Mean,
            other => {
                return Err(ModelError::Config {
                    path: folder.config_path(),
                    message: format!("classifier_pooling \"{other}\" is not cls or mean"),
                });
            }
        };
        let activation = native_head::activation(
            folder,
            "classifier_activation",
            &config.classifier_activation,
        )?;
        // ModernBertPredictionHead (dense, activation, norm), then dropout and the classifier.
        Ok(Some(NativeHead {
            model: "ModernBertForSequenceClassification".into(),
            prefix: "model.".into(),
            pooling,
            use_pooler: false,
            transform: Some(TransformSpec {
                dense: "head.dense".into(),
                width: config.hidden_size,
                dense_bias: config.classifier_bias,
                activation,
                norm: Some("head.norm".into()),
                norm_bias: config.norm_bias,
                norm_eps: config.norm_eps,
                dropout_before: false,
            }),
            classifier: "classifier".into(),
        }))
    }

    fn load(folder: &ModelFolder, _classifier: bool, device: &Device) -> Result<Self, ModelError> {
        let config = ModernBertConfig::from_file(&folder.config_path())?;
        let mut model = config.init(device);
        weights::check_sizes(&model, &folder.weights_path())?;
        let names = weights::param_names(&model, upstream_name);
        weights::load_renamed(&mut model, &folder.weights_path(), &names, &PREFIXES)?;
        Ok(model)
    }

    fn describe(&self) -> String {
        format!("modernbert ({} layers)", self.layers.len())
    }

    fn feature_size(&self) -> usize {
        self.hidden_size()
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

    /// The embeddings are block 0, layer i is block i + 1, the final norm counts with the last.
    fn block_of(&self, path: &str) -> usize {
        bert::block_of(path, "layers.", self.layers.len())
    }

    fn num_blocks(&self) -> usize {
        self.layers.len() + 1
    }

    /// PEFT has no default for ModernBERT; its queries, keys and values share `Wqkv`.
    fn lora_targets(&self) -> &'static [&'static str] {
        &["Wqkv"]
    }

    /// Sentence-transformers only: transformers' `ModernBertForSequenceClassification` head is
    /// its own (dense + activation + norm), not a linear layer on graft's features.
    fn exports(&self) -> Vec<ExportTarget> {
        bert::text_exports("ModernBertModel", None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> ModernBertConfig {
        serde_json::from_str(&format!(
            r#"{{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 12,
                "num_hidden_layers": 4, "num_attention_heads": 2,
                "max_position_embeddings": 64{extra}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn older_and_current_configs_read_alike() {
        let older = config(
            r#", "global_attn_every_n_layers": 2, "global_rope_theta": 1000.0,
                "local_rope_theta": 50.0"#,
        );
        let current = config(
            r#", "layer_types": ["full_attention", "sliding_attention", "full_attention",
                "sliding_attention"], "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": 1000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 50.0}}"#,
        );
        for c in [&older, &current] {
            assert_eq!(c.layer_types(), current.layer_types.clone().unwrap());
            assert_eq!(c.rope_theta(LayerType::FullAttention), 1000.0);
            assert_eq!(c.rope_theta(LayerType::SlidingAttention), 50.0);
        }
        let defaults = config("");
        assert_eq!(defaults.rope_theta(LayerType::FullAttention), 160_000.0);
        assert_eq!(defaults.layer_types()[3], LayerType::FullAttention);
        assert_eq!(defaults.layer_types()[1], LayerType::SlidingAttention);
        assert!(
            config(r#", "rope_parameters": {"full_attention": {"rope_type": "yarn"}}"#)
                .check()
                .is_err()
        );
        // The older spelling of the type, and the older scaling key, are read, not ignored.
        let older_type = config(r#", "rope_parameters": {"full_attention": {"type": "linear"}}"#);
        assert!(
            older_type
                .check()
                .unwrap_err()
                .contains("rope_type \"linear\"")
        );
        let scaled = config(r#", "rope_scaling": {"type": "linear", "factor": 2.0}"#);
        assert!(scaled.check().unwrap_err().starts_with("rope_scaling"));
        assert_eq!(config(r#", "rope_scaling": null"#).check(), Ok(()));
    }

    #[test]
    fn names_are_upstreams() {
        assert_eq!(
            upstream_name("layers.2.attn.wqkv.weight"),
            "layers.2.attn.Wqkv.weight"
        );
        assert_eq!(
            upstream_name("layers.0.mlp.wo.weight"),
            "layers.0.mlp.Wo.weight"
        );
        assert_eq!(upstream_name("final_norm.gamma"), "final_norm.gamma");
    }
}
