//! Reading safetensors headers (names, dtypes, shapes) and applying a burn-store load with errors
//! that name the file and the upstream tensor.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::store::{
    BurnToPyTorchAdapter, FloatCastAdapter, KeyRemapper, ModuleAdapter, ModuleSnapshot,
    PyTorchToBurnAdapter, SafetensorsStore,
};
use burn::tensor::{Bool, DType, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Headers beyond this are refused (safetensors' own limit).
const MAX_HEADER: u64 = 100_000_000;

#[derive(Deserialize)]
struct HeaderEntry {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// One tensor as the file describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorInfo {
    pub dtype: String,
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// Elements (saturating: [`WeightsIndex::read`] refuses shapes whose count overflows).
    pub fn numel(&self) -> usize {
        self.shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .unwrap_or(usize::MAX)
    }
}

/// The table of contents of a safetensors file, read from its header only.
#[derive(Debug, Clone, Default)]
pub struct WeightsIndex {
    pub tensors: BTreeMap<String, TensorInfo>,
}

impl WeightsIndex {
    /// Reads and checks the header only (not the tensor data): every tensor must lie inside the
    /// file with the size its dtype and shape imply, and the data must end where the file ends, so
    /// a truncated or corrupt file is an error naming it.
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        if !path.exists() {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
                what: "weights file",
            });
        }
        let corrupt = |message: String| ModelError::CorruptWeights {
            path: path.to_path_buf(),
            message,
        };
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut len_bytes = [0u8; 8];
        file.read_exact(&mut len_bytes)
            .map_err(|_| corrupt("shorter than a safetensors header".into()))?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER || 8 + header_len > file_len {
            return Err(corrupt(format!(
                "header length {header_len} does not fit a file of {file_len} bytes"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header).map_err(io)?;
        let entries: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
            .map_err(|e| corrupt(format!("unreadable header: {e}")))?;
        let mut tensors = BTreeMap::new();
        let mut data_end = 0u64;
        for (name, value) in entries {
            if name == "__metadata__" {
                continue;
            }
            let entry: HeaderEntry = serde_json::from_value(value)
                .map_err(|e| corrupt(format!("tensor `{name}`: {e}")))?;
            let (begin, end) = entry.data_offsets;
            // Sizes are computed without overflow: a shape such as [2^62, 2^62] would
            // otherwise wrap to a size that matches empty offsets.
            let bits = entry
                .shape
                .iter()
                .try_fold(entry.dtype.bitsize() as u64, |acc, &d| {
                    acc.checked_mul(d as u64)
                });
            let width = end.checked_sub(begin).and_then(|w| w.checked_mul(8));
            if bits.is_none() || width.is_none() || width != bits || end > file_len {
                return Err(corrupt(format!(
                    "tensor `{name}`: offsets {begin}..{end} do not hold a {:?} {:?}",
                    entry.dtype, entry.shape
                )));
            }
            data_end = data_end.max(end);
            if entry
                .shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .is_none()
            {
                return Err(corrupt(format!(
                    "tensor `{name}`: shape {:?} has more elements than this machine can address",
                    entry.shape
                )));
            }
            let info = TensorInfo {
                dtype: format!("{:?}", entry.dtype),
                shape: entry.shape,
            };
            tensors.insert(name, info);
        }
        if (8 + header_len).checked_add(data_end) != Some(file_len) {
            return Err(corrupt(format!(
                "the tensors end at byte {} but the file has {file_len} (truncated or padded)",
                8 + header_len + data_end
            )));
        }
        Ok(Self { tensors })
    }

    pub fn contains_any(&self, names: &[&str]) -> bool {
        names.iter().any(|name| self.tensors.contains_key(*name))
    }

    /// Elements of the floating-point tensors; integer buffers such as `position_ids` are not
    /// parameters.
    pub fn num_parameters(&self) -> usize {
        self.tensors
            .values()
            .filter(|t| t.dtype.starts_with('F') || t.dtype.starts_with("BF"))
            .map(TensorInfo::numel)
            .fold(0usize, usize::saturating_add)
    }
}

/// The tensors a module expects, in upstream layout: its paths mapped by `to_upstream`, and
/// shapes as PyTorch stores them (linear weights `[out, in]`).
pub fn expected_tensors<M: ModuleSnapshot>(
    module: &M,
    to_upstream: impl Fn(&str) -> String,
) -> Vec<(String, Vec<usize>)> {
    module
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), false)
        .into_iter()
        .map(|tensor| (to_upstream(&tensor.name), tensor.shape.as_slice().to_vec()))
        .collect()
}

/// Checks that every expected tensor is in the file (under its name or one of `prefixes` plus
/// its name) with the expected shape, before anything is loaded.
pub fn check_expected(
    path: &Path,
    index: &WeightsIndex,
    expected: &[(String, Vec<usize>)],
    prefixes: &[&str],
) -> Result<(), ModelError> {
    let mut missing = Vec::new();
    for (name, shape) in expected {
        let found = std::iter::once(name.clone())
            .chain(prefixes.iter().map(|prefix| format!("{prefix}{name}")))
            .find_map(|candidate| index.tensors.get(&candidate).map(|info| (candidate, info)));
        match found {
            None => missing.push(name.clone()),
            Some((tensor, info)) if &info.shape != shape => {
                return Err(ModelError::ShapeMismatch {
                    path: path.to_path_buf(),
                    tensor,
                    expected: shape.clone(),
                    found: info.shape.clone(),
                });
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        return Err(ModelError::MissingTensors {
            path: path.to_path_buf(),
            names: missing,
            available: index.tensors.len(),
        });
    }
    Ok(())
}

/// Checks, without initialising any parameter, that no parameter of `module` has more elements
/// than the largest tensor in the file: such a parameter could never be loaded (shapes must
/// match exactly), and initialising it first could allocate far more than the file holds (a
/// `config.json` asking for an enormous model over small weights).
pub fn check_parameter_sizes<M: Module>(
    module: &M,
    path: &Path,
    index: &WeightsIndex,
) -> Result<(), ModelError> {
    struct Sizes {
        path: Vec<String>,
        largest: usize,
        over: Option<(String, Vec<usize>)>,
    }
    impl Sizes {
        fn check(&mut self, shape: &[usize]) {
            let numel = shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .unwrap_or(usize::MAX);
            if numel > self.largest && self.over.is_none() {
                self.over = Some((self.path.join("."), shape.to_vec()));
            }
        }
    }
    impl ModuleVisitor for Sizes {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.check(param.lazy_shape().as_slice());
        }
        fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<D, Int>>) {
            self.check(param.lazy_shape().as_slice());
        }
        fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<D, Bool>>) {
            self.check(param.lazy_shape().as_slice());
        }
    }
    let mut sizes = Sizes {
        path: Vec::new(),
        largest: index
            .tensors
            .values()
            .map(TensorInfo::numel)
            .max()
            .unwrap_or(0),
        over: None,
    };
    module.visit(&mut sizes);
    match sizes.over {
        None => Ok(()),
        Some((name, shape)) => Err(ModelError::CorruptWeights {
            path: path.to_path_buf(),
            message: format!(
                "the config asks for parameter `{name}` of shape {shape:?}, larger than any tensor \
                 in the file (the largest has {} elements): config.json and the weights do not match",
                sizes.largest
            ),
        }),
    }
}

/// [`check_parameter_sizes`] against the weights file at `path`: call it before anything
/// initialises `module`'s parameters (such as [`param_names`]).
pub fn check_sizes<M: Module>(module: &M, path: &Path) -> Result<(), ModelError> {
    check_parameter_sizes(module, path, &WeightsIndex::read(path)?)
}

/// Loads `store` into `module` after [`check_expected`] passed; anything burn-store still
/// reports is an error naming the file.
pub fn apply<M: Module>(
    module: &mut M,
    store: &mut SafetensorsStore,
    path: &Path,
) -> Result<(), ModelError> {
    let result = module
        .load_from(store)
        .map_err(|e| ModelError::CorruptWeights {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if !result.errors.is_empty() || !result.missing.is_empty() {
        return Err(ModelError::CorruptWeights {
            path: path.to_path_buf(),
            message: format!("errors: {:?}; missing: {:?}", result.errors, result.missing),
        });
    }
    Ok(())
}

/// Each parameter path of `module` (PyTorch style: norms' `weight`/`bias`, enum variants left
/// out) with the name `name` gives it in a weights file.
pub fn param_names<M: Module>(module: &M, name: impl Fn(&str) -> String) -> Vec<(String, String)> {
    module
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .into_iter()
        .map(|tensor| {
            let upstream = name(&tensor.name);
            (tensor.name.clone(), upstream)
        })
        .collect()
}

/// Loads the file's tensors into `module`: each parameter is found under its name in `names`
/// (from [`param_names`]), or that name behind one of `prefixes` (such as `bert.`). Every
/// parameter must be present with its exact shape, checked before anything is loaded; extra
/// tensors are ignored. Floats of any width are cast to f32.
pub fn load_renamed<M: Module>(
    module: &mut M,
    path: &Path,
    names: &[(String, String)],
    prefixes: &[&str],
) -> Result<(), ModelError> {
    let index = WeightsIndex::read(path)?;
    check_parameter_sizes(module, path, &index)?;
    let name_of: std::collections::HashMap<&str, &str> = names
        .iter()
        .map(|(param, upstream)| (param.as_str(), upstream.as_str()))
        .collect();
    let params: Vec<(String, String, Vec<usize>)> = module
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .into_iter()
        .map(|tensor| {
            let upstream = name_of
                .get(tensor.name.as_str())
                .map_or_else(|| tensor.name.clone(), |n| n.to_string());
            (
                tensor.name.clone(),
                upstream,
                tensor.shape.as_slice().to_vec(),
            )
        })
        .collect();
    let expected: Vec<(String, Vec<usize>)> = params
        .iter()
        .map(|(_, upstream, shape)| (upstream.clone(), shape.clone()))
        .collect();
    check_expected(path, &index, &expected, prefixes)?;
    // Each file key, exactly, onto its parameter path.
    let mut remapper = KeyRemapper::new();
    for (param, upstream, _) in &params {
        let key = std::iter::once(upstream.clone())
            .chain(prefixes.iter().map(|prefix| format!("{prefix}{upstream}")))
            .find(|candidate| index.tensors.contains_key(candidate))
            .expect("checked above");
        if &key != param {
            remapper = remapper
                .add_pattern(format!("^{}$", regex::escape(&key)), param.as_str())
                .expect("an escaped name is a valid pattern");
        }
    }
    let mut store = SafetensorsStore::from_file(path)
        .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32)))
        .remap(remapper)
        .skip_enum_variants(true)
        .allow_partial(true);
    apply(module, &mut store, path)
}

/// One tensor to write: name, shape, little-endian bytes and dtype.
#[derive(Clone)]
pub struct TensorBytes {
    pub name: String,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
    pub dtype: safetensors::Dtype,
}

impl TensorBytes {
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, values: &[f32]) -> Self {
        Self {
            name: name.into(),
            shape,
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            dtype: safetensors::Dtype::F32,
        }
    }
}

/// Every tensor of the safetensors file at `path`, as stored, sorted by name: graft's one
/// safetensors reader (gathered shards, PEFT adapters). An error names the file: [`ModelError::Io`]
/// when it cannot be read, [`ModelError::CorruptWeights`] when it is not safetensors.
pub fn read_tensors(path: &Path) -> Result<Vec<TensorBytes>, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file =
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| ModelError::CorruptWeights {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let mut tensors: Vec<TensorBytes> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| TensorBytes {
            name,
            shape: view.shape().to_vec(),
            bytes: view.data().to_vec(),
            dtype: view.dtype(),
        })
        .collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tensors)
}

/// Tensors as the bytes of one safetensors file; an error names the tensor (a name given twice
/// included, which the safetensors crate does not check).
pub fn serialize(
    tensors: &[TensorBytes],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>, String> {
    let mut names = std::collections::HashSet::new();
    if let Some(twice) = tensors.iter().find(|t| !names.insert(t.name.as_str())) {
        return Err(format!("tensor `{}` is given twice", twice.name));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|t| {
            safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                .map(|view| (t.name.clone(), view))
                .map_err(|e| format!("tensor `{}`: {e}", t.name))
        })
        .collect::<Result<_, _>>()?;
    safetensors::serialize(views, metadata).map_err(|e| e.to_string())
}
