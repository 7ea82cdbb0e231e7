//! An image classifier in the names of the library people load it with (timm or torchvision),
//! the new head as its classifier and `num_batches_tracked` included so strict loading works;
//! `export.json` says which model to build and the preprocessing. A timm export also has timm's
//! `config.json` (`architecture`, `num_classes`, `pretrained_cfg`), so it is itself a timm folder
//! that timm and graft read.

use std::path::Path;

use graft_model::{ExportFormat, ExportTarget};
use serde_json::{Value, json};

use super::{classifier_tensors, require_linear_head};
use crate::error::{TrainError, TrainError as E};
use crate::files::{write_json_atomic, write_safetensors};
use crate::run_dir::LoadedRun;

pub(super) fn write(
    run_dir: &Path,
    run: &LoadedRun,
    target: &ExportTarget,
    out: &Path,
) -> Result<String, TrainError> {
    // A timm folder's `model_args` and `global_pool` (the model beyond its name) carry over.
    let source: Value = std::fs::read_to_string(run_dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    let transform = run
        .manifest
        .preparation
        .image_transform()
        .ok_or_else(|| E::Unsupported("vision exports are for image runs".into()))?;
    let model_args = model_args_of(&source, run, target, transform.image_size);
    let kwargs: String = model_args
        .as_object()
        .map(|args| {
            args.iter()
                .map(|(k, v)| format!(", {k}={}", python_literal(v)))
                .collect()
        })
        .unwrap_or_default();
    let (layout, build) = match target.format {
        ExportFormat::Timm => (
            "timm",
            format!("timm.create_model(\"{}\"{kwargs}", target.model),
        ),
        _ => (
            "torchvision",
            format!("torchvision.models.{}(", target.model),
        ),
    };
    require_linear_head(run, &format!("{layout}'s"))?;
    let tensors = classifier_tensors(run, target)?;
    write_safetensors(&out.join("model.safetensors"), &tensors, None)?;
    let labels = &run.manifest.labels;
    let separator = if target.format == ExportFormat::Timm {
        ", "
    } else {
        ""
    };
    write_json_atomic(
        &out.join("export.json"),
        &json!({
            "layout": layout,
            "model": format!("{build}{separator}num_classes={})", labels.len()),
            "labels": labels,
            "image_size": transform.image_size,
            "resize_shorter": transform.resize_shorter,
            "squash_before_crop": transform.squash_before_crop,
            "mean": transform.mean,
            "std": transform.std,
            "interpolation": transform.interpolation.name(),
        }),
    )?;
    if target.format == ExportFormat::Timm {
        // The folder's share (or `[model] crop_pct`), from which timm sizes the resize; timm's
        // `squash` squashes to that size before its crop.
        let (crop_mode, crop_pct) = match transform.resize_shorter {
            None => ("squash", 1.0),
            Some(_) => (
                if transform.squash_before_crop {
                    "squash"
                } else {
                    "center"
                },
                transform.crop_share().unwrap_or(1.0),
            ),
        };
        let size = transform.image_size;
        let mut config = json!({
            "architecture": target.model,
            "num_classes": labels.len(),
            "label_names": labels,
            "pretrained_cfg": {
                "input_size": [3, size, size],
                "crop_pct": crop_pct,
                "crop_mode": crop_mode,
                "interpolation": transform.interpolation.name(),
                "mean": transform.mean,
                "std": transform.std,
                "num_classes": labels.len(),
            }
        });
        if !model_args.is_null() {
            config["model_args"] = model_args;
        }
        if let Some(pool) = source.get("global_pool") {
            config["global_pool"] = pool.clone();
        }
        write_json_atomic(&out.join("config.json"), &config)?;
    }
    write_json_atomic(&out.join("labels.json"), labels)?;
    Ok(format!(
        "{layout} ({}: {} with {})",
        target.model,
        run.model.backbone.architecture().describe(),
        target.classifier
    ))
}

/// A JSON value as Python source (`true` → `True`, `null` → `None`).
/// The export's `model_args`: the source folder's (less `num_classes`), and for timm what it must
/// be told to build the network at the run's input size (a ViT's `img_size`).
fn model_args_of(source: &Value, run: &LoadedRun, target: &ExportTarget, size: usize) -> Value {
    let mut model_args = source.get("model_args").cloned().unwrap_or(Value::Null);
    if let Some(args) = model_args.as_object_mut() {
        args.remove("num_classes");
    }
    if target.format != ExportFormat::Timm {
        return model_args;
    }
    let sized = run.model.backbone.architecture().timm_model_args(size);
    if !sized.is_empty() {
        if !model_args.is_object() {
            model_args = Value::Object(Default::default());
        }
        if let Some(args) = model_args.as_object_mut() {
            args.extend(sized);
        }
    }
    model_args
}

fn python_literal(value: &Value) -> String {
    match value {
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(python_literal)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{k:?}: {}", python_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}
