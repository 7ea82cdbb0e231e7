//! Exporting a run as a folder the Python ecosystem loads as it is.
//!
//! - CLS pooling through the pretrained pooler with a linear head: a transformers
//!   `BertForSequenceClassification` folder (`bert.*`, `classifier.*`, `id2label`/`label2id`).
//!   A pooler model with an MLP head or normalization has no such layout and is refused.
//! - Otherwise (mean, max or raw-CLS pooling): a sentence-transformers folder: the backbone
//!   in Hugging Face layout, `modules.json` with Transformer, Pooling, Normalize (if used) and one
//!   `Dense` module per head layer, so `SentenceTransformer(dir).encode(texts)` returns the logits.
//!
//! The folder is built beside the destination and renamed into place, so an interrupted export
//! leaves the previous one intact.

use std::path::{Path, PathBuf};

use graft_model::Pooling;
use serde_json::{Value, json};

use crate::TrainError;
use crate::config::HeadKind;
use crate::files::{copy_atomic, make_shareable, write_json_atomic};
use crate::run_dir::{self, BACKBONE_FILES, LoadedRun};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportLayout {
    Transformers,
    SentenceTransformers,
}

impl ExportLayout {
    pub fn for_run(run: &LoadedRun) -> Self {
        let m = &run.manifest;
        if m.use_pooler {
            Self::Transformers
        } else {
            Self::SentenceTransformers
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Transformers => "transformers (AutoModelForSequenceClassification)",
            Self::SentenceTransformers => "sentence-transformers (SentenceTransformer)",
        }
    }
}

/// Writes the export of `run` (loaded from `run_dir`) to `out`.
pub fn export(run_dir: &Path, run: &LoadedRun, out: &Path) -> Result<ExportLayout, TrainError> {
    let layout = ExportLayout::for_run(run);
    let staging = staging_dir(out)?;
    let result = match layout {
        ExportLayout::Transformers => write_transformers(run_dir, run, &staging),
        ExportLayout::SentenceTransformers => write_sentence_transformers(run_dir, run, &staging),
    };
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    publish(&staging, out)?;
    Ok(layout)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn staging_dir(out: &Path) -> Result<PathBuf, TrainError> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let staging = tempfile::Builder::new()
        .prefix(".graft-export-")
        .tempdir_in(parent)
        .map_err(io(parent))?;
    Ok(staging.keep())
}

/// Moves the finished folder to `out`, replacing an earlier export only once the new one is whole.
pub(crate) fn publish(staging: &Path, out: &Path) -> Result<(), TrainError> {
    for folder in walk(staging) {
        make_shareable(&folder)?;
    }
    if out.exists() {
        let old = out.with_extension("graft-old");
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(out, &old).map_err(io(out))?;
        std::fs::rename(staging, out).map_err(io(out))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(staging, out).map_err(io(out))?;
    }
    Ok(())
}

fn copy_backbone_files(run_dir: &Path, out: &Path, skip_config: bool) -> Result<(), TrainError> {
    for name in BACKBONE_FILES {
        if skip_config && *name == "config.json" {
            continue;
        }
        let from = run_dir.join(name);
        if from.is_file() {
            copy_atomic(&from, &out.join(name))?;
        }
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<Value, TrainError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn write_transformers(run_dir: &Path, run: &LoadedRun, out: &Path) -> Result<(), TrainError> {
    let m = &run.manifest;
    if m.head.kind != HeadKind::Linear || m.normalize {
        return Err(TrainError::Unsupported(
            "a model that pools through the BERT pooler exports as transformers' \
             BertForSequenceClassification, which has a single linear classifier and no \
             normalization; train it with [head] kind = \"linear\" and normalize = false"
                .into(),
        ));
    }
    copy_backbone_files(run_dir, out, true)?;
    let labels = &run.manifest.labels;
    let mut config = read_json(&run_dir.join("config.json"))?;
    let id2label: serde_json::Map<String, Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), json!(l)))
        .collect();
    let label2id: serde_json::Map<String, Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), json!(i)))
        .collect();
    if let Some(object) = config.as_object_mut() {
        object.insert(
            "architectures".into(),
            json!(["BertForSequenceClassification"]),
        );
        object.insert("id2label".into(), Value::Object(id2label));
        object.insert("label2id".into(), Value::Object(label2id));
        // transformers' names for the tasks are graft's.
        object.insert("problem_type".into(), json!(m.task));
    }
    write_json_atomic(&out.join("config.json"), &config)?;
    // The encoder under `bert.`, the single head layer as `classifier`.
    let remapper = graft_model::bert::save_remapper("encoder.bert.", "bert.")
        .add_pattern(r"^head\.layers\.0\.(.+)$", "classifier.$1")
        .expect("static pattern");
    run_dir::save_with(&run.model, &out.join("model.safetensors"), remapper)?;
    write_json_atomic(&out.join("labels.json"), labels)
}

fn write_sentence_transformers(
    run_dir: &Path,
    run: &LoadedRun,
    out: &Path,
) -> Result<(), TrainError> {
    let m = &run.manifest;
    if m.use_pooler {
        return Err(TrainError::Unsupported(
            "sentence-transformers has no module for the BERT pooler; a CLS + pooler model \
             exports only with a linear head (as transformers' BertForSequenceClassification)"
                .into(),
        ));
    }
    copy_backbone_files(run_dir, out, false)?;
    run_dir::save_weights(
        &run.model.encoder.bert,
        &out.join("model.safetensors"),
        "",
        "",
    )?;
    let hidden = run.model.encoder.output_size();
    let mut modules = vec![json!({
        "idx": 0, "name": "0", "path": "",
        "type": "sentence_transformers.models.Transformer"
    })];
    modules.push(json!({
        "idx": 1, "name": "1", "path": "1_Pooling",
        "type": "sentence_transformers.models.Pooling"
    }));
    write_json_atomic(
        &out.join("1_Pooling").join("config.json"),
        &json!({
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": m.pooling == Pooling::Cls,
            "pooling_mode_mean_tokens": m.pooling == Pooling::Mean,
            "pooling_mode_max_tokens": m.pooling == Pooling::Max,
            "pooling_mode_mean_sqrt_len_tokens": false,
            "pooling_mode_weightedmean_tokens": false,
            "pooling_mode_lasttoken": false,
            "include_prompt": true
        }),
    )?;
    if m.normalize {
        let idx = modules.len();
        let path = format!("{idx}_Normalize");
        std::fs::create_dir_all(out.join(&path)).map_err(io(out))?;
        modules.push(json!({
            "idx": idx, "name": idx.to_string(), "path": path,
            "type": "sentence_transformers.models.Normalize"
        }));
    }
    let last = run.model.head.layers.len() - 1;
    for (i, layer) in run.model.head.layers.iter().enumerate() {
        let idx = modules.len();
        let path = format!("{idx}_Dense");
        let [in_features, out_features] = layer.weight.dims();
        let activation = if i < last {
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
        let remapper = burn::store::KeyRemapper::from_patterns(vec![(r"^(.+)$", "linear.$1")])
            .expect("static pattern");
        run_dir::save_with(layer, &out.join(&path).join("model.safetensors"), remapper)?;
        modules.push(json!({
            "idx": idx, "name": idx.to_string(), "path": path,
            "type": "sentence_transformers.models.Dense"
        }));
    }
    write_json_atomic(&out.join("modules.json"), &modules)?;
    write_json_atomic(
        &out.join("sentence_bert_config.json"),
        &json!({ "max_seq_length": m.max_length, "do_lower_case": false }),
    )?;
    write_json_atomic(&out.join("labels.json"), &m.labels)
}

/// `dir` and every folder below it.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut folders = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < folders.len() {
        if let Ok(entries) = std::fs::read_dir(&folders[i]) {
            folders.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        i += 1;
    }
    folders
}
