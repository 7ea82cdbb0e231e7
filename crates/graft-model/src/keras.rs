//! Keras weight files, read without TensorFlow or Keras: Keras 3 `.keras` archives (a zip of
//! `config.json` and `model.weights.h5`) and `.weights.h5` files, and Keras 2 `.h5` files (whole
//! models saved by `model.save`, and `save_weights` files, the format of Keras Applications'
//! published weights). HDF5 is read by the pure-Rust `hdf5-reader` crate, so nothing native is
//! linked and nothing in the file is executed: only groups, attributes and float datasets are
//! read. Each file becomes its layers, by the names Keras gave them, each with its weights in
//! Keras' order (a convolution's kernel then bias; BatchNorm's gamma, beta, moving mean and
//! moving variance), which is the same in both Keras versions.

use std::io::Read;
use std::path::{Path, PathBuf};

use hdf5_reader::group::Group;
use hdf5_reader::{Datatype, Hdf5File};
use serde_json::Value;

use crate::ModelError;

/// Which of Keras' layouts a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KerasFormat {
    /// Keras 3 `model.save("m.keras")`: a zip of `config.json` and `model.weights.h5`.
    Keras3Archive,
    /// Keras 3 `model.save_weights("m.weights.h5")`: `layers/<auto name>/vars/<i>`, each `vars`
    /// group naming its layer in a `name` attribute (from Keras 3.6; before, an archive's layers
    /// are named from its config).
    Keras3Weights,
    /// Keras 2 `model.save("m.h5")`: the model's config in `model_config` and its weights under
    /// `model_weights`, listed by the `layer_names` and `weight_names` attributes.
    Keras2Model,
    /// Keras 2 `model.save_weights("m.h5")`: the same lists at the file's root.
    Keras2Weights,
}

impl KerasFormat {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Keras3Archive => "Keras 3 model archive (.keras)",
            Self::Keras3Weights => "Keras 3 weights (.weights.h5)",
            Self::Keras2Model => "Keras 2 model (HDF5)",
            Self::Keras2Weights => "Keras 2 weights (HDF5)",
        }
    }
}

/// One weight of a layer.
#[derive(Debug, Clone, PartialEq)]
pub struct KerasWeight {
    /// Keras 2's name (`conv1_conv/kernel:0`), or Keras 3's position in the layer (`0`).
    pub name: String,
    /// Where the values are in the HDF5 file.
    pub path: String,
    pub shape: Vec<usize>,
    /// Row-major, as Keras holds them (kernels `[h, w, in, out]`, dense kernels `[in, out]`).
    pub values: Vec<f32>,
}

/// A layer that holds weights.
#[derive(Debug, Clone, PartialEq)]
pub struct KerasLayer {
    pub name: String,
    pub weights: Vec<KerasWeight>,
}

/// A Keras weight file, read.
#[derive(Debug, Clone)]
pub struct KerasFile {
    pub path: PathBuf,
    pub format: KerasFormat,
    /// The model's config (`config.json` of an archive, `model_config` of a Keras 2 model).
    pub model_config: Option<Value>,
    /// Layers holding weights, in the file's order.
    pub layers: Vec<KerasLayer>,
    /// Some layers are known only by Keras' automatic keys (`conv2d_3`): a `.weights.h5` written
    /// before Keras 3.6, which recorded no layer names.
    pub auto_names: bool,
}

const HDF5_MAGIC: &[u8; 8] = b"\x89HDF\r\n\x1a\n";
const ZIP_MAGIC: &[u8; 4] = b"PK\x03\x04";

/// Whether `path` is a file Keras wrote, by its extension and first bytes.
pub fn is_keras_file(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let keras = name.ends_with(".keras");
    let hdf5 = name.ends_with(".h5") || name.ends_with(".hdf5");
    if !path.is_file() || !(keras || hdf5) {
        return false;
    }
    let mut head = [0u8; 8];
    let read = std::fs::File::open(path).and_then(|mut f| f.read(&mut head));
    match read {
        Ok(n) if keras => n >= 4 && head[..4] == ZIP_MAGIC[..],
        Ok(n) => n == 8 && &head == HDF5_MAGIC,
        Err(_) => false,
    }
}

impl KerasFile {
    /// Reads every layer's weights. A damaged archive, HDF5 structure or dataset is an error
    /// naming the file and the group or dataset.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let corrupt = |message: String| ModelError::CorruptWeights {
            path: path.to_path_buf(),
            message,
        };
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut head = [0u8; 8];
        let n = std::fs::File::open(path)
            .and_then(|mut f| f.read(&mut head))
            .map_err(io)?;
        if n >= 4 && head[..4] == ZIP_MAGIC[..] {
            let (config, weights) = read_archive(path)?;
            let limit = weights.len();
            let file = hdf5(weights).map_err(|e| corrupt(format!("model.weights.h5: {e}")))?;
            let mut layers = keras3_layers(&file, limit)
                .map_err(|e| corrupt(format!("model.weights.h5: {e}")))?;
            let auto_names = layers.name_from(Some(&config));
            return Ok(Self {
                path: path.to_path_buf(),
                format: KerasFormat::Keras3Archive,
                model_config: Some(config),
                layers: layers.layers,
                auto_names,
            });
        }
        if n < 8 || &head != HDF5_MAGIC {
            return Err(corrupt(
                "neither an HDF5 file nor a .keras archive (its first bytes are neither's)".into(),
            ));
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let limit = bytes.len();
        let file = hdf5(bytes).map_err(corrupt)?;
        let root = file.root_group().map_err(|e| corrupt(e.to_string()))?;
        let (groups, _) = root.member_names().map_err(|e| corrupt(e.to_string()))?;
        let mut auto_names = false;
        let (format, model_config, layers) = if groups.iter().any(|g| g == "model_weights") {
            let config = string_attribute(&root, "model_config")
                .map_err(corrupt)?
                .map(|text| {
                    serde_json::from_str(&text)
                        .map_err(|e| corrupt(format!("attribute `model_config`: {e}")))
                })
                .transpose()?;
            let weights = root
                .group("model_weights")
                .map_err(|e| corrupt(format!("group `model_weights`: {e}")))?;
            let layers = keras2_layers(&weights, "model_weights/", limit).map_err(corrupt)?;
            (KerasFormat::Keras2Model, config, layers)
        } else if has_attribute(&root, "layer_names") {
            let layers = keras2_layers(&root, "", limit).map_err(corrupt)?;
            (KerasFormat::Keras2Weights, None, layers)
        } else if groups.iter().any(|g| g == "layers") {
            let mut layers = keras3_layers(&file, limit).map_err(corrupt)?;
            auto_names = layers.name_from(None);
            (KerasFormat::Keras3Weights, None, layers.layers)
        } else {
            return Err(corrupt(
                "an HDF5 file but not one Keras wrote: no `model_weights` group, no \
                 `layer_names` attribute and no `layers` group"
                    .into(),
            ));
        };
        Ok(Self {
            path: path.to_path_buf(),
            format,
            model_config,
            layers,
            auto_names,
        })
    }

    /// The layer named `name`.
    pub fn layer(&self, name: &str) -> Option<&KerasLayer> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// Number of weights, all layers together.
    pub fn parameters(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| &l.weights)
            .map(|w| w.values.len())
            .sum()
    }

    /// The model's name in its config (`resnet50`), if the file has a config.
    pub fn model_name(&self) -> Option<&str> {
        let config = self.model_config.as_ref()?;
        config
            .pointer("/config/name")
            .or_else(|| config.get("name"))
            .and_then(Value::as_str)
    }
}

/// `config.json` and the bytes of `model.weights.h5` of a `.keras` archive.
fn read_archive(path: &Path) -> Result<(Value, Vec<u8>), ModelError> {
    let corrupt = |message: String| ModelError::CorruptWeights {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| corrupt(format!("not a readable zip: {e}")))?;
    let mut read = |name: &str| -> Result<Vec<u8>, ModelError> {
        let mut entry = archive.by_name(name).map_err(|e| match e {
            zip::result::ZipError::FileNotFound => corrupt(format!(
                "the archive has no `{name}` (a .keras archive holds config.json and \
                 model.weights.h5)"
            )),
            other => corrupt(format!("`{name}`: {other}")),
        })?;
        let mut bytes = Vec::with_capacity(entry.size().min(1 << 32) as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| corrupt(format!("`{name}`: {e}")))?;
        Ok(bytes)
    };
    let config = read("config.json")?;
    let config: Value =
        serde_json::from_slice(&config).map_err(|e| corrupt(format!("`config.json`: {e}")))?;
    let weights = read("model.weights.h5")?;
    Ok((config, weights))
}

fn has_attribute(group: &Group, name: &str) -> bool {
    group
        .attributes()
        .is_ok_and(|attrs| attrs.iter().any(|a| a.name == name))
}

/// A string attribute, `None` when absent.
fn string_attribute(group: &Group, name: &str) -> Result<Option<String>, String> {
    let attrs = group
        .attributes()
        .map_err(|e| format!("attributes of `{}`: {e}", group.name()))?;
    let Some(attr) = attrs.into_iter().find(|a| a.name == name) else {
        return Ok(None);
    };
    let strings = attr
        .read_strings()
        .or_else(|_| attr.read_string().map(|s| vec![s]))
        .map_err(|e| format!("attribute `{name}` of `{}`: {e}", group.name()))?;
    Ok(Some(strings.concat()))
}

/// A list-of-strings attribute as Keras 2 writes it: whole, or split over `name0`, `name1`, ...
/// when it exceeds HDF5's 64 KiB attribute limit. An empty list may be stored as an empty float
/// array.
fn string_list(group: &Group, name: &str) -> Result<Vec<String>, String> {
    let attrs = group
        .attributes()
        .map_err(|e| format!("attributes of `{}`: {e}", group.name()))?;
    let read = |attr: &hdf5_reader::Attribute| -> Result<Vec<String>, String> {
        if attr.num_elements().unwrap_or(0) == 0 {
            return Ok(Vec::new());
        }
        attr.read_strings()
            .map_err(|e| format!("attribute `{}` of `{}`: {e}", attr.name, group.name()))
    };
    if let Some(attr) = attrs.iter().find(|a| a.name == name) {
        return read(attr);
    }
    let mut all = Vec::new();
    let mut chunk = 0;
    while let Some(attr) = attrs.iter().find(|a| a.name == format!("{name}{chunk}")) {
        all.extend(read(attr)?);
        chunk += 1;
    }
    if chunk == 0 {
        return Err(format!(
            "group `{}` has no `{name}` attribute",
            display_group(group)
        ));
    }
    Ok(all)
}

fn display_group(group: &Group) -> String {
    match group.name() {
        "" | "/" => "/".into(),
        name => name.to_string(),
    }
}

/// An HDF5 file from `bytes`, refused when shorter than its superblock says it is.
fn hdf5(bytes: Vec<u8>) -> Result<Hdf5File, String> {
    let len = bytes.len() as u64;
    let file = Hdf5File::from_vec(bytes).map_err(|e| e.to_string())?;
    let superblock = file.superblock();
    let end = superblock
        .base_address
        .saturating_add(superblock.eof_address);
    if end > len {
        return Err(format!(
            "truncated: the file says it is {end} bytes long, it holds {len}"
        ));
    }
    Ok(file)
}

/// Keras 2: the layers `layer_names` lists, each with the datasets its `weight_names` lists.
fn keras2_layers(root: &Group, prefix: &str, limit: usize) -> Result<Vec<KerasLayer>, String> {
    let mut layers = Vec::new();
    for layer_name in string_list(root, "layer_names")? {
        // A layer named with slashes (Keras 2's MobileNetV3: `expanded_conv/depthwise`) is a
        // group nested that deep.
        let mut group = root.clone();
        for part in layer_name.split('/') {
            group = group
                .group(part)
                .map_err(|e| format!("group `{prefix}{layer_name}` (in `layer_names`): {e}"))?;
        }
        let names = string_list(&group, "weight_names")
            .map_err(|e| format!("layer `{layer_name}`: {e}"))?;
        let mut weights = Vec::new();
        for name in names {
            let path = format!("{prefix}{layer_name}/{name}");
            let (parents, leaf) = match name.rsplit_once('/') {
                Some((parents, leaf)) => (parents.split('/').collect::<Vec<_>>(), leaf),
                None => (Vec::new(), name.as_str()),
            };
            let mut at = group.clone();
            for part in parents {
                at = at
                    .group(part)
                    .map_err(|e| format!("group of `{path}` (in `weight_names`): {e}"))?;
            }
            let dataset = at
                .dataset(leaf)
                .map_err(|e| format!("dataset `{path}` (in `weight_names`): {e}"))?;
            weights.push(read_weight(&dataset, name.clone(), path, limit)?);
        }
        if !weights.is_empty() {
            layers.push(KerasLayer {
                name: layer_name,
                weights,
            });
        }
    }
    Ok(layers)
}

/// Keras 3: `layers/<auto name>/vars/<i>`, with the layer's name in the `vars` group's `name`
/// attribute (the group's own name without it), nested models and sublayers walked below.
fn keras3_layers(file: &Hdf5File, limit: usize) -> Result<Keras3Layers, String> {
    let root = file.root_group().map_err(|e| e.to_string())?;
    let top = root
        .group("layers")
        .map_err(|e| format!("group `layers`: {e}"))?;
    let mut layers = Keras3Layers::default();
    walk_keras3(&top, "layers", &mut layers, 0, limit)?;
    Ok(layers)
}

/// Keras 3's layers, and those the file does not name (Keras before 3.6 wrote no `name`
/// attribute): their index and group (`layers/conv2d_3`).
#[derive(Default)]
struct Keras3Layers {
    layers: Vec<KerasLayer>,
    unnamed: Vec<(usize, String)>,
}

impl Keras3Layers {
    /// Names the unnamed layers from the model's config: Keras keys a model's layers by their
    /// class in snake case, numbered from the second of a class on (`conv2d`, `conv2d_1`), in
    /// the order of `model.layers` (the config's layers without its inputs). Whether any layer
    /// is still unnamed.
    fn name_from(&mut self, config: Option<&Value>) -> bool {
        let mut groups = std::collections::HashMap::new();
        let layers = config
            .and_then(|c| c.pointer("/config/layers"))
            .and_then(Value::as_array);
        let mut used: std::collections::HashMap<String, usize> = Default::default();
        for layer in layers.into_iter().flatten() {
            let class = layer.get("class_name").and_then(Value::as_str);
            let name = layer
                .pointer("/config/name")
                .or_else(|| layer.get("name"))
                .and_then(Value::as_str);
            let (Some(class), Some(name)) = (class, name) else {
                continue;
            };
            if class == "InputLayer" {
                continue;
            }
            let snake = snake_case(class);
            let key = match used.get_mut(&snake) {
                Some(count) => {
                    *count += 1;
                    format!("{snake}_{count}")
                }
                None => {
                    used.insert(snake.clone(), 0);
                    snake
                }
            };
            groups.insert(format!("layers/{key}"), name.to_string());
        }
        self.unnamed
            .retain(|(index, group)| match groups.get(group) {
                Some(name) => {
                    self.layers[*index].name = name.clone();
                    false
                }
                None => true,
            });
        !self.unnamed.is_empty()
    }
}

/// Keras' `naming.to_snake_case` of a class name (`BatchNormalization` → `batch_normalization`,
/// `Conv2D` → `conv2d`).
fn snake_case(class: &str) -> String {
    let chars: Vec<char> = class
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    // `(.)([A-Z][a-z]+)` → `\1_\2`, then `([a-z])([A-Z])` → `\1_\2`, then lower case.
    let mut first = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let starts_word = i > 0
            && c.is_ascii_uppercase()
            && chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
        if starts_word {
            first.push('_');
        }
        first.push(c);
    }
    let first: Vec<char> = first.chars().collect();
    let mut out = String::new();
    for (i, &c) in first.iter().enumerate() {
        if i > 0 && c.is_ascii_uppercase() && first[i - 1].is_ascii_lowercase() {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn walk_keras3(
    group: &Group,
    path: &str,
    layers: &mut Keras3Layers,
    depth: usize,
    limit: usize,
) -> Result<(), String> {
    if depth > 32 {
        return Err(format!("`{path}`: layers nested more than 32 deep"));
    }
    let (children, _) = group
        .member_names()
        .map_err(|e| format!("group `{path}`: {e}"))?;
    for child in children {
        let child_path = format!("{path}/{child}");
        let layer = group
            .group(&child)
            .map_err(|e| format!("group `{child_path}`: {e}"))?;
        let (inner, _) = layer
            .member_names()
            .map_err(|e| format!("group `{child_path}`: {e}"))?;
        if inner.iter().any(|g| g == "vars") {
            let vars = layer
                .group("vars")
                .map_err(|e| format!("group `{child_path}/vars`: {e}"))?;
            let (_, mut names) = vars
                .member_names()
                .map_err(|e| format!("group `{child_path}/vars`: {e}"))?;
            names.sort_by_key(|n| (n.parse::<usize>().unwrap_or(usize::MAX), n.clone()));
            let mut weights = Vec::new();
            for name in names {
                let path = format!("{child_path}/vars/{name}");
                let dataset = vars
                    .dataset(&name)
                    .map_err(|e| format!("dataset `{path}`: {e}"))?;
                weights.push(read_weight(&dataset, name, path, limit)?);
            }
            if !weights.is_empty() {
                let name = match string_attribute(&vars, "name")? {
                    Some(name) => name,
                    None => {
                        layers
                            .unnamed
                            .push((layers.layers.len(), child_path.clone()));
                        child.clone()
                    }
                };
                layers.layers.push(KerasLayer { name, weights });
            }
        }
        for sub in inner.iter().filter(|g| *g != "vars") {
            let sub_group = layer
                .group(sub)
                .map_err(|e| format!("group `{child_path}/{sub}`: {e}"))?;
            walk_keras3(
                &sub_group,
                &format!("{child_path}/{sub}"),
                layers,
                depth + 1,
                limit,
            )?;
        }
    }
    Ok(())
}

/// A float dataset's shape and values as f32 (f64 is narrowed, 32- and 64-bit signed integers
/// converted; other types are refused). A
/// dataset of more than `limit` bytes is refused before anything is allocated: Keras stores
/// weights uncompressed, so a larger one claims more than its file holds.
fn read_weight(
    dataset: &hdf5_reader::Dataset,
    name: String,
    path: String,
    limit: usize,
) -> Result<KerasWeight, String> {
    let shape: Vec<usize> = dataset.shape().iter().map(|&d| d as usize).collect();
    let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let count = count
        .filter(|&n| n.saturating_mul(4) <= limit)
        .ok_or_else(|| format!("dataset `{path}`: shape {shape:?} is larger than the file"))?;
    let failed = |e: hdf5_reader::error::Error| format!("dataset `{path}`: {e}");
    let values = match dataset.dtype() {
        Datatype::FloatingPoint { size: 4, .. } => {
            let mut values = vec![0f32; count];
            dataset.read_into(&mut values).map_err(failed)?;
            values
        }
        Datatype::FloatingPoint { size: 8, .. } => {
            let mut values = vec![0f64; count];
            dataset.read_into(&mut values).map_err(failed)?;
            values.into_iter().map(|v| v as f32).collect()
        }
        // Counters (a `Normalization` layer's `count`), read as floats like the rest.
        Datatype::FixedPoint {
            size: 8,
            signed: true,
            ..
        } => {
            let mut values = vec![0i64; count];
            dataset.read_into(&mut values).map_err(failed)?;
            values.into_iter().map(|v| v as f32).collect()
        }
        Datatype::FixedPoint {
            size: 4,
            signed: true,
            ..
        } => {
            let mut values = vec![0i32; count];
            dataset.read_into(&mut values).map_err(failed)?;
            values.into_iter().map(|v| v as f32).collect()
        }
        other => {
            return Err(format!(
                "dataset `{path}`: {other:?} values, not 32- or 64-bit floats or integers"
            ));
        }
    };
    Ok(KerasWeight {
        name,
        path,
        shape,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_take_keras_snake_case() {
        for (class, snake) in [
            ("BatchNormalization", "batch_normalization"),
            ("Conv2D", "conv2d"),
            ("DepthwiseConv2D", "depthwise_conv2d"),
            ("GlobalAveragePooling2D", "global_average_pooling2d"),
            ("ZeroPadding2D", "zero_padding2d"),
            ("Dense", "dense"),
            ("ReLU", "re_lu"),
        ] {
            assert_eq!(snake_case(class), snake, "{class}");
        }
    }
}
