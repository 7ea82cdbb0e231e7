//! The config of an image model folder, shared by the CNN architectures: graft's own vision
//! `config.json` (architecture, variant or depth, classes, input size, resize, mean/std), or a
//! timm folder's `config.json` (`architecture` plus `pretrained_cfg`), read into one
//! [`VisionConfig`] together with the names the folder's weights use.

use burn::module::Module;
use graft_data::image::{CropOffset, Interpolation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

use crate::backbone::{Architecture, ExportFormat, ImageTransform, Naming, Preprocessing};
use crate::{ModelError, ModelFolder, weights};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisionArchitecture {
    EfficientnetLite,
    Resnet,
    /// torchvision's MobileNetV3 (`variant` small or large).
    #[serde(rename = "mobilenet_v3")]
    MobilenetV3,
    /// torchvision's EfficientNet B0-B7 (`variant` b0 ... b7).
    Efficientnet,
}

/// A convolution padding other than PyTorch's symmetric one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// TensorFlow's "SAME": on stride-2 layers the extra row and column go at the bottom and
    /// right.
    Same,
    /// Keras' `correct_pad` in a model built without a fixed input size (Keras Applications'
    /// models without their top): a stride-2 layer pads k/2 - 1 rows and columns before and k/2
    /// after, whatever its input's size ("same" on even sizes, shifted by one on odd ones); other
    /// layers as "same".
    KerasUnsized,
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
    /// Resize the whole image to `resize_size` x `resize_size`, then crop the `image_size` center
    /// (timm's `crop_mode = "squash"` below a `crop_pct` of 1).
    SquashThenCenterCrop,
}

/// A vision model folder's `config.json`, in graft's layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionConfig {
    pub architecture: VisionArchitecture,
    /// EfficientNet-Lite: `lite0` ... `lite4`; EfficientNet: `b0` ... `b7`; MobileNetV3: `small`
    /// or `large`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// ResNet: 18, 34, 50, 101 or 152.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
    /// ResNet built with other stages than its depth's: blocks per stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_blocks: Option<[usize; 4]>,
    /// ResNet: the stages' inner widths, when not 64, 128, 256, 512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_widths: Option<[usize; 4]>,
    /// ResNet: bottlenecks stride in their first 1x1 convolution (Keras Applications' ResNets).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stride_in_1x1: bool,
    /// BatchNorm's epsilon, when not the family's default (Keras' ResNets: 1.001e-5; Keras'
    /// EfficientNets: 1e-3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_norm_eps: Option<f64>,
    /// MobileNetV3 and EfficientNet: TensorFlow's "same" padding (Keras' models), instead of
    /// symmetric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding: Option<Padding>,
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
    /// The resize filter: timm's `pretrained_cfg.interpolation`; bicubic for graft's own config,
    /// which has no such key.
    #[serde(skip)]
    pub interpolation: Interpolation,
    /// timm's `pretrained_cfg.crop_pct` as the folder states it; graft's own config gives
    /// `image_size / resize_size`.
    #[serde(skip)]
    pub crop_pct: Option<f64>,
}

/// The smallest input side graft accepts.
pub const MIN_IMAGE_SIZE: usize = 32;

impl VisionConfig {
    /// The architecture a `config.json` describes, graft's layout or timm's, if it is a CNN graft
    /// knows.
    pub fn detect(config: &Value) -> Option<VisionArchitecture> {
        let name = config.get("architecture")?.as_str()?;
        if is_timm(config) {
            return timm_architecture(name).map(|(architecture, _)| architecture);
        }
        serde_json::from_value(Value::String(name.to_string())).ok()
    }

    /// Reads the folder's config and the names its weights use.
    pub fn of_folder(folder: &ModelFolder) -> Result<(Self, Naming), ModelError> {
        let invalid = |message: String| ModelError::Config {
            path: folder.config_path(),
            message,
        };
        let (config, naming) = if is_timm(&folder.config) {
            let config = Self::from_timm(&folder.config).map_err(invalid)?;
            (config, Naming::Export(ExportFormat::Timm))
        } else {
            let config: Self = serde_json::from_value(folder.config.clone())
                .map_err(|e| invalid(e.to_string()))?;
            (config, Naming::Upstream)
        };
        config.check().map_err(invalid)?;
        Ok((config, naming))
    }

    /// A timm `config.json`: `architecture`, `num_classes`, `model_args` (only keys that leave
    /// the network as graft builds it) and `pretrained_cfg` (`input_size`, `crop_pct`,
    /// `interpolation`, `mean`, `std`), as timm's eval transform uses them.
    fn from_timm(config: &Value) -> Result<Self, String> {
        let name = config
            .get("architecture")
            .and_then(Value::as_str)
            .ok_or("no \"architecture\"")?;
        let (architecture, size) = timm_architecture(name).ok_or_else(|| {
            format!(
                "timm architecture \"{name}\" is not supported (resnet*, tf_efficientnet_lite*)"
            )
        })?;
        check_model_args(
            config,
            match architecture {
                VisionArchitecture::EfficientnetLite => EFFICIENTNET_LITE_ARGS,
                _ => RESNET_ARGS,
            },
        )?;
        let transform = timm_transform(config)?;
        let (resize, resize_size) = match transform.resize_shorter {
            Some(side) if transform.squash_before_crop => {
                (ResizeMode::SquashThenCenterCrop, Some(side))
            }
            Some(shorter) => (ResizeMode::ShorterSideThenCenterCrop, Some(shorter)),
            None => (ResizeMode::Squash, None),
        };
        let (variant, depth) = match (architecture, size) {
            (VisionArchitecture::EfficientnetLite, n) => (Some(format!("lite{n}")), None),
            (VisionArchitecture::Resnet, n) => (None, Some(n)),
            (VisionArchitecture::MobilenetV3 | VisionArchitecture::Efficientnet, _) => (None, None),
        };
        Ok(Self {
            architecture,
            variant,
            depth,
            stage_blocks: None,
            stage_widths: None,
            stride_in_1x1: false,
            batch_norm_eps: None,
            padding: None,
            num_classes: config
                .get("num_classes")
                .and_then(Value::as_u64)
                .unwrap_or(1000) as usize,
            image_size: transform.image_size,
            resize,
            resize_size,
            mean: transform.mean,
            std: transform.std,
            interpolation: transform.interpolation,
            crop_pct: transform.crop_pct,
        })
    }

    /// The shape checks that do not depend on the architecture.
    pub fn check(&self) -> Result<(), String> {
        if self.image_size < MIN_IMAGE_SIZE {
            return Err(format!(
                "image_size {} is too small (at least {MIN_IMAGE_SIZE})",
                self.image_size
            ));
        }
        if self.std.iter().any(|&s| s <= 0.0) {
            return Err("std must be positive".into());
        }
        Ok(())
    }

    /// The preprocessing this config asks for.
    pub fn transform(&self) -> ImageTransform {
        let resize_shorter = match self.resize {
            ResizeMode::Squash => None,
            ResizeMode::ShorterSideThenCenterCrop | ResizeMode::SquashThenCenterCrop => {
                Some(self.resize_size.unwrap_or(self.image_size * 8 / 7))
            }
        };
        ImageTransform {
            image_size: self.image_size,
            resize_shorter,
            squash_before_crop: self.resize == ResizeMode::SquashThenCenterCrop,
            mean: self.mean,
            std: self.std,
            interpolation: self.interpolation,
            crop_pct: self
                .crop_pct
                .or(resize_shorter.map(|r| self.image_size as f64 / r as f64)),
            // torchvision's `CenterCrop`, as its reference transform and timm's do.
            crop_offset: CropOffset::RoundHalfEven,
            crops_below: None,
        }
    }
}

/// A `model_args` key a timm family accepts, with the values it accepts.
pub type ModelArg = (&'static str, fn(&Value) -> bool);

/// Any value: the key is read from the weights, or changes training or initialisation only.
pub fn any(_: &Value) -> bool {
    true
}

/// `model_args` keys every timm family accepts: the classifier's size (from the weights), three
/// input channels, and dropout and stochastic depth.
const COMMON_ARGS: &[ModelArg] = &[
    ("num_classes", any),
    ("in_chans", |v| v.as_u64() == Some(3)),
    ("drop_rate", any),
    ("drop_path_rate", any),
];

/// timm's ResNet: only the settings of `resnet18` ... `resnet152`.
const RESNET_ARGS: &[ModelArg] = &[
    ("global_pool", |v| v.as_str() == Some("avg")),
    ("output_stride", |v| v.as_u64() == Some(32)),
    ("act_layer", |v| v.as_str() == Some("relu")),
    ("cardinality", |v| v.as_u64() == Some(1)),
    ("base_width", |v| v.as_u64() == Some(64)),
    ("stem_width", |v| v.as_u64() == Some(64)),
    ("stem_type", |v| v.as_str() == Some("")),
    ("avg_down", |v| v.as_bool() == Some(false)),
    ("drop_block_rate", any),
    ("zero_init_last", any),
];

/// timm's `tf_efficientnet_lite*`: TF's BatchNorm eps and "same" padding, ReLU6.
const EFFICIENTNET_LITE_ARGS: &[ModelArg] = &[
    ("global_pool", |v| v.as_str() == Some("avg")),
    ("output_stride", |v| v.as_u64() == Some(32)),
    ("act_layer", |v| v.as_str() == Some("relu6")),
    ("bn_eps", |v| v.as_f64() == Some(1e-3)),
    ("pad_type", |v| v.as_str() == Some("same")),
    ("bn_momentum", any),
];

/// A timm model name without its `tf_` prefix, and whether it had one (a TensorFlow port).
pub fn timm_port_name(name: &str) -> (&str, bool) {
    match name.strip_prefix("tf_") {
        Some(rest) => (rest, true),
        None => (name, false),
    }
}

/// [`check_model_args`] for a timm family with TensorFlow ports (`tf_` names): `bn_eps` and
/// `pad_type` may state the name's own values (1e-3 and "same" for a port, timm's 1e-5 and ""
/// otherwise); other values build a different network.
pub fn check_port_args(
    config: &Value,
    name: &str,
    tf: bool,
    accepted: &[ModelArg],
) -> Result<(), String> {
    let Some(args) = config.get("model_args").and_then(Value::as_object) else {
        return check_model_args(config, accepted);
    };
    let eps = if tf { 1e-3 } else { 1e-5 };
    let pad = if tf { "same" } else { "" };
    if let Some(v) = args.get("bn_eps").filter(|v| v.as_f64() != Some(eps)) {
        return Err(format!(
            "model_args.bn_eps = {v} (graft builds {name} with {eps})"
        ));
    }
    if let Some(v) = args.get("pad_type").filter(|v| v.as_str() != Some(pad)) {
        return Err(format!(
            "model_args.pad_type = {v} (graft builds {name} with {pad:?})"
        ));
    }
    let mut rest = config.clone();
    if let Some(args) = rest.get_mut("model_args").and_then(Value::as_object_mut) {
        args.remove("bn_eps");
        args.remove("pad_type");
    }
    check_model_args(&rest, accepted)
}

/// Refuses a timm `model_args` key that `accepted` (or the keys every family accepts) does not
/// list, or a value it does not accept: timm passes each one to the model's constructor.
pub fn check_model_args(config: &Value, accepted: &[ModelArg]) -> Result<(), String> {
    let args = match config.get("model_args") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(args)) => args,
        Some(other) => return Err(format!("model_args {other} is not an object")),
    };
    for (key, value) in args {
        let ok = COMMON_ARGS
            .iter()
            .chain(accepted)
            .find(|(name, _)| name == key)
            .is_some_and(|(_, accepts)| accepts(value));
        if !ok {
            return Err(format!("model_args.{key} = {value} is not supported"));
        }
    }
    Ok(())
}

/// The side of a timm `pretrained_cfg.input_size` (`[channels, height, width]`), when given:
/// square, three channels.
pub fn timm_input_size(config: &Value) -> Result<Option<usize>, String> {
    let Some(value) = config["pretrained_cfg"]
        .get("input_size")
        .filter(|v| !v.is_null())
    else {
        return Ok(None);
    };
    let [channels, height, width]: [usize; 3] = serde_json::from_value(value.clone())
        .map_err(|e| format!("pretrained_cfg.input_size: {e}"))?;
    if height != width {
        return Err(format!(
            "pretrained_cfg.input_size {value}: only square inputs are supported"
        ));
    }
    if channels != 3 {
        return Err(format!(
            "pretrained_cfg.input_size {value}: only 3 channels are supported"
        ));
    }
    Ok(Some(height))
}

/// timm's eval transform from a timm `config.json`'s `pretrained_cfg` (`input_size`, `crop_pct`,
/// `crop_mode`, `interpolation`, `mean`, `std`); a key that is absent or null takes timm's default.
pub fn timm_transform(config: &Value) -> Result<ImageTransform, String> {
    let cfg = &config["pretrained_cfg"];
    let given = |key: &str| cfg.get(key).filter(|v| !v.is_null());
    let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3], String> {
        match given(key) {
            None => Ok(default),
            Some(value) => serde_json::from_value(value.clone())
                .map_err(|e| format!("pretrained_cfg.{key}: {e}")),
        }
    };
    let string = |key: &str| -> Result<Option<&str>, String> {
        match given(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| format!("pretrained_cfg.{key} {v} is not a string")),
        }
    };
    let image_size = timm_input_size(config)?.unwrap_or(224);
    let crop_pct = match given("crop_pct") {
        None => 0.875,
        Some(v) => v
            .as_f64()
            .ok_or_else(|| format!("pretrained_cfg.crop_pct {v} is not a number"))?,
    };
    if !(crop_pct > 0.0 && crop_pct <= 1.0) {
        return Err(format!(
            "pretrained_cfg.crop_pct {crop_pct} is not in (0, 1]"
        ));
    }
    // timm's `squash` resizes the whole image to `floor(size / crop_pct)` before its crop.
    let scale_size = (image_size as f64 / crop_pct).floor() as usize;
    let (resize_shorter, squash_before_crop) = match string("crop_mode")? {
        None | Some("center") => (Some(scale_size), false),
        Some("squash") if crop_pct == 1.0 => (None, false),
        Some("squash") => (Some(scale_size), true),
        Some(mode) => {
            return Err(format!(
                "pretrained_cfg.crop_mode \"{mode}\" is not supported (center or squash)"
            ));
        }
    };
    let interpolation = match string("interpolation")? {
        None | Some("") => Interpolation::Bicubic,
        Some(name) => Interpolation::from_name(name).ok_or_else(|| {
            format!("pretrained_cfg.interpolation \"{name}\" is not supported (nearest, bilinear, bicubic)")
        })?,
    };
    Ok(ImageTransform {
        image_size,
        resize_shorter,
        squash_before_crop,
        mean: triple("mean", [0.485, 0.456, 0.406])?,
        std: triple("std", [0.229, 0.224, 0.225])?,
        interpolation,
        crop_pct: resize_shorter.map(|_| crop_pct),
        crop_offset: CropOffset::RoundHalfEven,
        crops_below: None,
    })
}

/// The image processor of a transformers folder (`preprocessor_config.json`): resize to a square
/// (`size` `height`/`width`) or the shorter side (`shortest_edge`), `crop_size` after it
/// (ConvNeXt's `crop_pct` instead), rescale by 1/255 and normalize. An integer `size` is read as the
/// processor reads it: the shorter side for CLIP's, BiT's and ConvNeXt's processors (those whose
/// `default_to_square` is false; ConvNeXt's is also known by its `crop_pct`), a square otherwise.
/// Without the file: squash to `image_size` with ImageNet's mean and std.
pub fn processor_transform(dir: &Path, image_size: usize) -> Result<ImageTransform, ModelError> {
    let path = dir.join("preprocessor_config.json");
    let imagenet = ImageTransform {
        image_size,
        resize_shorter: None,
        squash_before_crop: false,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
        interpolation: Interpolation::Bicubic,
        crop_pct: None,
        crop_offset: CropOffset::Floor,
        crops_below: None,
    };
    if !path.is_file() {
        return Ok(imagenet);
    }
    let invalid = |message: String| ModelError::Config {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
        path: path.clone(),
        source,
    })?;
    let cfg: Value = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let processor = ["image_processor_type", "feature_extractor_type"]
        .iter()
        .find_map(|key| cfg.get(*key).and_then(Value::as_str))
        .unwrap_or("");
    let integer_is_shorter = cfg.get("crop_pct").is_some()
        || ["CLIP", "Bit", "ConvNext"]
            .iter()
            .any(|name| processor.starts_with(name));
    // A side from `size`/`crop_size`: an integer, {"height", "width"} (square only) or
    // {"shortest_edge"}; whether it is a shorter side.
    let side = |key: &str| -> Result<Option<(usize, bool)>, String> {
        let Some(v) = cfg.get(key) else {
            return Ok(None);
        };
        if let Some(n) = v.as_u64() {
            // transformers reads an integer `crop_size` as a square.
            return Ok(Some((n as usize, key == "size" && integer_is_shorter)));
        }
        if let Some(n) = v.get("shortest_edge").and_then(Value::as_u64) {
            return Ok(Some((n as usize, true)));
        }
        match (
            v.get("height").and_then(Value::as_u64),
            v.get("width").and_then(Value::as_u64),
        ) {
            (Some(h), Some(w)) if h == w => Ok(Some((h as usize, false))),
            (Some(h), Some(w)) => Err(format!("{key} {h}x{w}: only square inputs are supported")),
            _ => Err(format!(
                "{key} {v}: expected an integer, height/width or shortest_edge"
            )),
        }
    };
    let flag = |key: &str, default: bool| cfg.get(key).and_then(Value::as_bool).unwrap_or(default);
    let size = side("size").map_err(invalid)?;
    let crop = if flag("do_center_crop", false) {
        side("crop_size").map_err(invalid)?.map(|(n, _)| n)
    } else {
        None
    };
    if flag("do_rescale", true) {
        let factor = cfg
            .get("rescale_factor")
            .and_then(Value::as_f64)
            .unwrap_or(1.0 / 255.0);
        if (factor - 1.0 / 255.0).abs() > 1e-9 {
            return Err(invalid(format!("rescale_factor {factor} is not 1/255")));
        }
    }
    let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3], ModelError> {
        match cfg.get(key) {
            None => Ok(default),
            Some(v) => {
                serde_json::from_value(v.clone()).map_err(|e| invalid(format!("{key}: {e}")))
            }
        }
    };
    let (mean, std) = if flag("do_normalize", true) {
        (
            triple("image_mean", imagenet.mean)?,
            triple("image_std", imagenet.std)?,
        )
    } else {
        ([0.0; 3], [1.0; 3])
    };
    // ConvNeXt's processor: below 384, the shorter side to s / crop_pct, then an s crop; from 384
    // on, the whole image to s x s.
    let convnext_crop = cfg
        .get("crop_pct")
        .and_then(Value::as_f64)
        .filter(|&p| p > 0.0);
    let crops_below = match (size, crop, convnext_crop) {
        (Some((_, true)), None, Some(_)) => Some(CONVNEXT_CROPS_BELOW),
        _ => None,
    };
    // A square `size` followed by a crop squashes the whole image to it first (DeiT's processor).
    let squash_before_crop = matches!((size, crop), (Some((_, false)), Some(_)));
    let (image_size, resize_shorter, crop_pct) = match (size, crop) {
        (Some((s, _)), Some(c)) => (c, Some(s), Some(c as f64 / s as f64)),
        (Some((s, true)), None) => match convnext_crop {
            Some(pct) if s < CONVNEXT_CROPS_BELOW => {
                (s, Some((s as f64 / pct) as usize), Some(pct))
            }
            Some(pct) => (s, None, Some(pct)),
            None => (s, Some(s), Some(1.0)),
        },
        (Some((s, false)), None) => (s, None, None),
        (None, Some(c)) => (c, Some(c), Some(1.0)),
        (None, None) => (image_size, None, None),
    };
    // transformers' processors default to bilinear (ViT) or bicubic (the others); the file
    // usually says which.
    let interpolation = match cfg.get("resample").and_then(Value::as_u64) {
        None => Interpolation::Bicubic,
        Some(code) => Interpolation::from_pil(code).ok_or_else(|| {
            invalid(format!(
                "resample {code} is not supported (0 nearest, 2 bilinear, 3 bicubic)"
            ))
        })?,
    };
    Ok(ImageTransform {
        image_size,
        resize_shorter,
        squash_before_crop,
        mean,
        std,
        interpolation,
        crop_pct,
        crop_offset: CropOffset::Floor,
        crops_below,
    })
}

/// transformers' `ConvNextImageProcessor` crops by `crop_pct` below this side only.
const CONVNEXT_CROPS_BELOW: usize = 384;

/// Whether a `config.json` is timm's (`pretrained_cfg` beside `architecture`).
pub fn is_timm(config: &Value) -> bool {
    config.get("pretrained_cfg").is_some()
}

/// The names a transformers-or-timm family's folder uses: timm's export names, or upstream.
pub fn family_naming(folder: &ModelFolder) -> Naming {
    if is_timm(&folder.config) {
        Naming::Export(ExportFormat::Timm)
    } else {
        Naming::Upstream
    }
}

/// The preprocessing of a family folder that may be timm's: `pretrained_cfg` for timm, else
/// `other` (the image processor's config, or graft's vision config).
pub fn family_preprocessing(
    folder: &ModelFolder,
    other: impl FnOnce() -> Result<ImageTransform, ModelError>,
) -> Result<Preprocessing, ModelError> {
    let transform = if is_timm(&folder.config) {
        timm_transform(&folder.config).map_err(|message| ModelError::Config {
            path: folder.config_path(),
            message,
        })?
    } else {
        other()?
    };
    Ok(Preprocessing::Image(transform))
}

/// Whether `config` is a timm folder whose `architecture` `timm_name` accepts, or graft's own
/// vision config of `architecture`.
pub fn detects_family(
    config: &Value,
    timm_name: impl Fn(&str) -> bool,
    architecture: VisionArchitecture,
) -> bool {
    if is_timm(config) {
        return config
            .get("architecture")
            .and_then(Value::as_str)
            .is_some_and(timm_name);
    }
    VisionConfig::detect(config) == Some(architecture)
}

/// The preprocessing of a family folder that is timm's or graft's own vision folder.
pub fn family_folder_preprocessing(folder: &ModelFolder) -> Result<Preprocessing, ModelError> {
    family_preprocessing(folder, || {
        Ok(VisionConfig::of_folder(folder)?.0.transform())
    })
}

/// Loads the folder's weights into `model` under the names `name` gives each parameter path,
/// after checking their sizes.
pub fn load_weights<M: Module>(
    folder: &ModelFolder,
    model: &mut M,
    name: impl Fn(&str) -> String,
) -> Result<(), ModelError> {
    weights::check_sizes(&*model, &folder.weights_path())?;
    let names = weights::param_names(&*model, name);
    weights::load_renamed(model, &folder.weights_path(), &names, &[])
}

/// The preprocessing of an image model folder.
pub fn preprocessing(folder: &ModelFolder) -> Result<Preprocessing, ModelError> {
    let (config, _) = VisionConfig::of_folder(folder)?;
    Ok(Preprocessing::Image(config.transform()))
}

/// The names an image model folder's weights use.
pub fn naming(folder: &ModelFolder) -> Result<Naming, ModelError> {
    VisionConfig::of_folder(folder).map(|(_, naming)| naming)
}

/// Builds a CNN with `build(config, classes)` (classes 0 without the checkpoint's classifier) and
/// loads the folder's weights under the names the folder uses.
pub fn load<M: Module + Architecture>(
    folder: &ModelFolder,
    classifier: bool,
    build: impl FnOnce(&VisionConfig, usize) -> Result<M, String>,
) -> Result<M, ModelError> {
    let (config, naming) = VisionConfig::of_folder(folder)?;
    let classes = if classifier { config.num_classes } else { 0 };
    let mut model = build(&config, classes).map_err(|message| ModelError::Config {
        path: folder.config_path(),
        message,
    })?;
    weights::check_sizes(&model, &folder.weights_path())?;
    let names = weights::param_names(&model, |path| match naming {
        Naming::Upstream => model.upstream_name(path),
        Naming::Export(format) => model.export_name(format, path),
    });
    weights::load_renamed(&mut model, &folder.weights_path(), &names, &[])?;
    Ok(model)
}

/// Whether a parameter path belongs to a BatchNorm layer (`bn1`, `bn0`, `downsample.bn`: graft's
/// CNNs name every BatchNorm `bn<N>`).
pub fn is_batchnorm(path: &str) -> bool {
    path.split('.').any(|segment| {
        segment
            .strip_prefix("bn")
            .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit()))
    })
}

/// timm model names graft builds: `tf_efficientnet_lite0..4` and `resnet18..152`.
fn timm_architecture(name: &str) -> Option<(VisionArchitecture, usize)> {
    if let Some(n) = name.strip_prefix("tf_efficientnet_lite") {
        return n
            .parse()
            .ok()
            .filter(|n| *n <= 4)
            .map(|n| (VisionArchitecture::EfficientnetLite, n));
    }
    let depth: usize = name.strip_prefix("resnet")?.parse().ok()?;
    [18, 34, 50, 101, 152]
        .contains(&depth)
        .then_some((VisionArchitecture::Resnet, depth))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_sizes_keep_the_crop_share_as_timm_does() {
        let config = serde_json::json!({"architecture": "convnext_atto",
            "pretrained_cfg": {"input_size": [3, 224, 224], "crop_pct": 0.875}});
        let folder = timm_transform(&config).unwrap();
        assert_eq!(
            (folder.resize_shorter, folder.crop_pct),
            (Some(256), Some(0.875))
        );
        assert_eq!(folder.at_size(224, None), folder);
        // 64 px sees the whole image's 87.5% center, not 64 px of a 256 px resize.
        let small = folder.at_size(64, None);
        assert_eq!((small.image_size, small.resize_shorter), (64, Some(73)));
        assert_eq!(small.crop_pct, Some(0.875));
        let large = folder.at_size(448, None);
        assert_eq!(large.resize_shorter, Some(512));
        // [model] crop_pct replaces the share; 1.0 resizes the shorter side to the size.
        assert_eq!(folder.at_size(64, Some(1.0)).resize_shorter, Some(64));
        // A squashing transform squashes at any size.
        let squash = ImageTransform {
            resize_shorter: None,
            crop_pct: None,
            ..folder.clone()
        };
        assert_eq!(squash.at_size(96, None).resize_shorter, None);
        // graft's own config states the share as its resize.
        let own: VisionConfig = serde_json::from_value(serde_json::json!({
            "architecture": "resnet", "depth": 18, "num_classes": 10, "image_size": 224,
            "resize": "shorter_side_then_center_crop", "resize_size": 256,
            "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}))
        .unwrap();
        assert_eq!(own.transform().at_size(64, None).resize_shorter, Some(73));
    }

    /// transformers' `ConvNextImageProcessor`: `crop_pct` below 384 px, the whole image from 384 on,
    /// at the folder's size and at others.
    #[test]
    fn convnext_processors_crop_below_384_only() {
        let folder = |shortest_edge: usize| {
            let dir = tempfile::tempdir().unwrap();
            let config = serde_json::json!({"image_processor_type": "ConvNextImageProcessor",
                "size": {"shortest_edge": shortest_edge}, "crop_pct": 0.875, "resample": 3,
                "do_normalize": true, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]});
            std::fs::write(
                dir.path().join("preprocessor_config.json"),
                config.to_string(),
            )
            .unwrap();
            processor_transform(dir.path(), 224).unwrap()
        };
        let at_224 = folder(224);
        assert_eq!((at_224.image_size, at_224.resize_shorter), (224, Some(256)));
        assert_eq!(at_224.at_size(64, None).resize_shorter, Some(73));
        assert_eq!(at_224.at_size(448, None).resize_shorter, None);
        let at_384 = folder(384);
        assert_eq!(at_384.resize_shorter, None);
        assert_eq!(at_384.at_size(224, None).resize_shorter, Some(256));
        // An explicit [model] crop_pct crops at any size.
        assert_eq!(at_224.at_size(448, Some(1.0)).resize_shorter, Some(448));
    }

    /// An integer `size` is the shorter side where the processor's `default_to_square` is false
    /// (ConvNeXt's, as facebook/convnext-tiny-224 ships it; CLIP's) and a square for ViT's.
    #[test]
    fn integer_sizes_are_read_as_their_processors_read_them() {
        let read = |config: Value| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(
                dir.path().join("preprocessor_config.json"),
                config.to_string(),
            )
            .unwrap();
            processor_transform(dir.path(), 32).unwrap()
        };
        let convnext = serde_json::json!({"feature_extractor_type": "ConvNextFeatureExtractor",
            "size": 224, "crop_pct": 0.875, "resample": 3});
        let convnext = read(convnext);
        assert_eq!(
            (convnext.image_size, convnext.resize_shorter),
            (224, Some(256))
        );
        assert_eq!(convnext.crops_below, Some(CONVNEXT_CROPS_BELOW));
        assert_eq!(convnext.at_size(384, None).resize_shorter, None);
        let clip = serde_json::json!({"feature_extractor_type": "CLIPFeatureExtractor",
            "size": 224, "crop_size": 224, "do_center_crop": true});
        let clip = read(clip);
        assert_eq!((clip.image_size, clip.resize_shorter), (224, Some(224)));
        let vit = serde_json::json!({"feature_extractor_type": "ViTFeatureExtractor",
            "size": 224, "resample": 2});
        let vit = read(vit);
        assert_eq!((vit.image_size, vit.resize_shorter), (224, None));
    }

    /// timm's `crop_mode = "squash"` squashes to `floor(size / crop_pct)` before its crop.
    #[test]
    fn timm_squash_crops_below_a_crop_pct_of_one() {
        let config = |crop_pct: f64| {
            serde_json::json!({"architecture": "resnet18", "pretrained_cfg": {
                "input_size": [3, 224, 224], "crop_pct": crop_pct, "crop_mode": "squash"}})
        };
        let t = timm_transform(&config(0.875)).unwrap();
        assert_eq!((t.resize_shorter, t.squash_before_crop), (Some(256), true));
        assert_eq!(t.at_size(64, None).resize_shorter, Some(73));
        assert!(t.at_size(64, None).squash_before_crop);
        let whole = timm_transform(&config(1.0)).unwrap();
        assert_eq!(
            (whole.resize_shorter, whole.squash_before_crop),
            (None, false)
        );
    }

    #[test]
    fn detects_graft_and_timm_configs() {
        let graft = serde_json::json!({"architecture": "resnet", "depth": 18});
        assert_eq!(
            VisionConfig::detect(&graft),
            Some(VisionArchitecture::Resnet)
        );
        let timm =
            serde_json::json!({"architecture": "tf_efficientnet_lite2", "pretrained_cfg": {}});
        assert_eq!(
            VisionConfig::detect(&timm),
            Some(VisionArchitecture::EfficientnetLite)
        );
        let vit =
            serde_json::json!({"architecture": "vit_small_patch16_224", "pretrained_cfg": {}});
        assert_eq!(VisionConfig::detect(&vit), None);
        let timm = serde_json::json!({
            "architecture": "resnet50", "num_classes": 10,
            "pretrained_cfg": {"input_size": [3, 160, 160], "crop_pct": 0.95,
                               "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
        });
        let config = VisionConfig::from_timm(&timm).unwrap();
        assert_eq!(config.depth, Some(50));
        assert_eq!(config.num_classes, 10);
        assert_eq!(config.transform().resize_shorter, Some(168));
        assert_eq!(config.transform().image_size, 160);
    }

    #[test]
    fn timm_cnns_keep_their_interpolation() {
        let timm = serde_json::json!({
            "architecture": "resnet18",
            "pretrained_cfg": {"input_size": [3, 224, 224], "interpolation": "bilinear"}
        });
        let config = VisionConfig::from_timm(&timm).unwrap();
        assert_eq!(config.transform().interpolation, Interpolation::Bilinear);
        let timm =
            serde_json::json!({"architecture": "tf_efficientnet_lite0", "pretrained_cfg": {}});
        let config = VisionConfig::from_timm(&timm).unwrap();
        assert_eq!(config.transform().interpolation, Interpolation::Bicubic);
        // graft's own config has no interpolation: bicubic, as before, and the key is refused.
        let graft = serde_json::json!({"architecture": "resnet", "depth": 18, "num_classes": 10,
            "image_size": 64, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]});
        let config: VisionConfig = serde_json::from_value(graft.clone()).unwrap();
        assert_eq!(config.transform().interpolation, Interpolation::Bicubic);
        let mut with_key = graft;
        with_key["interpolation"] = "bilinear".into();
        assert!(serde_json::from_value::<VisionConfig>(with_key).is_err());
    }

    #[test]
    fn timm_input_size_must_be_square() {
        let timm = serde_json::json!({
            "architecture": "resnet50", "pretrained_cfg": {"input_size": [3, 224, 192]}
        });
        let err = VisionConfig::from_timm(&timm).unwrap_err();
        assert!(err.contains("pretrained_cfg.input_size"), "{err}");
        assert!(timm_transform(&timm).is_err());
        let timm = serde_json::json!({"pretrained_cfg": {"input_size": [3, 256, 256]}});
        assert_eq!(timm_input_size(&timm), Ok(Some(256)));
    }

    #[test]
    fn timm_cnn_model_args_other_than_graft_builds_are_refused() {
        let with_args = |architecture: &str, args: Value| {
            serde_json::json!({"architecture": architecture, "model_args": args,
                "pretrained_cfg": {}})
        };
        let accepted = with_args(
            "resnet50",
            serde_json::json!({"num_classes": 3, "in_chans": 3, "global_pool": "avg",
                "drop_rate": 0.2, "drop_path_rate": 0.1}),
        );
        assert!(VisionConfig::from_timm(&accepted).is_ok());
        for (architecture, args, key) in [
            (
                "resnet50",
                serde_json::json!({"global_pool": "max"}),
                "global_pool",
            ),
            (
                "resnet18",
                serde_json::json!({"output_stride": 16}),
                "output_stride",
            ),
            ("resnet18", serde_json::json!({"in_chans": 1}), "in_chans"),
            (
                "resnet18",
                serde_json::json!({"aa_layer": "blurpool"}),
                "aa_layer",
            ),
            (
                "tf_efficientnet_lite0",
                serde_json::json!({"bn_eps": 1e-5}),
                "bn_eps",
            ),
            (
                "tf_efficientnet_lite0",
                serde_json::json!({"act_layer": "swish"}),
                "act_layer",
            ),
        ] {
            let err = VisionConfig::from_timm(&with_args(architecture, args)).unwrap_err();
            assert!(err.starts_with(&format!("model_args.{key} = ")), "{err}");
            assert!(err.ends_with("is not supported"), "{err}");
        }
        let err = VisionConfig::from_timm(&with_args(
            "resnet50",
            serde_json::json!({"global_pool": "max"}),
        ))
        .unwrap_err();
        assert_eq!(err, "model_args.global_pool = \"max\" is not supported");
        let lite = with_args(
            "tf_efficientnet_lite2",
            serde_json::json!({"bn_eps": 0.001, "pad_type": "same"}),
        );
        assert!(VisionConfig::from_timm(&lite).is_ok());
    }
}
