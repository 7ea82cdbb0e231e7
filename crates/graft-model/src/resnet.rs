//! ResNet-18/34/50/101/152 in torchvision's tensor layout (`conv1`, `bn1`, `layer1..4` of basic
//! or bottleneck blocks with `downsample.0`/`downsample.1`, `fc`): the config, the modules and the
//! name mapping, and its [`Architecture`] impl (blocks: the stem, then `layer1..4`; exports in
//! torchvision's layout). Bottlenecks stride in their 3x3 convolution (torchvision's "v1.5").
//! timm's `resnet*` use the same names.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backbone::{Architecture, ExportFormat, ExportTarget, Inputs, Naming, Preprocessing};
use crate::vision::{VisionArchitecture, VisionConfig};
use crate::{ModelError, ModelFolder, PoolingOptions};

/// What `config.json` says about a ResNet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResNetConfig {
    /// 18, 34, 50, 101 or 152.
    pub depth: usize,
    /// Classes of the checkpoint's classifier (`fc`); 0 for a headless backbone.
    pub num_classes: usize,
}

impl ResNetConfig {
    pub fn new(depth: usize, num_classes: usize) -> Result<Self, String> {
        let config = Self { depth, num_classes };
        config.layers()?;
        Ok(config)
    }

    /// Blocks per stage and whether they are bottlenecks.
    fn layers(&self) -> Result<([usize; 4], bool), String> {
        Ok(match self.depth {
            18 => ([2, 2, 2, 2], false),
            34 => ([3, 4, 6, 3], false),
            50 => ([3, 4, 6, 3], true),
            101 => ([3, 4, 23, 3], true),
            152 => ([3, 8, 36, 3], true),
            other => {
                return Err(format!(
                    "unknown ResNet depth {other} (18, 34, 50, 101, 152)"
                ));
            }
        })
    }

    /// Width of the pooled features.
    pub fn feature_size(&self) -> usize {
        match self.layers() {
            Ok((_, true)) => 2048,
            _ => 512,
        }
    }

    pub fn init(&self, device: &Device) -> ResNet {
        let (layers, bottleneck) = self.layers().expect("checked by new");
        let expansion = if bottleneck { 4 } else { 1 };
        let bn = |c: usize| BatchNormConfig::new(c).init(device);
        let conv = |cin: usize, cout: usize, k: usize, stride: usize| {
            Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
                .with_bias(false)
                .init(device)
        };
        let mut channels = 64;
        let mut stage = |width: usize, blocks: usize, stride: usize| -> Vec<Block> {
            (0..blocks)
                .map(|i| {
                    let stride = if i == 0 { stride } else { 1 };
                    let out = width * expansion;
                    let downsample =
                        (i == 0 && (stride != 1 || channels != out)).then(|| Downsample {
                            conv: conv(channels, out, 1, stride),
                            bn: bn(out),
                        });
                    let block = if bottleneck {
                        Block {
                            conv1: conv(channels, width, 1, 1),
                            bn1: bn(width),
                            conv2: conv(width, width, 3, stride),
                            bn2: bn(width),
                            conv3: Some(conv(width, out, 1, 1)),
                            bn3: Some(bn(out)),
                            downsample,
                        }
                    } else {
                        Block {
                            conv1: conv(channels, width, 3, stride),
                            bn1: bn(width),
                            conv2: conv(width, width, 3, 1),
                            bn2: bn(width),
                            conv3: None,
                            bn3: None,
                            downsample,
                        }
                    };
                    channels = out;
                    block
                })
                .collect()
        };
        let layer1 = stage(64, layers[0], 1);
        let layer2 = stage(128, layers[1], 2);
        let layer3 = stage(256, layers[2], 2);
        let layer4 = stage(512, layers[3], 2);
        ResNet {
            conv1: conv(3, 64, 7, 2),
            bn1: bn(64),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1,
            layer2,
            layer3,
            layer4,
            avgpool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            depth: self.depth,
            fc: (self.num_classes > 0)
                .then(|| LinearConfig::new(self.feature_size(), self.num_classes).init(device)),
        }
    }
}

/// torchvision's `downsample` (`Sequential(conv, bn)`, saved as `downsample.0` and `.1`).
#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

/// A basic block (two 3x3 convolutions) or, with `conv3`, a bottleneck (1x1, 3x3, 1x1).
#[derive(Module, Debug)]
pub struct Block {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub conv3: Option<Conv2d>,
    pub bn3: Option<BatchNorm>,
    pub downsample: Option<Downsample>,
}

impl Block {
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let mut x = relu(self.bn1.forward(self.conv1.forward(input.clone())));
        x = self.bn2.forward(self.conv2.forward(x));
        if let (Some(conv3), Some(bn3)) = (&self.conv3, &self.bn3) {
            x = bn3.forward(conv3.forward(relu(x)));
        }
        let identity = match &self.downsample {
            Some(d) => d.bn.forward(d.conv.forward(input)),
            None => input,
        };
        relu(x + identity)
    }
}

#[derive(Module, Debug)]
pub struct ResNet {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub maxpool: MaxPool2d,
    pub layer1: Vec<Block>,
    pub layer2: Vec<Block>,
    pub layer3: Vec<Block>,
    pub layer4: Vec<Block>,
    pub avgpool: AdaptiveAvgPool2d,
    #[module(skip)]
    pub depth: usize,
    pub fc: Option<Linear>,
}

impl ResNet {
    /// The outputs of the stem (conv, norm, ReLU, max pool) and of each of the four stages.
    pub fn stages(&self, images: Tensor<4>) -> Vec<Tensor<4>> {
        let mut x = self
            .maxpool
            .forward(relu(self.bn1.forward(self.conv1.forward(images))));
        let mut outputs = vec![x.clone()];
        for layer in [&self.layer1, &self.layer2, &self.layer3, &self.layer4] {
            for block in layer {
                x = block.forward(x);
            }
            outputs.push(x.clone());
        }
        outputs
    }

    /// Pooled features `[batch, 512 or 2048]` of images `[batch, 3, h, w]` (normalized).
    pub fn forward_features(&self, images: Tensor<4>) -> Tensor<2> {
        let last = self.stages(images).pop().expect("four stages");
        self.avgpool.forward(last).flatten(1, 3)
    }

    /// Logits of the checkpoint's own classifier, if it has one.
    pub fn forward(&self, images: Tensor<4>) -> Option<Tensor<2>> {
        Some(self.fc.as_ref()?.forward(self.forward_features(images)))
    }
}

/// Maps a module path to torchvision's name (`layer1.0.downsample.conv.weight` →
/// `layer1.0.downsample.0.weight`).
pub fn upstream_name(module_path: &str) -> String {
    module_path
        .replace(".downsample.conv.", ".downsample.0.")
        .replace(".downsample.bn.", ".downsample.1.")
}

impl Architecture for ResNet {
    fn name() -> &'static str {
        "resnet"
    }

    fn detects(config: &Value) -> bool {
        VisionConfig::detect(config) == Some(VisionArchitecture::Resnet)
    }

    fn preprocessing(folder: &ModelFolder) -> Result<Preprocessing, ModelError> {
        crate::vision::preprocessing(folder)
    }

    fn naming(folder: &ModelFolder) -> Result<Naming, ModelError> {
        crate::vision::naming(folder)
    }

    fn load(folder: &ModelFolder, classifier: bool, device: &Device) -> Result<Self, ModelError> {
        crate::vision::load(folder, classifier, |config, classes| {
            let depth = config
                .depth
                .ok_or("resnet needs \"depth\" (18, 34, 50, 101, 152)")?;
            Ok(ResNetConfig::new(depth, classes)?.init(device))
        })
    }

    fn describe(&self) -> String {
        format!("resnet{}", self.depth)
    }

    fn feature_size(&self) -> usize {
        self.layer4
            .last()
            .map_or(512, |b| b.bn3.as_ref().unwrap_or(&b.bn2).gamma.dims()[0])
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

    fn block_of(&self, path: &str) -> usize {
        match path.split('.').next().unwrap_or("") {
            "layer1" => 1,
            "layer2" => 2,
            "layer3" => 3,
            "layer4" | "fc" => 4,
            _ => 0,
        }
    }

    fn num_blocks(&self) -> usize {
        5
    }

    fn is_batchnorm(&self, path: &str) -> bool {
        crate::vision::is_batchnorm(path)
    }

    fn exports(&self) -> Vec<ExportTarget> {
        vec![ExportTarget {
            format: ExportFormat::Torchvision,
            model: format!("resnet{}", self.depth),
            prefix: String::new(),
            classifier: "fc".into(),
            classifier_copies: Vec::new(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depths_and_names() {
        assert!(ResNetConfig::new(20, 10).is_err());
        assert_eq!(ResNetConfig::new(50, 10).unwrap().feature_size(), 2048);
        assert_eq!(
            upstream_name("layer2.0.downsample.bn.running_mean"),
            "layer2.0.downsample.1.running_mean"
        );
    }
}
