//! Keras Applications' image models, opened from their Keras weight files ([`crate::keras`]):
//! each file converts once into a model folder of graft's own vision layout, with Keras' layer
//! names mapped to the family's and Keras' numerics kept.
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

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use serde_json::{Value, json};

use crate::ModelError;
use crate::keras::{KerasFile, KerasWeight, is_keras_file};
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

/// Writes the converted folder of the Keras file `src` to the new folder `out`.
pub fn convert(src: &Path, out: &Path) -> Result<Converted, ModelError> {
    crate::converted::into_new_folder(out, |staging| convert_into(src, staging))
}

/// graft's tensors and `config.json` for a Keras file's layers, and what they hold.
pub fn convert_layers(
    file: &KerasFile,
) -> Result<(Vec<TensorBytes>, Value, Converted), ModelError> {
    ResNetLayout::of(file)?.convert(file)
}

fn convert_into(src: &Path, out: &Path) -> Result<Converted, ModelError> {
    let file = KerasFile::open(src)?;
    let (tensors, config, converted) = convert_layers(&file)?;
    let weights = serialize(&tensors, None).map_err(|message| ModelError::CorruptWeights {
        path: src.to_path_buf(),
        message,
    })?;
    let write = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        crate::write_atomic(&path, bytes).map_err(|source| ModelError::Io { path, source })
    };
    write("model.safetensors", &weights)?;
    let text = serde_json::to_string_pretty(&config).expect("json");
    write("config.json", text.as_bytes())?;
    Ok(converted)
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
            return Err(unsupported(format!(
                "{} whose layers ({}...) are not Keras Applications' ResNet50/101/152 \
                 (`conv1_conv`, `conv2_block1_1_conv`, ...), the Keras models graft maps",
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
        let classes = match file.layer("predictions") {
            Some(layer) => match layer.weights.first().map(|k| k.shape.as_slice()) {
                Some([_, classes]) => *classes,
                _ => {
                    return Err(ModelError::CorruptWeights {
                        path: file.path.clone(),
                        message: "layer `predictions`: no 2-D kernel".into(),
                    });
                }
            },
            None => 0,
        };
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
        let mut out = Converter {
            file,
            tensors: Vec::new(),
            used: BTreeSet::new(),
        };
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
        let unused: Vec<&str> = file
            .layers
            .iter()
            .map(|l| l.name.as_str())
            .filter(|name| !out.is_used(name))
            .collect();
        if !unused.is_empty() {
            return Err(ModelError::UnsupportedArchitecture {
                path: file.path.clone(),
                found: format!(
                    "a Keras ResNet with layers graft's ResNet does not have: {}",
                    unused.join(", ")
                ),
            });
        }
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
        let parameters = out
            .tensors
            .iter()
            .filter(|t| !t.name.ends_with("running_mean") && !t.name.ends_with("running_var"))
            .map(|t| t.shape.iter().product::<usize>())
            .sum();
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
        };
        Ok((out.tensors, config, converted))
    }
}

/// The square input side of a model config's input layer (`batch_shape` `[null, s, s, 3]`).
fn input_size(file: &KerasFile) -> Option<usize> {
    let config = file.model_config.as_ref()?;
    let layers = config.pointer("/config/layers")?.as_array()?;
    let input = layers
        .iter()
        .find(|l| l.get("class_name").and_then(Value::as_str) == Some("InputLayer"))?;
    let shape = input
        .pointer("/config/batch_shape")
        .or_else(|| input.pointer("/config/batch_input_shape"))?
        .as_array()?;
    match shape.as_slice() {
        [_, h, w, _] if h == w => h
            .as_u64()
            .map(|s| s as usize)
            .filter(|&s| s >= crate::vision::MIN_IMAGE_SIZE),
        _ => None,
    }
}

/// Builds graft's tensors from Keras layers, remembering which layers it used.
struct Converter<'a> {
    file: &'a KerasFile,
    tensors: Vec<TensorBytes>,
    used: BTreeSet<String>,
}

impl Converter<'_> {
    fn is_used(&self, name: &str) -> bool {
        self.used.contains(name)
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

    /// A convolution (kernel, optional bias) and the BatchNorm after it; the stem's input
    /// channels are reversed (Keras' BGR to graft's RGB).
    fn conv_bn(
        &mut self,
        conv: &str,
        bn: &str,
        graft_conv: &str,
        graft_bn: &str,
        stem: bool,
    ) -> Result<(), ModelError> {
        let weights = self.weights(conv, &[1, 2])?.to_vec();
        let kernel = &weights[0];
        let [h, w, cin, cout] = kernel.shape[..] else {
            return Err(self.corrupt(
                conv,
                format!("a kernel of shape {:?}, not [h, w, in, out]", kernel.shape),
            ));
        };
        let mut oihw = vec![0f32; kernel.values.len()];
        for (i, value) in kernel.values.iter().enumerate() {
            let (o, rest) = (i % cout, i / cout);
            let (c, rest) = (rest % cin, rest / cin);
            let (x, y) = (rest % w, rest / w);
            let c = if stem { cin - 1 - c } else { c };
            oihw[((o * cin + c) * h + y) * w + x] = *value;
        }
        let bias = match weights.get(1) {
            Some(b) if b.values.len() == cout => b.values.clone(),
            Some(b) => {
                return Err(self.corrupt(
                    conv,
                    format!("a bias of shape {:?} for {cout} filters", b.shape),
                ));
            }
            None => vec![0.0; cout],
        };
        let norm = self.weights(bn, &[4])?.to_vec();
        if let Some(bad) = norm.iter().find(|t| t.values.len() != cout) {
            return Err(self.corrupt(
                bn,
                format!(
                    "`{}` has shape {:?}, for {cout} channels",
                    bad.name, bad.shape
                ),
            ));
        }
        let mean: Vec<f32> = norm[2]
            .values
            .iter()
            .zip(&bias)
            .map(|(m, b)| m - b)
            .collect();
        self.push(format!("{graft_conv}.weight"), vec![cout, cin, h, w], &oihw);
        self.push(format!("{graft_bn}.weight"), vec![cout], &norm[0].values);
        self.push(format!("{graft_bn}.bias"), vec![cout], &norm[1].values);
        self.push(format!("{graft_bn}.running_mean"), vec![cout], &mean);
        self.push(
            format!("{graft_bn}.running_var"),
            vec![cout],
            &norm[3].values,
        );
        Ok(())
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
