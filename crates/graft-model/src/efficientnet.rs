//! EfficientNet-Lite (lite0 to lite4): the config (width and depth multipliers, resolution and
//! dropout per variant), the modules (MBConv blocks without squeeze-excitation, depthwise
//! convolutions, BatchNorm with eps 1e-3, ReLU6), and the loader for the PyTorch port of Google's
//! checkpoints (`_conv_stem`, `_blocks.N._depthwise_conv`, ... names), with its [`Architecture`]
//! impl: blocks are the stem, each stage and the head convolution; exports and timm folders use
//! timm's `tf_efficientnet_lite*` names.
//!
//! Convolutions pad as TensorFlow's "SAME" (burn's `PaddingConfig2d::Same`): on stride-2 layers the
//! extra row and column go at the bottom and right, which is what the ported weights expect.
//! As TF's lite builder does, the stem (32) and head (1280) widths and the repeats of the first and
//! last stages are not scaled.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d,
};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backbone::{Architecture, ExportFormat, ExportTarget, Inputs, Naming, Preprocessing};
use crate::vision::{VisionArchitecture, VisionConfig};
use crate::{ModelError, ModelFolder, PoolingOptions};

/// One stage of the base network (EfficientNet-B0's): expansion ratio, kernel, stride of its
/// first block, repeats, input and output channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageArgs {
    pub expand: usize,
    pub kernel: usize,
    pub stride: usize,
    pub repeats: usize,
    pub input: usize,
    pub output: usize,
}

pub(crate) const BASE_STAGES: [StageArgs; 7] = [
    stage(1, 3, 1, 1, 32, 16),
    stage(6, 3, 2, 2, 16, 24),
    stage(6, 5, 2, 2, 24, 40),
    stage(6, 3, 2, 3, 40, 80),
    stage(6, 5, 1, 3, 80, 112),
    stage(6, 5, 2, 4, 112, 192),
    stage(6, 3, 1, 1, 192, 320),
];

const fn stage(
    expand: usize,
    kernel: usize,
    stride: usize,
    repeats: usize,
    input: usize,
    output: usize,
) -> StageArgs {
    StageArgs {
        expand,
        kernel,
        stride,
        repeats,
        input,
        output,
    }
}

/// Stem width (not scaled in Lite models).
const STEM: usize = 32;

/// What `config.json` says about an EfficientNet-Lite model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EfficientNetConfig {
    /// `lite0` ... `lite4`.
    pub variant: String,
    pub width_coefficient: f64,
    pub depth_coefficient: f64,
    /// The input resolution the variant was trained at.
    pub image_size: usize,
    /// Dropout before the classifier.
    pub dropout: f64,
    #[serde(default = "default_bn_eps")]
    pub batch_norm_eps: f64,
    /// Classes of the checkpoint's classifier (`_fc`); 0 for a headless backbone.
    pub num_classes: usize,
}

fn default_bn_eps() -> f64 {
    1e-3
}

/// A single MBConv block's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockArgs {
    pub input: usize,
    pub output: usize,
    pub expand: usize,
    pub kernel: usize,
    pub stride: usize,
}

impl EfficientNetConfig {
    /// The published settings of a Lite variant (TF's `efficientnet_lite_params`).
    pub fn lite(variant: &str, num_classes: usize) -> Result<Self, String> {
        let (width, depth, size, dropout) = match variant {
            "lite0" => (1.0, 1.0, 224, 0.2),
            "lite1" => (1.0, 1.1, 240, 0.2),
            "lite2" => (1.1, 1.2, 260, 0.3),
            "lite3" => (1.2, 1.4, 280, 0.3),
            "lite4" => (1.4, 1.8, 300, 0.3),
            other => {
                return Err(format!(
                    "unknown EfficientNet-Lite variant `{other}` (lite0 to lite4)"
                ));
            }
        };
        Ok(Self {
            variant: variant.to_string(),
            width_coefficient: width,
            depth_coefficient: depth,
            image_size: size,
            dropout,
            batch_norm_eps: default_bn_eps(),
            num_classes,
        })
    }

    /// TF's `round_filters`: scale by the width multiplier, round to a multiple of 8, and never
    /// go below 90% of the scaled value.
    pub fn round_filters(&self, filters: usize) -> usize {
        round_filters(filters, self.width_coefficient)
    }

    /// Every block, in order.
    pub fn blocks(&self) -> Vec<BlockArgs> {
        let last = BASE_STAGES.len() - 1;
        let mut blocks = Vec::new();
        for (i, s) in BASE_STAGES.iter().enumerate() {
            let repeats = if i == 0 || i == last {
                s.repeats
            } else {
                (self.depth_coefficient * s.repeats as f64).ceil() as usize
            };
            // The stem is not scaled, so the first block takes its 32 channels.
            let input = if i == 0 {
                STEM
            } else {
                self.round_filters(s.input)
            };
            let output = self.round_filters(s.output);
            for r in 0..repeats {
                blocks.push(BlockArgs {
                    input: if r == 0 { input } else { output },
                    output,
                    expand: s.expand,
                    kernel: s.kernel,
                    stride: if r == 0 { s.stride } else { 1 },
                });
            }
        }
        blocks
    }

    /// Width of the pooled features (the head, not scaled in Lite models).
    pub fn feature_size(&self) -> usize {
        1280
    }

    pub fn init(&self, device: &Device) -> EfficientNet {
        let bn = |c: usize| {
            BatchNormConfig::new(c)
                .with_epsilon(self.batch_norm_eps)
                .with_momentum(0.01)
                .init(device)
        };
        let conv = |cin: usize, cout: usize, k: usize, stride: usize, groups: usize| {
            Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([stride, stride])
                .with_groups(groups)
                .with_padding(PaddingConfig2d::Same)
                .with_bias(false)
                .init(device)
        };
        let stem = STEM;
        let blocks = self
            .blocks()
            .into_iter()
            .map(|b| {
                let hidden = b.input * b.expand;
                let expanded = b.expand != 1;
                MbConv {
                    expand_conv: expanded.then(|| conv(b.input, hidden, 1, 1, 1)),
                    bn0: expanded.then(|| bn(hidden)),
                    depthwise_conv: conv(hidden, hidden, b.kernel, b.stride, hidden),
                    bn1: bn(hidden),
                    project_conv: conv(hidden, b.output, 1, 1, 1),
                    bn2: bn(b.output),
                    residual: b.stride == 1 && b.input == b.output,
                }
            })
            .collect::<Vec<_>>();
        let last = blocks.last().map_or(stem, |b| b.bn2.gamma.dims()[0]);
        EfficientNet {
            conv_stem: conv(3, stem, 3, 2, 1),
            bn0: bn(stem),
            blocks,
            conv_head: conv(last, self.feature_size(), 1, 1, 1),
            bn1: bn(self.feature_size()),
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            dropout: DropoutConfig::new(self.dropout).init(),
            variant: self.variant.clone(),
            fc: (self.num_classes > 0)
                .then(|| LinearConfig::new(self.feature_size(), self.num_classes).init(device)),
        }
    }
}

/// TF's `round_filters` (timm's `round_channels`, torchvision's `_make_divisible`): `filters`
/// times `width`, rounded to a multiple of 8, never below 90% of the scaled value.
pub(crate) fn round_filters(filters: usize, width: f64) -> usize {
    let divisor = 8.0;
    let scaled = filters as f64 * width;
    let mut rounded = ((scaled + divisor / 2.0) / divisor).floor() * divisor;
    rounded = rounded.max(divisor);
    if rounded < 0.9 * scaled {
        rounded += divisor;
    }
    rounded as usize
}

fn relu6(x: Tensor<4>) -> Tensor<4> {
    x.clamp(0.0, 6.0)
}

#[derive(Module, Debug)]
pub struct MbConv {
    pub expand_conv: Option<Conv2d>,
    pub bn0: Option<BatchNorm>,
    pub depthwise_conv: Conv2d,
    pub bn1: BatchNorm,
    pub project_conv: Conv2d,
    pub bn2: BatchNorm,
    pub residual: bool,
}

impl MbConv {
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let mut x = input.clone();
        if let (Some(conv), Some(bn)) = (&self.expand_conv, &self.bn0) {
            x = relu6(bn.forward(conv.forward(x)));
        }
        x = relu6(self.bn1.forward(self.depthwise_conv.forward(x)));
        x = self.bn2.forward(self.project_conv.forward(x));
        if self.residual { x + input } else { x }
    }
}

#[derive(Module, Debug)]
pub struct EfficientNet {
    pub conv_stem: Conv2d,
    pub bn0: BatchNorm,
    pub blocks: Vec<MbConv>,
    pub conv_head: Conv2d,
    pub bn1: BatchNorm,
    pub pool: AdaptiveAvgPool2d,
    pub dropout: Dropout,
    /// `lite0` ... `lite4`.
    #[module(skip)]
    pub variant: String,
    /// The checkpoint's classifier, when it has one.
    pub fc: Option<Linear>,
}

impl EfficientNet {
    /// Pooled features `[batch, 1280]` of images `[batch, 3, h, w]` (normalized).
    pub fn forward_features(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = relu6(self.bn0.forward(self.conv_stem.forward(images)));
        for block in &self.blocks {
            x = block.forward(x);
        }
        x = relu6(self.bn1.forward(self.conv_head.forward(x)));
        self.pool.forward(x).flatten(1, 3)
    }

    /// Logits of the checkpoint's own classifier, if it has one.
    pub fn forward(&self, images: Tensor<4>) -> Option<Tensor<2>> {
        let fc = self.fc.as_ref()?;
        Some(fc.forward(self.dropout.forward(self.forward_features(images))))
    }
}

/// Upstream (lukemelas `efficientnet_pytorch`) names ↔ this module tree: upstream prefixes every
/// segment with `_` (`_blocks.3._depthwise_conv.weight`).
pub fn upstream_name(module_path: &str) -> String {
    module_path
        .split('.')
        .map(|s| {
            if s.chars().all(|c| c.is_ascii_digit())
                || matches!(
                    s,
                    "weight" | "bias" | "running_mean" | "running_var" | "gamma" | "beta"
                )
            {
                s.to_string()
            } else {
                format!("_{s}")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

impl EfficientNet {
    /// The stage of each MBConv block: a stage starts where the width changes.
    pub fn stage_of_blocks(&self) -> Vec<usize> {
        let mut stage = 0;
        let mut stages = Vec::with_capacity(self.blocks.len());
        for (i, block) in self.blocks.iter().enumerate() {
            let width = block.bn2.gamma.dims()[0];
            let previous = i.checked_sub(1).map(|p| self.blocks[p].bn2.gamma.dims()[0]);
            if previous.is_some_and(|p| p != width) {
                stage += 1;
            }
            stages.push(stage);
        }
        stages
    }

    fn num_stages(&self) -> usize {
        self.stage_of_blocks().last().map_or(0, |s| s + 1)
    }

    /// timm's `tf_efficientnet_lite*` name of a path: blocks grouped by stage, the first stage a
    /// depthwise-separable block (`conv_dw`, `bn1`, `conv_pw`, `bn2`), the others inverted
    /// residuals (`conv_pw`, `bn1`, `conv_dw`, `bn2`, `conv_pwl`, `bn3`), the classifier
    /// `classifier`.
    fn timm_name(&self, stages: &[usize], path: &str) -> String {
        let segments: Vec<&str> = path.split('.').collect();
        let tail = |n: usize| segments[n..].join(".");
        match segments.as_slice() {
            ["conv_stem", ..] => format!("conv_stem.{}", tail(1)),
            ["bn0", ..] => format!("bn1.{}", tail(1)),
            ["conv_head", ..] => format!("conv_head.{}", tail(1)),
            ["bn1", ..] => format!("bn2.{}", tail(1)),
            ["fc", ..] => format!("classifier.{}", tail(1)),
            ["blocks", i, part, ..] => {
                let i: usize = i.parse().unwrap_or(0);
                let stage = stages.get(i).copied().unwrap_or(0);
                let index = stages[..i].iter().filter(|&&s| s == stage).count();
                let renamed = match (*part, stage == 0) {
                    ("depthwise_conv", true) => "conv_dw",
                    ("bn1", true) => "bn1",
                    ("project_conv", true) => "conv_pw",
                    ("bn2", true) => "bn2",
                    ("expand_conv", _) => "conv_pw",
                    ("bn0", _) => "bn1",
                    ("depthwise_conv", _) => "conv_dw",
                    ("bn1", _) => "bn2",
                    ("project_conv", _) => "conv_pwl",
                    ("bn2", _) => "bn3",
                    (other, _) => other,
                };
                format!("blocks.{stage}.{index}.{renamed}.{}", tail(3))
            }
            _ => path.to_string(),
        }
    }
}

impl Architecture for EfficientNet {
    fn name() -> &'static str {
        "efficientnet_lite"
    }

    fn detects(config: &Value) -> bool {
        VisionConfig::detect(config) == Some(VisionArchitecture::EfficientnetLite)
    }

    fn preprocessing(folder: &ModelFolder) -> Result<Preprocessing, ModelError> {
        crate::vision::preprocessing(folder)
    }

    fn naming(folder: &ModelFolder) -> Result<Naming, ModelError> {
        crate::vision::naming(folder)
    }

    fn load(folder: &ModelFolder, classifier: bool, device: &Device) -> Result<Self, ModelError> {
        crate::vision::load(folder, classifier, |config, classes| {
            let variant = config
                .variant
                .as_deref()
                .ok_or("efficientnet_lite needs \"variant\" (lite0 to lite4)")?;
            Ok(EfficientNetConfig::lite(variant, classes)?.init(device))
        })
    }

    fn describe(&self) -> String {
        format!("efficientnet_lite ({})", self.variant)
    }

    fn feature_size(&self) -> usize {
        self.bn1.gamma.dims()[0]
    }

    fn forward_features(&self, inputs: Inputs, _pooling: PoolingOptions) -> Tensor<2> {
        let images = inputs.into_image();
        self.forward_features(images)
    }

    fn classifier(&self) -> Option<&Linear> {
        self.fc.as_ref()
    }

    fn upstream_name(&self, path: &str) -> String {
        upstream_name(path)
    }

    fn export_name(&self, format: ExportFormat, path: &str) -> String {
        match format {
            ExportFormat::Timm => self.timm_name(&self.stage_of_blocks(), path),
            _ => upstream_name(path),
        }
    }

    fn block_of(&self, path: &str) -> usize {
        let mut segments = path.split('.');
        match segments.next().unwrap_or("") {
            "conv_stem" | "bn0" => 0,
            "blocks" => {
                let index: usize = segments.next().and_then(|i| i.parse().ok()).unwrap_or(0);
                1 + self.stage_of_blocks().get(index).copied().unwrap_or(0)
            }
            _ => self.num_stages() + 1,
        }
    }

    fn num_blocks(&self) -> usize {
        self.num_stages() + 2
    }

    fn is_batchnorm(&self, path: &str) -> bool {
        crate::vision::is_batchnorm(path)
    }

    fn exports(&self) -> Vec<ExportTarget> {
        vec![ExportTarget {
            format: ExportFormat::Timm,
            model: format!("tf_efficientnet_{}", self.variant),
            prefix: String::new(),
            classifier: "classifier".into(),
            classifier_copies: Vec::new(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lite0_has_the_published_shape() {
        let c = EfficientNetConfig::lite("lite0", 1000).unwrap();
        let blocks = c.blocks();
        assert_eq!(blocks.len(), 16);
        assert_eq!(blocks[0].expand, 1);
        assert_eq!(blocks.last().unwrap().output, 320);
        let strided: Vec<usize> = blocks
            .iter()
            .filter(|b| b.stride == 2)
            .map(|b| b.output)
            .collect();
        assert_eq!(strided, [24, 40, 80, 192]);
    }

    #[test]
    fn lite4_scales_width_and_depth_but_not_stem_or_first_and_last_stage() {
        let c = EfficientNetConfig::lite("lite4", 1000).unwrap();
        assert_eq!(c.round_filters(320), 448);
        assert_eq!(c.round_filters(16), 24);
        let blocks = c.blocks();
        // Stages of 1, 4, 4, 6, 6, 8, 1 blocks; the first takes the unscaled stem.
        assert_eq!(blocks.len(), 30);
        assert_eq!((blocks[0].input, blocks[0].output), (32, 24));
        assert!(EfficientNetConfig::lite("lite9", 10).is_err());
        assert_eq!(
            upstream_name("blocks.3.depthwise_conv.weight"),
            "_blocks.3._depthwise_conv.weight"
        );
    }
}
