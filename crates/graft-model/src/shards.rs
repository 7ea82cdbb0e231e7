//! Weights that are not one `model.safetensors`: a sharded `model.safetensors.index.json`, or
//! `pytorch_model.bin` (single or sharded through `pytorch_model.bin.index.json`, read without
//! executing pickled code). Many hub folders ship only these. They are gathered once into one
//! safetensors file in graft's cache, keyed by the source files' paths, sizes and modification
//! times, so every loader reads one file the same way; dtypes are kept (f16 and bf16 are cast to
//! f32 when loaded, as for `model.safetensors`).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::ModelError;
use crate::weights::{self, TensorBytes, WeightsIndex, serialize};

pub const SAFETENSORS: &str = "model.safetensors";
const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
const PYTORCH: &str = "pytorch_model.bin";
const PYTORCH_INDEX: &str = "pytorch_model.bin.index.json";

/// graft's cache folder: `$GRAFT_CACHE_DIR`, else `$XDG_CACHE_HOME/graft`, else `~/.cache/graft`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("GRAFT_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("graft");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache/graft"),
        None => PathBuf::from(".cache/graft"),
    }
}

/// The weights file a folder's models load: `model.safetensors` when there is one, else the
/// gathered copy of its shards or PyTorch files (made on first use), else the missing
/// `model.safetensors` (whose absence the loader reports).
pub fn weights_file(dir: &Path) -> Result<PathBuf, ModelError> {
    let single = dir.join(SAFETENSORS);
    if single.exists() {
        return Ok(single);
    }
    let sources = if dir.join(SAFETENSORS_INDEX).is_file() {
        shard_files(dir, SAFETENSORS_INDEX)?
    } else if dir.join(PYTORCH_INDEX).is_file() {
        shard_files(dir, PYTORCH_INDEX)?
    } else if dir.join(PYTORCH).is_file() {
        vec![dir.join(PYTORCH)]
    } else {
        return Ok(single);
    };
    let gathered = cache_root()
        .join("weights")
        .join(format!("{:016x}.safetensors", key(&sources)?));
    if !gathered.is_file() {
        gather(&sources, &gathered)?;
    }
    Ok(gathered)
}

/// The shard files an index names (`weight_map` values), in order, each once.
fn shard_files(dir: &Path, index: &str) -> Result<Vec<PathBuf>, ModelError> {
    let path = dir.join(index);
    let value = crate::folder::read_json(&path, "weights index")?;
    let map = value
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| ModelError::Config {
            path: path.clone(),
            message: "no weight_map object".into(),
        })?;
    let mut files: Vec<String> = map
        .values()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| ModelError::Config {
                    path: path.clone(),
                    message: format!("weight_map value {v} is not a file name"),
                })
        })
        .collect::<Result<_, _>>()?;
    files.sort();
    files.dedup();
    let mut shards = Vec::with_capacity(files.len());
    for file in files {
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            return Err(ModelError::Config {
                path: path.clone(),
                message: format!("shard {file:?} is not a file in the folder"),
            });
        }
        let shard = dir.join(&file);
        if !shard.is_file() {
            return Err(ModelError::MissingFile {
                path: shard,
                what: "weights shard named in the index",
            });
        }
        shards.push(shard);
    }
    Ok(shards)
}

/// FNV-1a over each source's absolute path, size and modification time.
fn key(sources: &[PathBuf]) -> Result<u64, ModelError> {
    let mut text = String::new();
    for source in sources {
        let io = |e| ModelError::Io {
            path: source.clone(),
            source: e,
        };
        let meta = std::fs::metadata(source).map_err(io)?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let absolute = std::fs::canonicalize(source).map_err(io)?;
        text.push_str(&format!(
            "{}|{}|{modified};",
            absolute.display(),
            meta.len()
        ));
    }
    Ok(text.bytes().fold(0xcbf29ce484222325, |hash, byte| {
        (hash ^ byte as u64).wrapping_mul(0x100000001b3)
    }))
}

/// Reads every source and writes their tensors as one safetensors file (atomically); a name in
/// two sources is an error naming both.
fn gather(sources: &[PathBuf], output: &Path) -> Result<(), ModelError> {
    let mut tensors: Vec<TensorBytes> = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for source in sources {
        let from_pytorch = source.extension().is_some_and(|e| e == "bin");
        let read = if from_pytorch {
            crate::pth::read_tensors(source, Some(""))?.0
        } else {
            // The header is checked first, so a truncated shard is an error naming it.
            WeightsIndex::read(source)?;
            weights::read_tensors(source)?
        };
        for tensor in read {
            if let Some(first) = seen.insert(tensor.name.clone(), source.clone()) {
                return Err(ModelError::CorruptWeights {
                    path: source.clone(),
                    message: format!("tensor `{}` is also in {}", tensor.name, first.display()),
                });
            }
            tensors.push(tensor);
        }
    }
    let bytes = serialize(&tensors, None).map_err(|message| ModelError::CorruptWeights {
        path: sources[0].clone(),
        message,
    })?;
    if let Some(parent) = output.parent() {
        std::fs::create_dir_all(parent).map_err(|source| ModelError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    crate::write_atomic(output, &bytes).map_err(|source| ModelError::Io {
        path: output.to_path_buf(),
        source,
    })
}
