//! An image classifier in the names of the library people load it with (timm or torchvision),
//! the new head as its classifier and `num_batches_tracked` included so strict loading works;
//! `export.json` says which model to build and the preprocessing. A timm export also has timm's
//! `config.json` (`architecture`, `num_classes`, `pretrained_cfg`), so it is itself a timm folder
//! that timm and graft read.

use std::path::Path;

use graft_model::{ExportFormat, ExportTarget};
use serde_json::json;

use super::{classifier_tensors, require_linear_head};
use crate::error::{TrainError, TrainError as E};
use crate::files::{write_json_atomic, write_safetensors};
use crate::run_dir::LoadedRun;

pub(super) fn write(
    run: &LoadedRun,
    target: &ExportTarget,
    out: &Path,
) -> Result<String, TrainError> {
    let (layout, build) = match target.format {
        ExportFormat::Timm => ("timm", format!("timm.create_model(\"{}\"", target.model)),
        _ => (
            "torchvision",
            format!("torchvision.models.{}(", target.model),
        ),
    };
    require_linear_head(run, &format!("{layout}'s"))?;
    let transform = run
        .manifest
        .preparation
        .image_transform()
        .ok_or_else(|| E::Unsupported(format!("{layout} exports are for image runs")))?;
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
            "mean": transform.mean,
            "std": transform.std,
        }),
    )?;
    if target.format == ExportFormat::Timm {
        let (crop_mode, crop_pct) = match transform.resize_shorter {
            None => ("squash", 1.0),
            Some(shorter) => ("center", transform.image_size as f64 / shorter as f64),
        };
        let size = transform.image_size;
        write_json_atomic(
            &out.join("config.json"),
            &json!({
                "architecture": target.model,
                "num_classes": labels.len(),
                "label_names": labels,
                "pretrained_cfg": {
                    "input_size": [3, size, size],
                    "crop_pct": crop_pct,
                    "crop_mode": crop_mode,
                    "interpolation": "bicubic",
                    "mean": transform.mean,
                    "std": transform.std,
                    "num_classes": labels.len(),
                }
            }),
        )?;
    }
    write_json_atomic(&out.join("labels.json"), labels)?;
    Ok(format!(
        "{layout} ({} with {})",
        run.model.backbone.architecture().describe(),
        target.classifier
    ))
}
