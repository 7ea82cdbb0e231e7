//! `inspect`: the tensors of a weights file, a model folder, a run folder, a TensorFlow
//! checkpoint (its `.index` file or prefix) or a Keras file, their parameter count, and what
//! architecture they are.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use graft_model::{
    ArchitectureId, Backbone, ModelFolder, PoolingOptions, TensorInfo, WeightsIndex,
};
use serde::Serialize;

use crate::error::{TrainError, TrainError as E};
use crate::modality::Preparation;
use crate::run_dir;

/// What `inspect` shows about a weights file or a model folder.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub path: PathBuf,
    pub architecture: Option<String>,
    pub tensors: Vec<(String, TensorInfo)>,
    pub num_parameters: usize,
}

pub fn inspect(path: &Path) -> Result<InspectReport, TrainError> {
    if let Some(report) = inspect_bundle(path)? {
        return Ok(report);
    }
    if graft_model::keras::is_keras_file(path) {
        return inspect_keras(path);
    }
    let resolved = graft_model::hub::resolve(path)?;
    let path = resolved.as_path();
    if !path.exists() {
        return Err(E::NotFound {
            path: path.to_path_buf(),
        });
    }
    let (weights, architecture) = if path.is_dir() {
        let folder = ModelFolder::open(path)?;
        let architecture = match run_dir::read_manifest(path) {
            Ok(m) => format!(
                "{} + {:?} head ({} outputs)",
                m.architecture,
                m.head.kind,
                m.labels.len()
            ),
            Err(_) => describe_folder(&folder),
        };
        (folder.weights_path(), Some(architecture))
    } else {
        (path.to_path_buf(), None)
    };
    let index = WeightsIndex::read(&weights)?;
    let architecture = architecture.or_else(|| ArchitectureId::recognise(&index));
    Ok(InspectReport {
        path: weights,
        architecture,
        num_parameters: index.num_parameters(),
        tensors: index.tensors.into_iter().collect(),
    })
}

/// A TensorFlow checkpoint's variables, when `path` is its `.index` file, its prefix
/// (`model.ckpt`, `ckpt-1`) or a SavedModel folder (its `variables/`): TF1 names as the bundle
/// has them; a TF2 bundle's by the `full_name` its object graph gives, beside the object-path key,
/// its optimizer state marked and left out of the parameter count.
fn inspect_bundle(path: &Path) -> Result<Option<InspectReport>, TrainError> {
    let index = if path.extension().is_some_and(|e| e == "index") {
        path.to_path_buf()
    } else if path.join("saved_model.pb").is_file() {
        path.join("variables/variables.index")
    } else {
        PathBuf::from(format!("{}.index", path.display()))
    };
    if !index.is_file() {
        return Ok(None);
    }
    let bundle = graft_model::tf_bundle::TensorBundle::open(&index)?;
    let tracked = graft_model::tf_objects::tracked_variables(&bundle)?;
    let mut tensors = Vec::new();
    let mut num_parameters = 0;
    for (key, t) in bundle.tensors() {
        if key == graft_model::tf_objects::OBJECT_GRAPH {
            continue;
        }
        let variable = tracked.as_ref().and_then(|v| v.get(key));
        let optimizer = variable.is_some_and(|v| v.optimizer);
        let name = match variable {
            Some(v) if optimizer => format!("{} (optimizer state)  {key}", v.full_name),
            Some(v) => format!("{}  {key}", v.full_name),
            None => key.clone(),
        };
        if t.dtype.is_float() && !optimizer {
            num_parameters += t.shape.iter().product::<usize>();
        }
        let info = TensorInfo {
            dtype: t.dtype.name().to_string(),
            shape: t.shape.clone(),
        };
        tensors.push((name, info));
    }
    let hub_bert = path.join("saved_model.pb").is_file()
        && graft_model::google_release::release_dir(path).is_some();
    let architecture = if hub_bert {
        Some("TF Hub BERT encoder (SavedModel)".to_string())
    } else if bundle
        .tensors()
        .keys()
        .any(|n| n.starts_with("bert/encoder/"))
    {
        Some("Google BERT (TensorFlow checkpoint)".to_string())
    } else if tracked.is_some() {
        Some("TensorFlow 2 object-based checkpoint".to_string())
    } else {
        None
    };
    Ok(Some(InspectReport {
        path: index,
        architecture,
        tensors,
        num_parameters,
    }))
}

/// A Keras file's weights by layer (`layer/kernel:0` in Keras 2, `layer/0` in Keras 3), and what
/// graft maps it to.
fn inspect_keras(path: &Path) -> Result<InspectReport, TrainError> {
    let file = graft_model::keras::KerasFile::open(path)?;
    let mut tensors = Vec::new();
    for layer in &file.layers {
        for weight in &layer.weights {
            let name = match weight.name.contains('/') {
                true => weight.name.clone(),
                false => format!("{}/{}", layer.name, weight.name),
            };
            let info = TensorInfo {
                dtype: "F32".into(),
                shape: weight.shape.clone(),
            };
            tensors.push((name, info));
        }
    }
    let model = match graft_model::keras_applications::convert_layers(&file) {
        Ok((_, _, converted)) => {
            format!("Keras {} ({} classes)", converted.model, converted.classes)
        }
        Err(_) => file
            .model_name()
            .unwrap_or("a Keras model graft does not map")
            .to_string(),
    };
    Ok(InspectReport {
        path: path.to_path_buf(),
        architecture: Some(format!("{model}, {}", file.format.describe())),
        num_parameters: file.parameters(),
        tensors,
    })
}

/// The architecture's description of a folder and its input; its registry name when the
/// weights do not load.
fn describe_folder(folder: &ModelFolder) -> String {
    #[allow(deprecated)]
    let device = Device::flex();
    let Ok(backbone) = Backbone::load(folder, PoolingOptions::default(), true, &device) else {
        return folder.architecture.name().to_string();
    };
    let architecture = backbone.architecture();
    let input = Preparation::resolve(folder, &Default::default(), &folder.dir)
        .ok()
        .and_then(|p| p.image_transform().map(|t| t.image_size))
        .map_or(String::new(), |size| format!(", {size}px"));
    let classes = architecture.classifier().map_or(String::new(), |fc| {
        format!(", {} classes", fc.weight.dims()[1])
    });
    format!("{}{input}{classes}", architecture.describe())
}
