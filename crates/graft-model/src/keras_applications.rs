//! Keras Applications' image models, opened from their Keras weight files ([`crate::keras`]):
//! each file converts once into a model folder of graft's own vision layout, with Keras' layer
//! names mapped to the family's and Keras' numerics kept. `graft convert` writes the library
//! folder where one computes the same: transformers' ResNet, timm's `tf_efficientnet_bN` and
//! `tf_mobilenetv3_*` ports.
//!
//! MobileNetV3Small/Large (any `alpha`; with or without the top; Keras 3's layer names, or
//! Keras 2's `expanded_conv_1/expand/BatchNorm` style): torchvision's layout with
//! TensorFlow's padding (Keras pads stride-2 depthwise convolutions by `correct_pad`: in a model
//! built for a fixed input size that is "same", `"padding": "same"`; in one built without, as
//! Keras builds MobileNetV3 by default, k/2 - 1 before and k/2 after at every size,
//! `"padding": "keras_unsized"`), BatchNorm epsilon 1e-3 as torchvision's, depthwise
//! kernels `[h, w, c, 1]` as `[c, 1, h, w]`, the 1x1 convolutions of the top (`conv_2`,
//! `logits`) as linear layers. The model rescales its input itself (`x / 127.5 - 1`), which the
//! folder's mean and std of 0.5 give.
//!
//! EfficientNetB0-B7 (Keras 3's and Keras 2's names are the same: `stem_conv`, `block2a_expand_conv`,
//! `block2a_se_reduce`, `top_conv`, ...): graft's EfficientNet in torchvision's layout with
//! TensorFlow's padding (Keras' `correct_pad` before stride-2 convolutions is the same) and
//! BatchNorm epsilon 1e-3. The model scales its input itself (1/255, its `Normalization` layer,
//! and for ImageNet builds one more rescaling), which becomes the folder's mean and std.
//!
//! ResNet50/101/152 (Keras' ResNet v1): convolution kernels `[h, w, in, out]` become
//! `[out, in, h, w]`; bottlenecks stride in their first 1x1 convolution (`stride_in_1x1`);
//! BatchNorm's epsilon is Keras' 1.001e-5; each convolution's bias, which the BatchNorm after it
//! would otherwise subtract back out as a mean, is folded into that BatchNorm's moving mean
//! (`mean - bias`: the same function, one float rounding apart). Keras feeds these models
//! `preprocess_input`'s "caffe" input (BGR, 0-255, ImageNet means subtracted); the converted
//! folder takes RGB images scaled to [0, 1] like every graft vision model, so the stem's input
//! channels are reversed and the folder's mean and std (the means over 255, std 1/255) give
//! exactly Keras' arithmetic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use serde_json::{Value, json};

use crate::ModelError;
use crate::efficientnet_b::{BlockSpec, EfficientNetBConfig};
use crate::keras::{KerasFile, KerasLayer, KerasWeight, is_keras_file};
use crate::vision::Padding;
use crate::weights::{TensorBytes, serialize};

/// Keras' ResNet BatchNorm epsilon.
pub const KERAS_RESNET_EPS: f64 = 1.001e-5;
/// `keras.applications.resnet.preprocess_input`'s per-channel means, RGB order, on 0-255.
const CAFFE_MEANS_RGB: [f64; 3] = [123.68, 116.779, 103.939];

/// What a conversion wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    /// `resnet50`, or `resnet (stages [2, 1, 1, 1])` for another build.
    pub model: String,
    pub tensors: usize,
    pub parameters: usize,
    pub classes: usize,
    /// The folder's layout: `graft`, `transformers` or `timm`.
    pub layout: &'static str,
}

/// `path` itself, or for a Keras file, its converted folder in graft's cache (made on first use).
pub fn resolve(path: &Path) -> Result<PathBuf, ModelError> {
    if !is_keras_file(path) {
        return Ok(path.to_path_buf());
    }
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    crate::converted::cached([b"keras".as_slice(), &bytes], |staging| {
        convert_into(path, staging)
    })
}

/// Writes the Keras file `src` to the new folder `out` as the folder the rest of the ecosystem
/// loads where one exists: a ResNet as transformers' `ResNetForImageClassification` (or
/// `ResNetModel` without its top; `downsample_in_bottleneck`, its preprocessing in
/// `preprocessor_config.json`), which graft reads too; an EfficientNetB0-B7 built at a fixed
/// input size (as Keras builds one with its top) as timm's `tf_efficientnet_bN` (TensorFlow's
/// padding and epsilon), a MobileNetV3 with its top at alpha 1.0 or 0.75 as timm's
/// `tf_mobilenetv3_*` port; a model built without an input size only where its size is a
/// multiple of 32 (where Keras' padding and timm's agree); others (narrowed, or without
/// MobileNetV3's top) as graft's vision folder.
pub fn convert(src: &Path, out: &Path) -> Result<Converted, ModelError> {
    let file = KerasFile::open(src)?;
    convert_file(&file, out)
}

/// [`convert`] of a Keras file already read.
pub fn convert_file(file: &KerasFile, out: &Path) -> Result<Converted, ModelError> {
    let src = &file.path;
    crate::converted::into_new_folder(out, |staging| {
        if file.layer("conv1_conv").is_none() {
            let (tensors, config, converted) = convert_layers(file)?;
            if let Some((architecture, timm)) = timm_port(file, &tensors, &config)? {
                write_timm_folder(file, &tensors, &timm, &architecture, &config, staging)?;
                return Ok(Converted {
                    layout: "timm",
                    ..converted
                });
            }
            write_weights_and_config(staging, src, &tensors, &config)?;
            return Ok(converted);
        }
        let layout = ResNetLayout::of(file)?;
        let (tensors, _, converted) = layout.convert(file)?;
        layout.write_transformers(file, tensors, staging)?;
        Ok(Converted {
            layout: "transformers",
            ..converted
        })
    })
}

/// graft's tensors and `config.json` for a Keras file's layers, and what they hold.
pub fn convert_layers(
    file: &KerasFile,
) -> Result<(Vec<TensorBytes>, Value, Converted), ModelError> {
    if file.layer("stem_conv").is_some() && file.layer("block1a_dwconv").is_some() {
        return EfficientNetLayout::of(file)?.convert(file);
    }
    if file.layer("expanded_conv_depthwise").is_some() {
        return MobileNetV3Layout::of(file)?.convert(file);
    }
    if file.layer("expanded_conv/depthwise").is_some() {
        let renamed = KerasFile {
            layers: file
                .layers
                .iter()
                .map(|l| KerasLayer {
                    name: keras3_mobilenet_name(&l.name),
                    weights: l.weights.clone(),
                })
                .collect(),
            ..file.clone()
        };
        return MobileNetV3Layout::of(&renamed)?.convert(&renamed);
    }
    ResNetLayout::of(file)?.convert(file)
}

/// Keras 3's name of a Keras 2 MobileNetV3 layer (`expanded_conv_1/expand/BatchNorm` →
/// `expanded_conv_1_expand_bn`, `Conv_1` → `conv_1`, `Logits` → `logits`).
fn keras3_mobilenet_name(name: &str) -> String {
    name.replace("/BatchNorm", "_bn")
        .replace("Conv", "conv")
        .replace("Logits", "logits")
        .replace('/', "_")
}

/// An error unless every layer of the file was converted (a layer the map does not know is
/// refused by name, not dropped).
fn all_used(file: &KerasFile, out: &Converter, family: &str) -> Result<(), ModelError> {
    let unused: Vec<&str> = file
        .layers
        .iter()
        .map(|l| l.name.as_str())
        .filter(|name| !out.is_used(name))
        .collect();
    if unused.is_empty() {
        return Ok(());
    }
    Err(ModelError::UnsupportedArchitecture {
        path: file.path.clone(),
        found: format!(
            "a Keras {family} with layers graft's {family} does not have: {}",
            unused.join(", ")
        ),
    })
}

/// Keras' MobileNetV3Small or Large (any `alpha`), as its layer names lay it out.
#[derive(Debug, Clone, PartialEq)]
struct MobileNetV3Layout {
    variant: &'static str,
    blocks: usize,
    image_size: usize,
}

impl MobileNetV3Layout {
    fn prefix(block: usize) -> String {
        match block {
            0 => "expanded_conv_".into(),
            i => format!("expanded_conv_{i}_"),
        }
    }

    fn of(file: &KerasFile) -> Result<Self, ModelError> {
        let blocks = (0..)
            .take_while(|&i| file.layer(&format!("{}project", Self::prefix(i))).is_some())
            .count();
        let variant = match blocks {
            11 => "small",
            15 => "large",
            n => {
                return Err(ModelError::UnsupportedArchitecture {
                    path: file.path.clone(),
                    found: format!(
                        "a Keras MobileNetV3 of {n} blocks (MobileNetV3Small has 11, Large 15)"
                    ),
                });
            }
        };
        Ok(Self {
            variant,
            blocks,
            image_size: input_size(file).unwrap_or(224),
        })
    }

    /// graft's tensors in torchvision's names, its `config.json`, and what was converted.
    fn convert(
        &self,
        file: &KerasFile,
    ) -> Result<(Vec<TensorBytes>, Value, Converted), ModelError> {
        let mut out = Converter::new(file);
        out.conv_then_bn("conv", "conv_bn", "features.0", false)?;
        for block in 0..self.blocks {
            let keras = Self::prefix(block);
            let graft = format!("features.{}.block", block + 1);
            // torchvision numbers the block's parts: [expand], depthwise, [se], project.
            let has = |name: &str| file.layer(&format!("{keras}{name}")).is_some();
            let parts = [
                has("expand").then_some("expand"),
                Some("depthwise"),
                has("squeeze_excite_conv").then_some("squeeze_excite_conv"),
                Some("project"),
            ];
            for (k, part) in parts.into_iter().flatten().enumerate() {
                let at = format!("{graft}.{k}");
                let keras_name = format!("{keras}{part}");
                if part == "squeeze_excite_conv" {
                    out.conv(&keras_name, &format!("{at}.fc1"), false)?;
                    out.conv(&format!("{keras_name}_1"), &format!("{at}.fc2"), false)?;
                } else {
                    let bn = format!("{keras_name}_bn");
                    out.conv_then_bn(&keras_name, &bn, &at, part == "depthwise")?;
                }
            }
        }
        let last = format!("features.{}", self.blocks + 1);
        out.conv_then_bn("conv_1", "conv_1_bn", &last, false)?;
        // With its top: the hidden layer and the classifier, 1x1 convolutions on pooled features.
        let mut classes = 0;
        if file.layer("conv_2").is_some() {
            out.pointwise_linear("conv_2", "classifier.0")?;
            if file.layer("logits").is_some() {
                classes = out.pointwise_linear("logits", "classifier.3")?;
            }
        }
        all_used(file, &out, "MobileNetV3")?;
        let config = json!({
            "architecture": "mobilenet_v3",
            "variant": self.variant,
            "padding": keras_padding(file, false),
            "num_classes": classes,
            "image_size": self.image_size,
            "resize": "squash",
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
        });
        let parameters = out.parameters();
        let converted = Converted {
            model: format!("mobilenet_v3_{}", self.variant),
            tensors: out.tensors.len(),
            parameters,
            classes,
            layout: "graft",
        };
        Ok((out.tensors, config, converted))
    }
}

fn convert_into(src: &Path, out: &Path) -> Result<Converted, ModelError> {
    let file = KerasFile::open(src)?;
    let (tensors, config, converted) = convert_layers(&file)?;
    write_weights_and_config(out, src, &tensors, &config)?;
    Ok(converted)
}

/// ImageNet's per-channel means and standard deviations (RGB, on [0, 1]).
const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Keras' EfficientNetB0-B7 as its layer names lay it out, read into graft's EfficientNet config.
#[derive(Debug, Clone)]
struct EfficientNetLayout {
    config: EfficientNetBConfig,
    /// `block{stage}{letter}_` prefixes, in order.
    prefixes: Vec<String>,
    image_size: usize,
}

impl EfficientNetLayout {
    fn of(file: &KerasFile) -> Result<Self, ModelError> {
        let unsupported = |message: String| ModelError::UnsupportedArchitecture {
            path: file.path.clone(),
            found: message,
        };
        let corrupt = |message: String| ModelError::CorruptWeights {
            path: file.path.clone(),
            message,
        };
        let kernel = |layer: &str| -> Result<&[usize], ModelError> {
            match file.layer(layer).and_then(|l| l.weights.first()) {
                Some(k) if k.shape.len() == 4 => Ok(&k.shape),
                Some(k) => Err(corrupt(format!(
                    "layer `{layer}`: a kernel of shape {:?}, not [h, w, in, out]",
                    k.shape
                ))),
                None => Err(unsupported(format!(
                    "a Keras EfficientNet without layer `{layer}`"
                ))),
            }
        };
        let stem = kernel("stem_conv")?[3];
        let mut blocks = Vec::new();
        let mut prefixes = Vec::new();
        let mut input = stem;
        for (stage, args) in crate::efficientnet::BASE_STAGES.iter().enumerate() {
            for (index, letter) in ('a'..='z').enumerate() {
                let prefix = format!("block{}{letter}_", stage + 1);
                if file.layer(&format!("{prefix}dwconv")).is_none() {
                    break;
                }
                let expand = file.layer(&format!("{prefix}expand_conv")).is_some();
                if expand && kernel(&format!("{prefix}expand_conv"))?[2] != input {
                    return Err(corrupt(format!(
                        "layer `{prefix}expand_conv` takes {} channels, the block before \
                         gives {input}",
                        kernel(&format!("{prefix}expand_conv"))?[2]
                    )));
                }
                let dw = kernel(&format!("{prefix}dwconv"))?;
                let output = kernel(&format!("{prefix}project_conv"))?[3];
                blocks.push(BlockSpec {
                    stage,
                    index,
                    input,
                    mid: dw[2],
                    output,
                    kernel: dw[0],
                    stride: if index == 0 { args.stride } else { 1 },
                    expand,
                    se: kernel(&format!("{prefix}se_reduce"))?[3],
                });
                prefixes.push(prefix);
                input = output;
            }
            if !blocks.iter().any(|b| b.stage == stage) {
                return Err(unsupported(format!(
                    "a Keras EfficientNet without layer `block{}a_dwconv`",
                    stage + 1
                )));
            }
        }
        let classes = top_classes(file)?;
        let mut config = EfficientNetBConfig {
            layout: crate::efficientnet_b::EfficientNetLayout::Torchvision,
            variant: String::new(),
            timm_name: None,
            stem,
            blocks,
            head: kernel("top_conv")?[3],
            bn_eps: 1e-3,
            num_classes: classes,
            padding: Some(keras_padding(file, classes > 0)),
        };
        // The variant whose widths and depths these are, else the one of the same depths (a
        // narrowed build).
        const VARIANTS: [(&str, usize); 8] = [
            ("b0", 224),
            ("b1", 240),
            ("b2", 260),
            ("b3", 300),
            ("b4", 380),
            ("b5", 456),
            ("b6", 528),
            ("b7", 600),
        ];
        let depths = |blocks: Vec<usize>| {
            (0..7)
                .map(|s| blocks.iter().filter(|&&b| b == s).count())
                .collect::<Vec<_>>()
        };
        let ours = depths(config.blocks.iter().map(|b| b.stage).collect());
        let same_depth = VARIANTS.iter().find(|(v, _)| {
            crate::efficientnet_b::standard_shape(v)
                .is_some_and(|s| depths(s.blocks.iter().map(|b| b[0]).collect()) == ours)
        });
        let standard = VARIANTS.iter().find(|(v, _)| {
            config.variant = v.to_string();
            config.is_standard()
        });
        let Some((variant, size)) = standard.or(same_depth) else {
            return Err(unsupported(format!(
                "a Keras EfficientNet of {ours:?} blocks per stage, which is none of \
                 EfficientNetB0-B7's"
            )));
        };
        config.variant = variant.to_string();
        Ok(Self {
            config,
            prefixes,
            image_size: input_size(file).unwrap_or(*size),
        })
    }

    /// The model's own input scaling, as graft's mean and std on [0, 1]: Keras' EfficientNet
    /// rescales by 1/255, normalizes with its `Normalization` layer's mean and variance
    /// (`(x - mean) / sqrt(variance)`) and, when it was built for ImageNet weights, rescales
    /// again by `1 / sqrt(std)` (Keras' own fix for the variance its ImageNet weights hold).
    /// With the model's config the extra rescaling is read from it; a weights-only file has
    /// none, and then the ImageNet weights' normalization (means 0.485, 0.456, 0.406 and
    /// "variances" 0.229, 0.224, 0.225) is what says the model was built for them.
    fn normalization(
        &self,
        file: &KerasFile,
        out: &mut Converter,
    ) -> Result<([f32; 3], [f32; 3]), ModelError> {
        let Some(layer) = file
            .layers
            .iter()
            .find(|l| l.name.starts_with("normalization"))
        else {
            return Err(ModelError::MissingTensors {
                path: file.path.clone(),
                names: vec!["layer `normalization` (the model's input normalization)".into()],
                available: file.layers.len(),
            });
        };
        let name = layer.name.clone();
        let weights = out.weights(&name, &[3])?.to_vec();
        let three = |i: usize| -> Result<[f32; 3], ModelError> {
            weights[i].values.as_slice().try_into().map_err(|_| {
                out.corrupt(
                    &name,
                    format!(
                        "`{}` has shape {:?}, not one value per RGB channel",
                        weights[i].name, weights[i].shape
                    ),
                )
            })
        };
        let (mean, variance) = (three(0)?, three(1)?);
        let rescale = match &file.model_config {
            Some(config) => extra_rescaling(config),
            None => {
                let close =
                    |a: [f32; 3], b: [f32; 3]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
                (close(mean, IMAGENET_MEAN) && close(variance, IMAGENET_STD))
                    .then(|| IMAGENET_STD.map(|s| 1.0 / (s as f64).sqrt()))
            }
        };
        let mut std = [0f32; 3];
        for c in 0..3 {
            let sd = (variance[c] as f64).sqrt().max(1e-7);
            std[c] = (sd / rescale.map_or(1.0, |r| r[c])) as f32;
        }
        Ok((mean, std))
    }

    /// graft's tensors in torchvision's names, its `config.json`, and what was converted.
    fn convert(
        &self,
        file: &KerasFile,
    ) -> Result<(Vec<TensorBytes>, Value, Converted), ModelError> {
        let mut out = Converter::new(file);
        let (mean, std) = self.normalization(file, &mut out)?;
        out.conv_then_bn("stem_conv", "stem_bn", "features.0", false)?;
        for (block, keras) in self.config.blocks.iter().zip(&self.prefixes) {
            let graft = format!("features.{}.{}.block", block.stage + 1, block.index);
            // torchvision numbers the block's parts: [expand], depthwise, se, project.
            let mut k = 0;
            if block.expand {
                out.conv_then_bn(
                    &format!("{keras}expand_conv"),
                    &format!("{keras}expand_bn"),
                    &format!("{graft}.0"),
                    false,
                )?;
                k = 1;
            }
            out.conv_then_bn(
                &format!("{keras}dwconv"),
                &format!("{keras}bn"),
                &format!("{graft}.{k}"),
                true,
            )?;
            out.conv(
                &format!("{keras}se_reduce"),
                &format!("{graft}.{}.fc1", k + 1),
                false,
            )?;
            out.conv(
                &format!("{keras}se_expand"),
                &format!("{graft}.{}.fc2", k + 1),
                false,
            )?;
            out.conv_then_bn(
                &format!("{keras}project_conv"),
                &format!("{keras}project_bn"),
                &format!("{graft}.{}", k + 2),
                false,
            )?;
        }
        out.conv_then_bn("top_conv", "top_bn", "features.8", false)?;
        if self.config.num_classes > 0 {
            out.dense("predictions", "classifier.1")?;
        }
        all_used(file, &out, "EfficientNet")?;
        let c = &self.config;
        let config = json!({
            "architecture": "efficientnet",
            "variant": c.variant,
            "padding": c.padding,
            "batch_norm_eps": c.bn_eps,
            "num_classes": c.num_classes,
            "image_size": self.image_size,
            "resize": "squash",
            "mean": mean,
            "std": std,
        });
        let model = if c.is_standard() {
            format!("efficientnet_{}", c.variant)
        } else {
            format!(
                "efficientnet_{} (narrowed: stem {}, head {})",
                c.variant, c.stem, c.head
            )
        };
        let converted = Converted {
            model,
            tensors: out.tensors.len(),
            parameters: out.parameters(),
            classes: c.num_classes,
            layout: "graft",
        };
        Ok((out.tensors, config, converted))
    }
}

/// graft's name of each converted tensor → timm's.
type TimmNames = BTreeMap<String, String>;

/// The timm TensorFlow port a converted folder (graft's `config.json` and tensors in
/// torchvision's names) is, with each tensor's timm name: an EfficientNet of B0-B7's own widths
/// and depths, or a MobileNetV3 with its top at alpha 1.0 or 0.75, whose padding is timm's at
/// its input size.
fn timm_port(
    file: &KerasFile,
    tensors: &[TensorBytes],
    config: &Value,
) -> Result<Option<(String, TimmNames)>, ModelError> {
    let index = crate::WeightsIndex {
        tensors: tensors
            .iter()
            .map(|t| {
                let info = crate::weights::TensorInfo {
                    dtype: "F32".into(),
                    shape: t.shape.clone(),
                };
                (t.name.clone(), info)
            })
            .collect(),
    };
    let invalid = |message: String| ModelError::CorruptWeights {
        path: file.path.clone(),
        message,
    };
    let variant = config["variant"].as_str().unwrap_or_default();
    let size = config["image_size"].as_u64().unwrap_or(0) as usize;
    let padding = if config["padding"] == "keras_unsized" {
        Padding::KerasUnsized
    } else {
        Padding::Same
    };
    if padding == Padding::KerasUnsized && !size.is_multiple_of(32) {
        return Ok(None);
    }
    let (architecture, paths): (Option<String>, Vec<(String, String)>) =
        match config["architecture"].as_str() {
            Some("efficientnet") => {
                let layout = crate::efficientnet_b::EfficientNetLayout::Torchvision;
                let mut c =
                    EfficientNetBConfig::from_weights(layout, variant, &index).map_err(invalid)?;
                c.num_classes = config["num_classes"].as_u64().unwrap_or(0) as usize;
                let names = c
                    .param_paths()
                    .iter()
                    .map(|p| {
                        let timm = crate::efficientnet_b::EfficientNetLayout::Timm;
                        (c.name_in(layout, p), c.name_in(timm, p))
                    })
                    .collect();
                (
                    c.is_standard()
                        .then(|| format!("tf_efficientnet_{variant}")),
                    names,
                )
            }
            Some("mobilenet_v3") => {
                use crate::mobilenetv3::{MobileNetLayout, MobileNetV3Config};
                let layout = MobileNetLayout::Torchvision;
                let mut c =
                    MobileNetV3Config::from_weights(layout, variant, &index).map_err(invalid)?;
                c.bn_eps = 1e-3;
                let names = c
                    .param_paths()
                    .iter()
                    .filter(|p| index.tensors.contains_key(&c.name_in(layout, p)))
                    .map(|p| (c.name_in(layout, p), c.name_in(MobileNetLayout::Timm, p)))
                    .collect();
                let top = c.hidden > 0 && c.num_classes > 0;
                (top.then(|| c.timm_port()).flatten(), names)
            }
            _ => (None, Vec::new()),
        };
    Ok(architecture.map(|a| (a, paths.into_iter().collect())))
}

/// Writes timm's folder of graft's converted tensors: each under its timm name (`names`; a 2-D
/// `conv_head.weight`, a hidden linear layer, as timm's 1x1 convolution), `num_batches_tracked`
/// for strict loading, and `config.json` with the model's preprocessing in `pretrained_cfg`
/// (the whole image squashed to the input size, as a Keras model sees it).
fn write_timm_folder(
    file: &KerasFile,
    tensors: &[TensorBytes],
    names: &TimmNames,
    architecture: &str,
    graft_config: &Value,
    out: &Path,
) -> Result<(), ModelError> {
    let mut renamed = Vec::new();
    for tensor in tensors {
        let name = names
            .get(&tensor.name)
            .cloned()
            .ok_or_else(|| ModelError::CorruptWeights {
                path: file.path.clone(),
                message: format!("no timm name for `{}`", tensor.name),
            })?;
        if let Some(stem) = name.strip_suffix(".running_mean") {
            renamed.push(TensorBytes {
                name: format!("{stem}.num_batches_tracked"),
                shape: vec![],
                bytes: 0i64.to_le_bytes().to_vec(),
                dtype: Dtype::I64,
            });
        }
        let mut shape = tensor.shape.clone();
        if name == "conv_head.weight" && shape.len() == 2 {
            shape.extend([1, 1]);
        }
        renamed.push(TensorBytes {
            name,
            shape,
            ..tensor.clone()
        });
    }
    let size = graft_config["image_size"].clone();
    let classes = graft_config["num_classes"].clone();
    let config = json!({
        "architecture": architecture,
        "num_classes": classes,
        "global_pool": "avg",
        "pretrained_cfg": {
            "input_size": [3, size, size],
            "interpolation": "bicubic",
            "crop_pct": 1.0,
            "crop_mode": "squash",
            "mean": graft_config["mean"],
            "std": graft_config["std"],
            "num_classes": classes,
            "first_conv": "conv_stem",
            "classifier": "classifier",
        },
    });
    write_weights_and_config(out, &file.path, &renamed, &config)
}

/// How a Keras Applications model pads its stride-2 layers (`correct_pad`): as TensorFlow's
/// "same" when it was built for a fixed input size, else always k/2 - 1 before and k/2 after.
/// The model config's input layer says which; without one (a weights-only file) `sized` says
/// how Keras Applications build the model by default (EfficientNet with its top at its fixed
/// size, MobileNetV3 always without a size).
fn keras_padding(file: &KerasFile, sized: bool) -> Padding {
    let sized = match input_shape(file) {
        Some(shape) => shape.iter().skip(1).take(2).all(|d| d.is_some()),
        None => sized,
    };
    if sized {
        Padding::Same
    } else {
        Padding::KerasUnsized
    }
}

/// The per-channel scale after the input normalization in a Keras model config (EfficientNet
/// built for ImageNet weights), if there is one: Keras 3's second `Rescaling` layer (a list of
/// three scales), or tf-keras' `tf.math.multiply` op layer (its `y` in the node's arguments).
fn extra_rescaling(config: &Value) -> Option<[f64; 3]> {
    let layers = config.pointer("/config/layers")?.as_array()?;
    layers.iter().find_map(|layer| {
        let scale = match layer.get("class_name")?.as_str()? {
            "Rescaling" => layer.pointer("/config/scale")?,
            "TFOpLambda" if layer.pointer("/config/function")? == "math.multiply" => {
                find_key(layer.get("inbound_nodes")?, "y")?
            }
            _ => return None,
        };
        let mut values = Vec::new();
        flatten_numbers(scale, &mut values);
        <[f64; 3]>::try_from(values).ok()
    })
}

/// The first value under `key` anywhere in `value`.
fn find_key<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) => map
            .get(key)
            .or_else(|| map.values().find_map(|v| find_key(v, key))),
        Value::Array(items) => items.iter().find_map(|v| find_key(v, key)),
        _ => None,
    }
}

/// Every number in `value`, nested lists flattened.
fn flatten_numbers(value: &Value, out: &mut Vec<f64>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten_numbers(v, out)),
        Value::Number(n) => out.extend(n.as_f64()),
        _ => {}
    }
}

/// Writes `name` into `out` atomically.
fn write_json(out: &Path, name: &str, value: &Value) -> Result<(), ModelError> {
    let path = out.join(name);
    let text = serde_json::to_string_pretty(value).expect("json");
    crate::write_atomic(&path, text.as_bytes()).map_err(|source| ModelError::Io { path, source })
}

/// Writes `model.safetensors` and `config.json` into `out` (a failure to serialize names `src`).
fn write_weights_and_config(
    out: &Path,
    src: &Path,
    tensors: &[TensorBytes],
    config: &Value,
) -> Result<(), ModelError> {
    let weights = serialize(tensors, None).map_err(|message| ModelError::CorruptWeights {
        path: src.to_path_buf(),
        message,
    })?;
    let path = out.join("model.safetensors");
    crate::write_atomic(&path, &weights).map_err(|source| ModelError::Io { path, source })?;
    write_json(out, "config.json", config)
}

/// A Keras ResNet v1, as its layer names lay it out.
#[derive(Debug, Clone, PartialEq)]
struct ResNetLayout {
    blocks: [usize; 4],
    widths: [usize; 4],
    classes: usize,
    image_size: usize,
}

impl ResNetLayout {
    fn of(file: &KerasFile) -> Result<Self, ModelError> {
        let unsupported = |message: String| ModelError::UnsupportedArchitecture {
            path: file.path.clone(),
            found: message,
        };
        if file.layer("conv1_conv").is_none() || file.layer("conv2_block1_1_conv").is_none() {
            let names: Vec<&str> = file
                .layers
                .iter()
                .take(4)
                .map(|l| l.name.as_str())
                .collect();
            let hint = if file.auto_names {
                " (the file was written by Keras before 3.6, which recorded no layer names in \
                 .weights.h5: save the model as .keras, or load it in Keras 3.6 or later and \
                 save its weights again)"
            } else {
                ""
            };
            return Err(unsupported(format!(
                "{} whose layers ({}...) are not Keras Applications' ResNet50/101/152 \
                 (`conv1_conv`, `conv2_block1_1_conv`, ...) nor MobileNetV3Small/Large \
                 (`conv`, `expanded_conv_depthwise`, ...), the Keras models graft maps{hint}",
                file.format.describe(),
                names.join(", ")
            )));
        }
        if file.layer("post_bn").is_some() || file.layer("conv2_block1_preact_bn").is_some() {
            return Err(unsupported(
                "Keras' ResNet V2 (pre-activation blocks): graft maps ResNet50/101/152 v1".into(),
            ));
        }
        let mut blocks = [0; 4];
        let mut widths = [0; 4];
        for (stage, (count, width)) in blocks.iter_mut().zip(&mut widths).enumerate() {
            while file
                .layer(&format!("conv{}_block{}_1_conv", stage + 2, *count + 1))
                .is_some()
            {
                *count += 1;
            }
            let first = format!("conv{}_block1_1_conv", stage + 2);
            let kernel = file.layer(&first).and_then(|l| l.weights.first());
            *width = match kernel.map(|k| k.shape.as_slice()) {
                Some([1, 1, _, w]) => *w,
                Some(shape) => {
                    return Err(ModelError::CorruptWeights {
                        path: file.path.clone(),
                        message: format!("layer `{first}`: a kernel of shape {shape:?}, not 1x1"),
                    });
                }
                None => {
                    return Err(unsupported(format!(
                        "a ResNet without `{first}` (its stage {} is missing)",
                        stage + 1
                    )));
                }
            };
        }
        let classes = top_classes(file)?;
        Ok(Self {
            blocks,
            widths,
            classes,
            image_size: input_size(file).unwrap_or(224),
        })
    }

    /// The standard depth these stages make, if they make one.
    fn depth(&self) -> Option<usize> {
        if self.widths != [64, 128, 256, 512] {
            return None;
        }
        match self.blocks {
            [3, 4, 6, 3] => Some(50),
            [3, 4, 23, 3] => Some(101),
            [3, 8, 36, 3] => Some(152),
            _ => None,
        }
    }

    /// graft's tensors, its `config.json`, and what was converted.
    fn convert(
        &self,
        file: &KerasFile,
    ) -> Result<(Vec<TensorBytes>, Value, Converted), ModelError> {
        let mut out = Converter::new(file);
        out.conv_bn("conv1_conv", "conv1_bn", "conv1", "bn1", true)?;
        for stage in 0..4 {
            for block in 0..self.blocks[stage] {
                let keras = format!("conv{}_block{}", stage + 2, block + 1);
                let graft = format!("layer{}.{block}", stage + 1);
                for k in 1..=3 {
                    out.conv_bn(
                        &format!("{keras}_{k}_conv"),
                        &format!("{keras}_{k}_bn"),
                        &format!("{graft}.conv{k}"),
                        &format!("{graft}.bn{k}"),
                        false,
                    )?;
                }
                if block == 0 {
                    out.conv_bn(
                        &format!("{keras}_0_conv"),
                        &format!("{keras}_0_bn"),
                        &format!("{graft}.downsample.0"),
                        &format!("{graft}.downsample.1"),
                        false,
                    )?;
                }
            }
        }
        if self.classes > 0 {
            out.dense("predictions", "fc")?;
        }
        all_used(file, &out, "ResNet")?;
        let depth = self.depth();
        let std = [1.0 / 255.0; 3];
        let mut config = json!({
            "architecture": "resnet",
            "depth": depth.unwrap_or(50),
            "stride_in_1x1": true,
            "batch_norm_eps": KERAS_RESNET_EPS,
            "num_classes": self.classes,
            "image_size": self.image_size,
            "resize": "squash",
            "mean": CAFFE_MEANS_RGB.map(|m| m / 255.0),
            "std": std,
        });
        if depth.is_none() {
            config["stage_blocks"] = json!(self.blocks);
            config["stage_widths"] = json!(self.widths);
        }
        let parameters = out.parameters();
        let converted = Converted {
            model: match depth {
                Some(depth) => format!("resnet{depth}"),
                None => format!(
                    "resnet (stages {:?}, widths {:?})",
                    self.blocks, self.widths
                ),
            },
            tensors: out.tensors.len(),
            parameters,
            classes: self.classes,
            layout: "graft",
        };
        Ok((out.tensors, config, converted))
    }
}

impl ResNetLayout {
    /// Writes transformers' ResNet folder of graft's converted tensors (torchvision's names):
    /// `resnet.` names (none without a classifier: `ResNetModel`), `classifier.1`,
    /// `num_batches_tracked`, `config.json` and a `ViTImageProcessor` config with the caffe
    /// arithmetic. transformers' BatchNorms have epsilon 1e-5, not Keras' 1.001e-5 (a relative
    /// change below float32's resolution for variances from 0.1 up).
    fn write_transformers(
        &self,
        file: &KerasFile,
        tensors: Vec<TensorBytes>,
        out: &Path,
    ) -> Result<(), ModelError> {
        let top = self.classes > 0;
        let mut renamed = Vec::new();
        for tensor in tensors {
            let module = tensor
                .name
                .replace(".downsample.0.", ".downsample.conv.")
                .replace(".downsample.1.", ".downsample.bn.");
            let name = match module.strip_prefix("fc.") {
                Some(rest) => format!("classifier.1.{rest}"),
                None if top => format!("resnet.{}", crate::resnet::transformers_name(&module)),
                None => crate::resnet::transformers_name(&module),
            };
            if let Some(stem) = name.strip_suffix(".running_mean") {
                renamed.push(TensorBytes {
                    name: format!("{stem}.num_batches_tracked"),
                    shape: vec![],
                    bytes: 0i64.to_le_bytes().to_vec(),
                    dtype: Dtype::I64,
                });
            }
            renamed.push(TensorBytes { name, ..tensor });
        }
        let labels: serde_json::Map<String, Value> = (0..self.classes)
            .map(|i| (i.to_string(), json!(format!("LABEL_{i}"))))
            .collect();
        let mut config = json!({
            "architectures": [if top { "ResNetForImageClassification" } else { "ResNetModel" }],
            "model_type": "resnet",
            "num_channels": 3,
            "embedding_size": 64,
            "hidden_sizes": self.widths.map(|w| w * 4),
            "depths": self.blocks,
            "layer_type": "bottleneck",
            "hidden_act": "relu",
            "downsample_in_first_stage": false,
            "downsample_in_bottleneck": true,
        });
        if top {
            let label2id: serde_json::Map<String, Value> = labels
                .iter()
                .map(|(i, label)| {
                    (
                        label.as_str().unwrap_or_default().to_string(),
                        json!(i.parse::<usize>().unwrap_or(0)),
                    )
                })
                .collect();
            config["id2label"] = Value::Object(labels);
            config["label2id"] = Value::Object(label2id);
        }
        write_weights_and_config(out, &file.path, &renamed, &config)?;
        let processor = json!({
            "image_processor_type": "ViTImageProcessor",
            "do_resize": true,
            "size": {"height": self.image_size, "width": self.image_size},
            "resample": 3,
            "do_rescale": true,
            "rescale_factor": 1.0 / 255.0,
            "do_normalize": true,
            "image_mean": CAFFE_MEANS_RGB.map(|m| m / 255.0),
            "image_std": [1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0],
        });
        write_json(out, "preprocessor_config.json", &processor)
    }
}

/// The classes of the model's top (its `predictions` dense layer), 0 without one.
fn top_classes(file: &KerasFile) -> Result<usize, ModelError> {
    let Some(layer) = file.layer("predictions") else {
        return Ok(0);
    };
    match layer.weights.first().map(|k| k.shape.as_slice()) {
        Some([_, classes]) => Ok(*classes),
        _ => Err(ModelError::CorruptWeights {
            path: file.path.clone(),
            message: "layer `predictions`: no 2-D kernel".into(),
        }),
    }
}

/// The model config's input shape (`batch_shape`, `[null, s, s, 3]`; `None` for an unknown
/// dimension).
fn input_shape(file: &KerasFile) -> Option<Vec<Option<usize>>> {
    let config = file.model_config.as_ref()?;
    let layers = config.pointer("/config/layers")?.as_array()?;
    let input = layers
        .iter()
        .find(|l| l.get("class_name").and_then(Value::as_str) == Some("InputLayer"))?;
    let shape = input
        .pointer("/config/batch_shape")
        .or_else(|| input.pointer("/config/batch_input_shape"))?
        .as_array()?;
    Some(
        shape
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect(),
    )
}

/// The square input side of a model config's input layer.
fn input_size(file: &KerasFile) -> Option<usize> {
    match input_shape(file)?.as_slice() {
        [_, Some(h), Some(w), _] if h == w => {
            Some(*h).filter(|&s| s >= crate::vision::MIN_IMAGE_SIZE)
        }
        _ => None,
    }
}

/// A convolution's kernel in PyTorch's layout, and its bias.
struct Kernel {
    /// `[out, in, h, w]` (`[channels, 1, h, w]` for a depthwise one).
    shape: Vec<usize>,
    values: Vec<f32>,
    bias: Option<Vec<f32>>,
}

/// Builds graft's tensors from Keras layers, remembering which layers it used.
struct Converter<'a> {
    file: &'a KerasFile,
    tensors: Vec<TensorBytes>,
    used: BTreeSet<String>,
}

impl<'a> Converter<'a> {
    fn new(file: &'a KerasFile) -> Self {
        Self {
            file,
            tensors: Vec::new(),
            used: BTreeSet::new(),
        }
    }

    fn is_used(&self, name: &str) -> bool {
        self.used.contains(name)
    }

    /// The weights written, BatchNorm statistics not counted.
    fn parameters(&self) -> usize {
        self.tensors
            .iter()
            .filter(|t| !t.name.ends_with("running_mean") && !t.name.ends_with("running_var"))
            .map(|t| t.shape.iter().product::<usize>())
            .sum()
    }

    fn corrupt(&self, layer: &str, message: String) -> ModelError {
        ModelError::CorruptWeights {
            path: self.file.path.clone(),
            message: format!("layer `{layer}`: {message}"),
        }
    }

    /// The weights of layer `name`, which must hold `counts` of them.
    fn weights(&mut self, name: &str, counts: &[usize]) -> Result<&[KerasWeight], ModelError> {
        let file = self.file;
        let layer = file.layer(name).ok_or_else(|| ModelError::MissingTensors {
            path: file.path.clone(),
            names: vec![format!("layer `{name}`")],
            available: file.layers.len(),
        })?;
        if !counts.contains(&layer.weights.len()) {
            return Err(self.corrupt(
                name,
                format!(
                    "{} weights, expected {}",
                    layer.weights.len(),
                    counts
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ));
        }
        self.used.insert(name.to_string());
        Ok(&layer.weights)
    }

    fn push(&mut self, name: String, shape: Vec<usize>, values: &[f32]) {
        self.tensors.push(TensorBytes {
            name,
            shape,
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            dtype: Dtype::F32,
        });
    }

    /// A convolution's kernel as `[out, in, h, w]` and its bias, if it has one. Keras holds a
    /// convolution's kernel as `[h, w, in, out]` and a depthwise one's as `[h, w, channels, 1]`
    /// (PyTorch: `[channels, 1, h, w]`); `reverse_input` reverses the input channels (Keras' BGR
    /// to graft's RGB).
    fn kernel(
        &mut self,
        layer: &str,
        depthwise: bool,
        reverse_input: bool,
    ) -> Result<Kernel, ModelError> {
        let weights = self.weights(layer, &[1, 2])?.to_vec();
        let kernel = &weights[0];
        let [h, w, cin, cout] = kernel.shape[..] else {
            return Err(self.corrupt(
                layer,
                format!("a kernel of shape {:?}, not [h, w, in, out]", kernel.shape),
            ));
        };
        if depthwise && cout != 1 {
            return Err(self.corrupt(
                layer,
                format!(
                    "a depthwise kernel of shape {:?}, not [h, w, c, 1]",
                    kernel.shape
                ),
            ));
        }
        let (outputs, inputs) = if depthwise { (cin, 1) } else { (cout, cin) };
        let mut oihw = vec![0f32; kernel.values.len()];
        for (i, value) in kernel.values.iter().enumerate() {
            let (o, rest) = (i % cout, i / cout);
            let (c, rest) = (rest % cin, rest / cin);
            let (x, y) = (rest % w, rest / w);
            let c = if reverse_input { cin - 1 - c } else { c };
            let (o, c) = if depthwise { (c, 0) } else { (o, c) };
            oihw[((o * inputs + c) * h + y) * w + x] = *value;
        }
        let bias = match weights.get(1) {
            Some(b) if b.values.len() == outputs => Some(b.values.clone()),
            Some(b) => {
                return Err(self.corrupt(
                    layer,
                    format!("a bias of shape {:?} for {outputs} filters", b.shape),
                ));
            }
            None => None,
        };
        Ok(Kernel {
            shape: vec![outputs, inputs, h, w],
            values: oihw,
            bias,
        })
    }

    /// A convolution written as `{name}.weight` (and `{name}.bias` when it has one).
    fn conv(&mut self, layer: &str, name: &str, depthwise: bool) -> Result<usize, ModelError> {
        let Kernel {
            shape,
            values,
            bias,
        } = self.kernel(layer, depthwise, false)?;
        let outputs = shape[0];
        self.push(format!("{name}.weight"), shape, &values);
        if let Some(bias) = bias {
            self.push(format!("{name}.bias"), vec![outputs], &bias);
        }
        Ok(outputs)
    }

    /// A BatchNorm of `channels` as `{name}.weight`, `.bias`, `.running_mean` (less `shift`, a
    /// folded convolution bias) and `.running_var`.
    fn batch_norm(
        &mut self,
        layer: &str,
        name: &str,
        channels: usize,
        shift: Option<&[f32]>,
    ) -> Result<(), ModelError> {
        let norm = self.weights(layer, &[4])?.to_vec();
        if let Some(bad) = norm.iter().find(|t| t.values.len() != channels) {
            return Err(self.corrupt(
                layer,
                format!(
                    "`{}` has shape {:?}, for {channels} channels",
                    bad.name, bad.shape
                ),
            ));
        }
        let mean: Vec<f32> = match shift {
            Some(shift) => norm[2]
                .values
                .iter()
                .zip(shift)
                .map(|(m, b)| m - b)
                .collect(),
            None => norm[2].values.clone(),
        };
        self.push(format!("{name}.weight"), vec![channels], &norm[0].values);
        self.push(format!("{name}.bias"), vec![channels], &norm[1].values);
        self.push(format!("{name}.running_mean"), vec![channels], &mean);
        self.push(
            format!("{name}.running_var"),
            vec![channels],
            &norm[3].values,
        );
        Ok(())
    }

    /// A convolution (kernel, optional bias) and the BatchNorm after it, the bias folded into
    /// the BatchNorm's mean; the stem's input channels are reversed (Keras' BGR to graft's RGB).
    fn conv_bn(
        &mut self,
        conv: &str,
        bn: &str,
        graft_conv: &str,
        graft_bn: &str,
        stem: bool,
    ) -> Result<(), ModelError> {
        let Kernel {
            shape,
            values,
            bias,
        } = self.kernel(conv, false, stem)?;
        let channels = shape[0];
        self.push(format!("{graft_conv}.weight"), shape, &values);
        self.batch_norm(bn, graft_bn, channels, bias.as_deref())
    }

    /// A convolution without a bias and its BatchNorm, as torchvision's `Conv2dNormActivation`
    /// names them (`{name}.0`, `{name}.1`).
    fn conv_then_bn(
        &mut self,
        conv: &str,
        bn: &str,
        name: &str,
        depthwise: bool,
    ) -> Result<(), ModelError> {
        let channels = self.conv(conv, &format!("{name}.0"), depthwise)?;
        self.batch_norm(bn, &format!("{name}.1"), channels, None)
    }

    /// A 1x1 convolution with a bias acting on pooled features, written as a linear layer.
    fn pointwise_linear(&mut self, layer: &str, name: &str) -> Result<usize, ModelError> {
        let Kernel {
            shape,
            values,
            bias,
        } = self.kernel(layer, false, false)?;
        let [outputs, inputs, 1, 1] = shape[..] else {
            return Err(self.corrupt(layer, format!("a {shape:?} kernel, not 1x1")));
        };
        self.push(format!("{name}.weight"), vec![outputs, inputs], &values);
        let bias = bias.unwrap_or_else(|| vec![0.0; outputs]);
        self.push(format!("{name}.bias"), vec![outputs], &bias);
        Ok(outputs)
    }

    /// A dense layer: kernel `[in, out]` to `[out, in]`, and its bias.
    fn dense(&mut self, name: &str, graft: &str) -> Result<(), ModelError> {
        let weights = self.weights(name, &[2])?.to_vec();
        let [rows, cols] = weights[0].shape[..] else {
            return Err(self.corrupt(name, format!("a kernel of shape {:?}", weights[0].shape)));
        };
        if weights[1].values.len() != cols {
            return Err(self.corrupt(
                name,
                format!("a bias of shape {:?} for {cols} units", weights[1].shape),
            ));
        }
        let kernel = &weights[0].values;
        let transposed: Vec<f32> = (0..cols)
            .flat_map(|c| (0..rows).map(move |r| kernel[r * cols + c]))
            .collect();
        self.push(format!("{graft}.weight"), vec![cols, rows], &transposed);
        self.push(format!("{graft}.bias"), vec![cols], &weights[1].values);
        Ok(())
    }
}
