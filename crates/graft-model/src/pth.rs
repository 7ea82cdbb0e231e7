//! Safe import of PyTorch checkpoints (`.pth`/`.pt`, the zip format and the legacy pre-1.6
//! pickle): burn-store's pure-Rust reader parses the pickle without executing it, gathers strided
//! and permuted views into contiguous row-major tensors, and this module writes them as
//! safetensors, unwrapping the usual containers (`state_dict`, `model_state_dict`, `model`,
//! DataParallel's `module.`).

use std::collections::HashMap;
use std::path::Path;

use burn::store::pytorch_reader::{DType as PthType, PytorchReader};
use safetensors::Dtype;

use crate::ModelError;
use crate::weights::{TensorBytes, serialize};

/// What a conversion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    pub tensors: usize,
    /// Values in floating-point tensors.
    pub parameters: usize,
    /// The container prefix that was removed from every name, if any.
    pub stripped_prefix: Option<String>,
}

/// Tensors up to this many bytes are read whatever the file's size.
const MIN_TENSOR_BOUND: u64 = 1 << 20;

fn corrupt(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::CorruptWeights {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn dtype(dtype: PthType) -> Dtype {
    match dtype {
        PthType::F64 => Dtype::F64,
        PthType::F32 => Dtype::F32,
        PthType::F16 => Dtype::F16,
        PthType::BF16 => Dtype::BF16,
        PthType::I64 => Dtype::I64,
        PthType::I32 => Dtype::I32,
        PthType::I16 => Dtype::I16,
        PthType::I8 => Dtype::I8,
        PthType::U64 => Dtype::U64,
        PthType::U32 => Dtype::U32,
        PthType::U16 => Dtype::U16,
        PthType::U8 => Dtype::U8,
        PthType::Bool => Dtype::BOOL,
    }
}

/// The prefix to select and strip: `key_prefix` when given, else a container every tensor (or a
/// `state_dict`) sits in.
fn choose_prefix(names: &[String], key_prefix: Option<&str>) -> Option<String> {
    if let Some(prefix) = key_prefix {
        let prefix = prefix.trim_end_matches('.');
        return (!prefix.is_empty()).then(|| format!("{prefix}."));
    }
    let mut prefix = String::new();
    let mut pool: Vec<&String> = names.iter().collect();
    for container in ["state_dict.", "model_state_dict.", "model.", "module."] {
        let full = format!("{prefix}{container}");
        let inside: Vec<&String> = pool
            .iter()
            .copied()
            .filter(|n| n.starts_with(&full))
            .collect();
        // A state dict beside other entries (epoch, optimizer) is still the one to take.
        let dominant =
            !inside.is_empty() && (inside.len() == pool.len() || container.contains("state_dict"));
        if dominant {
            prefix = full;
            pool = inside;
        }
    }
    (!prefix.is_empty()).then_some(prefix)
}

/// Converts the checkpoint at `input` to a safetensors file at `output` (written atomically).
pub fn convert(
    input: &Path,
    output: &Path,
    key_prefix: Option<&str>,
) -> Result<Converted, ModelError> {
    let (data, converted) = read_tensors(input, key_prefix)?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = serialize(&data, Some(metadata)).map_err(|message| corrupt(input, message))?;
    crate::write_atomic(output, &bytes).map_err(|source| ModelError::Io {
        path: output.to_path_buf(),
        source,
    })?;
    Ok(converted)
}

/// Every tensor of the checkpoint at `input` (under `key_prefix`, or the container it finds;
/// `Some("")` keeps every name as it is), without executing pickled code.
pub fn read_tensors(
    input: &Path,
    key_prefix: Option<&str>,
) -> Result<(Vec<TensorBytes>, Converted), ModelError> {
    if !input.is_file() {
        return Err(ModelError::MissingFile {
            path: input.to_path_buf(),
            what: "PyTorch checkpoint",
        });
    }
    let reader = PytorchReader::new(input).map_err(|e| corrupt(input, e.to_string()))?;
    let mut names = reader.keys();
    names.sort();
    if names.is_empty() {
        return Err(corrupt(
            input,
            "no tensors found: expected a state_dict (a dictionary of tensors), possibly inside \
             a checkpoint dictionary",
        ));
    }
    let prefix = choose_prefix(&names, key_prefix);
    let selected: Vec<&String> = match &prefix {
        Some(p) => names.iter().filter(|n| n.starts_with(p.as_str())).collect(),
        None => names.iter().collect(),
    };
    if selected.is_empty() {
        let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
        return Err(corrupt(
            input,
            format!(
                "no tensor name starts with `{}` (names look like: {})",
                prefix.unwrap_or_default(),
                shown.join(", ")
            ),
        ));
    }
    // A tensor is materialized contiguously; a view can be larger than its storage (a stride of
    // 0 repeats elements), so its size is checked against the file before it is read.
    let file_len = std::fs::metadata(input)
        .map_err(|source| ModelError::Io {
            path: input.to_path_buf(),
            source,
        })?
        .len();
    let mut data: Vec<TensorBytes> = Vec::with_capacity(selected.len());
    let mut parameters = 0usize;
    for name in selected {
        let tensor = reader.get(name).expect("listed by the reader");
        let bytes_needed = tensor
            .shape()
            .iter()
            .try_fold(tensor.dtype().size() as u64, |acc, &d| {
                acc.checked_mul(d as u64)
            });
        if bytes_needed.is_none_or(|n| n > file_len.max(MIN_TENSOR_BOUND)) {
            return Err(corrupt(
                input,
                format!(
                    "tensor `{name}` of shape {:?} would take more bytes than the file holds \
                     ({file_len}); views that repeat their storage (stride 0) are not supported",
                    tensor.shape()
                ),
            ));
        }
        let bytes = tensor.read().map_err(|e| corrupt(input, e.to_string()))?;
        let short = match &prefix {
            Some(p) => name[p.len()..].to_string(),
            None => name.clone(),
        };
        let dtype = dtype(tensor.dtype());
        if matches!(dtype, Dtype::F64 | Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            parameters = parameters.saturating_add(tensor.num_elements());
        }
        // safetensors stores little-endian data.
        if cfg!(target_endian = "big") {
            return Err(corrupt(input, "big-endian hosts are not supported"));
        }
        data.push(TensorBytes {
            name: short,
            shape: tensor.shape().to_vec(),
            bytes,
            dtype,
        });
    }
    let converted = Converted {
        tensors: data.len(),
        parameters,
        stripped_prefix: prefix,
    };
    Ok((data, converted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn containers_are_unwrapped() {
        let n = names(&[
            "state_dict.module.fc.weight",
            "state_dict.module.fc.bias",
            "epoch",
        ]);
        assert_eq!(
            choose_prefix(&n, None).as_deref(),
            Some("state_dict.module.")
        );
        let n = names(&["fc.weight", "fc.bias"]);
        assert_eq!(choose_prefix(&n, None), None);
        assert_eq!(choose_prefix(&n, Some("net")).as_deref(), Some("net."));
    }
}
