//! ConvNeXt, from transformers folders (`model_type` `convnext`) or timm folders (`convnext_*`):
//! a 4x4 patchify stem with a channel LayerNorm, four stages (a LayerNorm and a 2x2 strided
//! convolution between them) of blocks (depthwise 7x7 convolution, channel LayerNorm, a pointwise
//! MLP with GELU, layer scale, stochastic depth while training), global average pooling and a final
//! LayerNorm. Module paths follow timm's names; [`ConvNextConfig::upstream_name`] maps them to
//! transformers'. timm's small variants (`conv_mlp`) hold the MLP as 1x1 convolutions.

use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backbone::{Architecture, ExportFormat, ExportTarget, Inputs, Naming, Preprocessing};
use crate::bert::HiddenAct;
use crate::{ModelError, ModelFolder, PoolingOptions, WeightsIndex, adapters, vision, weights};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConvNextLayout {
    Transformers,
    Timm,
}

/// What shapes the network, read from `config.json` and the weights' shapes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvNextConfig {
    pub layout: ConvNextLayout,
    /// timm: the model name (`convnext_atto`).
    pub timm_name: Option<String>,
    pub dims: Vec<usize>,
    pub depths: Vec<usize>,
    pub layer_scale: bool,
    /// timm's `conv_mlp`: the MLP as 1x1 convolutions.
    pub conv_mlp: bool,
    /// Stochastic depth of the last block (linearly less before it), while training.
    pub drop_path_rate: f64,
    /// Epsilon of the stem, downsampling and block LayerNorms (1e-6, but timm's
    /// `convnext_xxlarge` and `model_args.norm_eps` set another).
    pub norm_eps: f64,
    /// Epsilon of the final LayerNorm (transformers: `layer_norm_eps`; timm: `norm_eps`).
    pub head_eps: f64,
    pub image_size: usize,
    pub num_classes: usize,
}

/// LayerNorm over the channels of `[batch, channels, h, w]`.
#[derive(Module, Debug)]
pub struct ChannelNorm {
    pub norm: LayerNorm,
}

impl ChannelNorm {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.norm
            .forward(x.permute([0, 2, 3, 1]))
            .permute([0, 3, 1, 2])
    }
}

#[derive(Module, Debug)]
pub struct ConvMlp {
    pub fc1: Option<Linear>,
    pub fc2: Option<Linear>,
    /// `conv_mlp`: the same layers as 1x1 convolutions.
    pub fc1_conv: Option<Conv2d>,
    pub fc2_conv: Option<Conv2d>,
}

#[derive(Module, Debug)]
pub struct ConvNextBlock {
    pub conv_dw: Conv2d,
    pub norm: ChannelNorm,
    pub mlp: ConvMlp,
    pub gamma: Option<Param<Tensor<1>>>,
    /// Stochastic depth: a per-sample mask from dropout on ones.
    pub drop_path: Dropout,
}

#[derive(Module, Debug)]
pub struct Downsample {
    pub norm: ChannelNorm,
    pub conv: Conv2d,
}

#[derive(Module, Debug)]
pub struct ConvNextStage {
    pub downsample: Option<Downsample>,
    pub blocks: Vec<ConvNextBlock>,
}

#[derive(Module, Debug)]
pub struct Stem {
    pub conv: Conv2d,
    pub norm: ChannelNorm,
}

#[derive(Module, Debug)]
pub struct ConvNextHead {
    pub norm: LayerNorm,
    pub fc: Option<Linear>,
}

#[derive(Module, Debug)]
pub struct ConvNext {
    pub stem: Stem,
    pub stages: Vec<ConvNextStage>,
    pub head: ConvNextHead,
    #[module(skip)]
    pub config: ConvNextConfig,
}

impl ConvNextBlock {
    fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let x = self.norm.forward(self.conv_dw.forward(input.clone()));
        let x = match (
            &self.mlp.fc1,
            &self.mlp.fc2,
            &self.mlp.fc1_conv,
            &self.mlp.fc2_conv,
        ) {
            (Some(fc1), Some(fc2), ..) => {
                let x = x.permute([0, 2, 3, 1]);
                let x = adapters::linear(fc2, HiddenAct::Gelu.apply_linear(fc1, x));
                x.permute([0, 3, 1, 2])
            }
            (.., Some(fc1), Some(fc2)) => fc2.forward(graft_kernels::gelu(fc1.forward(x), None)),
            _ => unreachable!("built with linear or convolutional MLP layers"),
        };
        let [batch, channels, _, _] = x.dims();
        let x = match &self.gamma {
            Some(gamma) => x * gamma.val().reshape([1, channels, 1, 1]),
            None => x,
        };
        let keep = self.drop_path.forward(Tensor::<4>::ones(
            [batch, 1, 1, 1],
            (&x.device(), x.dtype()),
        ));
        x * keep + input
    }
}

impl ConvNextConfig {
    pub fn feature_size(&self) -> usize {
        *self.dims.last().expect("four stages")
    }

    /// The network with burn's default initialization (every value is then loaded).
    pub fn init(&self, device: &Device) -> ConvNext {
        let norm = |c: usize, eps: f64| LayerNormConfig::new(c).with_epsilon(eps).init(device);
        let channel_norm = |c: usize| ChannelNorm {
            norm: norm(c, self.norm_eps),
        };
        let total: usize = self.depths.iter().sum();
        let mut index = 0;
        let stages = self
            .dims
            .iter()
            .zip(&self.depths)
            .enumerate()
            .map(|(stage, (&dim, &depth))| ConvNextStage {
                downsample: (stage > 0).then(|| Downsample {
                    norm: channel_norm(self.dims[stage - 1]),
                    conv: Conv2dConfig::new([self.dims[stage - 1], dim], [2, 2])
                        .with_stride([2, 2])
                        .init(device),
                }),
                blocks: (0..depth)
                    .map(|_| {
                        let rate = if total > 1 {
                            self.drop_path_rate * index as f64 / (total - 1) as f64
                        } else {
                            0.0
                        };
                        index += 1;
                        let hidden = 4 * dim;
                        ConvNextBlock {
                            conv_dw: Conv2dConfig::new([dim, dim], [7, 7])
                                .with_groups(dim)
                                .with_padding(PaddingConfig2d::Explicit(3, 3, 3, 3))
                                .init(device),
                            norm: channel_norm(dim),
                            mlp: ConvMlp {
                                fc1: (!self.conv_mlp)
                                    .then(|| LinearConfig::new(dim, hidden).init(device)),
                                fc2: (!self.conv_mlp)
                                    .then(|| LinearConfig::new(hidden, dim).init(device)),
                                fc1_conv: self
                                    .conv_mlp
                                    .then(|| Conv2dConfig::new([dim, hidden], [1, 1]).init(device)),
                                fc2_conv: self
                                    .conv_mlp
                                    .then(|| Conv2dConfig::new([hidden, dim], [1, 1]).init(device)),
                            },
                            gamma: self
                                .layer_scale
                                .then(|| Param::from_tensor(Tensor::ones([dim], device))),
                            drop_path: DropoutConfig::new(rate).init(),
                        }
                    })
                    .collect(),
            })
            .collect();
        let width = self.feature_size();
        ConvNext {
            stem: Stem {
                conv: Conv2dConfig::new([3, self.dims[0]], [4, 4])
                    .with_stride([4, 4])
                    .init(device),
                norm: channel_norm(self.dims[0]),
            },
            stages,
            head: ConvNextHead {
                norm: norm(width, self.head_eps),
                fc: (self.num_classes > 0)
                    .then(|| LinearConfig::new(width, self.num_classes).init(device)),
            },
            config: self.clone(),
        }
    }

    /// The upstream name of a module path in the folder's layout (transformers' without the
    /// `convnext.` prefix).
    pub fn upstream_name(&self, path: &str) -> String {
        let path = path
            .replace(".norm.norm.", ".norm.")
            .replace("mlp.fc1_conv.", "mlp.fc1.")
            .replace("mlp.fc2_conv.", "mlp.fc2.");
        let timm = path
            .replace("stem.conv.", "stem.0.")
            .replace("stem.norm.", "stem.1.")
            .replace("downsample.norm.", "downsample.0.")
            .replace("downsample.conv.", "downsample.1.");
        if self.layout == ConvNextLayout::Timm {
            return timm;
        }
        let renames: &[(&str, &str)] = &[
            ("stem.0.", "embeddings.patch_embeddings."),
            ("stem.1.", "embeddings.layernorm."),
            ("head.norm.", "layernorm."),
            ("head.fc.", "classifier."),
            (".downsample.", ".downsampling_layer."),
            (".blocks.", ".layers."),
            (".conv_dw.", ".dwconv."),
            (".norm.", ".layernorm."),
            (".mlp.fc1.", ".pwconv1."),
            (".mlp.fc2.", ".pwconv2."),
            (".gamma", ".layer_scale_parameter"),
        ];
        let mut name = renames
            .iter()
            .fold(timm, |name, (ours, theirs)| name.replace(ours, theirs));
        if name.starts_with("stages.") {
            name = format!("encoder.{name}");
        }
        name
    }

    fn from_transformers(config: &Value, index: &WeightsIndex) -> Result<Self, String> {
        let list = |key: &str| -> Result<Vec<usize>, String> {
            serde_json::from_value(config.get(key).cloned().ok_or(format!("no \"{key}\""))?)
                .map_err(|e| format!("{key}: {e}"))
        };
        let dims = list("hidden_sizes")?;
        let depths = list("depths")?;
        let act = config
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("gelu");
        if act != "gelu" {
            return Err(format!("hidden_act \"{act}\" is not supported (gelu)"));
        }
        if config
            .get("patch_size")
            .and_then(Value::as_u64)
            .unwrap_or(4)
            != 4
        {
            return Err("patch_size other than 4 is not supported".into());
        }
        Ok(Self {
            layout: ConvNextLayout::Transformers,
            timm_name: None,
            dims,
            depths,
            layer_scale: config
                .get("layer_scale_init_value")
                .and_then(Value::as_f64)
                .unwrap_or(1e-6)
                > 0.0,
            conv_mlp: false,
            drop_path_rate: config
                .get("drop_path_rate")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            norm_eps: 1e-6,
            head_eps: config
                .get("layer_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-12),
            image_size: config
                .get("image_size")
                .and_then(Value::as_u64)
                .unwrap_or(224) as usize,
            num_classes: index
                .tensors
                .get("classifier.weight")
                .map_or(0, |t| t.shape[0]),
        })
    }

    fn from_timm(config: &Value, index: &WeightsIndex) -> Result<Self, String> {
        let name = config
            .get("architecture")
            .and_then(Value::as_str)
            .ok_or("no \"architecture\"")?;
        let default_eps = TIMM_MODELS
            .iter()
            .find(|(model, _)| *model == name)
            .map(|&(_, eps)| eps)
            .ok_or_else(|| {
                let names: Vec<&str> = TIMM_MODELS.iter().map(|(model, _)| *model).collect();
                format!(
                    "architecture \"{name}\" is not supported (timm ConvNeXt: {})",
                    names.join(", ")
                )
            })?;
        vision::check_model_args(config, TIMM_ARGS)?;
        let image_size = vision::timm_input_size(config)?.unwrap_or(224);
        let shape = |key: &str| index.tensors.get(key).map(|t| t.shape.clone());
        let mut dims = Vec::new();
        let mut depths = Vec::new();
        for stage in 0.. {
            let depth = (0..)
                .take_while(|b| {
                    index
                        .tensors
                        .contains_key(&format!("stages.{stage}.blocks.{b}.conv_dw.weight"))
                })
                .count();
            if depth == 0 {
                break;
            }
            let dim = shape(&format!("stages.{stage}.blocks.0.conv_dw.weight")).unwrap()[0];
            dims.push(dim);
            depths.push(depth);
        }
        if dims.len() != 4 {
            return Err(format!(
                "{} stages found (stages.N.blocks.M.conv_dw.weight): not a timm ConvNeXt",
                dims.len()
            ));
        }
        if index.tensors.contains_key("head.fc.norm.weight")
            || shape("head.pre_logits.fc.weight").is_some()
        {
            return Err("ConvNeXt heads with pre-logits layers are not supported".into());
        }
        let args = config.get("model_args").cloned().unwrap_or(Value::Null);
        // timm passes `norm_eps` to every LayerNorm; null means the LayerNorm's own 1e-6.
        let norm_eps = match args.get("norm_eps") {
            None => default_eps,
            Some(Value::Null) => 1e-6,
            Some(eps) => eps.as_f64().ok_or("model_args.norm_eps is not a number")?,
        };
        Ok(Self {
            layout: ConvNextLayout::Timm,
            timm_name: Some(name.into()),
            conv_mlp: shape("stages.0.blocks.0.mlp.fc1.weight").is_some_and(|s| s.len() == 4),
            layer_scale: index.tensors.contains_key("stages.0.blocks.0.gamma"),
            drop_path_rate: args
                .get("drop_path_rate")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            norm_eps,
            head_eps: norm_eps,
            image_size,
            num_classes: shape("head.fc.weight").map_or(0, |s| s[0]),
            dims,
            depths,
        })
    }

    pub fn of_folder(folder: &ModelFolder) -> Result<Self, ModelError> {
        let index = folder.weights_index()?;
        let config = if vision::is_timm(&folder.config) {
            Self::from_timm(&folder.config, &index)
        } else {
            Self::from_transformers(&folder.config, &index)
        };
        config.map_err(|message| ModelError::Config {
            path: folder.config_path(),
            message,
        })
    }
}

/// timm's ConvNeXt model functions graft builds, with the LayerNorm eps each sets (the others
/// change the stem, the norms or the head).
const TIMM_MODELS: [(&str, f64); 10] = [
    ("convnext_atto", 1e-6),
    ("convnext_femto", 1e-6),
    ("convnext_pico", 1e-6),
    ("convnext_nano", 1e-6),
    ("convnext_tiny", 1e-6),
    ("convnext_small", 1e-6),
    ("convnext_base", 1e-6),
    ("convnext_large", 1e-6),
    ("convnext_xlarge", 1e-6),
    ("convnext_xxlarge", 1e-5),
];

/// timm's ConvNeXt `model_args`: widths, depths, layer scale and the 1x1-convolution MLP are read
/// from the weights; other settings only with the values graft builds.
const TIMM_ARGS: &[vision::ModelArg] = &[
    ("dims", vision::any),
    ("depths", vision::any),
    ("ls_init_value", vision::any),
    ("conv_mlp", vision::any),
    ("head_init_scale", vision::any),
    ("norm_eps", |v| {
        v.is_null() || v.as_f64().is_some_and(|eps| eps > 0.0)
    }),
    ("norm_layer", |v| {
        v.is_null() || matches!(v.as_str(), Some("layernorm" | "layernorm2d"))
    }),
    ("global_pool", |v| v.as_str() == Some("avg")),
    ("output_stride", |v| v.as_u64() == Some(32)),
    ("kernel_sizes", |v| {
        v.as_u64() == Some(7)
            || v.as_array()
                .is_some_and(|k| k.len() == 4 && k.iter().all(|k| k.as_u64() == Some(7)))
    }),
    ("stem_type", |v| v.as_str() == Some("patch")),
    ("patch_size", |v| v.as_u64() == Some(4)),
    ("head_norm_first", |v| v.as_bool() == Some(false)),
    ("head_hidden_size", Value::is_null),
    ("conv_bias", |v| v.as_bool() == Some(true)),
    ("use_grn", |v| v.as_bool() == Some(false)),
    ("act_layer", |v| v.as_str() == Some("gelu")),
];

impl ConvNext {
    /// Pooled, normalized features `[batch, channels]` (what the classifier reads).
    pub fn forward_features(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = self.stem.norm.forward(self.stem.conv.forward(images));
        for stage in &self.stages {
            if let Some(down) = &stage.downsample {
                x = down.conv.forward(down.norm.forward(x));
            }
            for block in &stage.blocks {
                x = block.forward(x);
            }
        }
        let [batch, channels, _, _] = x.dims();
        let pooled = x.mean_dim(3).mean_dim(2).reshape([batch, channels]);
        self.head.norm.forward(pooled)
    }
}

impl Architecture for ConvNext {
    fn name() -> &'static str {
        "convnext"
    }

    fn detects(config: &Value) -> bool {
        if vision::is_timm(config) {
            return config
                .get("architecture")
                .and_then(Value::as_str)
                .is_some_and(|name| name.starts_with("convnext_"));
        }
        config.get("model_type").and_then(Value::as_str) == Some("convnext")
    }

    fn preprocessing(folder: &ModelFolder) -> Result<Preprocessing, ModelError> {
        let config = ConvNextConfig::of_folder(folder)?;
        vision::family_preprocessing(folder, || {
            vision::processor_transform(&folder.dir, config.image_size)
        })
    }

    fn naming(folder: &ModelFolder) -> Result<Naming, ModelError> {
        Ok(vision::family_naming(folder))
    }

    fn load(folder: &ModelFolder, classifier: bool, device: &Device) -> Result<Self, ModelError> {
        let mut config = ConvNextConfig::of_folder(folder)?;
        if !classifier {
            config.num_classes = 0;
        }
        let mut model = config.init(device);
        weights::check_sizes(&model, &folder.weights_path())?;
        let names = weights::param_names(&model, |p| config.upstream_name(p));
        weights::load_renamed(&mut model, &folder.weights_path(), &names, &["convnext."])?;
        Ok(model)
    }

    fn describe(&self) -> String {
        let c = &self.config;
        format!("convnext (dims {:?}, depths {:?})", c.dims, c.depths)
    }

    fn feature_size(&self) -> usize {
        self.config.feature_size()
    }

    fn forward_features(&self, inputs: Inputs, _pooling: PoolingOptions) -> Tensor<2> {
        let images = inputs.into_image();
        self.forward_features(images)
    }

    fn classifier(&self) -> Option<&Linear> {
        self.head.fc.as_ref()
    }

    fn upstream_name(&self, path: &str) -> String {
        self.config.upstream_name(path)
    }

    fn export_name(&self, _format: ExportFormat, path: &str) -> String {
        self.config.upstream_name(path)
    }

    /// The stem is block 0, each stage (with its downsampling) a block; the head norm counts with
    /// the last stage.
    fn block_of(&self, path: &str) -> usize {
        match crate::bert::layer_index(path, "stages.") {
            Some(stage) => stage + 1,
            None if path.starts_with("head.") => self.stages.len(),
            None => 0,
        }
    }

    fn num_blocks(&self) -> usize {
        self.stages.len() + 1
    }

    fn exports(&self) -> Vec<ExportTarget> {
        let c = &self.config;
        vec![match c.layout {
            ConvNextLayout::Timm => ExportTarget {
                format: ExportFormat::Timm,
                model: c.timm_name.clone().unwrap_or_default(),
                prefix: String::new(),
                classifier: "head.fc".into(),
                classifier_copies: Vec::new(),
            },
            ConvNextLayout::Transformers => ExportTarget {
                format: ExportFormat::Transformers,
                model: "ConvNextForImageClassification".into(),
                prefix: "convnext.".into(),
                classifier: "classifier".into(),
                classifier_copies: Vec::new(),
            },
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stochastic_depth_drops_whole_samples_only_while_training() {
        let config = ConvNextConfig {
            layout: ConvNextLayout::Timm,
            timm_name: None,
            dims: vec![4, 4, 4, 4],
            depths: vec![2, 1, 1, 1],
            layer_scale: true,
            conv_mlp: false,
            drop_path_rate: 0.9,
            norm_eps: 1e-6,
            head_eps: 1e-6,
            image_size: 32,
            num_classes: 0,
        };
        #[allow(deprecated)]
        let device = Device::flex().autodiff();
        device.seed(7);
        let model = config.init(&device);
        // The rate grows to 0.9 at the last block; the first has none.
        assert_eq!(model.stages[0].blocks[0].drop_path.prob, 0.0);
        assert!((model.stages[3].blocks[0].drop_path.prob - 0.9).abs() < 1e-12);
        let block = &model.stages[3].blocks[0];
        let x = Tensor::<4>::ones([256, 4, 3, 3], &device);
        let rows = |t: Tensor<4>| -> Vec<Vec<f32>> {
            let v = t.into_data().try_into_vec_as::<f32>().unwrap();
            v.chunks(36).map(<[f32]>::to_vec).collect()
        };
        let input = rows(x.clone());
        let trained = rows(block.forward(x.clone()));
        let dropped = trained.iter().zip(&input).filter(|(a, b)| a == b).count();
        assert!(
            dropped > 128 && dropped < 256,
            "{dropped} of 256 samples dropped (about 90%, never all: 0.9^256 is 2e-12)"
        );
        let frozen = block.clone().no_grad().freeze();
        let inference = rows(frozen.forward(x));
        assert!(inference.iter().zip(&input).all(|(a, b)| a != b));
    }

    #[test]
    fn names_in_both_layouts() {
        let mut c = ConvNextConfig {
            layout: ConvNextLayout::Timm,
            timm_name: None,
            dims: vec![8, 16, 24, 32],
            depths: vec![1, 1, 1, 1],
            layer_scale: true,
            conv_mlp: true,
            drop_path_rate: 0.0,
            norm_eps: 1e-6,
            head_eps: 1e-6,
            image_size: 32,
            num_classes: 0,
        };
        assert_eq!(c.upstream_name("stem.norm.norm.weight"), "stem.1.weight");
        assert_eq!(
            c.upstream_name("stages.1.downsample.norm.norm.bias"),
            "stages.1.downsample.0.bias"
        );
        assert_eq!(
            c.upstream_name("stages.2.blocks.0.mlp.fc1_conv.weight"),
            "stages.2.blocks.0.mlp.fc1.weight"
        );
        c.layout = ConvNextLayout::Transformers;
        assert_eq!(
            c.upstream_name("stages.2.blocks.0.norm.norm.weight"),
            "encoder.stages.2.layers.0.layernorm.weight"
        );
        assert_eq!(
            c.upstream_name("stages.1.downsample.conv.weight"),
            "encoder.stages.1.downsampling_layer.1.weight"
        );
        assert_eq!(
            c.upstream_name("stem.conv.bias"),
            "embeddings.patch_embeddings.bias"
        );
        assert_eq!(
            c.upstream_name("stages.0.blocks.0.gamma"),
            "encoder.stages.0.layers.0.layer_scale_parameter"
        );
        assert_eq!(c.upstream_name("head.norm.weight"), "layernorm.weight");
    }

    /// A timm ConvNeXt's tensors, as far as the config reads them.
    fn timm_index() -> WeightsIndex {
        let mut index = WeightsIndex::default();
        for (stage, dim) in [8, 12, 16, 24].into_iter().enumerate() {
            index.tensors.insert(
                format!("stages.{stage}.blocks.0.conv_dw.weight"),
                crate::weights::TensorInfo {
                    dtype: "F32".into(),
                    shape: vec![dim, 1, 7, 7],
                },
            );
        }
        index
    }

    fn timm_config(architecture: &str, args: Value, input_size: [usize; 3]) -> Value {
        serde_json::json!({"architecture": architecture, "model_args": args,
            "pretrained_cfg": {"input_size": input_size}})
    }

    #[test]
    fn timm_norm_eps_follows_the_architecture_and_model_args() {
        let index = timm_index();
        let eps = |architecture: &str, args: Value| {
            let c =
                ConvNextConfig::from_timm(&timm_config(architecture, args, [3, 48, 48]), &index)
                    .unwrap();
            assert_eq!(c.image_size, 48);
            (c.norm_eps, c.head_eps)
        };
        assert_eq!(eps("convnext_tiny", Value::Null), (1e-6, 1e-6));
        assert_eq!(eps("convnext_xxlarge", Value::Null), (1e-5, 1e-5));
        let args = serde_json::json!({"norm_eps": 1e-3});
        assert_eq!(eps("convnext_tiny", args), (1e-3, 1e-3));
        let args = serde_json::json!({"norm_eps": null});
        assert_eq!(eps("convnext_xxlarge", args), (1e-6, 1e-6));
        let err = ConvNextConfig::from_timm(
            &timm_config("convnext_atto_ols", Value::Null, [3, 48, 48]),
            &index,
        )
        .unwrap_err();
        assert!(
            err.starts_with("architecture \"convnext_atto_ols\""),
            "{err}"
        );
    }

    #[test]
    fn timm_model_args_other_than_graft_builds_are_refused() {
        let index = timm_index();
        let accepted = serde_json::json!({"num_classes": 3, "dims": [8, 12, 16, 24],
            "depths": [1, 1, 1, 1], "in_chans": 3, "global_pool": "avg", "ls_init_value": null,
            "drop_path_rate": 0.1, "kernel_sizes": 7});
        let c =
            ConvNextConfig::from_timm(&timm_config("convnext_tiny", accepted, [3, 48, 48]), &index)
                .unwrap();
        assert_eq!(c.drop_path_rate, 0.1);
        for (args, key) in [
            (serde_json::json!({"act_layer": "relu"}), "act_layer"),
            (serde_json::json!({"conv_bias": false}), "conv_bias"),
            (
                serde_json::json!({"head_norm_first": true}),
                "head_norm_first",
            ),
            (serde_json::json!({"global_pool": "max"}), "global_pool"),
            (serde_json::json!({"use_grn": true}), "use_grn"),
            (serde_json::json!({"output_stride": 16}), "output_stride"),
            (
                serde_json::json!({"kernel_sizes": [7, 5, 5, 3]}),
                "kernel_sizes",
            ),
        ] {
            let err =
                ConvNextConfig::from_timm(&timm_config("convnext_tiny", args, [3, 48, 48]), &index)
                    .unwrap_err();
            assert!(err.starts_with(&format!("model_args.{key} = ")), "{err}");
        }
        let err = ConvNextConfig::from_timm(
            &timm_config("convnext_tiny", Value::Null, [3, 48, 64]),
            &index,
        )
        .unwrap_err();
        assert!(err.contains("pretrained_cfg.input_size"), "{err}");
    }
}
