//! MobileNetV3 (small and large), from timm folders (`mobilenetv3_small_*`, `mobilenetv3_large_*`)
//! or torchvision checkpoints in graft's vision folder (`"architecture": "mobilenet_v3"`,
//! `"variant": "small"` or `"large"`): a hard-swish stem, inverted-residual blocks (expansion,
//! depthwise convolution, squeeze-excitation with a hard-sigmoid gate, projection; ReLU or
//! hard-swish as the variant's table says), a 1x1 convolution, average pooling and a hidden layer
//! with hard-swish before the classifier. Channel counts, kernels and squeeze-excitation are read
//! from the weights; strides and activations from the variant's table (torchvision's
//! `_mobilenet_v3_conf`, timm's `arch_def`, which agree). Keras' MobileNetV3 converts into graft's
//! folder with `"padding": "same"` (TensorFlow's padding) and, saved without its top, no hidden
//! layer: the pooled features of the last convolution are then what the head reads.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::{hard_sigmoid, relu};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backbone::{Architecture, ExportFormat, ExportTarget, Inputs, Naming, Preprocessing};
use crate::vision::{self, VisionArchitecture, VisionConfig};
use crate::{ModelError, ModelFolder, PoolingOptions, WeightsIndex};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MobileNetLayout {
    Timm,
    Torchvision,
}

/// One inverted-residual block, as the weights and the variant's table give it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockSpec {
    pub input: usize,
    /// Width after the expansion (the input width when there is none).
    pub mid: usize,
    pub output: usize,
    pub kernel: usize,
    pub stride: usize,
    pub hard_swish: bool,
    pub expand: bool,
    /// Squeeze-excitation's reduced width, if the block has one.
    pub se: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MobileNetV3Config {
    pub layout: MobileNetLayout,
    /// `small` or `large`.
    pub variant: String,
    /// timm: the model name.
    pub timm_name: Option<String>,
    pub stem: usize,
    pub blocks: Vec<BlockSpec>,
    /// The 1x1 convolution after the blocks.
    pub last_conv: usize,
    /// The hidden layer before the classifier (0: none, as in Keras' models without their top).
    pub hidden: usize,
    pub bn_eps: f64,
    pub num_classes: usize,
    /// TensorFlow's "SAME" padding (Keras' models, timm's `tf_` ports): on stride-2 layers the
    /// extra row and column go at the bottom and right; else PyTorch's symmetric padding.
    #[serde(default)]
    pub tf_padding: bool,
    /// With `tf_padding`: Keras' `correct_pad` of a model built without an input size, which pads
    /// the stride-2 depthwise convolutions k/2 - 1 before and k/2 after at every size (the stem
    /// keeps "same").
    #[serde(default)]
    pub keras_unsized: bool,
}

/// Strides and whether hard-swish is used, per block, of each variant.
fn table(variant: &str) -> Option<(&'static [usize], &'static [bool])> {
    const SMALL_STRIDES: [usize; 11] = [2, 2, 1, 2, 1, 1, 1, 1, 2, 1, 1];
    const SMALL_HS: [bool; 11] = [
        false, false, false, true, true, true, true, true, true, true, true,
    ];
    const LARGE_STRIDES: [usize; 15] = [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1];
    const LARGE_HS: [bool; 15] = [
        false, false, false, false, false, false, true, true, true, true, true, true, true, true,
        true,
    ];
    match variant {
        "small" => Some((&SMALL_STRIDES, &SMALL_HS)),
        "large" => Some((&LARGE_STRIDES, &LARGE_HS)),
        _ => None,
    }
}

/// A convolution and its BatchNorm.
#[derive(Module, Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

#[derive(Module, Debug)]
pub struct SqueezeExcite {
    pub reduce: Conv2d,
    pub expand: Conv2d,
}

#[derive(Module, Debug)]
pub struct MbBlock {
    pub expand: Option<ConvBn>,
    pub dw: ConvBn,
    pub se: Option<SqueezeExcite>,
    pub project: ConvBn,
    #[module(skip)]
    pub hard_swish: bool,
    #[module(skip)]
    pub residual: bool,
}

#[derive(Module, Debug)]
pub struct MobileNetV3 {
    pub stem: ConvBn,
    pub blocks: Vec<MbBlock>,
    pub last_conv: ConvBn,
    /// timm's `conv_head` (a 1x1 convolution with a bias) or torchvision's `classifier.0`.
    pub head_conv: Option<Conv2d>,
    pub head_linear: Option<Linear>,
    pub classifier: Option<Linear>,
    #[module(skip)]
    pub config: MobileNetV3Config,
}

fn hard_swish<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone() * hard_sigmoid(x, 1.0 / 6.0, 0.5)
}

impl ConvBn {
    /// The parameter paths of a `ConvBn` at module path `at`.
    pub fn param_paths(at: &str) -> [String; 5] {
        [
            "conv.weight",
            "bn.weight",
            "bn.bias",
            "bn.running_mean",
            "bn.running_var",
        ]
        .map(|p| format!("{at}.{p}"))
    }

    pub(crate) fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.bn.forward(self.conv.forward(x))
    }
}

impl MbBlock {
    fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let act = |x: Tensor<4>| {
            if self.hard_swish {
                hard_swish(x)
            } else {
                relu(x)
            }
        };
        let mut x = input.clone();
        if let Some(expand) = &self.expand {
            x = act(expand.forward(x));
        }
        x = act(self.dw.forward(x));
        if let Some(se) = &self.se {
            let scale = x.clone().mean_dim(3).mean_dim(2);
            let scale = se.expand.forward(relu(se.reduce.forward(scale)));
            x = x * hard_sigmoid(scale, 1.0 / 6.0, 0.5);
        }
        x = self.project.forward(x);
        if self.residual { x + input } else { x }
    }
}

impl MobileNetV3Config {
    pub fn init(&self, device: &Device) -> MobileNetV3 {
        let conv_bn =
            |input: usize, output: usize, kernel: usize, stride: usize, groups: usize| ConvBn {
                conv: Conv2dConfig::new([input, output], [kernel, kernel])
                    .with_stride([stride, stride])
                    .with_padding(match (self.tf_padding, self.keras_unsized) {
                        (true, true) if stride == 2 && groups > 1 => PaddingConfig2d::Explicit(
                            kernel / 2 - 1,
                            kernel / 2 - 1,
                            kernel / 2,
                            kernel / 2,
                        ),
                        (true, _) => PaddingConfig2d::Same,
                        (false, _) => PaddingConfig2d::Explicit(
                            kernel / 2,
                            kernel / 2,
                            kernel / 2,
                            kernel / 2,
                        ),
                    })
                    .with_groups(groups)
                    .with_bias(false)
                    .init(device),
                bn: BatchNormConfig::new(output)
                    .with_epsilon(self.bn_eps)
                    .init(device),
            };
        let pointwise =
            |input: usize, output: usize| Conv2dConfig::new([input, output], [1, 1]).init(device);
        let blocks = self
            .blocks
            .iter()
            .map(|b| MbBlock {
                expand: b.expand.then(|| conv_bn(b.input, b.mid, 1, 1, 1)),
                dw: conv_bn(b.mid, b.mid, b.kernel, b.stride, b.mid),
                se: b.se.map(|reduced| SqueezeExcite {
                    reduce: pointwise(b.mid, reduced),
                    expand: pointwise(reduced, b.mid),
                }),
                project: conv_bn(b.mid, b.output, 1, 1, 1),
                hard_swish: b.hard_swish,
                residual: b.stride == 1 && b.input == b.output,
            })
            .collect();
        let last = self.blocks.last().map_or(self.stem, |b| b.output);
        let timm = self.layout == MobileNetLayout::Timm;
        let hidden = self.hidden > 0;
        MobileNetV3 {
            stem: conv_bn(3, self.stem, 3, 2, 1),
            blocks,
            last_conv: conv_bn(last, self.last_conv, 1, 1, 1),
            head_conv: (timm && hidden).then(|| pointwise(self.last_conv, self.hidden)),
            head_linear: (!timm && hidden)
                .then(|| LinearConfig::new(self.last_conv, self.hidden).init(device)),
            classifier: (self.num_classes > 0)
                .then(|| LinearConfig::new(self.feature_size(), self.num_classes).init(device)),
            config: self.clone(),
        }
    }

    /// Width of the features the head reads: the hidden layer's, else the last convolution's.
    pub fn feature_size(&self) -> usize {
        if self.hidden > 0 {
            self.hidden
        } else {
            self.last_conv
        }
    }

    /// The timm or torchvision name of a module path (`bn` is BatchNorm's `bn`; burn's
    /// gamma/beta are already weight/bias here).
    pub fn upstream_name(&self, path: &str) -> String {
        self.name_in(self.layout, path)
    }

    /// The name of a module path in `layout`. A torchvision-layout network's hidden layer (a
    /// linear layer, `head_linear`) is timm's `conv_head`, a 1x1 convolution of the same values.
    pub fn name_in(&self, layout: MobileNetLayout, path: &str) -> String {
        let timm = layout == MobileNetLayout::Timm;
        let (head, rest) = path.split_once('.').unwrap_or((path, ""));
        match head {
            "stem" => match (timm, rest.split_once('.')) {
                (true, Some(("conv", t))) => format!("conv_stem.{t}"),
                (true, Some(("bn", t))) => format!("bn1.{t}"),
                (false, Some(("conv", t))) => format!("features.0.0.{t}"),
                (false, Some(("bn", t))) => format!("features.0.1.{t}"),
                _ => path.to_string(),
            },
            "last_conv" => {
                let n = self.blocks.len();
                if timm {
                    let stage = self.timm_stages().len();
                    format!("blocks.{stage}.0.{}", rest.replacen("bn.", "bn1.", 1))
                } else {
                    let rest = rest.replacen("conv.", "0.", 1).replacen("bn.", "1.", 1);
                    format!("features.{}.{rest}", n + 1)
                }
            }
            "head_conv" => format!("conv_head.{rest}"),
            "head_linear" if timm => format!("conv_head.{rest}"),
            "head_linear" => format!("classifier.0.{rest}"),
            "classifier" => {
                if timm {
                    format!("classifier.{rest}")
                } else {
                    format!("classifier.3.{rest}")
                }
            }
            "blocks" => {
                let (index, inner) = rest.split_once('.').unwrap_or((rest, ""));
                let i: usize = index.parse().unwrap_or(0);
                let spec = &self.blocks[i];
                if timm {
                    let (stage, j) = self.timm_position(i);
                    let ds = !spec.expand;
                    let renames: &[(&str, &str)] = &[
                        ("expand.conv.", "conv_pw."),
                        ("expand.bn.", "bn1."),
                        ("dw.conv.", "conv_dw."),
                        ("dw.bn.", if ds { "bn1." } else { "bn2." }),
                        ("se.reduce.", "se.conv_reduce."),
                        ("se.expand.", "se.conv_expand."),
                        ("project.conv.", if ds { "conv_pw." } else { "conv_pwl." }),
                        ("project.bn.", if ds { "bn2." } else { "bn3." }),
                    ];
                    let name = renames
                        .iter()
                        .find_map(|(ours, theirs)| {
                            inner.strip_prefix(ours).map(|t| format!("{theirs}{t}"))
                        })
                        .unwrap_or_else(|| inner.to_string());
                    format!("blocks.{stage}.{j}.{name}")
                } else {
                    // block.K: [expand], depthwise, [se], project.
                    let mut k = 0;
                    let mut slot = |present: bool| {
                        let at = k;
                        k += usize::from(present);
                        at
                    };
                    let expand = slot(spec.expand);
                    let dw = slot(true);
                    let se = slot(spec.se.is_some());
                    let project = slot(true);
                    let renames: [(&str, String); 6] = [
                        ("expand.conv.", format!("{expand}.0.")),
                        ("expand.bn.", format!("{expand}.1.")),
                        ("dw.conv.", format!("{dw}.0.")),
                        ("dw.bn.", format!("{dw}.1.")),
                        ("se.reduce.", format!("{se}.fc1.")),
                        ("project.", format!("{project}.")),
                    ];
                    let name = if let Some(t) = inner.strip_prefix("se.expand.") {
                        format!("{se}.fc2.{t}")
                    } else if let Some(t) = inner.strip_prefix("project.conv.") {
                        format!("{project}.0.{t}")
                    } else if let Some(t) = inner.strip_prefix("project.bn.") {
                        format!("{project}.1.{t}")
                    } else {
                        renames
                            .iter()
                            .find_map(|(ours, theirs)| {
                                inner.strip_prefix(ours).map(|t| format!("{theirs}{t}"))
                            })
                            .unwrap_or_else(|| inner.to_string())
                    };
                    format!("features.{}.block.{name}", i + 1)
                }
            }
            _ => path.to_string(),
        }
    }

    /// timm's `tf_mobilenetv3_{variant}_{100,075}` whose widths these are (Keras' MobileNetV3 at
    /// alpha 1.0 or 0.75 builds the same network), if one is.
    pub fn timm_port(&self) -> Option<String> {
        let (outputs, last, hidden): (&[usize], usize, usize) = match self.variant.as_str() {
            "small" => (&[16, 24, 24, 40, 40, 40, 48, 48, 96, 96, 96], 576, 1024),
            _ => (
                &[
                    16, 24, 24, 40, 40, 40, 80, 80, 80, 80, 112, 112, 160, 160, 160,
                ],
                960,
                1280,
            ),
        };
        [(1.0, "100"), (0.75, "075")]
            .into_iter()
            .find(|(alpha, _)| {
                let widths: Vec<usize> = self.blocks.iter().map(|b| b.output).collect();
                let scaled: Vec<usize> = outputs
                    .iter()
                    .map(|&w| crate::efficientnet::round_filters(w, *alpha))
                    .collect();
                widths == scaled
                    && self.last_conv == crate::efficientnet::round_filters(last, *alpha)
                    && self.hidden == hidden
                    && (self.bn_eps - 1e-3).abs() < 1e-12
            })
            .map(|(_, suffix)| format!("tf_mobilenetv3_{}_{suffix}", self.variant))
    }

    /// timm's blocks per stage (the last stage, the 1x1 convolution, not counted).
    fn timm_stages(&self) -> &'static [usize] {
        if self.variant == "small" {
            &[1, 2, 3, 2, 3]
        } else {
            &[1, 2, 3, 4, 2, 3]
        }
    }

    fn timm_position(&self, mut i: usize) -> (usize, usize) {
        for (stage, &n) in self.timm_stages().iter().enumerate() {
            if i < n {
                return (stage, i);
            }
            i -= n;
        }
        (self.timm_stages().len(), i)
    }

    /// Every parameter's module path, in order (what [`Self::name_in`] names).
    pub fn param_paths(&self) -> Vec<String> {
        let conv_bn = ConvBn::param_paths;
        let mut paths: Vec<String> = conv_bn("stem").into();
        for (i, block) in self.blocks.iter().enumerate() {
            if block.expand {
                paths.extend(conv_bn(&format!("blocks.{i}.expand")));
            }
            paths.extend(conv_bn(&format!("blocks.{i}.dw")));
            if block.se.is_some() {
                for p in [
                    "reduce.weight",
                    "reduce.bias",
                    "expand.weight",
                    "expand.bias",
                ] {
                    paths.push(format!("blocks.{i}.se.{p}"));
                }
            }
            paths.extend(conv_bn(&format!("blocks.{i}.project")));
        }
        paths.extend(conv_bn("last_conv"));
        let head = match self.layout {
            MobileNetLayout::Timm => "head_conv",
            MobileNetLayout::Torchvision => "head_linear",
        };
        for layer in [head, "classifier"] {
            paths.extend(["weight", "bias"].map(|p| format!("{layer}.{p}")));
        }
        paths
    }

    /// Reads the blocks' widths, kernels and squeeze-excitation from the weights.
    pub(crate) fn from_weights(
        layout: MobileNetLayout,
        variant: &str,
        index: &WeightsIndex,
    ) -> Result<Self, String> {
        let (strides, hs) = table(variant)
            .ok_or_else(|| format!("MobileNetV3 variant \"{variant}\" is not small or large"))?;
        let mut config = Self {
            layout,
            variant: variant.into(),
            timm_name: None,
            stem: 0,
            blocks: Vec::new(),
            last_conv: 0,
            hidden: 0,
            bn_eps: if layout == MobileNetLayout::Timm {
                1e-5
            } else {
                1e-3
            },
            num_classes: 0,
            tf_padding: false,
            keras_unsized: false,
        };
        let shape = |name: &str| -> Result<Vec<usize>, String> {
            index
                .tensors
                .get(name)
                .map(|t| t.shape.clone())
                .ok_or_else(|| format!("no tensor `{name}`"))
        };
        // Each block's names depend on what it has (torchvision numbers its layers), so each
        // part is looked up once the parts before it are known.
        config.stem = shape(&config.upstream_name("stem.conv.weight"))?[0];
        let mut input = config.stem;
        for i in 0..strides.len() {
            // Whether the block expands: timm's first block (depthwise-separable) and
            // torchvision's blocks whose first layer is depthwise do not.
            let mut spec = BlockSpec {
                input,
                mid: input,
                output: 0,
                kernel: 0,
                stride: strides[i],
                hard_swish: hs[i],
                expand: true,
                se: None,
            };
            config.blocks.push(spec.clone());
            let expand_name = config.upstream_name(&format!("blocks.{i}.expand.conv.weight"));
            let expands = index
                .tensors
                .get(&expand_name)
                .is_some_and(|t| t.shape.len() == 4 && t.shape[1] == input && t.shape[2] == 1);
            spec.expand = expands && (layout == MobileNetLayout::Torchvision || i > 0);
            config.blocks[i] = spec.clone();
            // Where squeeze-excitation would be, given the expansion; its presence then places
            // the projection.
            spec.se = Some(0);
            config.blocks[i] = spec.clone();
            let se_name = config.upstream_name(&format!("blocks.{i}.se.reduce.weight"));
            spec.se = index.tensors.get(&se_name).map(|t| t.shape[0]);
            config.blocks[i] = spec.clone();
            let dw = shape(&config.upstream_name(&format!("blocks.{i}.dw.conv.weight")))?;
            spec.mid = dw[0];
            spec.kernel = dw[2];
            let project = shape(&config.upstream_name(&format!("blocks.{i}.project.conv.weight")))?;
            spec.output = project[0];
            config.blocks[i] = spec.clone();
            input = spec.output;
        }
        config.last_conv = shape(&config.upstream_name("last_conv.conv.weight"))?[0];
        // torchvision's always has its hidden layer; a Keras model saved without its top not.
        config.hidden = match layout {
            MobileNetLayout::Timm => shape("conv_head.weight")?[0],
            MobileNetLayout::Torchvision => index
                .tensors
                .get("classifier.0.weight")
                .map_or(0, |t| t.shape[0]),
        };
        let classifier = match layout {
            MobileNetLayout::Timm => "classifier.weight",
            MobileNetLayout::Torchvision => "classifier.3.weight",
        };
        config.num_classes = index.tensors.get(classifier).map_or(0, |t| t.shape[0]);
        Ok(config)
    }

    pub fn of_folder(folder: &ModelFolder) -> Result<Self, ModelError> {
        let index = folder.weights_index()?;
        let invalid = |message: String| ModelError::Config {
            path: folder.config_path(),
            message,
        };
        if vision::is_timm(&folder.config) {
            let (name, variant, tf) = timm_config(&folder.config).map_err(invalid)?;
            let mut config =
                Self::from_weights(MobileNetLayout::Timm, variant, &index).map_err(invalid)?;
            config.timm_name = Some(name.into());
            if tf {
                config.tf_padding = true;
                config.bn_eps = 1e-3;
            }
            Ok(config)
        } else {
            let (vision, _) = VisionConfig::of_folder(folder)?;
            let variant = vision.variant.as_deref().unwrap_or("large");
            let mut config = Self::from_weights(MobileNetLayout::Torchvision, variant, &index)
                .map_err(invalid)?;
            config.tf_padding = vision.padding.is_some();
            config.keras_unsized = vision.padding == Some(vision::Padding::KerasUnsized);
            Ok(config)
        }
    }
}

/// timm's MobileNetV3 `model_args`: only the settings of `mobilenetv3_small_*` and
/// `mobilenetv3_large_*` (hard-swish, BatchNorm eps 1e-5, symmetric padding) and of their
/// TensorFlow ports `tf_mobilenetv3_*` (eps 1e-3, "same" padding).
const TIMM_ARGS: &[vision::ModelArg] = &[
    ("global_pool", |v| v.as_str() == Some("avg")),
    ("act_layer", |v| {
        matches!(v.as_str(), Some("hard_swish" | "hardswish"))
    }),
    ("bn_momentum", vision::any),
];

/// The model name, variant and whether it is a TensorFlow port of a timm folder's
/// `config.json`, once its `model_args` and `pretrained_cfg.input_size` are ones graft builds.
fn timm_config(config: &Value) -> Result<(&str, &'static str, bool), String> {
    let name = config["architecture"].as_str().unwrap_or_default();
    let (variant, tf) = timm_variant(name)
        .ok_or_else(|| format!("timm architecture \"{name}\" is not supported"))?;
    vision::check_port_args(config, name, tf, TIMM_ARGS)?;
    vision::timm_input_size(config)?;
    Ok((name, variant, tf))
}

/// `small` or `large`, and whether it is a TensorFlow port, from timm's `mobilenetv3_small_100`
/// and `tf_mobilenetv3_small_100` style names (not the `minimal` variants).
fn timm_variant(name: &str) -> Option<(&'static str, bool)> {
    let (name, tf) = vision::timm_port_name(name);
    let rest = name.strip_prefix("mobilenetv3_")?;
    let (variant, multiplier) = rest.split_once('_')?;
    multiplier
        .chars()
        .all(|c| c.is_ascii_digit())
        .then_some(())?;
    match variant {
        "small" => Some(("small", tf)),
        "large" => Some(("large", tf)),
        _ => None,
    }
}

impl MobileNetV3 {
    /// The hidden layer's output `[batch, hidden]`: what the classifier reads.
    pub fn forward_features(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = hard_swish(self.stem.forward(images));
        for block in &self.blocks {
            x = block.forward(x);
        }
        let x = hard_swish(self.last_conv.forward(x));
        let [batch, channels, _, _] = x.dims();
        let pooled = x.mean_dim(3).mean_dim(2);
        let hidden = match (&self.head_conv, &self.head_linear) {
            (Some(conv), _) => {
                let [hidden, _, _, _] = conv.weight.dims();
                conv.forward(pooled).reshape([batch, hidden])
            }
            (None, Some(linear)) => linear.forward(pooled.reshape([batch, channels])),
            // Without a hidden layer (a Keras model saved without its top): the pooled features.
            (None, None) => return pooled.reshape([batch, channels]),
        };
        hard_swish(hidden)
    }
}

impl Architecture for MobileNetV3 {
    fn name() -> &'static str {
        "mobilenet_v3"
    }

    fn detects(config: &Value) -> bool {
        vision::detects_family(
            config,
            |name| timm_variant(name).is_some(),
            VisionArchitecture::MobilenetV3,
        )
    }

    fn preprocessing(folder: &ModelFolder) -> Result<Preprocessing, ModelError> {
        vision::family_folder_preprocessing(folder)
    }

    fn naming(folder: &ModelFolder) -> Result<Naming, ModelError> {
        Ok(vision::family_naming(folder))
    }

    fn load(folder: &ModelFolder, classifier: bool, device: &Device) -> Result<Self, ModelError> {
        let mut config = MobileNetV3Config::of_folder(folder)?;
        if !classifier {
            config.num_classes = 0;
        }
        let mut model = config.init(device);
        vision::load_weights(folder, &mut model, |p| config.upstream_name(p))?;
        Ok(model)
    }

    fn describe(&self) -> String {
        format!(
            "mobilenet_v3 ({}, {} blocks)",
            self.config.variant,
            self.blocks.len()
        )
    }

    fn feature_size(&self) -> usize {
        self.config.feature_size()
    }

    fn forward_features(&self, inputs: Inputs, _pooling: PoolingOptions) -> Tensor<2> {
        let images = inputs.into_image();
        self.forward_features(images)
    }

    fn classifier(&self) -> Option<&Linear> {
        self.classifier.as_ref()
    }

    fn upstream_name(&self, path: &str) -> String {
        self.config.upstream_name(path)
    }

    fn export_name(&self, format: ExportFormat, path: &str) -> String {
        match format {
            ExportFormat::Timm => self.config.name_in(MobileNetLayout::Timm, path),
            _ => self.config.name_in(MobileNetLayout::Torchvision, path),
        }
    }

    /// torchvision's hidden layer (linear) is timm's `conv_head`, a 1x1 convolution.
    fn export_shape(
        &self,
        format: ExportFormat,
        name: &str,
        shape: &[usize],
    ) -> Option<Vec<usize>> {
        match (format, name, shape) {
            (ExportFormat::Timm, "conv_head.weight", [out, input]) => {
                Some(vec![*out, *input, 1, 1])
            }
            _ => None,
        }
    }

    /// The stem is block 0, then each inverted-residual block; the last convolution and the
    /// hidden layer count with the last.
    fn block_of(&self, path: &str) -> usize {
        match crate::bert::layer_index(path, "blocks.") {
            Some(i) => i + 1,
            None if path.starts_with("stem.") => 0,
            None => self.blocks.len(),
        }
    }

    fn num_blocks(&self) -> usize {
        self.blocks.len() + 1
    }

    fn is_batchnorm(&self, path: &str) -> bool {
        path.split('.').any(|segment| segment == "bn")
    }

    fn export_unavailable(&self) -> Option<String> {
        let c = &self.config;
        if c.hidden == 0 {
            return Some("it has no hidden layer (a Keras model saved without its top)".into());
        }
        if c.tf_padding && c.layout == MobileNetLayout::Torchvision && c.timm_port().is_none() {
            return Some(
                "it pads as TensorFlow does (a Keras model), and its widths are not those of \
                 timm's tf_mobilenetv3 ports (alpha 1.0 or 0.75), the PyTorch models that do"
                    .into(),
            );
        }
        None
    }

    /// Keras' padding in a model built without an input size is timm's `tf_` padding only where
    /// every stride-2 layer's input is even: sides that are multiples of 32.
    fn export_unavailable_at(&self, image_size: usize) -> Option<String> {
        (self.config.keras_unsized && !image_size.is_multiple_of(32)).then(|| {
            format!(
                "it pads as a Keras model built without an input size does, which timm's \
                 tf_mobilenetv3 ports match only at sides that are multiples of 32, not \
                 {image_size}"
            )
        })
    }

    /// The folder's own library: timm (its name) or torchvision (`mobilenet_v3_*`); a network
    /// that pads as TensorFlow does (from Keras) as timm's `tf_mobilenetv3_*` port of its
    /// widths. None without the hidden layer.
    fn exports(&self) -> Vec<ExportTarget> {
        let c = &self.config;
        if self.export_unavailable().is_some() {
            return Vec::new();
        }
        match (c.layout, c.tf_padding) {
            (MobileNetLayout::Timm, _) => {
                vec![ExportTarget::timm(c.timm_name.clone().unwrap_or_default())]
            }
            (MobileNetLayout::Torchvision, true) => {
                vec![ExportTarget::timm(c.timm_port().unwrap_or_default())]
            }
            (MobileNetLayout::Torchvision, false) => vec![ExportTarget {
                format: ExportFormat::Torchvision,
                model: format!("mobilenet_v3_{}", c.variant),
                prefix: String::new(),
                classifier: "classifier.3".into(),
                classifier_copies: Vec::new(),
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timm_model_args_other_than_graft_builds_are_refused() {
        let config = |args: Value| {
            serde_json::json!({"architecture": "mobilenetv3_large_100", "model_args": args,
                "pretrained_cfg": {"input_size": [3, 224, 224]}})
        };
        let accepted = config(serde_json::json!({"in_chans": 3, "num_classes": 3,
            "global_pool": "avg", "drop_rate": 0.2}));
        assert_eq!(
            timm_config(&accepted),
            Ok(("mobilenetv3_large_100", "large", false))
        );
        for (args, key) in [
            (serde_json::json!({"global_pool": "avgmax"}), "global_pool"),
            (serde_json::json!({"bn_eps": 1e-3}), "bn_eps"),
            (serde_json::json!({"pad_type": "same"}), "pad_type"),
            (serde_json::json!({"head_norm": true}), "head_norm"),
        ] {
            let err = timm_config(&config(args)).unwrap_err();
            assert!(err.starts_with(&format!("model_args.{key} = ")), "{err}");
        }
        let wide = serde_json::json!({"architecture": "mobilenetv3_small_100",
            "pretrained_cfg": {"input_size": [3, 224, 256]}});
        let err = timm_config(&wide).unwrap_err();
        assert!(err.contains("pretrained_cfg.input_size"), "{err}");
        // The TensorFlow ports, with their own epsilon and padding only.
        let port = |args: Value| {
            serde_json::json!({"architecture": "tf_mobilenetv3_small_100", "model_args": args,
                "pretrained_cfg": {"input_size": [3, 224, 224]}})
        };
        assert_eq!(
            timm_config(&port(
                serde_json::json!({"bn_eps": 1e-3, "pad_type": "same"})
            )),
            Ok(("tf_mobilenetv3_small_100", "small", true))
        );
        let err = timm_config(&port(serde_json::json!({"pad_type": ""}))).unwrap_err();
        assert!(err.starts_with("model_args.pad_type = "), "{err}");
        assert!(timm_variant("tf_mobilenetv3_small_minimal_100").is_none());
    }
}
