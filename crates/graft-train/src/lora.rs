//! LoRA on any backbone with linear layers: which layers get adapters (PEFT's `target_modules`
//! matched against upstream module names), attaching them with burn's `apply_lora`, and PEFT's
//! adapter folder (`adapter_config.json` + `adapter_model.safetensors`) read and written, so an
//! adapter moves between graft and `peft` either way.
//!
//! burn keeps a linear weight as `[in, out]` with factors `a [in, r]`, `b [r, out]`; PEFT keeps
//! `lora_A.weight [r, in]` and `lora_B.weight [out, r]`. Both compute `W + (alpha / r)·B·A`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Lora, Module, ModuleMapper, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::tensor::{DType, Tensor, TensorData};
use graft_model::{Backbone, ExportFormat, HeadTransform, ModelError, NativeHead, TransformSpec};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{HeadKind, LoraSection};
use crate::error::{TrainError, TrainError as E};
use crate::files::TensorBytes;
use crate::freezing::PathStack;
use crate::head::{Head, HeadSpec};

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// PEFT's prefix of every saved key (`PeftModel.base_model.model`).
const PEFT_PREFIX: &str = "base_model.model.";

/// A run's adapters, as `graft.json` records them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    pub r: usize,
    pub alpha: f64,
    /// Dropout on the adapters' input while training.
    #[serde(default)]
    pub dropout: f64,
    /// The targets as the config gave them (or the architecture's default).
    pub target_modules: Vec<String>,
    /// The upstream names of the adapted linear layers.
    pub modules: Vec<String>,
}

impl LoraSpec {
    /// `target_modules` as PEFT takes them: plain names stay a list (matched by suffix); with
    /// regular expressions among them, the adapted layers' full names.
    pub fn peft_targets(&self) -> Vec<String> {
        if self.target_modules.iter().all(|t| is_plain(t)) {
            self.target_modules.clone()
        } else {
            self.modules.clone()
        }
    }
}

/// A plain target is a (dotted) name, matched by suffix as PEFT does with a list.
fn is_plain(target: &str) -> bool {
    !target.is_empty()
        && target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Whether module `name` is one of `targets`: a plain target matches the name or its last
/// dotted parts; any other target is a regular expression over the whole name.
pub fn target_matcher(targets: &[String]) -> Result<impl Fn(&str) -> bool, String> {
    let mut suffixes = Vec::new();
    let mut patterns = Vec::new();
    for target in targets {
        if is_plain(target) {
            suffixes.push(target.clone());
        } else {
            patterns.push(
                Regex::new(&format!("^(?:{target})$"))
                    .map_err(|e| format!("[lora] target_modules: {target:?}: {e}"))?,
            );
        }
    }
    Ok(move |name: &str| {
        suffixes
            .iter()
            .any(|s| name == s || name.ends_with(&format!(".{s}")))
            || patterns.iter().any(|p| p.is_match(name))
    })
}

/// A linear layer of a backbone: its weight's module path, its upstream name (`encoder.layer.0
/// .attention.self.query`) and the weight's parameter id.
struct LinearLayer {
    path: String,
    name: String,
    id: ParamId,
}

/// Every linear layer of a backbone, in module order.
fn linear_layers(backbone: &Backbone) -> Vec<LinearLayer> {
    struct Linears {
        path: PathStack,
        found: Vec<(String, ParamId)>,
    }
    impl ModuleVisitor for Linears {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if D == 2 && self.path.is_linear_weight() {
                self.found.push((self.path.joined(), param.id));
            }
        }
    }
    let mut visitor = Linears {
        path: PathStack::default(),
        found: Vec::new(),
    };
    backbone.visit(&mut visitor);
    let architecture = backbone.architecture();
    visitor
        .found
        .into_iter()
        .filter_map(|(path, id)| {
            let upstream = architecture.upstream_name(Backbone::inner_path(&path)?);
            let name = upstream
                .strip_suffix(".weight")
                .unwrap_or(&upstream)
                .to_string();
            Some(LinearLayer { path, name, id })
        })
        .collect()
}

/// Linear weight path → upstream module name, for every linear layer of the backbone.
fn module_names(backbone: &Backbone) -> BTreeMap<String, String> {
    linear_layers(backbone)
        .into_iter()
        .map(|layer| (layer.path, layer.name))
        .collect()
}

/// The prefix of the backbone inside transformers' sequence classifier (`bert.`).
fn model_prefix(backbone: &Backbone) -> String {
    backbone
        .architecture()
        .exports()
        .into_iter()
        .find(|t| t.format == ExportFormat::Transformers)
        .map_or_else(String::new, |t| t.prefix)
}

/// Attaches adapters to the backbone's layers that `section` targets (new ones, or a PEFT
/// adapter's), freezing every base tensor.
pub fn attach(
    backbone: Backbone,
    section: &LoraSection,
) -> Result<(Backbone, LoraSpec), TrainError> {
    let layers = linear_layers(&backbone);
    let names: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    let adapter = match section.adapter.as_deref() {
        Some(dir) => Some(PeftAdapter::read(dir)?.under(&names)?),
        None => None,
    };
    let (r, alpha, dropout, target_modules) = match &adapter {
        Some(a) => (a.r, a.alpha, a.dropout, a.target_modules.clone()),
        None if section.target_modules.is_empty() => {
            let defaults = backbone.architecture().lora_targets();
            (
                section.r,
                section.alpha,
                section.dropout,
                defaults.iter().map(|t| t.to_string()).collect(),
            )
        }
        None => (
            section.r,
            section.alpha,
            section.dropout,
            section.target_modules.clone(),
        ),
    };
    let some_layers = || {
        let names: Vec<&str> = layers.iter().take(8).map(|l| l.name.as_str()).collect();
        if names.is_empty() {
            "it has no linear layers".to_string()
        } else {
            format!("its linear layers include {}", names.join(", "))
        }
    };
    if target_modules.is_empty() {
        return Err(E::Unsupported(format!(
            "[lora] target_modules: {} has no default targets; name them ({})",
            backbone.architecture().describe(),
            some_layers()
        )));
    }
    let chosen: Vec<&LinearLayer> = match &adapter {
        // An adapter file says exactly which layers it adapts.
        Some(a) => {
            let chosen: Vec<_> = layers
                .iter()
                .filter(|l| a.factors.contains_key(&l.name))
                .collect();
            if let Some(missing) = a
                .factors
                .keys()
                .find(|m| !chosen.iter().any(|l| &l.name == *m))
            {
                return Err(E::Config {
                    path: a.weights.clone(),
                    message: format!(
                        "adapts {missing}, which is not a linear layer of {}",
                        backbone.architecture().describe()
                    ),
                });
            }
            chosen
        }
        None => {
            let matches = target_matcher(&target_modules).map_err(E::Unsupported)?;
            layers.iter().filter(|l| matches(&l.name)).collect()
        }
    };
    if chosen.is_empty() {
        return Err(E::Unsupported(format!(
            "[lora] target_modules = {target_modules:?} matches no linear layer ({})",
            some_layers()
        )));
    }
    let ids: Vec<ParamId> = chosen.iter().map(|l| l.id).collect();
    let mut backbone =
        backbone.apply_lora(Lora::new(r, alpha).set_param_group(ParamGroup::from_ids(ids)));
    backbone.lora_dropout = dropout;
    let spec = LoraSpec {
        r,
        alpha,
        dropout,
        target_modules,
        modules: chosen.iter().map(|l| l.name.clone()).collect(),
    };
    if let Some(adapter) = adapter {
        backbone = adapter.load_into(backbone)?;
    }
    Ok((backbone, spec))
}

/// Calls `f(module, factor, path)` for each LoRA factor of the backbone (`factor` is 'a' or 'b').
struct Factors<F> {
    path: PathStack,
    names: BTreeMap<String, String>,
    f: F,
}

impl<F> Factors<F> {
    /// The module name of the factor at the current path, and which factor it is.
    fn current(&self) -> Option<(String, char)> {
        let path = self.path.joined();
        let (base, factor) = if let Some(base) = path.strip_suffix(".lora.a") {
            (base, 'a')
        } else {
            (path.strip_suffix(".lora.b")?, 'b')
        };
        Some((self.names.get(base)?.clone(), factor))
    }
}

impl<F: FnMut(String, char, Tensor<2>)> ModuleVisitor for Factors<F> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if D == 2
            && let Some((module, factor)) = self.current()
        {
            let dims = param.shape().to_vec();
            (self.f)(module, factor, param.val().reshape([dims[0], dims[1]]));
        }
    }
}

/// The adapters' factors in PEFT's layout and names (`base_model.model.bert.<module>.lora_A.weight
/// [r, in]`, `lora_B.weight [out, r]`), the backbone behind the prefix it has in the family's
/// sequence classifier (a native head's, else the architecture's transformers export's).
pub fn peft_tensors(backbone: &Backbone, native: Option<&NativeHead>) -> Vec<TensorBytes> {
    let prefix = native.map_or_else(|| model_prefix(backbone), |n| n.prefix.clone());
    let mut out = Vec::new();
    let mut visitor = Factors {
        path: PathStack::default(),
        names: module_names(backbone),
        f: |module: String, factor: char, value: Tensor<2>| {
            let value = value.transpose();
            let shape = value.dims().to_vec();
            let values: Vec<f32> = value
                .into_data()
                .convert_dtype(DType::F32)
                .try_into_vec::<f32>()
                .expect("f32 data");
            let which = if factor == 'a' { "lora_A" } else { "lora_B" };
            out.push(TensorBytes::f32(
                format!("{PEFT_PREFIX}{prefix}{module}.{which}.weight"),
                shape,
                &values,
            ));
        },
    };
    backbone.visit(&mut visitor);
    out
}

/// `adapter_config.json` for a sequence classifier over `base` with these adapters.
pub fn adapter_config(spec: &LoraSpec, base: &Path, modules_to_save: &[String]) -> Value {
    // PEFT types lora_alpha as an int; keep a whole alpha one.
    let alpha = if spec.alpha.fract() == 0.0 && spec.alpha.abs() < 1e15 {
        json!(spec.alpha as i64)
    } else {
        json!(spec.alpha)
    };
    json!({
        "peft_type": "LORA",
        "task_type": "SEQ_CLS",
        "base_model_name_or_path": base.display().to_string(),
        "r": spec.r,
        "lora_alpha": alpha,
        "lora_dropout": spec.dropout,
        "target_modules": spec.peft_targets(),
        "modules_to_save": modules_to_save,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "rank_pattern": {},
        "alpha_pattern": {},
    })
}

/// A PEFT LoRA adapter folder, read.
pub struct PeftAdapter {
    pub dir: PathBuf,
    pub weights: PathBuf,
    pub r: usize,
    pub alpha: f64,
    /// `lora_dropout`, used when training continues from the adapter.
    pub dropout: f64,
    pub target_modules: Vec<String>,
    pub base_model: Option<String>,
    /// Module name → (`lora_A [r, in]`, `lora_B [out, r]`).
    factors: SavedFactors,
    /// Everything else in the file, by name after `base_model.model.` (the saved modules, e.g.
    /// `classifier.weight`).
    pub saved: BTreeMap<String, Values>,
}

/// A tensor read as f32: its shape and row-major values.
#[derive(Debug, Clone)]
pub struct Values {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl Values {
    pub fn data(&self) -> TensorData {
        TensorData::new(self.values.clone(), self.shape.clone())
    }
}

/// A one-layer head from a saved linear module (weight `[out, in]`, PyTorch's layout).
pub fn linear_head(
    weight: &Values,
    bias: Option<&Values>,
    dropout: f64,
    device: &burn::tensor::Device,
) -> Head {
    let mut head = HeadSpec {
        kind: HeadKind::Linear,
        input: weight.shape[1],
        hidden: Vec::new(),
        output: weight.shape[0],
        dropout,
        native: None,
    }
    .init(0, device);
    let layer = &mut head.layers[0];
    layer.weight = Param::from_tensor(Tensor::<2>::from_data(weight.data(), device).transpose());
    layer.bias = bias.map(|b| Param::from_data(b.data(), device));
    head
}

/// The adapter's saved head (PEFT's `modules_to_save`) as a run's head when it fits `spec`;
/// `None` otherwise, and for an unreadable adapter (attaching it reports why).
pub fn saved_head(dir: &Path, spec: &HeadSpec, device: &burn::tensor::Device) -> Option<Head> {
    PeftAdapter::read(dir).ok()?.head(spec, device)
}

/// Whether `dir` is a PEFT adapter folder.
pub fn is_adapter(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file()
}

impl PeftAdapter {
    /// Reads `dir`. Factors are keyed by their module's name inside the classifier
    /// (`bert.encoder...`) until [`PeftAdapter::under`] takes the backbone's prefix off.
    pub fn read(dir: &Path) -> Result<Self, TrainError> {
        let config = AdapterConfig::read(&dir.join(ADAPTER_CONFIG))?;
        let weights = dir.join(ADAPTER_WEIGHTS);
        if !weights.is_file() {
            let message = if dir.join("adapter_model.bin").is_file() {
                "missing; this adapter has only adapter_model.bin: save it with \
                 safe_serialization=True"
            } else {
                "missing"
            };
            return Err(bad(&weights, message.into()));
        }
        let (factors, saved) = Self::read_weights(&weights, config.r)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            weights,
            r: config.r,
            alpha: config.alpha,
            dropout: config.dropout,
            target_modules: config.target_modules,
            base_model: config.base_model,
            factors,
            saved,
        })
    }

    /// The LoRA factors (pairs of `lora_A`, `lora_B` of rank `r`, by module) and the other saved
    /// tensors (`modules_to_save`) of `adapter_model.safetensors`, as f32.
    fn read_weights(
        weights: &Path,
        r: usize,
    ) -> Result<(SavedFactors, BTreeMap<String, Values>), TrainError> {
        let mut a_factors = BTreeMap::new();
        let mut b_factors = BTreeMap::new();
        let mut saved = BTreeMap::new();
        for tensor in Self::tensors_of(weights)? {
            let name = tensor.name;
            let dtype = match tensor.dtype {
                safetensors::Dtype::F32 => DType::F32,
                safetensors::Dtype::F16 => DType::F16,
                safetensors::Dtype::BF16 => DType::BF16,
                other => {
                    return Err(bad(weights, format!("{name}: unsupported dtype {other:?}")));
                }
            };
            let data = Values {
                shape: tensor.shape.clone(),
                values: TensorData::from_bytes_vec(tensor.bytes, tensor.shape, dtype)
                    .convert_dtype(DType::F32)
                    .try_into_vec::<f32>()
                    .map_err(|e| bad(weights, format!("{name}: {e:?}")))?,
            };
            let key = name.strip_prefix(PEFT_PREFIX).unwrap_or(&name);
            let factor = [
                (".lora_A.weight", &mut a_factors),
                (".lora_B.weight", &mut b_factors),
            ]
            .into_iter()
            .find_map(|(suffix, map)| key.strip_suffix(suffix).map(|m| (m, map)));
            match factor {
                Some((module, map)) => {
                    if data.shape.len() != 2 {
                        return Err(bad(weights, format!("{name}: expected a matrix")));
                    }
                    map.insert(module.to_string(), data);
                }
                None => {
                    saved.insert(key.to_string(), data);
                }
            }
        }
        let mut factors = BTreeMap::new();
        for (module, a) in a_factors {
            let Some(b) = b_factors.remove(&module) else {
                return Err(bad(weights, format!("{module}: lora_A without lora_B")));
            };
            if a.shape[0] != r || b.shape[1] != r {
                return Err(bad(
                    weights,
                    format!(
                        "{module}: lora_A {:?} and lora_B {:?} do not have rank r = {r}",
                        a.shape, b.shape
                    ),
                ));
            }
            factors.insert(module, (a, b));
        }
        if let Some(module) = b_factors.keys().next() {
            return Err(bad(weights, format!("{module}: lora_B without lora_A")));
        }
        if factors.is_empty() {
            return Err(bad(weights, "holds no LoRA factors".into()));
        }
        Ok((factors, saved))
    }

    /// The same adapter with its factors named as the backbone's `layers`: whatever the saved
    /// model put before them (`bert.`, `roberta.`, `deberta.`, or nothing) taken off. Each factor
    /// must name exactly one layer.
    fn under(mut self, layers: &[String]) -> Result<Self, TrainError> {
        let mut factors = BTreeMap::new();
        for (module, pair) in std::mem::take(&mut self.factors) {
            let inner = layers
                .iter()
                .filter(|layer| module == **layer || module.ends_with(&format!(".{layer}")))
                .max_by_key(|layer| layer.len());
            let Some(inner) = inner else {
                return Err(E::Config {
                    path: self.weights.clone(),
                    message: format!(
                        "{PEFT_PREFIX}{module}: adapts no linear layer of this model (its layers \
                         look like {})",
                        layers.first().map_or("nothing", String::as_str)
                    ),
                });
            };
            factors.insert(inner.clone(), pair);
        }
        self.factors = factors;
        Ok(self)
    }

    /// A saved linear module (PEFT's `modules_to_save`, e.g. `classifier`): weight `[out, in]`
    /// and bias.
    pub fn saved_linear(&self, name: &str) -> Option<(&Values, Option<&Values>)> {
        let weight = self
            .saved
            .get(&format!("{name}.weight"))
            .filter(|w| w.shape.len() == 2)?;
        Some((weight, self.saved.get(&format!("{name}.bias"))))
    }

    /// The saved head as a head of `spec`'s shape: a linear head from `classifier` (else
    /// `score`), a native head from the family's classifier and transform names; `None` when
    /// they are not saved or do not fit.
    pub fn head(&self, spec: &HeadSpec, device: &burn::tensor::Device) -> Option<Head> {
        let names = match &spec.native {
            Some(native) => vec![native.classifier.as_str()],
            None => vec!["classifier", "score"],
        };
        let (weight, bias) = names.iter().find_map(|name| self.saved_linear(name))?;
        let fits = spec.kind != HeadKind::Mlp
            && weight.shape == [spec.output, spec.input]
            && bias.is_none_or(|b| b.shape == [spec.output]);
        if !fits {
            return None;
        }
        let mut head = linear_head(weight, bias, spec.dropout, device);
        if let Some(transform) = spec.native.as_ref().and_then(|n| n.transform.as_ref()) {
            head.transform = Some(self.saved_transform(transform, device)?);
        }
        Some(head)
    }

    /// A native head's transform from its saved dense layer (and norm).
    fn saved_transform(
        &self,
        spec: &TransformSpec,
        device: &burn::tensor::Device,
    ) -> Option<HeadTransform> {
        let mut transform = spec.init(device);
        let (weight, bias) = self.saved_linear(&spec.dense)?;
        let width = [spec.width];
        if weight.shape != [spec.width, spec.width] || bias.is_some() != spec.dense_bias {
            return None;
        }
        transform.dense.weight =
            Param::from_tensor(Tensor::<2>::from_data(weight.data(), device).transpose());
        if let Some(bias) = bias {
            if bias.shape != width {
                return None;
            }
            transform.dense.bias = Some(Param::from_data(bias.data(), device));
        }
        if let (Some(norm), Some(name)) = (transform.norm.as_mut(), &spec.norm) {
            let gamma = self
                .saved
                .get(&format!("{name}.weight"))
                .filter(|g| g.shape == width)?;
            norm.gamma = Param::from_data(gamma.data(), device);
            if norm.beta.is_some() {
                let beta = self
                    .saved
                    .get(&format!("{name}.bias"))
                    .filter(|b| b.shape == width)?;
                norm.beta = Some(Param::from_data(beta.data(), device));
            }
        }
        Some(transform)
    }

    /// The tensors of an adapter file, as stored, sorted by name (graft-model's safetensors
    /// reader); a file that is not safetensors is an error saying so.
    pub fn tensors_of(path: &Path) -> Result<Vec<TensorBytes>, TrainError> {
        graft_model::weights::read_tensors(path).map_err(|e| match e {
            ModelError::Io { path, source } => E::Io { path, source },
            ModelError::CorruptWeights { path, message } => E::Config {
                path,
                message: format!("not a safetensors file: {message}"),
            },
            other => E::Model(other),
        })
    }

    /// The local folder of the base model: `base_model_name_or_path` as given, or relative to
    /// the adapter folder.
    pub fn base_dir(&self) -> Result<PathBuf, TrainError> {
        let config = self.dir.join(ADAPTER_CONFIG);
        let Some(base) = &self.base_model else {
            return Err(E::Config {
                path: config,
                message: "base_model_name_or_path is missing: graft needs the base model's folder"
                    .into(),
            });
        };
        let local = [PathBuf::from(base), self.dir.join(base)]
            .into_iter()
            .find(|p| p.join("config.json").is_file());
        // A Hub id resolves through the Hugging Face cache when the folder is opened.
        let hub = || graft_model::hub::parse_id(base).map(|_| PathBuf::from(base));
        local.or_else(hub).ok_or_else(|| E::Config {
            path: config,
            message: format!(
                "base_model_name_or_path {base:?} is neither a local model folder (a folder \
                 with config.json) nor a Hub id"
            ),
        })
    }

    /// Sets the factors of a backbone whose adapters were attached for this adapter's layers.
    fn load_into(self, backbone: Backbone) -> Result<Backbone, TrainError> {
        struct SetFactors {
            path: PathStack,
            names: BTreeMap<String, String>,
            factors: BTreeMap<String, (Values, Values)>,
            error: Option<String>,
        }
        impl ModuleMapper for SetFactors {
            fn enter_module(&mut self, name: &str, container_type: &str) {
                self.path.enter(name, container_type);
            }
            fn exit_module(&mut self, _name: &str, _container_type: &str) {
                self.path.exit();
            }
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let path = self.path.joined();
                let (base, factor) =
                    match (path.strip_suffix(".lora.a"), path.strip_suffix(".lora.b")) {
                        (Some(base), _) => (base, 0),
                        (_, Some(base)) => (base, 1),
                        _ => return param,
                    };
                let Some((a, b)) = self.names.get(base).and_then(|m| self.factors.get(m)) else {
                    return param;
                };
                let data = if factor == 0 { a.clone() } else { b.clone() };
                let shape = param.shape();
                let dims = shape.as_slice();
                // PEFT's [r, in] / [out, r] are burn's [in, r] / [r, out] transposed.
                if D != 2 || data.shape[..] != [dims[1], dims[0]] {
                    self.error = Some(format!(
                        "{path}: the adapter's factor is {:?}, the layer needs {:?} transposed",
                        data.shape, dims
                    ));
                    return param;
                }
                param.map(|tensor| {
                    let value = Tensor::<2>::from_data(data.data(), &tensor.device()).transpose();
                    value.reshape(shape)
                })
            }
        }
        let mut mapper = SetFactors {
            path: PathStack::default(),
            names: module_names(&backbone),
            factors: self.factors,
            error: None,
        };
        let backbone = backbone.map(&mut mapper);
        match mapper.error {
            Some(message) => Err(E::Config {
                path: self.weights,
                message,
            }),
            None => Ok(backbone),
        }
    }
}

/// LoRA factors by module: `lora_A` `[r, in]` and `lora_B` `[out, r]`.
type SavedFactors = BTreeMap<String, (Values, Values)>;

/// An error about `path`.
fn bad(path: &Path, message: String) -> TrainError {
    E::Config {
        path: path.to_path_buf(),
        message,
    }
}

/// What graft reads of `adapter_config.json`: a plain LoRA adapter's rank, scale, dropout,
/// target modules and base model.
struct AdapterConfig {
    r: usize,
    alpha: f64,
    dropout: f64,
    target_modules: Vec<String>,
    base_model: Option<String>,
}

impl AdapterConfig {
    fn read(config_path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(config_path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                E::NotFound {
                    path: config_path.to_path_buf(),
                }
            } else {
                E::Io {
                    path: config_path.to_path_buf(),
                    source,
                }
            }
        })?;
        let config: Value =
            serde_json::from_str(&text).map_err(|e| bad(config_path, e.to_string()))?;
        let field = |key: &str| config.get(key).filter(|v| !v.is_null());
        if field("peft_type").and_then(Value::as_str) != Some("LORA") {
            return Err(bad(
                config_path,
                format!(
                    "peft_type is {}; graft reads LoRA adapters only",
                    field("peft_type").map_or("missing".into(), Value::to_string)
                ),
            ));
        }
        for (key, what) in [("use_dora", "DoRA"), ("use_rslora", "rank-stabilized LoRA")] {
            if field(key).and_then(Value::as_bool) == Some(true) {
                return Err(bad(config_path, format!("{key}: {what} is not supported")));
            }
        }
        for key in ["rank_pattern", "alpha_pattern"] {
            if field(key)
                .and_then(Value::as_object)
                .is_some_and(|o| !o.is_empty())
            {
                return Err(bad(
                    config_path,
                    format!("{key}: per-layer ranks and alphas are not supported"),
                ));
            }
        }
        let r = field("r")
            .and_then(Value::as_u64)
            .filter(|&r| r > 0)
            .ok_or_else(|| bad(config_path, "r: expected a positive integer".into()))?
            as usize;
        let alpha = field("lora_alpha")
            .and_then(Value::as_f64)
            .ok_or_else(|| bad(config_path, "lora_alpha: expected a number".into()))?;
        let target_modules = match field("target_modules") {
            Some(Value::String(pattern)) => vec![pattern.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        Ok(Self {
            r,
            alpha,
            dropout: field("lora_dropout")
                .and_then(Value::as_f64)
                .filter(|p| (0.0..1.0).contains(p))
                .unwrap_or(0.0),
            target_modules,
            base_model: field("base_model_name_or_path")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(targets: &[&str], name: &str) -> bool {
        let targets: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
        target_matcher(&targets).unwrap()(name)
    }

    #[test]
    fn plain_targets_match_name_ends_as_peft_does() {
        let query = "encoder.layer.0.attention.self.query";
        assert!(matches(&["query"], query));
        assert!(matches(&["self.query"], query));
        assert!(matches(&[query], query));
        assert!(!matches(&["uery"], query));
        assert!(!matches(&["value"], query));
        assert!(matches(&["dense"], "encoder.layer.0.output.dense"));
    }

    #[test]
    fn other_targets_are_regexes_over_the_whole_name() {
        assert!(matches(
            &[r"encoder\.layer\.[0-2]\..*query"],
            "encoder.layer.1.attention.self.query"
        ));
        assert!(!matches(
            &[r"encoder\.layer\.[0-2]\..*query"],
            "encoder.layer.3.attention.self.query"
        ));
        // A full match: a regex that only matches a part selects nothing.
        assert!(!matches(
            &[r"layer\.1\..*"],
            "encoder.layer.1.attention.self.query"
        ));
        assert!(target_matcher(&["(".to_string()]).is_err());
    }

    #[test]
    fn peft_targets_keep_plain_names_and_spell_out_regexes() {
        let mut spec = LoraSpec {
            r: 8,
            alpha: 16.0,
            dropout: 0.1,
            target_modules: vec!["query".into(), "value".into()],
            modules: vec!["encoder.layer.0.attention.self.query".into()],
        };
        assert_eq!(spec.peft_targets(), ["query", "value"]);
        spec.target_modules = vec![r"encoder\..*query".into()];
        assert_eq!(
            spec.peft_targets(),
            ["encoder.layer.0.attention.self.query"]
        );
        let config = adapter_config(&spec, Path::new("/models/base"), &["classifier".into()]);
        assert_eq!(config["lora_alpha"], 16);
        assert_eq!(config["lora_dropout"], 0.1);
        assert_eq!(config["modules_to_save"], json!(["classifier"]));
    }

    #[test]
    fn adapter_folders_with_what_graft_cannot_do_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let write = |config: &str| {
            std::fs::write(dir.path().join(ADAPTER_CONFIG), config).unwrap();
        };
        let error = |expect: &str| {
            let message = match PeftAdapter::read(dir.path()) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("accepted"),
            };
            assert!(message.contains(expect), "{message}");
        };
        write(r#"{"peft_type": "IA3"}"#);
        error("LoRA adapters only");
        write(r#"{"peft_type": "LORA", "r": 8, "lora_alpha": 8, "use_dora": true}"#);
        error("DoRA");
        write(r#"{"peft_type": "LORA", "r": 8, "lora_alpha": 8, "rank_pattern": {"q": 4}}"#);
        error("rank_pattern");
        write(r#"{"peft_type": "LORA", "r": 8, "lora_alpha": 8}"#);
        error("adapter_model.safetensors: missing");
        std::fs::write(dir.path().join(ADAPTER_WEIGHTS), b"not safetensors").unwrap();
        error("not a safetensors file");
    }
}
