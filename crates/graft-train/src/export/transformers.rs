//! A transformers sequence classifier (`AutoModelForSequenceClassification`): the backbone under
//! the architecture's prefix (`bert.`), the single head layer as `classifier`, and `config.json`
//! with `architectures`, `id2label`/`label2id` and `problem_type`.

use std::path::Path;

use graft_model::ExportTarget;
use serde_json::{Value, json};

use super::{classifier_tensors, copy_backbone_files, io, require_linear_head};
use crate::error::{TrainError, TrainError as E};
use crate::files::{write_json_atomic, write_safetensors};
use crate::modality::Preparation;
use crate::run_dir::LoadedRun;
use crate::task::Task;

/// Whether the run is what transformers' sequence classifier computes: the pretrained pooler
/// without normalization, then one linear layer.
pub(super) fn check(run: &LoadedRun, target: &ExportTarget) -> Result<(), TrainError> {
    if let Preparation::Text {
        normalize: true, ..
    } = run.manifest.preparation
    {
        return Err(E::Unsupported(format!(
            "a model that pools through the pretrained pooler exports as transformers' {}, which \
             has no normalization; train it with normalize = false",
            target.model
        )));
    }
    require_linear_head(run, "transformers'")
}

pub(super) fn write(
    run_dir: &Path,
    run: &LoadedRun,
    target: &ExportTarget,
    out: &Path,
) -> Result<String, TrainError> {
    let m = &run.manifest;
    check(run, target)?;
    copy_backbone_files(run_dir, out, true)?;
    let architecture = run.model.backbone.architecture();
    let mut config = match architecture.export_config(target.format) {
        Some(config) => config,
        None => {
            let path = run_dir.join("config.json");
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            serde_json::from_str(&text).map_err(|e| E::Config {
                path: path.clone(),
                message: e.to_string(),
            })?
        }
    };
    let labels = &m.labels;
    if let Some(object) = config.as_object_mut() {
        object.insert("architectures".into(), json!([target.model]));
        super::insert_label_maps(object, labels);
        // transformers' names for the tasks are graft's; it has none for token classification
        // (its config refuses any other).
        if m.task != Task::TokenClassification {
            object.insert("problem_type".into(), json!(m.task.logic().problem_type()));
        }
    }
    write_json_atomic(&out.join("config.json"), &config)?;
    if let Some(transform) = m.preparation.image_transform() {
        write_json_atomic(
            &out.join("preprocessor_config.json"),
            &processor_config(transform),
        )?;
    }
    let tensors = classifier_tensors(run, target)?;
    write_safetensors(&out.join("model.safetensors"), &tensors, None)?;
    write_json_atomic(&out.join("labels.json"), labels)?;
    let auto = match m.preparation {
        Preparation::Text { .. } if m.task == Task::TokenClassification => {
            "AutoModelForTokenClassification"
        }
        Preparation::Text { .. } => "AutoModelForSequenceClassification",
        Preparation::Image { .. } => "AutoModelForImageClassification",
    };
    Ok(format!("transformers ({auto}: {})", target.model))
}

/// The run's image transform as transformers' image processor config: a square resize
/// (`ViTImageProcessor`), the shorter side then a center crop (`BitImageProcessor`), or a square
/// resize then a center crop (`DeiTImageProcessor`), with the run's filter, rescaled by 1/255 and
/// normalized.
pub(super) fn processor_config(t: &graft_model::ImageTransform) -> Value {
    let square = |n: usize| json!({"height": n, "width": n});
    let (processor, size, crop) = match t.resize_shorter {
        None => ("ViTImageProcessor", square(t.image_size), None),
        Some(side) if t.squash_before_crop => (
            "DeiTImageProcessor",
            square(side),
            Some(square(t.image_size)),
        ),
        Some(shorter) => (
            "BitImageProcessor",
            json!({"shortest_edge": shorter}),
            Some(square(t.image_size)),
        ),
    };
    let mut config = json!({
        "image_processor_type": processor,
        "do_resize": true,
        "size": size,
        "resample": t.interpolation.pil_code(),
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": t.mean,
        "image_std": t.std,
        "do_center_crop": crop.is_some(),
    });
    if let Some(crop) = crop {
        config["crop_size"] = crop;
    }
    config
}
