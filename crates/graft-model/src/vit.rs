//! Vision transformers: ViT, DeiT (with its distillation token), DINOv2 (layer scale, register
//! tokens) and CLIP's image tower (pre-norm, quick GELU, `post_layernorm` on the pooled token and
//! the `visual_projection` for image embeddings), from transformers folders (`model_type` `vit`,
//! `deit`, `dinov2`, `dinov2_with_registers`, `clip_vision_model`, `clip`) or timm folders
//! (`vit_*`, `deit_*`, `vit_*_dinov2`). One network
//! covers them: a patch embedding, prefix tokens, position embeddings resampled to the input's
//! grid as the folder's library resamples them, pre-norm blocks, a final norm and the pooling the
//! checkpoint's classifier uses. Module paths follow timm's names; [`VitConfig::upstream_name`]
//! maps them to transformers' when the folder is one.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backbone::{Architecture, ExportFormat, ExportTarget, Inputs, Naming, Preprocessing};
use crate::bert::{self, HiddenAct};
use crate::{ModelError, ModelFolder, PoolingOptions, WeightsIndex, adapters, vision, weights};

/// Which library's folder and names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VitLayout {
    Transformers,
    Timm,
}

/// The member of the family, which decides transformers' names and classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VitFamily {
    Vit,
    Deit,
    Dinov2,
    Clip,
}

/// What the classifier reads from the last hidden state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VitPool {
    /// The class token.
    Token,
    /// The mean of the class and distillation tokens (timm's distilled DeiT).
    TokenAndDistillation,
    /// The mean of the patch tokens, then `fc_norm` (timm's `global_pool = "avg"`).
    Avg,
    /// The class token concatenated with the mean of the patch tokens (transformers' DINOv2
    /// classifier).
    TokenAndMean,
}

/// How position embeddings are resampled to another grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resample {
    /// PyTorch's bicubic (`align_corners=False`, A = -0.75), as transformers does.
    Bicubic,
    /// PyTorch's antialiased bicubic (A = -0.5, support widened when shrinking), as timm does.
    BicubicAntialias,
}

/// Everything that shapes the network, read from a transformers or timm `config.json` and the
/// weights' shapes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    pub layout: VitLayout,
    pub family: VitFamily,
    /// transformers: the model prefix (`vit.`); timm: empty.
    pub prefix: String,
    /// timm: the model name (`vit_small_patch16_224`).
    pub timm_name: Option<String>,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub mlp_size: usize,
    pub patch_size: usize,
    /// Side of the grid the position embeddings were trained for.
    pub grid: usize,
    /// The input side the folder asks for.
    pub image_size: usize,
    pub eps: f64,
    pub activation: HiddenAct,
    pub qkv_bias: bool,
    pub layer_scale: bool,
    pub class_token: bool,
    pub distillation_token: bool,
    pub register_tokens: usize,
    /// Whether the position embeddings cover the class (and distillation) tokens.
    pub pos_covers_prefix: bool,
    pub mask_token: bool,
    /// A LayerNorm before the blocks (CLIP's `pre_layrnorm`, timm's `norm_pre`).
    pub pre_norm: bool,
    /// The patch convolution has a bias (CLIP's has none).
    pub patch_bias: bool,
    /// CLIP: the width of `visual_projection`, when the folder has it.
    pub projection: Option<usize>,
    pub final_norm: bool,
    pub fc_norm: bool,
    pub pool: VitPool,
    pub resample: Resample,
    /// Classes of the checkpoint's classifier (0 for none).
    pub num_classes: usize,
}

/// `[1, n, hidden]` tokens.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    pub proj: Conv2d,
}

#[derive(Module, Debug)]
pub struct LayerScale {
    pub gamma: Param<Tensor<1>>,
}

#[derive(Module, Debug)]
pub struct VitAttention {
    /// timm: one fused projection.
    pub qkv: Option<Linear>,
    /// transformers: separate projections.
    pub query: Option<Linear>,
    pub key: Option<Linear>,
    pub value: Option<Linear>,
    pub proj: Linear,
    pub dropout: Dropout,
    #[module(skip)]
    pub heads: usize,
}

#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
    #[module(skip)]
    pub activation: HiddenAct,
}

#[derive(Module, Debug)]
pub struct VitBlock {
    pub norm1: LayerNorm,
    pub attn: VitAttention,
    pub ls1: Option<LayerScale>,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    pub ls2: Option<LayerScale>,
}

#[derive(Module, Debug)]
pub struct Vit {
    pub patch_embed: PatchEmbed,
    pub cls_token: Option<Param<Tensor<3>>>,
    pub dist_token: Option<Param<Tensor<3>>>,
    pub reg_token: Option<Param<Tensor<3>>>,
    pub mask_token: Option<Param<Tensor<2>>>,
    pub pos_embed: Option<Param<Tensor<3>>>,
    /// CLIP's class token (a vector) and position table (an embedding).
    pub class_embedding: Option<Param<Tensor<1>>>,
    pub position_embedding: Option<Embedding>,
    pub pre_norm: Option<LayerNorm>,
    pub blocks: Vec<VitBlock>,
    pub norm: Option<LayerNorm>,
    pub fc_norm: Option<LayerNorm>,
    /// The checkpoint's classifier (`head`), when kept.
    pub head: Option<Linear>,
    /// timm's distilled DeiT: the classifier of the distillation token (`head_dist`), only while
    /// loading.
    pub head_dist: Option<Linear>,
    /// CLIP's `visual_projection` (image embeddings).
    pub projection: Option<Linear>,
    #[module(skip)]
    pub config: VitConfig,
}

impl VitAttention {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let width = x.dims()[2];
        let [q, k, v] = match (&self.qkv, &self.query, &self.key, &self.value) {
            (Some(qkv), ..) => {
                let qkv = adapters::linear(qkv, x);
                [0, 1, 2].map(|i| qkv.clone().narrow(2, i * width, width))
            }
            (None, Some(q), Some(k), Some(v)) => bert::project_qkv([q, k, v], x),
            _ => unreachable!("built with qkv or query, key and value"),
        };
        let context = bert::attend_rows(q, k, v, self.heads, None, None, None, &self.dropout);
        adapters::linear(&self.proj, context)
    }
}

impl LayerScale {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let width = self.gamma.dims()[0];
        x * self.gamma.val().reshape([1, 1, width])
    }
}

impl VitBlock {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let scaled = |ls: &Option<LayerScale>, y: Tensor<3>| match ls {
            Some(ls) => ls.forward(y),
            None => y,
        };
        let y = self.attn.forward(self.norm1.forward(x.clone()));
        let x = x + scaled(&self.ls1, y);
        let hidden = self
            .mlp
            .activation
            .apply_linear(&self.mlp.fc1, self.norm2.forward(x.clone()));
        let y = adapters::linear(&self.mlp.fc2, hidden);
        x + scaled(&self.ls2, y)
    }
}

impl VitConfig {
    /// Tokens before the patches.
    pub fn prefix_tokens(&self) -> usize {
        usize::from(self.class_token) + usize::from(self.distillation_token) + self.register_tokens
    }

    pub fn feature_size(&self) -> usize {
        match self.pool {
            VitPool::TokenAndMean => 2 * self.hidden_size,
            _ => self.hidden_size,
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.num_heads == 0 || !self.hidden_size.is_multiple_of(self.num_heads) {
            return Err(format!(
                "hidden size {} is not a multiple of {} heads",
                self.hidden_size, self.num_heads
            ));
        }
        if self.patch_size == 0 || self.grid == 0 {
            return Err("patch size and grid must be positive".into());
        }
        Ok(())
    }

    /// The network with burn's default initialization (every value is then loaded).
    pub fn init(&self, device: &Device) -> Vit {
        let h = self.hidden_size;
        let norm = || LayerNormConfig::new(h).with_epsilon(self.eps).init(device);
        let linear = |i, o, bias: bool| LinearConfig::new(i, o).with_bias(bias).init(device);
        let token = |n: usize| Param::from_tensor(Tensor::<3>::zeros([1, n, h], device));
        let scale = || {
            self.layer_scale.then(|| LayerScale {
                gamma: Param::from_tensor(Tensor::ones([h], device)),
            })
        };
        let fused = self.layout == VitLayout::Timm;
        let blocks = (0..self.num_layers)
            .map(|_| VitBlock {
                norm1: norm(),
                attn: VitAttention {
                    qkv: fused.then(|| linear(h, 3 * h, self.qkv_bias)),
                    query: (!fused).then(|| linear(h, h, self.qkv_bias)),
                    key: (!fused).then(|| linear(h, h, self.qkv_bias)),
                    value: (!fused).then(|| linear(h, h, self.qkv_bias)),
                    proj: linear(h, h, true),
                    dropout: DropoutConfig::new(0.0).init(),
                    heads: self.num_heads,
                },
                ls1: scale(),
                norm2: norm(),
                mlp: Mlp {
                    fc1: linear(h, self.mlp_size, true),
                    fc2: linear(self.mlp_size, h, true),
                    activation: self.activation,
                },
                ls2: scale(),
            })
            .collect();
        let covered = if self.pos_covers_prefix {
            usize::from(self.class_token) + usize::from(self.distillation_token)
        } else {
            0
        };
        let clip = self.family == VitFamily::Clip && self.layout == VitLayout::Transformers;
        let positions = covered + self.grid * self.grid;
        Vit {
            patch_embed: PatchEmbed {
                proj: Conv2dConfig::new([3, h], [self.patch_size, self.patch_size])
                    .with_stride([self.patch_size, self.patch_size])
                    .with_bias(self.patch_bias)
                    .init(device),
            },
            class_embedding: clip.then(|| Param::from_tensor(Tensor::zeros([h], device))),
            position_embedding: clip.then(|| EmbeddingConfig::new(positions, h).init(device)),
            pre_norm: self.pre_norm.then(norm),
            projection: self.projection.map(|width| linear(h, width, false)),
            cls_token: (self.class_token && !clip).then(|| token(1)),
            dist_token: self.distillation_token.then(|| token(1)),
            reg_token: (self.register_tokens > 0).then(|| token(self.register_tokens)),
            mask_token: self
                .mask_token
                .then(|| Param::from_tensor(Tensor::zeros([1, h], device))),
            pos_embed: (!clip).then(|| token(positions)),
            blocks,
            norm: self.final_norm.then(norm),
            fc_norm: self.fc_norm.then(norm),
            head: (self.num_classes > 0)
                .then(|| linear(self.feature_size(), self.num_classes, true)),
            head_dist: (self.num_classes > 0
                && self.distillation_token
                && self.layout == VitLayout::Timm)
                .then(|| linear(self.feature_size(), self.num_classes, true)),
            config: self.clone(),
        }
    }

    /// The upstream name of a module path in the folder's layout (transformers' without the
    /// model prefix, which [`VitConfig::prefix`] holds).
    pub fn upstream_name(&self, path: &str) -> String {
        match self.layout {
            VitLayout::Timm => match path.strip_prefix("pre_norm.") {
                Some(rest) => format!("norm_pre.{rest}"),
                None => path.to_string(),
            },
            VitLayout::Transformers => self.transformers_name(path),
        }
    }

    fn transformers_name(&self, path: &str) -> String {
        if self.family == VitFamily::Clip {
            return clip_name(path);
        }
        let dinov2 = self.family == VitFamily::Dinov2;
        let fixed = match path {
            "cls_token" => Some("embeddings.cls_token"),
            "dist_token" => Some("embeddings.distillation_token"),
            "reg_token" => Some("embeddings.register_tokens"),
            "mask_token" => Some("embeddings.mask_token"),
            "pos_embed" => Some("embeddings.position_embeddings"),
            _ => None,
        };
        if let Some(name) = fixed {
            return name.into();
        }
        if let Some(rest) = path.strip_prefix("patch_embed.proj.") {
            return format!("embeddings.patch_embeddings.projection.{rest}");
        }
        if let Some(rest) = path.strip_prefix("head.") {
            return format!("classifier.{rest}");
        }
        if let Some(rest) = path.strip_prefix("norm.") {
            return format!("layernorm.{rest}");
        }
        if let Some(rest) = path.strip_prefix("blocks.") {
            let (index, inner) = rest.split_once('.').unwrap_or((rest, ""));
            let renames: &[(&str, &str)] = &[
                ("attn.query.", "attention.attention.query."),
                ("attn.key.", "attention.attention.key."),
                ("attn.value.", "attention.attention.value."),
                ("attn.proj.", "attention.output.dense."),
                ("ls1.gamma", "layer_scale1.lambda1"),
                ("ls2.gamma", "layer_scale2.lambda1"),
                (
                    "norm1.",
                    if dinov2 {
                        "norm1."
                    } else {
                        "layernorm_before."
                    },
                ),
                ("norm2.", if dinov2 { "norm2." } else { "layernorm_after." }),
                (
                    "mlp.fc1.",
                    if dinov2 {
                        "mlp.fc1."
                    } else {
                        "intermediate.dense."
                    },
                ),
                (
                    "mlp.fc2.",
                    if dinov2 { "mlp.fc2." } else { "output.dense." },
                ),
            ];
            for (ours, theirs) in renames {
                if let Some(tail) = inner.strip_prefix(ours) {
                    return format!("encoder.layer.{index}.{theirs}{tail}");
                }
            }
        }
        path.to_string()
    }

    /// Reads a transformers `config.json` (`vit`, `deit`, `dinov2`, `dinov2_with_registers`,
    /// `clip_vision_model`, or a whole `clip` model's `vision_config`).
    fn from_transformers(config: &Value, index: &WeightsIndex) -> Result<Self, String> {
        let model_type = config
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("");
        let config = if model_type == "clip" {
            config.get("vision_config").unwrap_or(&Value::Null)
        } else {
            config
        };
        let (family, prefix) = match model_type {
            "vit" => (VitFamily::Vit, "vit."),
            "deit" => (VitFamily::Deit, "deit."),
            "dinov2" => (VitFamily::Dinov2, "dinov2."),
            "dinov2_with_registers" => (VitFamily::Dinov2, "dinov2_with_registers."),
            "clip" | "clip_vision_model" => (VitFamily::Clip, "vision_model."),
            other => {
                return Err(format!(
                    "model_type \"{other}\" is not a vision transformer"
                ));
            }
        };
        let usize_of = |key: &str, default: Option<usize>| -> Result<usize, String> {
            match config.get(key) {
                Some(v) => v
                    .as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| format!("\"{key}\" must be a whole number")),
                None => default.ok_or_else(|| format!("no \"{key}\"")),
            }
        };
        let hidden_size = usize_of("hidden_size", Some(768))?;
        let image_size = usize_of("image_size", Some(224))?;
        let clip = family == VitFamily::Clip;
        let patch_size = usize_of("patch_size", Some(if clip { 32 } else { 16 }))?;
        let mlp_size = if family == VitFamily::Dinov2 {
            let ratio = config
                .get("mlp_ratio")
                .and_then(Value::as_f64)
                .unwrap_or(4.0);
            (hidden_size as f64 * ratio) as usize
        } else {
            usize_of("intermediate_size", Some(3072))?
        };
        if config.get("use_swiglu_ffn").and_then(Value::as_bool) == Some(true) {
            return Err("use_swiglu_ffn (DINOv2 giant's SwiGLU) is not supported".into());
        }
        let act_name = config
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or(if clip { "quick_gelu" } else { "gelu" });
        let activation = HiddenAct::parse(act_name)
            .ok_or_else(|| format!("hidden_act \"{act_name}\" is not supported"))?;
        let has = |name: &str| {
            index.tensors.contains_key(name)
                || index.tensors.contains_key(&format!("{prefix}{name}"))
        };
        // DeiT's teacher variant has two classifiers on two tokens: not one graft can run.
        let classes = index
            .tensors
            .get("classifier.weight")
            .map_or(0, |t| t.shape[0]);
        let positions = ["", prefix]
            .iter()
            .find_map(|p| {
                let table = index
                    .tensors
                    .get(&format!("{p}embeddings.position_embeddings"))
                    .map(|t| t.shape[1]);
                table.or_else(|| {
                    index
                        .tensors
                        .get(&format!("{p}embeddings.position_embedding.weight"))
                        .map(|t| t.shape[0])
                })
            })
            .unwrap_or(1 + (image_size / patch_size).pow(2));
        // Only DINOv2 with registers reads `num_register_tokens` (default 4); the weights must
        // hold as many.
        let register_tokens = if model_type == "dinov2_with_registers" {
            let count = usize_of("num_register_tokens", Some(4))?;
            let held = ["", prefix].iter().find_map(|p| {
                index
                    .tensors
                    .get(&format!("{p}embeddings.register_tokens"))
                    .map(|t| t.shape.get(1).copied().unwrap_or(0))
            });
            if let Some(held) = held.filter(|&held| held != count) {
                return Err(format!(
                    "num_register_tokens {count} disagrees with the {held} register tokens of \
                     embeddings.register_tokens"
                ));
            }
            count
        } else {
            0
        };
        let distillation_token = family == VitFamily::Deit;
        let covered = 1 + usize::from(distillation_token);
        let grid = ((positions.saturating_sub(covered)) as f64).sqrt().round() as usize;
        if grid * grid + covered != positions {
            return Err(format!(
                "{positions} position embeddings are not {covered} plus a square grid"
            ));
        }
        Ok(Self {
            layout: VitLayout::Transformers,
            family,
            prefix: prefix.into(),
            timm_name: None,
            hidden_size,
            num_layers: usize_of("num_hidden_layers", Some(12))?,
            num_heads: usize_of("num_attention_heads", Some(12))?,
            mlp_size,
            patch_size,
            grid,
            image_size,
            eps: config
                .get("layer_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(match family {
                    VitFamily::Dinov2 => 1e-6,
                    VitFamily::Clip => 1e-5,
                    _ => 1e-12,
                }),
            activation,
            qkv_bias: config
                .get("qkv_bias")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            layer_scale: family == VitFamily::Dinov2,
            class_token: true,
            distillation_token,
            register_tokens,
            pos_covers_prefix: true,
            mask_token: has("embeddings.mask_token"),
            pre_norm: clip,
            patch_bias: !clip,
            projection: index
                .tensors
                .get("visual_projection.weight")
                .map(|t| t.shape[0]),
            // CLIP normalizes only the pooled token (`post_layernorm`).
            final_norm: !clip,
            fc_norm: clip,
            pool: if family == VitFamily::Dinov2 {
                VitPool::TokenAndMean
            } else {
                VitPool::Token
            },
            // transformers' DINOv2 with registers resamples with antialiasing, the others without.
            resample: if model_type == "dinov2_with_registers" {
                Resample::BicubicAntialias
            } else {
                Resample::Bicubic
            },
            num_classes: classes,
        })
    }

    /// Reads a timm `config.json` (`architecture`, `model_args`, `pretrained_cfg`) and what the
    /// weights' shapes say. The architecture sets the heads, LayerNorm eps, activation and
    /// default pooling ([`TIMM_MODELS`]); `model_args` may override the heads, activation and
    /// pooling, and must leave the rest as the weights show it.
    fn from_timm(config: &Value, index: &WeightsIndex) -> Result<Self, String> {
        let name = config
            .get("architecture")
            .and_then(Value::as_str)
            .ok_or("no \"architecture\"")?;
        let (default_heads, eps, default_act, default_pool) =
            timm_model(name).ok_or_else(|| {
                format!(
                    "architecture \"{name}\" is not supported: graft builds timm's ViT, DeiT, \
                     DINOv2, CLIP, SigLIP-GAP and GAP models with standard blocks (e.g. \
                     vit_base_patch16_224, deit_small_distilled_patch16_224, \
                     vit_base_patch14_reg4_dinov2, vit_base_patch16_clip_224)"
                )
            })?;
        vision::check_model_args(config, TIMM_ARGS)?;
        let args = config.get("model_args").cloned().unwrap_or(Value::Null);
        let shape = |key: &str| index.tensors.get(key).map(|t| t.shape.clone());
        let patch = shape("patch_embed.proj.weight")
            .ok_or("no patch_embed.proj.weight: not a timm vision transformer")?;
        let hidden_size = patch[0];
        let patch_size = patch[2];
        let num_layers = (0..)
            .take_while(|i| {
                index
                    .tensors
                    .contains_key(&format!("blocks.{i}.norm1.weight"))
            })
            .count();
        let mlp_size = shape("blocks.0.mlp.fc1.weight").map_or(4 * hidden_size, |s| s[0]);
        let num_heads = args
            .get("num_heads")
            .and_then(Value::as_u64)
            .map_or(default_heads, |n| n as usize);
        let activation = match args.get("act_layer").and_then(Value::as_str) {
            Some(act) => timm_act(act).ok_or("model_args.act_layer is not supported")?,
            None => default_act,
        };
        if let Some(unknown) = index.tensors.keys().find(|k| !timm_tensor_known(k)) {
            return Err(format!(
                "tensor `{unknown}` belongs to a part of timm's VisionTransformer graft does not \
                 build (attention pooling, q/k norms, ...)"
            ));
        }
        let class_token = index.tensors.contains_key("cls_token");
        let distillation_token = index.tensors.contains_key("dist_token");
        if distillation_token != name.contains("_distilled_") {
            return Err(format!(
                "architecture \"{name}\" {} a dist_token tensor",
                if distillation_token {
                    "has no distillation token, but the weights hold"
                } else {
                    "has a distillation token, but the weights lack"
                }
            ));
        }
        let register_tokens = shape("reg_token").map_or(0, |s| s[1]);
        let positions = shape("pos_embed").ok_or("no pos_embed")?[1];
        let prefix = usize::from(class_token) + usize::from(distillation_token);
        let square = |n: usize| {
            let side = (n as f64).sqrt().round() as usize;
            (side * side == n).then_some(side)
        };
        // Positions cover the class (and distillation) tokens, or only the patches
        // (`no_embed_class`); graft has no positions for register tokens.
        let (grid, pos_covers_prefix) =
            match (square(positions), square(positions - prefix.min(positions))) {
                (Some(side), _) if register_tokens > 0 => (side, false),
                _ if register_tokens > 0 => {
                    return Err(format!(
                        "pos_embed holds {positions} positions: positions for register tokens \
                         (no_embed_class false) are not supported"
                    ));
                }
                (_, Some(side)) if prefix > 0 => (side, true),
                (Some(side), _) => (side, false),
                _ => {
                    return Err(format!(
                        "pos_embed holds {positions} positions: not a square grid"
                    ));
                }
            };
        // timm builds `model_args.global_pool`, else the architecture's; the top-level key records
        // what the saved model used.
        let global_pool = args
            .get("global_pool")
            .and_then(Value::as_str)
            .unwrap_or(default_pool);
        if let Some(saved) = config.get("global_pool").and_then(Value::as_str)
            && saved != global_pool
        {
            return Err(format!(
                "global_pool \"{saved}\" is not the \"{global_pool}\" pooling timm builds for \
                 {name} (give model_args.global_pool)"
            ));
        }
        let fc_norm = index.tensors.contains_key("fc_norm.weight");
        let pool = match global_pool {
            // timm's distilled DeiT pools its two tokens whatever `global_pool` says, without
            // `fc_norm`.
            "token" if distillation_token && fc_norm => {
                return Err("fc_norm.weight beside a dist_token is not supported".into());
            }
            "token" if distillation_token => VitPool::TokenAndDistillation,
            "token" if class_token => VitPool::Token,
            "token" => return Err("global_pool \"token\" without a cls_token tensor".into()),
            "avg" if !distillation_token => VitPool::Avg,
            other => {
                return Err(format!(
                    "global_pool \"{other}\" is not supported (token, or avg without a \
                     distillation token)"
                ));
            }
        };
        let image_size = vision::timm_input_size(config)?.unwrap_or(grid * patch_size);
        let family = if name.contains("dinov2") {
            VitFamily::Dinov2
        } else if name.starts_with("deit") {
            VitFamily::Deit
        } else {
            VitFamily::Vit
        };
        Ok(Self {
            layout: VitLayout::Timm,
            family,
            prefix: String::new(),
            timm_name: Some(name.into()),
            hidden_size,
            num_layers,
            num_heads,
            mlp_size,
            patch_size,
            grid,
            image_size,
            eps,
            activation,
            qkv_bias: index.tensors.contains_key("blocks.0.attn.qkv.bias"),
            layer_scale: index.tensors.contains_key("blocks.0.ls1.gamma"),
            class_token,
            distillation_token,
            register_tokens,
            pos_covers_prefix,
            mask_token: false,
            pre_norm: index.tensors.contains_key("norm_pre.weight"),
            patch_bias: index.tensors.contains_key("patch_embed.proj.bias"),
            projection: None,
            final_norm: index.tensors.contains_key("norm.weight"),
            fc_norm,
            pool,
            resample: Resample::BicubicAntialias,
            num_classes: shape("head.weight").map_or(0, |s| s[0]),
        })
    }

    /// Reads the folder's config (transformers or timm).
    pub fn of_folder(folder: &ModelFolder) -> Result<Self, ModelError> {
        let index = folder.weights_index()?;
        let config = if vision::is_timm(&folder.config) {
            Self::from_timm(&folder.config, &index)
        } else {
            Self::from_transformers(&folder.config, &index)
        };
        let config = config.and_then(|c| c.check().map(|()| c));
        config.map_err(|message| ModelError::Config {
            path: folder.config_path(),
            message,
        })
    }
}

/// Whether a timm ViT tensor is one graft builds.
fn timm_tensor_known(name: &str) -> bool {
    const TOKENS: [&str; 4] = ["cls_token", "dist_token", "reg_token", "pos_embed"];
    const MODULES: [&str; 6] = [
        "patch_embed.proj.",
        "norm.",
        "fc_norm.",
        "head.",
        "head_dist.",
        "norm_pre.",
    ];
    const BLOCK: [&str; 8] = [
        "norm1.",
        "attn.qkv.",
        "attn.proj.",
        "ls1.gamma",
        "norm2.",
        "mlp.fc1.",
        "mlp.fc2.",
        "ls2.gamma",
    ];
    TOKENS.contains(&name)
        || MODULES.iter().any(|m| name.starts_with(m))
        || name
            .strip_prefix("blocks.")
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(_, inner)| BLOCK.iter().any(|b| inner.starts_with(b)))
}

/// The MLP activation of a timm `act_layer` name.
fn timm_act(name: &str) -> Option<HiddenAct> {
    match name {
        "gelu" => Some(HiddenAct::Gelu),
        "gelu_tanh" => Some(HiddenAct::GeluTanh),
        "quick_gelu" => Some(HiddenAct::QuickGelu),
        "relu" => Some(HiddenAct::Relu),
        "tanh" => Some(HiddenAct::Tanh),
        _ => None,
    }
}

/// timm's ViT `model_args`: the heads, activation and pooling graft implements; the structure
/// graft reads from the weights; the other settings only with the values graft builds.
const TIMM_ARGS: &[vision::ModelArg] = &[
    ("num_heads", |v| v.as_u64().is_some_and(|n| n > 0)),
    ("act_layer", |v| v.as_str().and_then(timm_act).is_some()),
    ("global_pool", |v| {
        matches!(v.as_str(), Some("token" | "avg"))
    }),
    ("img_size", vision::any),
    ("patch_size", vision::any),
    ("embed_dim", vision::any),
    ("depth", vision::any),
    ("mlp_ratio", vision::any),
    ("qkv_bias", vision::any),
    ("init_values", vision::any),
    ("class_token", vision::any),
    ("no_embed_class", vision::any),
    ("reg_tokens", vision::any),
    ("pre_norm", vision::any),
    ("final_norm", vision::any),
    ("fc_norm", vision::any),
    // graft resamples the positions to any input; at the trained size this changes nothing.
    ("dynamic_img_size", vision::any),
    ("pos_embed", |v| v.as_str() == Some("learn")),
    ("pool_include_prefix", |v| v.as_bool() == Some(false)),
    ("dynamic_img_pad", |v| v.as_bool() == Some(false)),
    ("qk_norm", |v| v.as_bool() == Some(false)),
    ("scale_attn_norm", |v| v.as_bool() == Some(false)),
    ("scale_mlp_norm", |v| v.as_bool() == Some(false)),
    ("proj_bias", |v| v.as_bool() == Some(true)),
    ("pos_drop_rate", vision::any),
    ("patch_drop_rate", vision::any),
    ("proj_drop_rate", vision::any),
    ("attn_drop_rate", vision::any),
    ("weight_init", vision::any),
    ("fix_init", vision::any),
];

/// timm ViT and DeiT model functions that set the same LayerNorm eps, MLP activation and default
/// `global_pool`, with the heads of each.
pub struct TimmVits {
    pub eps: f64,
    pub act: HiddenAct,
    pub pool: &'static str,
    pub models: &'static [(&'static str, usize)],
}

/// timm's ViT and DeiT model functions whose networks graft builds (standard blocks, LayerNorm,
/// GELU-family MLPs, token or average pooling, no positions on register tokens), with what each
/// sets that the weights do not show. Copied from timm 1.0's `vision_transformer.py` and
/// `deit.py`.
pub const TIMM_MODELS: &[TimmVits] = &[
    // ViT, DeiT, DINOv2 and the other class-token models.
    TimmVits {
        eps: 1e-6,
        act: HiddenAct::Gelu,
        pool: "token",
        models: &[
            ("vit_tiny_patch16_224", 3),
            ("vit_tiny_patch16_384", 3),
            ("vit_small_patch32_224", 6),
            ("vit_small_patch32_384", 6),
            ("vit_small_patch16_224", 6),
            ("vit_small_patch16_384", 6),
            ("vit_small_patch8_224", 6),
            ("vit_base_patch32_224", 12),
            ("vit_base_patch32_384", 12),
            ("vit_base_patch16_224", 12),
            ("vit_base_patch16_384", 12),
            ("vit_base_patch8_224", 12),
            ("vit_large_patch32_224", 16),
            ("vit_large_patch32_384", 16),
            ("vit_large_patch16_224", 16),
            ("vit_large_patch16_384", 16),
            ("vit_large_patch14_224", 16),
            ("vit_huge_patch14_224", 16),
            ("vit_giant_patch14_224", 16),
            ("vit_gigantic_patch14_224", 16),
            ("vit_base_patch16_224_miil", 12),
            ("vit_base_patch32_plus_256", 14),
            ("vit_base_patch16_plus_240", 14),
            ("vit_small_patch16_36x1_224", 6),
            ("vit_small_patch14_dinov2", 6),
            ("vit_base_patch14_dinov2", 12),
            ("vit_large_patch14_dinov2", 16),
            ("vit_small_patch14_reg4_dinov2", 6),
            ("vit_base_patch14_reg4_dinov2", 12),
            ("vit_large_patch14_reg4_dinov2", 16),
            ("vit_base_patch14_reg1_tipsv2", 12),
            ("vit_large_patch14_reg1_tipsv2", 16),
            ("vit_so400m_patch14_reg1_tipsv2", 16),
            ("vit_intern300m_patch14_448", 16),
            ("deit_tiny_patch16_224", 3),
            ("deit_small_patch16_224", 6),
            ("deit_base_patch16_224", 12),
            ("deit_base_patch16_384", 12),
            ("deit_tiny_distilled_patch16_224", 3),
            ("deit_small_distilled_patch16_224", 6),
            ("deit_base_distilled_patch16_224", 12),
            ("deit_base_distilled_patch16_384", 12),
        ],
    },
    // Average pooling: GAP, SigLIP-GAP and register-GAP models.
    TimmVits {
        eps: 1e-6,
        act: HiddenAct::Gelu,
        pool: "avg",
        models: &[
            ("vit_medium_patch16_gap_240", 8),
            ("vit_medium_patch16_gap_256", 8),
            ("vit_medium_patch16_gap_384", 8),
            ("vit_betwixt_patch16_gap_256", 10),
            ("vit_base_patch16_gap_224", 16),
            ("vit_huge_patch14_gap_224", 16),
            ("vit_huge_patch16_gap_448", 16),
            ("vit_giant_patch16_gap_224", 16),
            ("vit_base_patch16_siglip_gap_224", 12),
            ("vit_base_patch16_siglip_gap_256", 12),
            ("vit_base_patch16_siglip_gap_384", 12),
            ("vit_base_patch16_siglip_gap_512", 12),
            ("vit_large_patch16_siglip_gap_256", 16),
            ("vit_large_patch16_siglip_gap_384", 16),
            ("vit_so400m_patch14_siglip_gap_224", 16),
            ("vit_so400m_patch14_siglip_gap_378", 16),
            ("vit_so400m_patch14_siglip_gap_384", 16),
            ("vit_so400m_patch14_siglip_gap_448", 16),
            ("vit_so400m_patch14_siglip_gap_896", 16),
            ("vit_wee_patch16_reg1_gap_256", 4),
            ("vit_little_patch16_reg1_gap_256", 5),
            ("vit_little_patch16_reg4_gap_256", 5),
            ("vit_medium_patch16_reg1_gap_256", 8),
            ("vit_medium_patch16_reg4_gap_256", 8),
            ("vit_mediumd_patch16_reg4_gap_256", 8),
            ("vit_mediumd_patch16_reg4_gap_384", 8),
            ("vit_betwixt_patch16_reg1_gap_256", 10),
            ("vit_betwixt_patch16_reg4_gap_256", 10),
            ("vit_betwixt_patch16_reg4_gap_384", 10),
            ("vit_base_patch16_reg4_gap_256", 12),
        ],
    },
    // CLIP image towers.
    TimmVits {
        eps: 1e-5,
        act: HiddenAct::Gelu,
        pool: "token",
        models: &[
            ("vit_xsmall_patch16_clip_224", 4),
            ("vit_medium_patch32_clip_224", 8),
            ("vit_medium_patch16_clip_224", 8),
            ("vit_betwixt_patch32_clip_224", 10),
            ("vit_base_patch32_clip_224", 12),
            ("vit_base_patch32_clip_256", 12),
            ("vit_base_patch32_clip_384", 12),
            ("vit_base_patch32_clip_448", 12),
            ("vit_base_patch16_clip_224", 12),
            ("vit_base_patch16_clip_384", 12),
            ("vit_base_patch16_plus_clip_240", 14),
            ("vit_large_patch14_clip_224", 16),
            ("vit_large_patch14_clip_336", 16),
            ("vit_huge_patch14_clip_224", 16),
            ("vit_huge_patch14_clip_336", 16),
            ("vit_huge_patch14_clip_378", 16),
            ("vit_giant_patch14_clip_224", 16),
            ("vit_gigantic_patch14_clip_224", 16),
            ("vit_gigantic_patch14_clip_378", 16),
        ],
    },
    // OpenAI CLIP image towers (quick GELU).
    TimmVits {
        eps: 1e-5,
        act: HiddenAct::QuickGelu,
        pool: "token",
        models: &[
            ("vit_base_patch32_clip_quickgelu_224", 12),
            ("vit_base_patch16_clip_quickgelu_224", 12),
            ("vit_large_patch14_clip_quickgelu_224", 16),
            ("vit_large_patch14_clip_quickgelu_336", 16),
            ("vit_huge_patch14_clip_quickgelu_224", 16),
            ("vit_huge_patch14_clip_quickgelu_378", 16),
            ("vit_gigantic_patch14_clip_quickgelu_224", 16),
        ],
    },
    // SigLIP-GAP models with the tanh GELU.
    TimmVits {
        eps: 1e-6,
        act: HiddenAct::GeluTanh,
        pool: "avg",
        models: &[
            ("vit_base_patch32_siglip_gap_256", 12),
            ("vit_large_patch16_siglip_gap_512", 16),
            ("vit_so400m_patch16_siglip_gap_256", 16),
            ("vit_so400m_patch16_siglip_gap_384", 16),
            ("vit_so400m_patch16_siglip_gap_512", 16),
            ("vit_giantopt_patch16_siglip_gap_256", 16),
            ("vit_giantopt_patch16_siglip_gap_384", 16),
        ],
    },
];

/// The heads, LayerNorm eps, activation and default `global_pool` of a timm ViT model function.
fn timm_model(name: &str) -> Option<(usize, f64, HiddenAct, &'static str)> {
    TIMM_MODELS.iter().find_map(|group| {
        let &(_, heads) = group.models.iter().find(|(model, _)| *model == name)?;
        Some((heads, group.eps, group.act, group.pool))
    })
}

/// `[out, in]` weights that resample a row of `input` values to `output`, as PyTorch's
/// `interpolate(mode="bicubic", align_corners=False)` does, with or without `antialias`.
pub fn resample_weights(input: usize, output: usize, mode: Resample) -> Vec<f32> {
    let scale = input as f64 / output as f64;
    let mut weights = vec![0.0f64; output * input];
    match mode {
        Resample::Bicubic => {
            const A: f64 = -0.75;
            let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
            let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
            for o in 0..output {
                let real = scale * (o as f64 + 0.5) - 0.5;
                let floor = real.floor();
                let t = real - floor;
                let taps = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
                for (k, w) in taps.iter().enumerate() {
                    let i = (floor as i64 - 1 + k as i64).clamp(0, input as i64 - 1) as usize;
                    weights[o * input + i] += w;
                }
            }
        }
        Resample::BicubicAntialias => {
            const A: f64 = -0.5;
            let filter = |x: f64| {
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            };
            let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
            let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
            for o in 0..output {
                let center = scale * (o as f64 + 0.5);
                let min = ((center - support + 0.5) as i64).max(0) as usize;
                let max = ((center + support + 0.5) as i64).min(input as i64) as usize;
                let taps: Vec<f64> = (min..max)
                    .map(|i| filter((i as f64 - center + 0.5) * invscale))
                    .collect();
                let total: f64 = taps.iter().sum();
                for (i, w) in (min..max).zip(taps) {
                    weights[o * input + i] = if total != 0.0 { w / total } else { 0.0 };
                }
            }
        }
    }
    weights.into_iter().map(|w| w as f32).collect()
}

impl Vit {
    /// Position embeddings for a `rows x cols` grid of patches: the checkpoint's, or resampled.
    fn positions(&self, rows: usize, cols: usize) -> Tensor<3> {
        let c = &self.config;
        let pos = match (&self.pos_embed, &self.position_embedding) {
            (Some(pos), _) => pos.val(),
            (None, Some(table)) => {
                let [n, width] = table.weight.dims();
                table.weight.val().reshape([1, n, width])
            }
            (None, None) => unreachable!("built with one position table"),
        };
        if rows == c.grid && cols == c.grid {
            return pos;
        }
        let [_, total, width] = pos.dims();
        let covered = total - c.grid * c.grid;
        let device = pos.device();
        let dtype = pos.dtype();
        let prefix = (covered > 0).then(|| pos.clone().narrow(1, 0, covered));
        let grid = pos.narrow(1, covered, c.grid * c.grid);
        let matrix = |out: usize| {
            Tensor::<2>::from_data(
                TensorData::new(resample_weights(c.grid, out, c.resample), [out, c.grid]),
                (&device, dtype),
            )
        };
        // Rows, then columns: [g, g*w] → [rows, g*w] → [g, rows*w] → [cols, rows*w].
        let x = matrix(rows).matmul(grid.reshape([c.grid, c.grid * width]));
        let x = x
            .reshape([rows, c.grid, width])
            .swap_dims(0, 1)
            .reshape([c.grid, rows * width]);
        let x = matrix(cols)
            .matmul(x)
            .reshape([cols, rows, width])
            .swap_dims(0, 1)
            .reshape([1, rows * cols, width]);
        match prefix {
            Some(prefix) => Tensor::cat(vec![prefix, x], 1),
            None => x,
        }
    }

    /// The last hidden state `[batch, tokens, hidden]` (after the final norm).
    pub fn forward_hidden(&self, images: Tensor<4>) -> Tensor<3> {
        let c = &self.config;
        let x = self.patch_embed.proj.forward(images);
        let [batch, width, rows, cols] = x.dims();
        let patches = x.reshape([batch, width, rows * cols]).swap_dims(1, 2);
        let expand = |token: &Param<Tensor<3>>| {
            let [_, n, _] = token.dims();
            token.val().expand([batch, n, width])
        };
        let cls = match (&self.cls_token, &self.class_embedding) {
            (Some(token), _) => Some(expand(token)),
            (None, Some(vector)) => Some(
                vector
                    .val()
                    .reshape([1, 1, width])
                    .expand([batch, 1, width]),
            ),
            (None, None) => None,
        };
        let dist = self.dist_token.as_ref().map(expand);
        let pos = self.positions(rows, cols);
        let mut x = if c.pos_covers_prefix {
            let tokens: Vec<Tensor<3>> =
                cls.iter().chain(&dist).cloned().chain([patches]).collect();
            Tensor::cat(tokens, 1) + pos
        } else {
            patches + pos
        };
        let covered = if c.pos_covers_prefix {
            usize::from(cls.is_some()) + usize::from(dist.is_some())
        } else {
            0
        };
        let regs = self.reg_token.as_ref().map(expand);
        if regs.is_some() || !c.pos_covers_prefix {
            // Registers (and, without positions of their own, the class tokens) go in front of
            // the patches, after the class token: [cls, registers, patches].
            let seq = x.dims()[1];
            let mut parts = Vec::new();
            if covered > 0 {
                parts.push(x.clone().narrow(1, 0, covered));
            } else {
                parts.extend(cls.iter().chain(&dist).cloned());
            }
            parts.extend(regs);
            parts.push(x.narrow(1, covered, seq - covered));
            x = Tensor::cat(parts, 1);
        }
        if let Some(norm) = &self.pre_norm {
            x = norm.forward(x);
        }
        for block in &self.blocks {
            x = block.forward(x);
        }
        match &self.norm {
            Some(norm) => norm.forward(x),
            None => x,
        }
    }

    /// The features the classifier reads.
    pub fn pool(&self, hidden: Tensor<3>) -> Tensor<2> {
        let c = &self.config;
        let [batch, seq, width] = hidden.dims();
        let token = |i: usize| hidden.clone().narrow(1, i, 1).reshape([batch, width]);
        let patches_mean = || {
            let skip = c.prefix_tokens();
            hidden
                .clone()
                .narrow(1, skip, seq - skip)
                .mean_dim(1)
                .reshape([batch, width])
        };
        let pooled = match c.pool {
            VitPool::Token => token(0),
            VitPool::TokenAndDistillation => (token(0) + token(1)) / 2.0,
            VitPool::Avg => patches_mean(),
            VitPool::TokenAndMean => Tensor::cat(vec![token(0), patches_mean()], 1),
        };
        match &self.fc_norm {
            Some(norm) => norm.forward(pooled),
            None => pooled,
        }
    }

    /// Block index of a parameter path: the embeddings are block 0, block i is i + 1, the final
    /// norms and the classifier count with the last.
    fn block(&self, path: &str) -> usize {
        if let Some(i) = bert::layer_index(path, "blocks.") {
            i + 1
        } else if path.starts_with("norm.")
            || path.starts_with("fc_norm.")
            || path.starts_with("head.")
        {
            self.blocks.len()
        } else {
            0
        }
    }
}

/// transformers' CLIP vision names (`vision_model.` is the prefix; `visual_projection` sits beside
/// it).
fn clip_name(path: &str) -> String {
    let fixed = match path {
        "class_embedding" => Some("embeddings.class_embedding"),
        "position_embedding.weight" => Some("embeddings.position_embedding.weight"),
        "patch_embed.proj.weight" => Some("embeddings.patch_embedding.weight"),
        "projection.weight" => Some("visual_projection.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return name.into();
    }
    if let Some(rest) = path.strip_prefix("pre_norm.") {
        return format!("pre_layrnorm.{rest}");
    }
    if let Some(rest) = path.strip_prefix("fc_norm.") {
        return format!("post_layernorm.{rest}");
    }
    if let Some(rest) = path.strip_prefix("blocks.") {
        let (index, inner) = rest.split_once('.').unwrap_or((rest, ""));
        let renames: &[(&str, &str)] = &[
            ("norm1.", "layer_norm1."),
            ("norm2.", "layer_norm2."),
            ("attn.query.", "self_attn.q_proj."),
            ("attn.key.", "self_attn.k_proj."),
            ("attn.value.", "self_attn.v_proj."),
            ("attn.proj.", "self_attn.out_proj."),
            ("mlp.", "mlp."),
        ];
        for (ours, theirs) in renames {
            if let Some(tail) = inner.strip_prefix(ours) {
                return format!("encoder.layers.{index}.{theirs}{tail}");
            }
        }
    }
    path.to_string()
}

/// Where a transformers checkpoint may put the encoder's names.
fn prefixes(config: &VitConfig) -> Vec<&str> {
    if config.prefix.is_empty() {
        Vec::new()
    } else {
        vec![config.prefix.as_str()]
    }
}

impl Architecture for Vit {
    fn name() -> &'static str {
        "vit"
    }

    fn detects(config: &Value) -> bool {
        if vision::is_timm(config) {
            let name = config
                .get("architecture")
                .and_then(Value::as_str)
                .unwrap_or("");
            return name.starts_with("vit_") || name.starts_with("deit_");
        }
        matches!(
            config.get("model_type").and_then(Value::as_str),
            Some(
                "vit" | "deit" | "dinov2" | "dinov2_with_registers" | "clip" | "clip_vision_model"
            )
        )
    }

    fn preprocessing(folder: &ModelFolder) -> Result<Preprocessing, ModelError> {
        let config = VitConfig::of_folder(folder)?;
        vision::family_preprocessing(folder, || {
            vision::processor_transform(&folder.dir, config.image_size)
        })
    }

    fn naming(folder: &ModelFolder) -> Result<Naming, ModelError> {
        Ok(vision::family_naming(folder))
    }

    fn recognise(index: &WeightsIndex) -> Option<String> {
        let layers = (0..)
            .take_while(|i| {
                index
                    .tensors
                    .contains_key(&format!("blocks.{i}.attn.qkv.weight"))
            })
            .count();
        (layers > 0 && index.tensors.contains_key("pos_embed"))
            .then(|| format!("vit ({layers} blocks, timm names)"))
    }

    fn load(folder: &ModelFolder, classifier: bool, device: &Device) -> Result<Self, ModelError> {
        let mut config = VitConfig::of_folder(folder)?;
        if !classifier {
            config.num_classes = 0;
        }
        let mut model = config.init(device);
        weights::check_sizes(&model, &folder.weights_path())?;
        let names = weights::param_names(&model, |p| config.upstream_name(p));
        weights::load_renamed(
            &mut model,
            &folder.weights_path(),
            &names,
            &prefixes(&config),
        )?;
        // timm's distilled DeiT averages `head` on the class token and `head_dist` on the
        // distillation token: graft's head on their mean only when the two are the same (as in
        // graft's exports); otherwise the checkpoint has no one classifier graft can run.
        if let Some(dist) = model.head_dist.take() {
            let values = |l: &Linear| {
                let mut v = l
                    .weight
                    .val()
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .unwrap_or_default();
                if let Some(b) = &l.bias {
                    v.extend(
                        b.val()
                            .into_data()
                            .try_into_vec_as::<f32>()
                            .unwrap_or_default(),
                    );
                }
                v
            };
            if !model
                .head
                .as_ref()
                .is_some_and(|head| values(head) == values(&dist))
            {
                model.head = None;
            }
        }
        Ok(model)
    }

    fn describe(&self) -> String {
        let c = &self.config;
        let family = match c.family {
            VitFamily::Vit => "vit",
            VitFamily::Deit => "deit",
            VitFamily::Dinov2 => "dinov2",
            VitFamily::Clip => "clip",
        };
        format!(
            "{family} ({} blocks, {} wide, patch {})",
            c.num_layers, c.hidden_size, c.patch_size
        )
    }

    fn feature_size(&self) -> usize {
        self.config.feature_size()
    }

    fn forward_features(&self, inputs: Inputs, _pooling: PoolingOptions) -> Tensor<2> {
        let images = inputs.into_image();
        self.pool(self.forward_hidden(images))
    }

    fn classifier(&self) -> Option<&Linear> {
        self.head.as_ref()
    }

    fn upstream_name(&self, path: &str) -> String {
        self.config.upstream_name(path)
    }

    fn block_of(&self, path: &str) -> usize {
        self.block(path)
    }

    fn num_blocks(&self) -> usize {
        self.blocks.len() + 1
    }

    fn timm_model_args(&self, image_size: usize) -> serde_json::Map<String, Value> {
        let mut args = serde_json::Map::new();
        if self.config.layout == VitLayout::Timm {
            args.insert(
                "img_size".into(),
                serde_json::json!([image_size, image_size]),
            );
        }
        args
    }

    fn exports(&self) -> Vec<ExportTarget> {
        let c = &self.config;
        match c.layout {
            VitLayout::Timm => vec![ExportTarget {
                format: ExportFormat::Timm,
                model: c.timm_name.clone().unwrap_or_default(),
                prefix: String::new(),
                classifier: "head".into(),
                classifier_copies: if c.distillation_token {
                    vec!["head_dist".into()]
                } else {
                    Vec::new()
                },
            }],
            VitLayout::Transformers => {
                let model = match (c.family, c.register_tokens > 0) {
                    (VitFamily::Vit, _) => "ViTForImageClassification",
                    (VitFamily::Deit, _) => "DeiTForImageClassification",
                    (VitFamily::Dinov2, false) => "Dinov2ForImageClassification",
                    (VitFamily::Dinov2, true) => "Dinov2WithRegistersForImageClassification",
                    // CLIPForImageClassification reads the mean of the unnormalized patch tokens,
                    // not the pooled embedding graft trains on.
                    (VitFamily::Clip, _) => return Vec::new(),
                };
                vec![ExportTarget {
                    format: ExportFormat::Transformers,
                    model: model.into(),
                    prefix: c.prefix.clone(),
                    classifier: "classifier".into(),
                    classifier_copies: Vec::new(),
                }]
            }
        }
    }

    fn lora_targets(&self) -> &'static [&'static str] {
        match (self.config.layout, self.config.family) {
            (VitLayout::Timm, _) => &["qkv"],
            (VitLayout::Transformers, VitFamily::Clip) => &["q_proj", "v_proj"],
            (VitLayout::Transformers, _) => &["query", "value"],
        }
    }

    /// What `embed` writes: CLIP's projected image embedding (else its pooled output), and for
    /// transformers' DINOv2 its `pooler_output` (the normalized class token); otherwise the
    /// classifier's features.
    fn forward_embedding(&self, inputs: Inputs, _pooling: PoolingOptions) -> Tensor<2> {
        let images = inputs.into_image();
        let hidden = self.forward_hidden(images);
        let c = &self.config;
        match (c.family, c.layout) {
            (VitFamily::Clip, _) => {
                let pooled = self.pool(hidden);
                match &self.projection {
                    Some(projection) => adapters::linear(projection, pooled),
                    None => pooled,
                }
            }
            (VitFamily::Dinov2, VitLayout::Transformers) => {
                let [batch, _, width] = hidden.dims();
                hidden.narrow(1, 0, 1).reshape([batch, width])
            }
            _ => self.pool(hidden),
        }
    }

    fn embedding_size(&self) -> usize {
        let c = &self.config;
        match (c.family, c.layout, c.projection) {
            (VitFamily::Clip, _, Some(width)) => width,
            (VitFamily::Dinov2, VitLayout::Transformers, _) => c.hidden_size,
            _ => c.feature_size(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampling_to_the_same_size_is_the_identity() {
        for mode in [Resample::Bicubic, Resample::BicubicAntialias] {
            let w = resample_weights(4, 4, mode);
            for o in 0..4 {
                for i in 0..4 {
                    let want = if o == i { 1.0 } else { 0.0 };
                    assert!((w[o * 4 + i] - want).abs() < 1e-6, "{mode:?} {o} {i}");
                }
            }
        }
    }

    #[test]
    fn resampling_rows_sum_to_one() {
        for mode in [Resample::Bicubic, Resample::BicubicAntialias] {
            for (input, output) in [(37, 16), (4, 7), (16, 37)] {
                let w = resample_weights(input, output, mode);
                for o in 0..output {
                    let sum: f32 = w[o * input..(o + 1) * input].iter().sum();
                    assert!(
                        (sum - 1.0).abs() < 1e-5,
                        "{mode:?} {input}->{output}: {sum}"
                    );
                }
            }
        }
    }

    #[test]
    fn transformers_names() {
        let index = WeightsIndex::default();
        let config = serde_json::json!({"model_type": "dinov2", "hidden_size": 8,
            "num_attention_heads": 2, "num_hidden_layers": 1, "image_size": 28, "patch_size": 14});
        let c = VitConfig::from_transformers(&config, &index).unwrap();
        assert_eq!(
            c.upstream_name("blocks.0.ls1.gamma"),
            "encoder.layer.0.layer_scale1.lambda1"
        );
        assert_eq!(c.prefix, "dinov2.");
        assert_eq!(c.upstream_name("head.weight"), "classifier.weight");
        let config = serde_json::json!({"model_type": "vit", "hidden_size": 8,
            "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 16});
        let c = VitConfig::from_transformers(&config, &index).unwrap();
        assert_eq!(
            c.upstream_name("blocks.3.mlp.fc2.bias"),
            "encoder.layer.3.output.dense.bias"
        );
        assert_eq!(
            c.upstream_name("patch_embed.proj.weight"),
            "embeddings.patch_embeddings.projection.weight"
        );
    }

    #[test]
    fn dinov2_with_registers_defaults_to_four_register_tokens() {
        let mut index = WeightsIndex::default();
        let config = serde_json::json!({"model_type": "dinov2_with_registers", "hidden_size": 8,
            "num_attention_heads": 2, "num_hidden_layers": 1, "image_size": 32, "patch_size": 16});
        let c = VitConfig::from_transformers(&config, &index).unwrap();
        assert_eq!(c.register_tokens, 4);
        index.tensors.insert(
            "dinov2_with_registers.embeddings.register_tokens".into(),
            crate::weights::TensorInfo {
                dtype: "F32".into(),
                shape: vec![1, 2, 8],
            },
        );
        let err = VitConfig::from_transformers(&config, &index).unwrap_err();
        assert!(err.starts_with("num_register_tokens 4"), "{err}");
        let mut two = config.clone();
        two["num_register_tokens"] = 2.into();
        assert_eq!(
            VitConfig::from_transformers(&two, &index)
                .unwrap()
                .register_tokens,
            2
        );
        // transformers' DINOv2 without registers does not read the key.
        two["model_type"] = "dinov2".into();
        let c = VitConfig::from_transformers(&two, &WeightsIndex::default()).unwrap();
        assert_eq!(c.register_tokens, 0);
    }

    /// A timm ViT's tensors: 48 wide, patch 8, a 2x2 grid, one block, with or without a class
    /// token.
    fn timm_index(class_token: bool) -> WeightsIndex {
        let mut index = WeightsIndex::default();
        let mut add = |name: &str, shape: Vec<usize>| {
            index.tensors.insert(
                name.into(),
                crate::weights::TensorInfo {
                    dtype: "F32".into(),
                    shape,
                },
            );
        };
        add("patch_embed.proj.weight", vec![48, 3, 8, 8]);
        add("blocks.0.norm1.weight", vec![48]);
        add("blocks.0.mlp.fc1.weight", vec![96, 48]);
        add("norm.weight", vec![48]);
        add("pos_embed", vec![1, 4 + usize::from(class_token), 48]);
        if class_token {
            add("cls_token", vec![1, 1, 48]);
        }
        index
    }

    fn timm(architecture: &str, args: Value) -> Value {
        serde_json::json!({"architecture": architecture, "model_args": args,
            "pretrained_cfg": {"input_size": [3, 16, 16]}})
    }

    #[test]
    fn timm_architecture_sets_heads_eps_activation_and_pooling() {
        let cls = timm_index(true);
        let gap = timm_index(false);
        let c = VitConfig::from_timm(
            &timm("vit_base_patch16_clip_quickgelu_224", Value::Null),
            &cls,
        )
        .unwrap();
        assert_eq!(
            (c.num_heads, c.eps, c.activation, c.pool),
            (12, 1e-5, HiddenAct::QuickGelu, VitPool::Token)
        );
        assert_eq!(c.image_size, 16);
        let c = VitConfig::from_timm(&timm("vit_base_patch16_gap_224", Value::Null), &gap).unwrap();
        assert_eq!((c.num_heads, c.eps, c.pool), (16, 1e-6, VitPool::Avg));
        let c = VitConfig::from_timm(&timm("vit_base_patch32_siglip_gap_256", Value::Null), &gap)
            .unwrap();
        assert_eq!((c.activation, c.pool), (HiddenAct::GeluTanh, VitPool::Avg));
        let c = VitConfig::from_timm(&timm("vit_base_patch16_siglip_gap_224", Value::Null), &gap)
            .unwrap();
        assert_eq!(c.activation, HiddenAct::Gelu);
        // model_args override the architecture's heads, activation and pooling.
        let args = serde_json::json!({"num_heads": 3, "act_layer": "gelu_tanh",
            "global_pool": "avg"});
        let c = VitConfig::from_timm(&timm("vit_small_patch16_224", args), &cls).unwrap();
        assert_eq!(
            (c.num_heads, c.activation, c.pool),
            (3, HiddenAct::GeluTanh, VitPool::Avg)
        );
        for name in [
            "vit_base_patch16_rpn_224",
            "vit_base_patch16_siglip_224",
            "vit_tiny_r_s16_p8_224",
        ] {
            let err = VitConfig::from_timm(&timm(name, Value::Null), &cls).unwrap_err();
            assert!(
                err.starts_with(&format!("architecture \"{name}\" is not supported")),
                "{err}"
            );
        }
        // Without model_args.global_pool the architecture's pooling is built; a top-level
        // global_pool that says otherwise is refused.
        let mut saved = timm("vit_small_patch16_224", Value::Null);
        saved["global_pool"] = "avg".into();
        let err = VitConfig::from_timm(&saved, &cls).unwrap_err();
        assert!(err.starts_with("global_pool \"avg\""), "{err}");
        let err =
            VitConfig::from_timm(&timm("vit_small_patch16_224", Value::Null), &gap).unwrap_err();
        assert!(err.contains("cls_token"), "{err}");
        let mut wide = timm("vit_small_patch16_224", Value::Null);
        wide["pretrained_cfg"]["input_size"] = serde_json::json!([3, 16, 24]);
        let err = VitConfig::from_timm(&wide, &cls).unwrap_err();
        assert!(err.contains("pretrained_cfg.input_size"), "{err}");
    }

    #[test]
    fn timm_model_args_other_than_graft_builds_are_refused() {
        let cls = timm_index(true);
        let accepted = serde_json::json!({"embed_dim": 48, "num_heads": 4, "depth": 1,
            "img_size": [16, 16], "patch_size": 8, "in_chans": 3, "num_classes": 0,
            "dynamic_img_size": true, "drop_path_rate": 0.1, "global_pool": "token"});
        assert!(VitConfig::from_timm(&timm("vit_small_patch16_224", accepted), &cls).is_ok());
        for (args, key) in [
            (
                serde_json::json!({"pool_include_prefix": true}),
                "pool_include_prefix",
            ),
            (
                serde_json::json!({"dynamic_img_pad": true}),
                "dynamic_img_pad",
            ),
            (serde_json::json!({"global_pool": "map"}), "global_pool"),
            (serde_json::json!({"act_layer": "gelu_new"}), "act_layer"),
            (serde_json::json!({"block_fn": "ResPostBlock"}), "block_fn"),
            (serde_json::json!({"norm_layer": "rmsnorm"}), "norm_layer"),
        ] {
            let err = VitConfig::from_timm(&timm("vit_small_patch16_224", args), &cls).unwrap_err();
            assert!(err.starts_with(&format!("model_args.{key} = ")), "{err}");
        }
        let err = VitConfig::from_timm(
            &timm(
                "vit_small_patch16_224",
                serde_json::json!({"pool_include_prefix": true}),
            ),
            &cls,
        )
        .unwrap_err();
        assert_eq!(
            err,
            "model_args.pool_include_prefix = true is not supported"
        );
    }
}
