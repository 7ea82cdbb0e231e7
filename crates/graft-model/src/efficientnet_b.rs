//! EfficientNet B0-B7, from timm folders (`efficientnet_b*`, and the `tf_efficientnet_b*` ports of
//! Google's checkpoints, which pad as TensorFlow does) or torchvision checkpoints in graft's vision
//! folder (`"architecture": "efficientnet"`, `"variant": "b0"` ... `"b7"`): a swish stem,
//! MBConv blocks (expansion, depthwise convolution, squeeze-excitation with a swish inside and a
//! sigmoid gate, projection) in seven stages, a 1x1 head convolution with swish and average
//! pooling. Widths, kernels and blocks per stage are read from the weights; strides from B0's
//! stage table, which every variant shares. Keras' EfficientNetB0-B7 convert into graft's
//! folder with `"padding": "same"` and BatchNorm epsilon 1e-3 ([`crate::keras_applications`]).
//!
//! Exports go to the library whose numerics the model has: timm's `efficientnet_bN` (symmetric
//! padding, epsilon 1e-5) or `tf_efficientnet_bN` ("same" padding, 1e-3), or torchvision's
//! `efficientnet_bN`, when the widths and depths are the variant's own.

use burn::module::Module;
use burn::nn::conv::Conv2dConfig;
use burn::nn::{BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::{sigmoid, silu};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backbone::{Architecture, ExportFormat, ExportTarget, Inputs, Naming, Preprocessing};
use crate::efficientnet::{BASE_STAGES, round_filters};
use crate::mobilenetv3::{ConvBn, SqueezeExcite};
use crate::vision::{self, Padding, VisionArchitecture, VisionConfig};
use crate::{ModelError, ModelFolder, PoolingOptions, WeightsIndex};

/// Whose names the weights use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EfficientNetLayout {
    Timm,
    Torchvision,
}

/// One MBConv block, as the weights give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockSpec {
    /// Stage (0 to 6) and position in it.
    pub stage: usize,
    pub index: usize,
    pub input: usize,
    /// Width after the expansion (the input width when there is none).
    pub mid: usize,
    pub output: usize,
    pub kernel: usize,
    pub stride: usize,
    pub expand: bool,
    /// Squeeze-excitation's reduced width.
    pub se: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EfficientNetBConfig {
    pub layout: EfficientNetLayout,
    /// `b0` ... `b7`.
    pub variant: String,
    /// timm: the model name.
    pub timm_name: Option<String>,
    pub stem: usize,
    pub blocks: Vec<BlockSpec>,
    /// The 1x1 convolution after the blocks.
    pub head: usize,
    pub bn_eps: f64,
    pub num_classes: usize,
    /// TensorFlow's padding (timm's `tf_` ports, Keras' models); `None`: PyTorch's symmetric.
    pub padding: Option<Padding>,
}

/// The published width and depth multipliers of `b0` ... `b7`.
fn coefficients(variant: &str) -> Option<(f64, f64)> {
    Some(match variant {
        "b0" => (1.0, 1.0),
        "b1" => (1.0, 1.1),
        "b2" => (1.1, 1.2),
        "b3" => (1.2, 1.4),
        "b4" => (1.4, 1.8),
        "b5" => (1.6, 2.2),
        "b6" => (1.8, 2.6),
        "b7" => (2.0, 3.1),
        _ => return None,
    })
}

/// The stem width, the blocks' `(stage, input, mid, output, kernel, stride, se)` and the head
/// width of a standard variant, as TF's, timm's and torchvision's builders compute them.
pub fn standard_shape(variant: &str) -> Option<StandardShape> {
    let (width, depth) = coefficients(variant)?;
    let mut blocks = Vec::new();
    for (stage, s) in BASE_STAGES.iter().enumerate() {
        let repeats = (s.repeats as f64 * depth).ceil() as usize;
        let input = round_filters(s.input, width);
        let output = round_filters(s.output, width);
        for r in 0..repeats {
            let input = if r == 0 { input } else { output };
            blocks.push([
                stage,
                input,
                input * s.expand,
                output,
                s.kernel,
                if r == 0 { s.stride } else { 1 },
                (input / 4).max(1),
            ]);
        }
    }
    Some(StandardShape {
        stem: round_filters(32, width),
        blocks,
        head: round_filters(1280, width),
    })
}

/// See [`standard_shape`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandardShape {
    pub stem: usize,
    pub blocks: Vec<[usize; 7]>,
    pub head: usize,
}

#[derive(Module, Debug)]
pub struct MbConv {
    pub expand: Option<ConvBn>,
    pub dw: ConvBn,
    pub se: SqueezeExcite,
    pub project: ConvBn,
    #[module(skip)]
    pub residual: bool,
}

impl MbConv {
    fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let mut x = input.clone();
        if let Some(expand) = &self.expand {
            x = silu(expand.forward(x));
        }
        x = silu(self.dw.forward(x));
        let scale = x.clone().mean_dim(3).mean_dim(2);
        let scale = self.se.expand.forward(silu(self.se.reduce.forward(scale)));
        x = self.project.forward(x * sigmoid(scale));
        // Stochastic depth (drop connect) is for training from scratch; not applied here.
        if self.residual { x + input } else { x }
    }
}

#[derive(Module, Debug)]
pub struct EfficientNetB {
    pub stem: ConvBn,
    pub blocks: Vec<MbConv>,
    pub head: ConvBn,
    pub classifier: Option<Linear>,
    #[module(skip)]
    pub config: EfficientNetBConfig,
}

impl EfficientNetBConfig {
    pub fn init(&self, device: &Device) -> EfficientNetB {
        let padding = |k: usize, stride: usize| match (self.padding, stride) {
            (None, _) => PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2),
            (Some(Padding::Same), _) | (Some(Padding::KerasUnsized), 1) => PaddingConfig2d::Same,
            (Some(Padding::KerasUnsized), _) => {
                PaddingConfig2d::Explicit(k / 2 - 1, k / 2 - 1, k / 2, k / 2)
            }
        };
        let conv_bn =
            |input: usize, output: usize, kernel: usize, stride: usize, groups: usize| ConvBn {
                conv: Conv2dConfig::new([input, output], [kernel, kernel])
                    .with_stride([stride, stride])
                    .with_padding(padding(kernel, stride))
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
            .map(|b| MbConv {
                expand: b.expand.then(|| conv_bn(b.input, b.mid, 1, 1, 1)),
                dw: conv_bn(b.mid, b.mid, b.kernel, b.stride, b.mid),
                se: SqueezeExcite {
                    reduce: pointwise(b.mid, b.se),
                    expand: pointwise(b.se, b.mid),
                },
                project: conv_bn(b.mid, b.output, 1, 1, 1),
                residual: b.stride == 1 && b.input == b.output,
            })
            .collect();
        let last = self.blocks.last().map_or(self.stem, |b| b.output);
        EfficientNetB {
            stem: conv_bn(3, self.stem, 3, 2, 1),
            blocks,
            head: conv_bn(last, self.head, 1, 1, 1),
            classifier: (self.num_classes > 0)
                .then(|| LinearConfig::new(self.head, self.num_classes).init(device)),
            config: self.clone(),
        }
    }

    /// Whether the widths and depths are those of the variant (else no library builds it).
    pub fn is_standard(&self) -> bool {
        let Some(standard) = standard_shape(&self.variant) else {
            return false;
        };
        let blocks: Vec<[usize; 7]> = self
            .blocks
            .iter()
            .map(|b| [b.stage, b.input, b.mid, b.output, b.kernel, b.stride, b.se])
            .collect();
        standard.stem == self.stem && standard.head == self.head && standard.blocks == blocks
    }

    /// The name of a module path in `layout` (`bn` is BatchNorm's `bn`; burn's gamma/beta are
    /// already weight/bias here).
    pub fn name_in(&self, layout: EfficientNetLayout, path: &str) -> String {
        let timm = layout == EfficientNetLayout::Timm;
        let (head, rest) = path.split_once('.').unwrap_or((path, ""));
        let conv_bn = |conv: &str, bn: &str| match rest.split_once('.') {
            Some(("conv", t)) => format!("{conv}.{t}"),
            Some(("bn", t)) => format!("{bn}.{t}"),
            _ => path.to_string(),
        };
        match (head, timm) {
            ("stem", true) => conv_bn("conv_stem", "bn1"),
            ("stem", false) => conv_bn("features.0.0", "features.0.1"),
            ("head", true) => conv_bn("conv_head", "bn2"),
            ("head", false) => conv_bn("features.8.0", "features.8.1"),
            ("classifier", true) => format!("classifier.{rest}"),
            ("classifier", false) => format!("classifier.1.{rest}"),
            ("blocks", _) => {
                let (index, inner) = rest.split_once('.').unwrap_or((rest, ""));
                let Some(spec) = index.parse::<usize>().ok().and_then(|i| self.blocks.get(i))
                else {
                    return path.to_string();
                };
                let renames: Vec<(&str, String)> = if timm {
                    // A block without expansion is timm's depthwise-separable block.
                    let ds = !spec.expand;
                    vec![
                        ("expand.conv.", "conv_pw.".into()),
                        ("expand.bn.", "bn1.".into()),
                        ("dw.conv.", "conv_dw.".into()),
                        ("dw.bn.", if ds { "bn1." } else { "bn2." }.into()),
                        ("se.reduce.", "se.conv_reduce.".into()),
                        ("se.expand.", "se.conv_expand.".into()),
                        (
                            "project.conv.",
                            if ds { "conv_pw." } else { "conv_pwl." }.into(),
                        ),
                        ("project.bn.", if ds { "bn2." } else { "bn3." }.into()),
                    ]
                } else {
                    // block.K: [expand], depthwise, se, project.
                    let at = |k: usize| k + usize::from(spec.expand) - 1;
                    vec![
                        ("expand.conv.", "0.0.".into()),
                        ("expand.bn.", "0.1.".into()),
                        ("dw.conv.", format!("{}.0.", at(1))),
                        ("dw.bn.", format!("{}.1.", at(1))),
                        ("se.reduce.", format!("{}.fc1.", at(2))),
                        ("se.expand.", format!("{}.fc2.", at(2))),
                        ("project.conv.", format!("{}.0.", at(3))),
                        ("project.bn.", format!("{}.1.", at(3))),
                    ]
                };
                let name = renames
                    .iter()
                    .find_map(|(ours, theirs)| {
                        inner.strip_prefix(ours).map(|t| format!("{theirs}{t}"))
                    })
                    .unwrap_or_else(|| inner.to_string());
                if timm {
                    format!("blocks.{}.{}.{name}", spec.stage, spec.index)
                } else {
                    format!("features.{}.{}.block.{name}", spec.stage + 1, spec.index)
                }
            }
            _ => path.to_string(),
        }
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
            for p in [
                "reduce.weight",
                "reduce.bias",
                "expand.weight",
                "expand.bias",
            ] {
                paths.push(format!("blocks.{i}.se.{p}"));
            }
            paths.extend(conv_bn(&format!("blocks.{i}.project")));
        }
        paths.extend(conv_bn("head"));
        if self.num_classes > 0 {
            paths.extend(["classifier.weight".into(), "classifier.bias".into()]);
        }
        paths
    }

    /// Reads the blocks' widths, kernels and squeeze-excitation from the weights.
    pub(crate) fn from_weights(
        layout: EfficientNetLayout,
        variant: &str,
        index: &WeightsIndex,
    ) -> Result<Self, String> {
        let mut config = Self {
            layout,
            variant: variant.into(),
            timm_name: None,
            stem: 0,
            blocks: Vec::new(),
            head: 0,
            bn_eps: 1e-5,
            num_classes: 0,
            padding: None,
        };
        let shape = |name: &str| -> Result<Vec<usize>, String> {
            match index.tensors.get(name) {
                Some(t) if t.shape.len() == 4 => Ok(t.shape.clone()),
                Some(t) => Err(format!(
                    "`{name}` has shape {:?}, not a convolution's",
                    t.shape
                )),
                None => Err(format!("no tensor `{name}`")),
            }
        };
        config.stem = shape(&config.name_in(layout, "stem.conv.weight"))?[0];
        let mut input = config.stem;
        for (stage, args) in BASE_STAGES.iter().enumerate() {
            for position in 0.. {
                // Whether the block expands decides where its parts are; its projection is
                // `conv_pwl` (timm) or the fourth part (torchvision) only when it does.
                let mut spec = BlockSpec {
                    stage,
                    index: position,
                    input,
                    mid: input,
                    output: 0,
                    kernel: 0,
                    stride: if position == 0 { args.stride } else { 1 },
                    expand: true,
                    se: 0,
                };
                let i = config.blocks.len();
                config.blocks.push(spec.clone());
                let project =
                    |c: &Self| c.name_in(layout, &format!("blocks.{i}.project.conv.weight"));
                if !index.tensors.contains_key(&project(&config)) {
                    spec.expand = false;
                    config.blocks[i] = spec.clone();
                    if !index.tensors.contains_key(&project(&config)) {
                        let missing = project(&config);
                        config.blocks.pop();
                        if position == 0 {
                            return Err(format!(
                                "no block of stage {} (no `{missing}`)",
                                stage + 1
                            ));
                        }
                        break;
                    }
                }
                let part = |c: &Self, part: &str| c.name_in(layout, &format!("blocks.{i}.{part}"));
                if spec.expand {
                    let expand = shape(&part(&config, "expand.conv.weight"))?;
                    if expand[1] != input {
                        return Err(format!(
                            "`{}` takes {} channels, the block before gives {input}",
                            part(&config, "expand.conv.weight"),
                            expand[1]
                        ));
                    }
                }
                let dw = shape(&part(&config, "dw.conv.weight"))?;
                spec.mid = dw[0];
                spec.kernel = dw[2];
                spec.se = shape(&part(&config, "se.reduce.weight"))?[0];
                spec.output = shape(&project(&config))?[0];
                config.blocks[i] = spec.clone();
                input = spec.output;
            }
        }
        config.head = shape(&config.name_in(layout, "head.conv.weight"))?[0];
        let classifier = config.name_in(layout, "classifier.weight");
        config.num_classes = index.tensors.get(&classifier).map_or(0, |t| t.shape[0]);
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
                Self::from_weights(EfficientNetLayout::Timm, variant, &index).map_err(invalid)?;
            config.timm_name = Some(name.into());
            config.padding = tf.then_some(Padding::Same);
            config.bn_eps = if tf { 1e-3 } else { 1e-5 };
            Ok(config)
        } else {
            let (vision, _) = VisionConfig::of_folder(folder)?;
            let variant = vision.variant.as_deref().unwrap_or_default();
            if coefficients(variant).is_none() {
                return Err(invalid(format!(
                    "efficientnet needs \"variant\" b0 to b7, not {variant:?}"
                )));
            }
            let mut config = Self::from_weights(EfficientNetLayout::Torchvision, variant, &index)
                .map_err(invalid)?;
            config.padding = vision.padding;
            config.bn_eps = vision.batch_norm_eps.unwrap_or(torchvision_bn_eps(variant));
            Ok(config)
        }
    }
}

/// torchvision's BatchNorm epsilon: 1e-5, but 1e-3 for B5-B7.
fn torchvision_bn_eps(variant: &str) -> f64 {
    if matches!(variant, "b5" | "b6" | "b7") {
        1e-3
    } else {
        1e-5
    }
}

/// timm's EfficientNet `model_args`: only what `efficientnet_b*` / `tf_efficientnet_b*` set.
const TIMM_ARGS: &[vision::ModelArg] = &[
    ("global_pool", |v| v.as_str() == Some("avg")),
    ("act_layer", |v| {
        matches!(v.as_str(), Some("swish" | "silu"))
    }),
    ("bn_momentum", vision::any),
];

/// The model name, variant and whether it is a TensorFlow port (`tf_`: "same" padding, epsilon
/// 1e-3), once the folder's `model_args` and `pretrained_cfg.input_size` are ones graft builds.
fn timm_config(config: &Value) -> Result<(&str, &'static str, bool), String> {
    let name = config["architecture"].as_str().unwrap_or_default();
    let (variant, tf) = timm_variant(name)
        .ok_or_else(|| format!("timm architecture \"{name}\" is not supported"))?;
    vision::check_port_args(config, name, tf, TIMM_ARGS)?;
    vision::timm_input_size(config)?;
    Ok((name, variant, tf))
}

/// `b0` ... `b7` and whether the name is a `tf_` port, from timm's `efficientnet_b3` /
/// `tf_efficientnet_b3` names (not `_pruned`, `_gn` or other relatives).
fn timm_variant(name: &str) -> Option<(&'static str, bool)> {
    let (rest, tf) = vision::timm_port_name(name);
    let variant = rest.strip_prefix("efficientnet_")?;
    const VARIANTS: [&str; 8] = ["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7"];
    VARIANTS.iter().find(|v| **v == variant).map(|v| (*v, tf))
}

impl EfficientNetB {
    /// Pooled features `[batch, head]` of images `[batch, 3, h, w]` (normalized).
    pub fn forward_features(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = silu(self.stem.forward(images));
        for block in &self.blocks {
            x = block.forward(x);
        }
        let x = silu(self.head.forward(x));
        let [batch, channels, _, _] = x.dims();
        x.mean_dim(3).mean_dim(2).reshape([batch, channels])
    }

    fn num_stages(&self) -> usize {
        self.config.blocks.last().map_or(0, |b| b.stage + 1)
    }
}

impl Architecture for EfficientNetB {
    fn name() -> &'static str {
        "efficientnet"
    }

    fn detects(config: &Value) -> bool {
        vision::detects_family(
            config,
            |name| timm_variant(name).is_some(),
            VisionArchitecture::Efficientnet,
        )
    }

    fn preprocessing(folder: &ModelFolder) -> Result<Preprocessing, ModelError> {
        vision::family_folder_preprocessing(folder)
    }

    fn naming(folder: &ModelFolder) -> Result<Naming, ModelError> {
        Ok(vision::family_naming(folder))
    }

    fn load(folder: &ModelFolder, classifier: bool, device: &Device) -> Result<Self, ModelError> {
        let mut config = EfficientNetBConfig::of_folder(folder)?;
        if !classifier {
            config.num_classes = 0;
        }
        let mut model = config.init(device);
        vision::load_weights(folder, &mut model, |p| config.name_in(config.layout, p))?;
        Ok(model)
    }

    fn describe(&self) -> String {
        format!(
            "efficientnet ({}, {} blocks)",
            self.config.variant,
            self.blocks.len()
        )
    }

    fn feature_size(&self) -> usize {
        self.config.head
    }

    fn forward_features(&self, inputs: Inputs, _pooling: PoolingOptions) -> Tensor<2> {
        let images = inputs.into_image();
        self.forward_features(images)
    }

    fn classifier(&self) -> Option<&Linear> {
        self.classifier.as_ref()
    }

    fn upstream_name(&self, path: &str) -> String {
        self.config.name_in(self.config.layout, path)
    }

    fn export_name(&self, format: ExportFormat, path: &str) -> String {
        let layout = match format {
            ExportFormat::Torchvision => EfficientNetLayout::Torchvision,
            _ => EfficientNetLayout::Timm,
        };
        self.config.name_in(layout, path)
    }

    /// The stem is block 0, then each stage; the head convolution counts with the last.
    fn block_of(&self, path: &str) -> usize {
        match crate::bert::layer_index(path, "blocks.") {
            Some(i) => 1 + self.config.blocks.get(i).map_or(0, |b| b.stage),
            None if path.starts_with("stem.") => 0,
            None => self.num_stages(),
        }
    }

    fn num_blocks(&self) -> usize {
        self.num_stages() + 1
    }

    fn is_batchnorm(&self, path: &str) -> bool {
        path.split('.').any(|segment| segment == "bn")
    }

    fn export_unavailable(&self) -> Option<String> {
        let c = &self.config;
        if !c.is_standard() {
            return Some(format!(
                "its widths or blocks per stage are not EfficientNet-{}'s, so no library \
                 builds it",
                c.variant.to_uppercase()
            ));
        }
        let (library, eps) = match (c.padding, c.layout) {
            (Some(_), _) => (format!("timm's tf_efficientnet_{}", c.variant), 1e-3),
            (None, EfficientNetLayout::Timm) => {
                (format!("timm's efficientnet_{}", c.variant), 1e-5)
            }
            (None, EfficientNetLayout::Torchvision) => (
                format!("torchvision's efficientnet_{}", c.variant),
                torchvision_bn_eps(&c.variant),
            ),
        };
        if (c.bn_eps - eps).abs() > 1e-12 {
            return Some(format!(
                "its BatchNorm epsilon is {}, and {library}, which pads as it does, has {eps}",
                c.bn_eps
            ));
        }
        None
    }

    /// Keras' padding in a model built without an input size is timm's `tf_` padding only where
    /// every stride-2 layer's input is even: sides that are multiples of 32.
    fn export_unavailable_at(&self, image_size: usize) -> Option<String> {
        (self.config.padding == Some(Padding::KerasUnsized) && !image_size.is_multiple_of(32)).then(
            || {
                format!(
                    "it pads as a Keras model built without an input size does, which timm's \
                 tf_efficientnet_{} matches only at sides that are multiples of 32, not \
                 {image_size}",
                    self.config.variant
                )
            },
        )
    }

    /// timm's `efficientnet_bN` or torchvision's for a symmetric-padded network, timm's
    /// `tf_efficientnet_bN` for a TensorFlow-padded one (from Keras or a `tf_` port).
    fn exports(&self) -> Vec<ExportTarget> {
        let c = &self.config;
        if self.export_unavailable().is_some() {
            return Vec::new();
        }
        if c.padding.is_some() {
            return vec![ExportTarget::timm(format!("tf_efficientnet_{}", c.variant))];
        }
        match c.layout {
            EfficientNetLayout::Timm => {
                vec![ExportTarget::timm(
                    c.timm_name
                        .clone()
                        .unwrap_or_else(|| format!("efficientnet_{}", c.variant)),
                )]
            }
            EfficientNetLayout::Torchvision => vec![ExportTarget {
                format: ExportFormat::Torchvision,
                model: format!("efficientnet_{}", c.variant),
                prefix: String::new(),
                classifier: "classifier.1".into(),
                classifier_copies: Vec::new(),
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_shapes_are_the_published_ones() {
        // Blocks and parameter-bearing widths of B0 and B7 as timm and torchvision build them.
        let b0 = standard_shape("b0").unwrap();
        assert_eq!((b0.stem, b0.head, b0.blocks.len()), (32, 1280, 16));
        assert_eq!(b0.blocks[0], [0, 32, 32, 16, 3, 1, 8]);
        assert_eq!(b0.blocks[1], [1, 16, 96, 24, 3, 2, 4]);
        let b7 = standard_shape("b7").unwrap();
        assert_eq!((b7.stem, b7.head, b7.blocks.len()), (64, 2560, 55));
        let b3 = standard_shape("b3").unwrap();
        assert_eq!((b3.stem, b3.head, b3.blocks.len()), (40, 1536, 26));
        assert!(standard_shape("b8").is_none());
    }

    #[test]
    fn a_missing_stage_is_named() {
        let conv = |shape: Vec<usize>| crate::weights::TensorInfo {
            dtype: "F32".into(),
            shape,
        };
        let index = WeightsIndex {
            tensors: [("features.0.0.weight".to_string(), conv(vec![32, 3, 3, 3]))]
                .into_iter()
                .collect(),
        };
        let err = EfficientNetBConfig::from_weights(EfficientNetLayout::Torchvision, "b0", &index)
            .unwrap_err();
        assert_eq!(
            err,
            "no block of stage 1 (no `features.1.0.block.2.0.weight`)"
        );
    }

    #[test]
    fn timm_names_and_args() {
        assert_eq!(timm_variant("efficientnet_b3"), Some(("b3", false)));
        assert_eq!(timm_variant("tf_efficientnet_b7"), Some(("b7", true)));
        assert_eq!(timm_variant("efficientnet_b3_pruned"), None);
        assert_eq!(timm_variant("tf_efficientnet_lite0"), None);
        let config = |name: &str, args: Value| {
            serde_json::json!({"architecture": name, "model_args": args,
                "pretrained_cfg": {"input_size": [3, 224, 224]}})
        };
        let ok = config(
            "tf_efficientnet_b0",
            serde_json::json!({"bn_eps": 1e-3, "pad_type": "same", "drop_rate": 0.2}),
        );
        assert_eq!(timm_config(&ok), Ok(("tf_efficientnet_b0", "b0", true)));
        for (name, args, key) in [
            (
                "efficientnet_b0",
                serde_json::json!({"bn_eps": 1e-3}),
                "bn_eps",
            ),
            (
                "tf_efficientnet_b0",
                serde_json::json!({"pad_type": ""}),
                "pad_type",
            ),
            (
                "efficientnet_b0",
                serde_json::json!({"act_layer": "relu"}),
                "act_layer",
            ),
            (
                "efficientnet_b0",
                serde_json::json!({"se_layer": "x"}),
                "se_layer",
            ),
        ] {
            let err = timm_config(&config(name, args)).unwrap_err();
            assert!(err.starts_with(&format!("model_args.{key} = ")), "{err}");
        }
    }
}
