//! Model references: a folder path, or a Hugging Face Hub id (`org/name`, `org/name@revision`,
//! `timm/<name>`) resolved from the local Hugging Face cache exactly as `huggingface_hub` lays it
//! out (`models--org--name/refs/<revision>` names a snapshot whose files link into `blobs/`), so
//! Python and graft share one cache. A model missing from the cache is downloaded into it through
//! the `hf-hub` crate unless `HF_HUB_OFFLINE` is set.

use std::path::{Path, PathBuf};

use crate::ModelError;

/// The files of a model folder graft reads, fetched when a model is downloaded (those the
/// repository has).
const MODEL_FILES: &[&str] = &[
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "preprocessor_config.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

/// The Hugging Face cache folder: `HF_HUB_CACHE`, else `HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/huggingface/hub")
}

/// A Hub id and revision, when `reference` is one: `org/name` or `org/name@revision`, with the
/// characters the Hub allows, and no path that exists on disk by that name.
pub fn parse_id(reference: &str) -> Option<(String, String)> {
    let (id, revision) = match reference.split_once('@') {
        Some((id, revision)) if !revision.is_empty() => (id, revision),
        Some(_) => return None,
        None => (reference, "main"),
    };
    let (org, name) = id.split_once('/')?;
    let valid = |part: &str| {
        !part.is_empty()
            && !part.starts_with('.')
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    (valid(org) && valid(name)).then(|| (id.to_string(), revision.to_string()))
}

/// The folder `reference` names: the path itself when it exists or is not a Hub id, else the
/// cached snapshot of the Hub model (downloaded first when it is not cached and
/// `HF_HUB_OFFLINE` is not set).
pub fn resolve(reference: &Path) -> Result<PathBuf, ModelError> {
    let Some(text) = reference.to_str() else {
        return Ok(reference.to_path_buf());
    };
    if reference.exists() {
        return Ok(reference.to_path_buf());
    }
    let Some((id, revision)) = parse_id(text) else {
        return Ok(reference.to_path_buf());
    };
    let cache = cache_dir();
    if let Some(snapshot) = cached_snapshot(&cache, &id, &revision) {
        return Ok(snapshot);
    }
    let repo = cache.join(repo_folder(&id));
    let offline = std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "" | "0" | "false" | "no"));
    if offline {
        return Err(ModelError::NotInCache {
            id: text.to_string(),
            looked: repo.join("refs").join(&revision),
            why: "HF_HUB_OFFLINE is set, so nothing is downloaded".into(),
        });
    }
    download(&cache, &id, &revision).map_err(|why| ModelError::NotInCache {
        id: text.to_string(),
        looked: repo.join("refs").join(&revision),
        why: format!("downloading it failed: {why}"),
    })
}

/// `models--org--name`, as `huggingface_hub` names a model's cache folder.
fn repo_folder(id: &str) -> String {
    format!("models--{}", id.replace('/', "--"))
}

/// The snapshot folder of a cached revision (a branch or tag under `refs/`, or a commit hash),
/// if it holds a `config.json`.
fn cached_snapshot(cache: &Path, id: &str, revision: &str) -> Option<PathBuf> {
    let repo = cache.join(repo_folder(id));
    let commit = match std::fs::read_to_string(repo.join("refs").join(revision)) {
        Ok(hash) => hash.trim().to_string(),
        Err(_) => revision.to_string(),
    };
    let snapshot = repo.join("snapshots").join(commit);
    snapshot.join("config.json").is_file().then_some(snapshot)
}

/// Downloads the model files the repository has into the cache; returns the snapshot folder.
fn download(cache: &Path, id: &str, revision: &str) -> Result<PathBuf, String> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Cache, Repo, RepoType};

    let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
    let api = ApiBuilder::from_cache(Cache::new(cache.to_path_buf()))
        .with_token(token)
        .with_progress(false)
        .build()
        .map_err(|e| e.to_string())?;
    let repo = api.repo(Repo::with_revision(
        id.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let info = repo.info().map_err(|e| e.to_string())?;
    let files: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let shards: Vec<&str> = files
        .iter()
        .copied()
        .filter(|f| {
            (f.starts_with("model-") && f.ends_with(".safetensors"))
                || (f.starts_with("pytorch_model-") && f.ends_with(".bin"))
        })
        .collect();
    let has_safetensors = files.iter().any(|f| f.ends_with(".safetensors"));
    let mut snapshot = None;
    for file in MODEL_FILES.iter().copied().chain(shards) {
        // PyTorch weights only when there are no safetensors ones.
        let pytorch = file.starts_with("pytorch_model");
        if !files.contains(&file) || (pytorch && has_safetensors) {
            continue;
        }
        let path = repo.get(file).map_err(|e| format!("{file}: {e}"))?;
        if file == "config.json" {
            snapshot = path.parent().map(Path::to_path_buf);
        }
    }
    snapshot.ok_or_else(|| format!("{id} has no config.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_paths() {
        assert_eq!(
            parse_id("sentence-transformers/all-MiniLM-L6-v2"),
            Some((
                "sentence-transformers/all-MiniLM-L6-v2".into(),
                "main".into()
            ))
        );
        assert_eq!(
            parse_id("timm/convnext_atto.d2_in1k@v1.0"),
            Some(("timm/convnext_atto.d2_in1k".into(), "v1.0".into()))
        );
        for path in [
            "models/x/y",
            "./a/b",
            "/abs/path",
            "name",
            "a/",
            "../x",
            "a/b@",
        ] {
            assert_eq!(parse_id(path), None, "{path}");
        }
    }
}
