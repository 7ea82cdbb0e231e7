//! A sentence-transformers folder (`SentenceTransformer(dir).encode(texts)` returns the logits,
//! or for an embedding run the tuned embeddings): the backbone in its upstream layout,
//! `modules.json` with Transformer, Pooling, Normalize (if used) and one `Dense` module per head
//! layer (ReLU between layers, identity at the end).

use std::path::Path;

use graft_model::{ExportFormat, Pooling};
use serde_json::json;

use super::{copy_backbone_files, io};
use crate::classifier::Classifier;
use crate::error::{TrainError, TrainError as E};
use crate::files::{module_tensors, write_json_atomic, write_safetensors};
use crate::modality::Preparation;
use crate::run_dir::{LoadedRun, backbone_tensors};
use crate::task::Task;

pub(super) fn write(run_dir: &Path, run: &LoadedRun, out: &Path) -> Result<String, TrainError> {
    let m = &run.manifest;
    if let Preparation::Text {
        use_pooler: true, ..
    } = m.preparation
    {
        return Err(E::Unsupported(
            "sentence-transformers has no module for a pretrained pooler; a CLS + pooler model \
             exports only with a linear head (as a transformers classifier)"
                .into(),
        ));
    }
    copy_backbone_files(run_dir, out, false)?;
    let backbone = &run.model.backbone;
    let architecture = backbone.architecture();
    let tensors = backbone_tensors(backbone, "", |p| {
        architecture.export_name(ExportFormat::SentenceTransformers, p)
    })?;
    write_safetensors(&out.join("model.safetensors"), &tensors, None)?;
    write_modules(out, &m.preparation, &run.model)?;
    if !m.labels.is_empty() && m.task != Task::Embedding {
        write_json_atomic(&out.join("labels.json"), &m.labels)?;
    }
    Ok("sentence-transformers (SentenceTransformer)".into())
}

/// `modules.json` and its modules' folders for `model` in `out`: Transformer (the folder
/// itself), Pooling, Normalize (if the preparation normalizes) and one `Dense` module per head
/// layer (ReLU between layers, identity at the end), and `sentence_bert_config.json`.
pub fn write_modules(
    out: &Path,
    preparation: &Preparation,
    model: &Classifier,
) -> Result<(), TrainError> {
    let Preparation::Text {
        pooling,
        use_pooler: false,
        normalize,
        max_length,
    } = *preparation
    else {
        return Err(E::Unsupported(
            "sentence-transformers modules are for text pooled without a pooler".into(),
        ));
    };
    let backbone = &model.backbone;
    let mut modules = vec![
        json!({
            "idx": 0, "name": "0", "path": "",
            "type": "sentence_transformers.models.Transformer"
        }),
        json!({
            "idx": 1, "name": "1", "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling"
        }),
    ];
    write_json_atomic(
        &out.join("1_Pooling").join("config.json"),
        &json!({
            "word_embedding_dimension": backbone.feature_size(),
            "pooling_mode_cls_token": pooling == Pooling::Cls,
            "pooling_mode_mean_tokens": pooling == Pooling::Mean,
            "pooling_mode_max_tokens": pooling == Pooling::Max,
            "pooling_mode_mean_sqrt_len_tokens": false,
            "pooling_mode_weightedmean_tokens": false,
            "pooling_mode_lasttoken": false,
            "include_prompt": true
        }),
    )?;
    if normalize {
        let idx = modules.len();
        let path = format!("{idx}_Normalize");
        std::fs::create_dir_all(out.join(&path)).map_err(io(out))?;
        modules.push(json!({
            "idx": idx, "name": idx.to_string(), "path": path,
            "type": "sentence_transformers.models.Normalize"
        }));
    }
    let layers = &model.head.layers;
    for (i, layer) in layers.iter().enumerate() {
        let idx = modules.len();
        let path = format!("{idx}_Dense");
        let [in_features, out_features] = layer.weight.dims();
        let activation = if i + 1 < layers.len() {
            "torch.nn.modules.activation.ReLU"
        } else {
            "torch.nn.modules.linear.Identity"
        };
        write_json_atomic(
            &out.join(&path).join("config.json"),
            &json!({
                "in_features": in_features,
                "out_features": out_features,
                "bias": true,
                "activation_function": activation
            }),
        )?;
        let dense = module_tensors(layer, |p| Some(format!("linear.{p}")))?;
        write_safetensors(&out.join(&path).join("model.safetensors"), &dense, None)?;
        modules.push(json!({
            "idx": idx, "name": idx.to_string(), "path": path,
            "type": "sentence_transformers.models.Dense"
        }));
    }
    write_json_atomic(&out.join("modules.json"), &modules)?;
    write_json_atomic(
        &out.join("sentence_bert_config.json"),
        &json!({ "max_seq_length": max_length, "do_lower_case": false }),
    )
}
