//! `inspect`: the tensors of a weights file, a model folder, a run folder or a TensorFlow
//! checkpoint (its `.index` file or prefix), their parameter count, and what architecture they
//! are.

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

/// A TensorFlow checkpoint's variables as the bundle names them, when `path` is its `.index`
/// file or its prefix (`model.ckpt`).
fn inspect_bundle(path: &Path) -> Result<Option<InspectReport>, TrainError> {
    let index = if path.extension().is_some_and(|e| e == "index") {
        path.to_path_buf()
    } else {
        PathBuf::from(format!("{}.index", path.display()))
    };
    if !index.is_file() {
        return Ok(None);
    }
    let bundle = graft_model::tf_bundle::TensorBundle::open(&index)?;
    let tensors: Vec<(String, TensorInfo)> = bundle
        .tensors()
        .iter()
        .map(|(name, t)| {
            let info = TensorInfo {
                dtype: t.dtype.name().to_string(),
                shape: t.shape.clone(),
            };
            (name.clone(), info)
        })
        .collect();
    let num_parameters = bundle
        .tensors()
        .values()
        .filter(|t| t.dtype.is_float())
        .map(|t| t.shape.iter().product::<usize>())
        .sum();
    let architecture = tensors
        .iter()
        .any(|(name, _)| name.starts_with("bert/encoder/"))
        .then(|| "Google BERT (TensorFlow checkpoint)".to_string());
    Ok(Some(InspectReport {
        path: index,
        architecture,
        tensors,
        num_parameters,
    }))
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
