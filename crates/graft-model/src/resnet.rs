//! ResNet-18/34/50/101/152 in torchvision's tensor layout (`conv1`, `bn1`, `layer1..4` of basic
//! or bottleneck blocks with `downsample.0`/`downsample.1`, `fc`): the config, the modules and the
//! name mapping, and its [`Architecture`] impl (blocks: the stem, then `layer1..4`; exports in
//! torchvision's layout). Bottlenecks stride in their 3x3 convolution (torchvision's "v1.5"),
//! or with `stride_in_1x1` in their first 1x1 convolution, as the original ResNet and Keras
//! Applications' ResNet50/101/152 do; `batch_norm_eps` takes Keras' 1.001e-5. timm's `resnet*`
//! use the same names. transformers' ResNet folders (`model_type` "resnet", such as
//! microsoft/resnet-50; `downsample_in_bottleneck` for the stride on the 1x1) load too.

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
use crate::{ModelError, ModelFolder, PoolingOptions, weights};

/// What `config.json` says about a ResNet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResNetConfig {
    /// 18, 34, 50, 101 or 152.
    pub depth: usize,
    /// Classes of the checkpoint's classifier (`fc`); 0 for a headless backbone.
    pub num_classes: usize,
    /// Blocks per stage, when not the depth's own (a ResNet built with other stages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_blocks: Option<[usize; 4]>,
    /// Widths of the stages' blocks (bottlenecks: the inner width), when not 64, 128, 256, 512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_widths: Option<[usize; 4]>,
    /// Bottlenecks stride in their first 1x1 convolution (the original ResNet, Keras).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stride_in_1x1: bool,
    /// BatchNorm's epsilon (PyTorch's 1e-5 unless given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_norm_eps: Option<f64>,
}

impl ResNetConfig {
    pub fn new(depth: usize, num_classes: usize) -> Result<Self, String> {
        let config = Self {
            depth,
            num_classes,
            stage_blocks: None,
            stage_widths: None,
            stride_in_1x1: false,
            batch_norm_eps: None,
        };
        config.layers()?;
        Ok(config)
    }

    /// Blocks per stage and whether they are bottlenecks.
    fn layers(&self) -> Result<([usize; 4], bool), String> {
        let (blocks, bottleneck) = self.depth_layers()?;
        let blocks = self.stage_blocks.unwrap_or(blocks);
        if blocks.contains(&0) || self.stage_widths.is_some_and(|w| w.contains(&0)) {
            return Err("every stage needs at least one block of non-zero width".into());
        }
        Ok((blocks, bottleneck))
    }

    /// Inner widths of the four stages.
    fn widths(&self) -> [usize; 4] {
        self.stage_widths.unwrap_or([64, 128, 256, 512])
    }

    /// The blocks per stage of a standard depth.
    fn depth_layers(&self) -> Result<([usize; 4], bool), String> {
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
            Ok((_, true)) => self.widths()[3] * 4,
            _ => self.widths()[3],
        }
    }

    pub fn init(&self, device: &Device) -> ResNet {
        let (layers, bottleneck) = self.layers().expect("checked by new");
        let expansion = if bottleneck { 4 } else { 1 };
        let eps = self.batch_norm_eps.unwrap_or(1e-5);
        let bn = |c: usize| BatchNormConfig::new(c).with_epsilon(eps).init(device);
        let bottleneck_strides = |stride: usize| match self.stride_in_1x1 {
            true => (stride, 1),
            false => (1, stride),
        };
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
                        let (stride_1x1, stride_3x3) = bottleneck_strides(stride);
                        Block {
                            conv1: conv(channels, width, 1, stride_1x1),
                            bn1: bn(width),
                            conv2: conv(width, width, 3, stride_3x3),
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
        let widths = self.widths();
        let layer1 = stage(widths[0], layers[0], 1);
        let layer2 = stage(widths[1], layers[1], 2);
        let layer3 = stage(widths[2], layers[2], 2);
        let layer4 = stage(widths[3], layers[3], 2);
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
            stride_in_1x1: self.stride_in_1x1 && bottleneck,
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
    /// Whether bottlenecks stride in their first 1x1 convolution (no torchvision or timm ResNet
    /// does, so such a model has no export in their layout).
    #[module(skip)]
    pub stride_in_1x1: bool,
    pub fc: Option<Linear>,
}

impl ResNet {
    /// transformers' `ResNetConfig` of this network. Its BatchNorms have PyTorch's epsilon
    /// (1e-5), so Keras' 1.001e-5 is not kept: each normalized value changes by a relative
    /// 1e-8 / (2 var) at most, below float32's resolution for variances from 0.1 up.
    fn transformers_config(&self) -> Value {
        let stages = [&self.layer1, &self.layer2, &self.layer3, &self.layer4];
        let bottleneck = self.layer1.first().is_some_and(|b| b.conv3.is_some());
        let widths: Vec<usize> = stages
            .iter()
            .map(|s| {
                s.last()
                    .map_or(0, |b| b.bn3.as_ref().unwrap_or(&b.bn2).gamma.dims()[0])
            })
            .collect();
        serde_json::json!({
            "model_type": "resnet",
            "num_channels": 3,
            "embedding_size": self.bn1.gamma.dims()[0],
            "hidden_sizes": widths,
            "depths": stages.iter().map(|s| s.len()).collect::<Vec<_>>(),
            "layer_type": if bottleneck { "bottleneck" } else { "basic" },
            "hidden_act": "relu",
            "downsample_in_first_stage": false,
            "downsample_in_bottleneck": self.stride_in_1x1,
        })
    }

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

/// transformers' `ResNetModel` name of a module path (`layer2.0.conv1.weight` →
/// `encoder.stages.1.layers.0.layer.0.convolution.weight`).
pub fn transformers_name(module_path: &str) -> String {
    let layer = |module: &str| match module {
        "conv1" | "conv2" | "conv3" => Some(format!(
            "layer.{}.convolution",
            module[4..].parse::<usize>().unwrap_or(1) - 1
        )),
        "bn1" | "bn2" | "bn3" => Some(format!(
            "layer.{}.normalization",
            module[2..].parse::<usize>().unwrap_or(1) - 1
        )),
        _ => None,
    };
    let parts: Vec<&str> = module_path.split('.').collect();
    match parts.as_slice() {
        ["conv1", leaf] => format!("embedder.embedder.convolution.{leaf}"),
        ["bn1", leaf] => format!("embedder.embedder.normalization.{leaf}"),
        [stage, block, rest @ ..] if stage.starts_with("layer") => {
            let stage = stage[5..].parse::<usize>().unwrap_or(1) - 1;
            let inner = match rest {
                ["downsample", "conv", leaf] => format!("shortcut.convolution.{leaf}"),
                ["downsample", "bn", leaf] => format!("shortcut.normalization.{leaf}"),
                [module, leaf] => match layer(module) {
                    Some(name) => format!("{name}.{leaf}"),
                    None => rest.join("."),
                },
                _ => rest.join("."),
            };
            format!("encoder.stages.{stage}.layers.{block}.{inner}")
        }
        _ => module_path.to_string(),
    }
}

/// Whether a `config.json` is transformers' ResNet (`model_type` "resnet": microsoft/resnet-50,
/// or graft's conversion of a Keras ResNet).
fn is_transformers(config: &Value) -> bool {
    config.get("model_type").and_then(Value::as_str) == Some("resnet")
}

/// graft's ResNet config of a transformers `ResNetConfig`: `depths`, `hidden_sizes` (a
/// bottleneck's output, four times its inner width), `layer_type`, `downsample_in_bottleneck`;
/// the stem must be 64 wide and the first stage must not downsample, as in every ResNet
/// transformers ships.
fn transformers_config(config: &Value, classes: usize) -> Result<ResNetConfig, String> {
    let list = |key: &str| -> Result<Vec<usize>, String> {
        config
            .get(key)
            .and_then(Value::as_array)
            .map(|v| {
                v.iter()
                    .filter_map(Value::as_u64)
                    .map(|n| n as usize)
                    .collect()
            })
            .ok_or_else(|| format!("no \"{key}\" list"))
    };
    let (depths, sizes) = (list("depths")?, list("hidden_sizes")?);
    let [d0, d1, d2, d3] = depths[..] else {
        return Err(format!("\"depths\" {depths:?}: graft builds four stages"));
    };
    let [s0, s1, s2, s3] = sizes[..] else {
        return Err(format!(
            "\"hidden_sizes\" {sizes:?}: graft builds four stages"
        ));
    };
    let bottleneck = match config.get("layer_type").and_then(Value::as_str) {
        Some("bottleneck") | None => true,
        Some("basic") => false,
        Some(other) => return Err(format!("\"layer_type\" \"{other}\" (basic or bottleneck)")),
    };
    let setting = |key: &str| config.get(key).cloned().unwrap_or(Value::Null);
    if setting("embedding_size").as_u64().unwrap_or(64) != 64
        || setting("downsample_in_first_stage")
            .as_bool()
            .unwrap_or(false)
        || setting("hidden_act").as_str().unwrap_or("relu") != "relu"
        || setting("num_channels").as_u64().unwrap_or(3) != 3
    {
        return Err(
            "embedding_size 64, downsample_in_first_stage false, hidden_act relu and \
                    num_channels 3 are the ResNets graft builds"
                .into(),
        );
    }
    let blocks = [d0, d1, d2, d3];
    let expansion = if bottleneck { 4 } else { 1 };
    let widths = [s0, s1, s2, s3].map(|s| s / expansion);
    let depth = match (blocks, bottleneck) {
        ([2, 2, 2, 2], false) => 18,
        ([3, 4, 6, 3], false) => 34,
        (_, false) => 34,
        ([3, 4, 23, 3], true) => 101,
        ([3, 8, 36, 3], true) => 152,
        (_, true) => 50,
    };
    let mut resnet = ResNetConfig::new(depth, classes)?;
    if resnet.depth_layers()?.0 != blocks {
        resnet.stage_blocks = Some(blocks);
    }
    if widths != [64, 128, 256, 512] {
        resnet.stage_widths = Some(widths);
    }
    resnet.stride_in_1x1 = setting("downsample_in_bottleneck")
        .as_bool()
        .unwrap_or(false);
    resnet.layers()?;
    Ok(resnet)
}

/// Loads a transformers ResNet folder (`ResNetModel`, or `ResNetForImageClassification` with
/// its `resnet.` prefix and `classifier.1`).
fn load_transformers(
    folder: &ModelFolder,
    classifier: bool,
    device: &Device,
) -> Result<ResNet, ModelError> {
    let index = folder.weights_index()?;
    let prefixed = index
        .tensors
        .contains_key("resnet.embedder.embedder.convolution.weight");
    let classes = match index.tensors.get("classifier.1.weight") {
        Some(t) if classifier => t.shape[0],
        _ => 0,
    };
    let config =
        transformers_config(&folder.config, classes).map_err(|message| ModelError::Config {
            path: folder.config_path(),
            message,
        })?;
    let mut model = config.init(device);
    weights::check_sizes(&model, &folder.weights_path())?;
    let names = weights::param_names(&model, |path| match path.strip_prefix("fc.") {
        Some(rest) => format!("classifier.1.{rest}"),
        None if prefixed => format!("resnet.{}", transformers_name(path)),
        None => transformers_name(path),
    });
    weights::load_renamed(&mut model, &folder.weights_path(), &names, &[])?;
    Ok(model)
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
        is_transformers(config) || VisionConfig::detect(config) == Some(VisionArchitecture::Resnet)
    }

    fn preprocessing(folder: &ModelFolder) -> Result<Preprocessing, ModelError> {
        if is_transformers(&folder.config) {
            let transform = crate::vision::processor_transform(&folder.dir, 224)?;
            return Ok(Preprocessing::Image(transform));
        }
        crate::vision::preprocessing(folder)
    }

    fn naming(folder: &ModelFolder) -> Result<Naming, ModelError> {
        if is_transformers(&folder.config) {
            return Ok(Naming::Export(ExportFormat::Transformers));
        }
        crate::vision::naming(folder)
    }

    fn load(folder: &ModelFolder, classifier: bool, device: &Device) -> Result<Self, ModelError> {
        if is_transformers(&folder.config) {
            return load_transformers(folder, classifier, device);
        }
        crate::vision::load(folder, classifier, |config, classes| {
            let depth = config
                .depth
                .ok_or("resnet needs \"depth\" (18, 34, 50, 101, 152)")?;
            let resnet = ResNetConfig {
                stage_blocks: config.stage_blocks,
                stage_widths: config.stage_widths,
                stride_in_1x1: config.stride_in_1x1,
                batch_norm_eps: config.batch_norm_eps,
                ..ResNetConfig::new(depth, classes)?
            };
            resnet.layers()?;
            Ok(resnet.init(device))
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

    fn export_name(&self, format: ExportFormat, path: &str) -> String {
        match format {
            ExportFormat::Transformers => transformers_name(path),
            _ => upstream_name(path),
        }
    }

    fn export_config(&self, format: ExportFormat) -> Option<Value> {
        (format == ExportFormat::Transformers).then(|| self.transformers_config())
    }

    /// Bottlenecks striding in their first 1x1 convolution export as transformers'
    /// `ResNetForImageClassification` (`downsample_in_bottleneck`), which torchvision's and
    /// timm's ResNets cannot express; the others in torchvision's layout.
    fn exports(&self) -> Vec<ExportTarget> {
        if self.stride_in_1x1 {
            return vec![ExportTarget {
                format: ExportFormat::Transformers,
                model: "ResNetForImageClassification".into(),
                prefix: "resnet.".into(),
                classifier: "classifier.1".into(),
                classifier_copies: Vec::new(),
            }];
        }
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
        for (graft, transformers) in [
            ("conv1.weight", "embedder.embedder.convolution.weight"),
            (
                "bn1.running_var",
                "embedder.embedder.normalization.running_var",
            ),
            (
                "layer2.0.conv1.weight",
                "encoder.stages.1.layers.0.layer.0.convolution.weight",
            ),
            (
                "layer4.2.bn3.bias",
                "encoder.stages.3.layers.2.layer.2.normalization.bias",
            ),
            (
                "layer1.0.downsample.conv.weight",
                "encoder.stages.0.layers.0.shortcut.convolution.weight",
            ),
            (
                "layer3.0.downsample.bn.running_mean",
                "encoder.stages.2.layers.0.shortcut.normalization.running_mean",
            ),
        ] {
            assert_eq!(transformers_name(graft), transformers, "{graft}");
        }
    }
}
