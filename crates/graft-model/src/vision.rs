//! Vision model folders: `config.json` (architecture, variant, classes, input size, mean/std) and
//! `model.safetensors` in upstream names, loaded as a [`VisionBackbone`] (EfficientNet-Lite or
//! ResNet) with every tensor checked for presence and shape first.

use std::path::Path;

use burn::module::Module;
use burn::store::{
    BurnToPyTorchAdapter, FloatCastAdapter, KeyRemapper, ModuleAdapter, ModuleSnapshot,
    PyTorchToBurnAdapter, SafetensorsStore,
};
use burn::tensor::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::efficientnet::{EfficientNet, EfficientNetConfig};
use crate::resnet::{ResNet, ResNetConfig};
use crate::{ModelError, WeightsIndex, efficientnet, resnet, weights};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisionArchitecture {
    EfficientnetLite,
    Resnet,
}

/// How images are resized before the model sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Resize the whole image to `image_size` x `image_size` (aspect ratio not kept).
    #[default]
    Squash,
    /// Resize the shorter side to `resize_size`, then crop the `image_size` center (torchvision).
    ShorterSideThenCenterCrop,
}

/// A vision model folder's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionConfig {
    pub architecture: VisionArchitecture,
    /// EfficientNet-Lite: `lite0` ... `lite4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// ResNet: 18, 34, 50, 101 or 152.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
    /// Classes of the checkpoint's own classifier (0 for none).
    pub num_classes: usize,
    /// Side of the square input.
    pub image_size: usize,
    #[serde(default)]
    pub resize: ResizeMode,
    /// With `shorter_side_then_center_crop`: the shorter side before the crop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_size: Option<usize>,
    /// Per-channel normalization of pixels scaled to [0, 1]: `(x - mean) / std`.
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl VisionConfig {
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        crate::read_config(path, Self::build_check)
    }

    fn build_check(&self) -> Result<(), String> {
        match self.architecture {
            VisionArchitecture::EfficientnetLite => {
                self.efficientnet()?;
            }
            VisionArchitecture::Resnet => {
                self.resnet()?;
            }
        }
        if self.image_size < 32 {
            return Err(format!("image_size {} is too small", self.image_size));
        }
        if self.std.iter().any(|&s| s <= 0.0) {
            return Err("std must be positive".into());
        }
        Ok(())
    }

    fn efficientnet(&self) -> Result<EfficientNetConfig, String> {
        let variant = self
            .variant
            .as_deref()
            .ok_or("efficientnet_lite needs \"variant\" (lite0 to lite4)")?;
        EfficientNetConfig::lite(variant, self.num_classes)
    }

    fn resnet(&self) -> Result<ResNetConfig, String> {
        let depth = self
            .depth
            .ok_or("resnet needs \"depth\" (18, 34, 50, 101, 152)")?;
        ResNetConfig::new(depth, self.num_classes)
    }

    /// A short description, e.g. `efficientnet_lite (lite0)`.
    pub fn name(&self) -> String {
        match self.architecture {
            VisionArchitecture::EfficientnetLite => {
                format!(
                    "efficientnet_lite ({})",
                    self.variant.as_deref().unwrap_or("?")
                )
            }
            VisionArchitecture::Resnet => format!("resnet{}", self.depth.unwrap_or(0)),
        }
    }

    /// A model with this shape and freshly initialised weights.
    pub fn init(&self, device: &Device) -> VisionBackbone {
        match self.architecture {
            VisionArchitecture::EfficientnetLite => VisionBackbone::EfficientNet(
                self.efficientnet().expect("checked when read").init(device),
            ),
            VisionArchitecture::Resnet => {
                VisionBackbone::ResNet(self.resnet().expect("checked when read").init(device))
            }
        }
    }
}

/// An image backbone with its checkpoint's classifier (if any).
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // one per model; boxing would only add indirection
pub enum VisionBackbone {
    EfficientNet(EfficientNet),
    ResNet(ResNet),
}

impl VisionBackbone {
    /// Pooled features `[batch, features]` of normalized images `[batch, 3, h, w]`.
    pub fn forward_features(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Self::EfficientNet(m) => m.forward_features(images),
            Self::ResNet(m) => m.forward_features(images),
        }
    }

    /// Logits of the checkpoint's classifier, if it has one.
    pub fn forward(&self, images: Tensor<4>) -> Option<Tensor<2>> {
        match self {
            Self::EfficientNet(m) => m.forward(images),
            Self::ResNet(m) => m.forward(images),
        }
    }

    /// The checkpoint's classifier, if it has one.
    pub fn classifier(&self) -> Option<&burn::nn::Linear> {
        match self {
            Self::EfficientNet(m) => m.fc.as_ref(),
            Self::ResNet(m) => m.fc.as_ref(),
        }
    }

    pub fn feature_size(&self) -> usize {
        match self {
            Self::EfficientNet(_) => 1280,
            Self::ResNet(m) => m
                .layer4
                .last()
                .map_or(512, |b| b.bn3.as_ref().unwrap_or(&b.bn2).gamma.dims()[0]),
        }
    }

    /// The upstream name of a module path inside this backbone.
    pub fn upstream_name(&self, path: &str) -> String {
        match self {
            Self::EfficientNet(_) => efficientnet::upstream_name(path),
            Self::ResNet(_) => resnet::upstream_name(path),
        }
    }

    /// Remaps upstream names onto module paths, for loading.
    fn load_remapper(&self) -> KeyRemapper {
        let patterns: Vec<(&str, &str)> = match self {
            // `_blocks.0._bn1.weight` -> `blocks.0.bn1.weight`
            Self::EfficientNet(_) => vec![(r"(^|\.)_", "$1")],
            Self::ResNet(_) => vec![
                (r"\.downsample\.0\.", ".downsample.conv."),
                (r"\.downsample\.1\.", ".downsample.bn."),
            ],
        };
        KeyRemapper::from_patterns(patterns).expect("static patterns are valid")
    }
}

/// Builds the model `config.json` in `dir` describes and loads its `model.safetensors`.
pub fn load(dir: &Path, device: &Device) -> Result<(VisionConfig, VisionBackbone), ModelError> {
    let config = VisionConfig::from_file(&dir.join("config.json"))?;
    let mut model = config.init(device);
    let weights_path = dir.join("model.safetensors");
    load_weights(&mut model, &weights_path)?;
    Ok((config, model))
}

/// Loads weights in upstream names into `model`; every tensor must be present with its shape
/// (`num_batches_tracked` and other extras are ignored).
pub fn load_weights(model: &mut VisionBackbone, weights_path: &Path) -> Result<(), ModelError> {
    let index = WeightsIndex::read(weights_path)?;
    let expected: Vec<(String, Vec<usize>)> = {
        let snapshot = model.collect(None, Some(Box::new(BurnToPyTorchAdapter)), true);
        snapshot
            .into_iter()
            .map(|t| (model.upstream_name(&t.name), t.shape.as_slice().to_vec()))
            .collect()
    };
    weights::check_expected(weights_path, &index, &expected, &[])?;
    let mut store = SafetensorsStore::from_file(weights_path)
        .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32)))
        .remap(model.load_remapper())
        .skip_enum_variants(true)
        .allow_partial(true);
    weights::apply(model, &mut store, weights_path)
}
