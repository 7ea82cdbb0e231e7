//! DeBERTa-v2 and DeBERTa-v3 encoders (`model_type = "deberta-v2"`) from a Hugging Face folder: a
//! config that mirrors `config.json` (transformers' defaults, `pos_att_type` as a list or the older
//! `"p2c|c2p"` string), modules named after the upstream tensor tree, and the forward pass. What
//! makes DeBERTa itself is disentangled attention: besides content-to-content scores, each layer
//! adds content-to-position (`c2p`) and position-to-content (`p2c`) scores against shared relative
//! position embeddings (`encoder.rel_embeddings`, LayerNorm-ed when `norm_rel_ebd` says so), with
//! relative distances in log buckets (`position_buckets`, `max_relative_positions`), projected by
//! the layer's own query/key projections (`share_att_key`) or separate ones; the scale counts the
//! score kinds. The embeddings may omit absolute positions (`position_biased_input`), add token
//! types, project a narrower `embedding_size`, and zero padded positions.

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
use crate::bert::{self, BertIntermediate, BertOutput, HiddenAct};
use crate::native_head;
use crate::weights;
use crate::{ModelError, ModelFolder, NativeHead, Pooling, PoolingOptions, TransformSpec};

/// The fields of a DeBERTa-v2 `config.json` that shape the network, with transformers' defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DebertaV2Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default)]
    pub relative_attention: bool,
    #[serde(default = "minus_one")]
    pub max_relative_positions: i64,
    #[serde(default = "default_true")]
    pub position_biased_input: bool,
    /// A list (`["p2c", "c2p"]`), a string (`"p2c|c2p"`) or null.
    #[serde(default)]
    pub pos_att_type: Value,
    #[serde(default = "minus_one")]
    pub position_buckets: i64,
    #[serde(default)]
    pub share_att_key: bool,
    #[serde(default = "default_norm_rel_ebd")]
    pub norm_rel_ebd: String,
    #[serde(default)]
    pub embedding_size: Option<usize>,
    #[serde(default)]
    pub conv_kernel_size: usize,
    #[serde(default)]
    pub z_steps: usize,
    #[serde(default)]
    pub attention_head_size: Option<usize>,
    #[serde(default)]
    pub pooler_hidden_size: Option<usize>,
    #[serde(default = "default_hidden_act")]
    pub pooler_hidden_act: String,
}

fn default_hidden_act() -> String {
    "gelu".into()
}
fn default_layer_norm_eps() -> f64 {
    1e-7
}
fn default_dropout() -> f64 {
    0.1
}
fn minus_one() -> i64 {
    -1
}
fn default_true() -> bool {
    true
}
fn default_norm_rel_ebd() -> String {
    "none".into()
}

impl DebertaV2Config {
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        crate::read_config(path, Self::check)
    }

    fn check(&self) -> Result<(), String> {
        bert::check_heads(self.hidden_size, self.num_attention_heads)?;
        if self
            .attention_head_size
            .is_some_and(|size| size * self.num_attention_heads != self.hidden_size)
        {
            return Err(
                "attention_head_size other than hidden_size / heads is not supported".into(),
            );
        }
        if self.conv_kernel_size > 0 {
            return Err(
                "conv_kernel_size > 0 (DeBERTa-v2's convolution layer) is not supported".into(),
            );
        }
        if self.z_steps > 1 {
            return Err("z_steps > 1 is not supported".into());
        }
        let kinds = self.pos_att_types()?;
        for kind in &kinds {
            if kind != "c2p" && kind != "p2c" {
                return Err(format!(
                    "pos_att_type \"{kind}\" is not supported (c2p, p2c)"
                ));
            }
        }
        if !kinds.is_empty() && !self.relative_attention {
            // transformers still divides the scores by sqrt(head size x (1 + kinds)) then.
            return Err(
                "pos_att_type without relative_attention is not supported (transformers scales \
                 the scores by the missing terms)"
                    .into(),
            );
        }
        HiddenAct::parse(&self.hidden_act)
            .map(|_| ())
            .ok_or_else(|| format!("hidden_act \"{}\" is not supported", self.hidden_act))
    }

    /// `pos_att_type` as a list, whichever way the config spells it.
    pub fn pos_att_types(&self) -> Result<Vec<String>, String> {
        match &self.pos_att_type {
            Value::Null => Ok(Vec::new()),
            Value::String(s) => Ok(s
                .to_lowercase()
                .split('|')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect()),
            Value::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("pos_att_type: {v} is not a string"))
                })
                .collect(),
            other => Err(format!("pos_att_type: {other} is not a list or a string")),
        }
    }

    /// The largest relative distance: `max_relative_positions`, or the absolute positions.
    fn max_relative(&self) -> i64 {
        if self.max_relative_positions < 1 {
            self.max_position_embeddings as i64
        } else {
            self.max_relative_positions
        }
    }

    fn relative(&self) -> Relative {
        Relative {
            span: if self.position_buckets > 0 {
                self.position_buckets
            } else {
                self.max_relative()
            },
            buckets: self.position_buckets,
            max_position: self.max_relative(),
        }
    }

    pub fn init(&self, device: &Device) -> Deberta {
        let h = self.hidden_size;
        let e = self.embedding_size.unwrap_or(h);
        let (norm_eps, dropout_prob) = (self.layer_norm_eps, self.hidden_dropout_prob);
        let layer_norm = || LayerNormConfig::new(h).with_epsilon(norm_eps).init(device);
        let dropout = || DropoutConfig::new(dropout_prob).init();
        let kinds = self.pos_att_types().unwrap_or_default();
        let (c2p, p2c) = (
            kinds.iter().any(|k| k == "c2p"),
            kinds.iter().any(|k| k == "p2c"),
        );
        let separate = self.relative_attention && !self.share_att_key;
        let act = HiddenAct::parse(&self.hidden_act).unwrap_or(HiddenAct::Gelu);
        let layer = (0..self.num_hidden_layers)
            .map(|_| DebertaLayer {
                attention: DebertaAttention {
                    self_attn: DisentangledSelfAttention {
                        query_proj: LinearConfig::new(h, h).init(device),
                        key_proj: LinearConfig::new(h, h).init(device),
                        value_proj: LinearConfig::new(h, h).init(device),
                        pos_key_proj: (separate && c2p)
                            .then(|| LinearConfig::new(h, h).init(device)),
                        pos_query_proj: (separate && p2c)
                            .then(|| LinearConfig::new(h, h).init(device)),
                        dropout: DropoutConfig::new(self.attention_probs_dropout_prob).init(),
                        pos_dropout: dropout(),
                        num_heads: self.num_attention_heads,
                        c2p: self.relative_attention && c2p,
                        p2c: self.relative_attention && p2c,
                    },
                    output: BertOutput::new(h, h, norm_eps, dropout_prob, device),
                },
                intermediate: BertIntermediate {
                    dense: LinearConfig::new(h, self.intermediate_size).init(device),
                },
                output: BertOutput::new(self.intermediate_size, h, norm_eps, dropout_prob, device),
                act,
            })
            .collect();
        let relative = self.relative();
        Deberta {
            embeddings: DebertaEmbeddings {
                word_embeddings: EmbeddingConfig::new(self.vocab_size, e).init(device),
                position_embeddings: self
                    .position_biased_input
                    .then(|| EmbeddingConfig::new(self.max_position_embeddings, e).init(device)),
                token_type_embeddings: (self.type_vocab_size > 0)
                    .then(|| EmbeddingConfig::new(self.type_vocab_size, e).init(device)),
                embed_proj: (e != h).then(|| LinearConfig::new(e, h).with_bias(false).init(device)),
                layer_norm: layer_norm(),
                dropout: dropout(),
            },
            encoder: DebertaEncoder {
                layer,
                rel_embeddings: self
                    .relative_attention
                    .then(|| EmbeddingConfig::new(2 * relative.span as usize, h).init(device)),
                layer_norm: (self.relative_attention
                    && self
                        .norm_rel_ebd
                        .to_lowercase()
                        .split('|')
                        .any(|n| n.trim() == "layer_norm"))
                .then(layer_norm),
            },
            relative,
        }
    }
}

#[derive(Module, Debug)]
pub struct DebertaEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Option<Embedding>,
    pub token_type_embeddings: Option<Embedding>,
    pub embed_proj: Option<Linear>,
    pub layer_norm: LayerNorm,
    pub dropout: Dropout,
}

impl DebertaEmbeddings {
    fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Tensor<2, Int>,
        attention_mask: Option<&Tensor<2, Int>>,
    ) -> Tensor<3> {
        let [_, seq_len] = input_ids.dims();
        let device = input_ids.device();
        let mut x = self.word_embeddings.forward(input_ids);
        if let Some(position) = &self.position_embeddings {
            let positions =
                Tensor::<1, Int>::arange(0..seq_len as i64, &device).reshape([1, seq_len]);
            x = x + position.forward(positions);
        }
        if let Some(token_type) = &self.token_type_embeddings {
            x = x + token_type.forward(token_type_ids);
        }
        if let Some(project) = &self.embed_proj {
            x = adapters::linear(project, x);
        }
        let mut x = self.layer_norm.forward(x);
        if let Some(mask) = attention_mask {
            // Padded positions are zeroed, as transformers does.
            let dtype = x.dtype();
            x = x * mask.clone().float().cast(dtype).unsqueeze_dim(2);
        }
        self.dropout.forward(x)
    }
}

/// `attention.self` upstream.
#[derive(Module, Debug)]
pub struct DisentangledSelfAttention {
    pub query_proj: Linear,
    pub key_proj: Linear,
    pub value_proj: Linear,
    pub pos_key_proj: Option<Linear>,
    pub pos_query_proj: Option<Linear>,
    pub dropout: Dropout,
    pub pos_dropout: Dropout,
    pub num_heads: usize,
    pub c2p: bool,
    pub p2c: bool,
}

/// Relative positions: the embedding span and how distances are bucketed.
#[derive(Debug, Clone, Copy)]
pub struct Relative {
    /// Half the number of relative embeddings (`position_buckets`, else `max_relative_positions`).
    pub span: i64,
    pub buckets: i64,
    pub max_position: i64,
}

impl Relative {
    /// transformers' `make_log_bucket_position`, in f32 as PyTorch computes it.
    fn bucket(&self, relative: i64) -> i64 {
        if self.buckets <= 0 || self.max_position <= 0 {
            return relative;
        }
        let mid = self.buckets / 2;
        let abs_pos = if relative < mid && relative > -mid {
            mid - 1
        } else {
            relative.abs()
        };
        if abs_pos <= mid {
            return relative;
        }
        let log_pos = ((abs_pos as f32 / mid as f32).ln()
            / ((self.max_position - 1) as f32 / mid as f32).ln()
            * (mid - 1) as f32)
            .ceil()
            + mid as f32;
        log_pos as i64 * relative.signum()
    }

    /// Gather indices `[seq, seq]` into the `2 * span` relative embeddings: c2p's at
    /// `[query][key]`, and p2c's at `[key][query]` (transposed after the gather).
    fn indices(&self, seq_len: usize) -> (Vec<i64>, Vec<i64>) {
        let clamp = |v: i64| v.clamp(0, 2 * self.span - 1);
        let relative = |q: usize, k: usize| self.bucket(q as i64 - k as i64);
        let mut c2p = Vec::with_capacity(seq_len * seq_len);
        let mut p2c = Vec::with_capacity(seq_len * seq_len);
        for x in 0..seq_len {
            for y in 0..seq_len {
                c2p.push(clamp(relative(x, y) + self.span));
                p2c.push(clamp(-relative(x, y) + self.span));
            }
        }
        (c2p, p2c)
    }
}

impl DisentangledSelfAttention {
    fn heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [batch, seq_len, hidden] = x.dims();
        x.reshape([batch, seq_len, self.num_heads, hidden / self.num_heads])
            .swap_dims(1, 2)
    }

    /// `pad_mask` is `[batch, heads, seq, seq]`, true where the key is padding; `rel` holds the
    /// relative embeddings `[2 * span, hidden]` and the gather indices `[seq, seq]`.
    fn forward(
        &self,
        x: Tensor<3>,
        pad_mask: Option<Tensor<4, Bool>>,
        rel: Option<(&Tensor<2>, &Tensor<2, Int>, &Tensor<2, Int>)>,
    ) -> Tensor<3> {
        let [batch, seq_len, hidden] = x.dims();
        let head_dim = hidden / self.num_heads;
        let [q_rows, k_rows, v_rows] =
            bert::project_qkv([&self.query_proj, &self.key_proj, &self.value_proj], x);
        let (q, k) = (self.heads(q_rows.clone()), self.heads(k_rows.clone()));
        let kinds = 1 + self.c2p as usize + self.p2c as usize;
        let scale = ((head_dim * kinds) as f32).sqrt() as f64;
        let bias = rel.and_then(|(embeddings, c2p_index, p2c_index)| {
            let embeddings = self
                .pos_dropout
                .forward(embeddings.clone())
                .unsqueeze_dim(0);
            let full = [batch, self.num_heads, seq_len, seq_len];
            let mut bias: Option<Tensor<4>> = None;
            let mut add = |term: Tensor<4>| {
                bias = Some(match bias.take() {
                    Some(b) => b + term,
                    None => term,
                });
            };
            if self.c2p {
                let projection = self.pos_key_proj.as_ref().unwrap_or(&self.key_proj);
                let pos_key = self.heads(adapters::linear(projection, embeddings.clone()));
                let scores = q.clone().matmul(pos_key.swap_dims(2, 3));
                let index = c2p_index.clone().unsqueeze::<4>().expand(full);
                add(scores.gather(3, index) / scale);
            }
            if self.p2c {
                let projection = self.pos_query_proj.as_ref().unwrap_or(&self.query_proj);
                let pos_query = self.heads(adapters::linear(projection, embeddings));
                let scores = k.clone().matmul(pos_query.swap_dims(2, 3));
                let index = p2c_index.clone().unsqueeze::<4>().expand(full);
                add(scores.gather(3, index).swap_dims(2, 3) / scale);
            }
            bias
        });
        let heads = self.num_heads;
        bert::attend_rows(
            q_rows,
            k_rows,
            v_rows,
            heads,
            pad_mask,
            bias,
            Some(scale),
            &self.dropout,
        )
    }
}

#[derive(Module, Debug)]
pub struct DebertaAttention {
    pub self_attn: DisentangledSelfAttention,
    pub output: BertOutput,
}

#[derive(Module, Debug)]
pub struct DebertaLayer {
    pub attention: DebertaAttention,
    pub intermediate: BertIntermediate,
    pub output: BertOutput,
    #[module(skip)]
    pub act: HiddenAct,
}

#[derive(Module, Debug)]
pub struct DebertaEncoder {
    pub layer: Vec<DebertaLayer>,
    pub rel_embeddings: Option<Embedding>,
    /// `encoder.LayerNorm`, on the relative embeddings (`norm_rel_ebd = "layer_norm"`).
    pub layer_norm: Option<LayerNorm>,
}

/// The encoder. Field names follow the upstream tensor names.
#[derive(Module, Debug)]
pub struct Deberta {
    pub embeddings: DebertaEmbeddings,
    pub encoder: DebertaEncoder,
    #[module(skip)]
    pub relative: Relative,
}

impl Deberta {
    /// The last hidden state `[batch, seq, hidden]`. `attention_mask` is 1 for tokens, 0 for
    /// padding; `None` means no row is padded.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        let [batch, seq_len] = input_ids.dims();
        let device = input_ids.device();
        let mut x = self
            .embeddings
            .forward(input_ids, token_type_ids, attention_mask.as_ref());
        let heads = self
            .encoder
            .layer
            .first()
            .map_or(1, |l| l.attention.self_attn.num_heads);
        let pad_mask = attention_mask.map(|mask| {
            mask.equal_elem(0)
                .reshape([batch, 1, 1, seq_len])
                .expand([batch, heads, seq_len, seq_len])
        });
        let rel = self.encoder.rel_embeddings.as_ref().map(|embedding| {
            let weights = embedding.weight.val();
            let weights = match &self.encoder.layer_norm {
                Some(norm) => norm.forward(weights),
                None => weights,
            };
            let (c2p, p2c) = self.relative.indices(seq_len);
            let index = |v: Vec<i64>| {
                Tensor::<2, Int>::from_data(TensorData::new(v, [seq_len, seq_len]), &device)
            };
            (weights, index(c2p), index(p2c))
        });
        for layer in &self.encoder.layer {
            let rel = rel.as_ref().map(|(w, c, p)| (w, c, p));
            let attended = layer
                .attention
                .self_attn
                .forward(x.clone(), pad_mask.clone(), rel);
            let x1 = layer.attention.output.forward(attended, x);
            x = bert::feed_forward(layer.act, &layer.intermediate, &layer.output, x1);
        }
        x
    }

    fn num_layers(&self) -> usize {
        self.encoder.layer.len()
    }
}

/// What a `DebertaV2ForSequenceClassification` checkpoint puts before the encoder's names.
const PREFIXES: [&str; 1] = ["deberta."];

impl Architecture for Deberta {
    fn name() -> &'static str {
        "deberta-v2"
    }

    fn detects(config: &Value) -> bool {
        config.get("model_type").and_then(Value::as_str) == Some("deberta-v2")
    }

    fn preprocessing(folder: &ModelFolder) -> Result<Preprocessing, ModelError> {
        let config = DebertaV2Config::from_file(&folder.config_path())?;
        // Without absolute positions, the relative ones bound nothing: transformers' tokenizers
        // stop at max_position_embeddings all the same.
        Ok(Preprocessing::Text(TextTransform {
            tokenizer: folder.tokenizer_path(),
            vocab_size: config.vocab_size,
            max_positions: config.max_position_embeddings,
            has_pooler: false,
        }))
    }

    fn native_head(folder: &ModelFolder) -> Result<Option<NativeHead>, ModelError> {
        let config = DebertaV2Config::from_file(&folder.config_path())?;
        let width = config.pooler_hidden_size.unwrap_or(config.hidden_size);
        if width != config.hidden_size {
            return Err(ModelError::Config {
                path: folder.config_path(),
                message: format!(
                    "pooler_hidden_size {width} differs from hidden_size {}: transformers' \
                     classifier reads hidden_size features",
                    config.hidden_size
                ),
            });
        }
        let activation =
            native_head::activation(folder, "pooler_hidden_act", &config.pooler_hidden_act)?;
        // ContextPooler: dropout, pooler.dense and the activation on the first token.
        Ok(Some(NativeHead {
            model: "DebertaV2ForSequenceClassification".into(),
            prefix: "deberta.".into(),
            pooling: Pooling::Cls,
            use_pooler: false,
            transform: Some(TransformSpec::dense(
                "pooler.dense",
                width,
                activation,
                true,
            )),
            classifier: "classifier".into(),
        }))
    }

    fn load(folder: &ModelFolder, _classifier: bool, device: &Device) -> Result<Self, ModelError> {
        let config = DebertaV2Config::from_file(&folder.config_path())?;
        let mut model = config.init(device);
        weights::check_sizes(&model, &folder.weights_path())?;
        let names = weights::param_names(&model, bert::upstream_name);
        weights::load_renamed(&mut model, &folder.weights_path(), &names, &PREFIXES)?;
        Ok(model)
    }

    fn describe(&self) -> String {
        format!("deberta-v2 ({} layers)", self.num_layers())
    }

    fn feature_size(&self) -> usize {
        self.embeddings.layer_norm.gamma.dims()[0]
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

    /// The embeddings and the shared relative embeddings (and their norm) are block 0; layer i
    /// is block i + 1.
    fn block_of(&self, path: &str) -> usize {
        bert::layer_index(path, "encoder.layer.").map_or(0, |i| i + 1)
    }

    fn num_blocks(&self) -> usize {
        self.num_layers() + 1
    }

    fn lora_targets(&self) -> &'static [&'static str] {
        &["query_proj", "value_proj"]
    }

    /// Sentence-transformers only: transformers' `DebertaV2ForSequenceClassification` head is
    /// its ContextPooler + classifier, not a linear layer on graft's features.
    fn exports(&self) -> Vec<ExportTarget> {
        bert::text_exports("DebertaV2Model", None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_buckets_are_transformers() {
        // DeBERTa-v3 base: 256 buckets over 512 positions.
        let v3 = Relative {
            span: 256,
            buckets: 256,
            max_position: 512,
        };
        for (relative, bucket) in [
            (0, 0),
            (5, 5),
            (-128, -128),
            (129, 129),
            (200, 169),
            (-511, -255),
        ] {
            assert_eq!(v3.bucket(relative), bucket, "{relative}");
        }
        let plain = Relative {
            span: 16,
            buckets: -1,
            max_position: 16,
        };
        assert_eq!(plain.bucket(40), 40);
        let (c2p, p2c) = plain.indices(40);
        assert_eq!(c2p[39], 0, "query 0, key 39: clamped");
        assert_eq!(p2c[39], 31);
    }

    #[test]
    fn pos_att_type_reads_both_spellings() {
        let mut config: DebertaV2Config = serde_json::from_str(
            r#"{"vocab_size": 8, "hidden_size": 8, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 8,
                "max_position_embeddings": 16, "pos_att_type": "p2c|c2p"}"#,
        )
        .unwrap();
        assert_eq!(config.pos_att_types().unwrap(), ["p2c", "c2p"]);
        config.pos_att_type = serde_json::json!(["c2p"]);
        assert_eq!(config.pos_att_types().unwrap(), ["c2p"]);
        config.pos_att_type = serde_json::json!("p2p");
        assert!(config.check().is_err());
        // The test config has no relative attention: any kind is refused.
        config.pos_att_type = serde_json::json!(["c2p"]);
        assert!(
            config
                .check()
                .unwrap_err()
                .starts_with("pos_att_type without")
        );
        config.relative_attention = true;
        assert_eq!(config.check(), Ok(()));
    }
}
