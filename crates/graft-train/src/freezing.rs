//! Which tensors train: the model's parameter table (user-facing names, backbone blocks), freeze
//! states from `[freeze]` (whole backbone, first N blocks, name patterns, gradual unfreezing), and
//! applying them with burn's `freeze_group`, which also puts frozen dropout and normalization
//! layers in inference mode.
//!
//! Parameter ids are made stable (a hash of the module path), so optimizer state saved in a
//! checkpoint finds its tensors again in a new process.

use std::collections::BTreeSet;

use burn::module::{Flag, Module, ModuleMapper, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::tensor::Tensor;
use regex::Regex;
use serde::Serialize;

use graft_model::Backbone;

use crate::config::{BlockSelection, FreezeSection};

/// Where a module path sits, as the user sees it.
pub struct Placement {
    /// The upstream tensor name (`encoder.layer.0.attention.self.query.weight`) or the head's.
    pub name: String,
    /// The backbone block (0 = embeddings / stem), `None` for the head.
    pub block: Option<usize>,
}

/// Maps a module path to its user-facing name and block.
pub trait Describe {
    fn place(&self, path: &str) -> Placement;
    /// How many backbone blocks there are.
    fn num_blocks(&self) -> usize;
    /// Whether the path belongs to a BatchNorm layer.
    fn is_batchnorm(&self, _path: &str) -> bool {
        false
    }
}

/// Upstream names use `weight`/`bias` where burn's norms say `gamma`/`beta`.
fn norm_names(name: String) -> String {
    match (name.strip_suffix(".gamma"), name.strip_suffix(".beta")) {
        (Some(stem), _) => format!("{stem}.weight"),
        (_, Some(stem)) => format!("{stem}.bias"),
        _ => name,
    }
}

/// A [`Classifier`](crate::classifier::Classifier): the backbone under `backbone.`, named and
/// grouped into blocks by its architecture, and the head under `head.`.
pub struct ClassifierLayout {
    backbone: Backbone,
}

impl ClassifierLayout {
    pub fn of(backbone: &Backbone) -> Self {
        Self {
            backbone: backbone.clone(),
        }
    }

    fn inner<'p>(&self, path: &'p str) -> Option<&'p str> {
        Backbone::inner_path(path.strip_prefix("backbone.")?)
    }

    /// Whether the backbone has BatchNorm layers.
    pub fn has_batchnorm(&self) -> bool {
        use burn::store::ModuleSnapshot;
        let architecture = self.backbone.architecture();
        self.backbone
            .collect(None, None, false)
            .iter()
            .filter_map(|tensor| Backbone::inner_path(&tensor.name).map(str::to_string))
            .any(|inner| architecture.is_batchnorm(&inner))
    }
}

impl Describe for ClassifierLayout {
    fn place(&self, path: &str) -> Placement {
        // A LoRA factor is named as PEFT names it, after the layer it adapts.
        for (suffix, factor) in [(".weight.lora.a", "lora_A"), (".weight.lora.b", "lora_B")] {
            if let Some(base) = path.strip_suffix(suffix) {
                let layer = self.place(&format!("{base}.weight"));
                let module = layer.name.strip_suffix(".weight").unwrap_or(&layer.name);
                return Placement {
                    name: format!("{module}.{factor}.weight"),
                    block: layer.block,
                };
            }
        }
        match self.inner(path) {
            Some(inner) => {
                let architecture = self.backbone.architecture();
                Placement {
                    name: norm_names(architecture.upstream_name(inner)),
                    block: Some(architecture.block_of(inner)),
                }
            }
            None => Placement {
                name: path.to_string(),
                block: None,
            },
        }
    }

    fn num_blocks(&self) -> usize {
        self.backbone.architecture().num_blocks()
    }

    fn is_batchnorm(&self, path: &str) -> bool {
        self.inner(path)
            .is_some_and(|inner| self.backbone.architecture().is_batchnorm(inner))
    }
}

/// A model whose only parameters are a head (trained on cached features).
pub struct HeadOnly;

impl Describe for HeadOnly {
    fn place(&self, path: &str) -> Placement {
        Placement {
            name: format!("head.{path}"),
            block: None,
        }
    }
    fn num_blocks(&self) -> usize {
        0
    }
}

/// One tensor of the model.
#[derive(Debug, Clone, Serialize)]
pub struct TensorEntry {
    pub name: String,
    #[serde(skip)]
    pub id: ParamId,
    pub shape: Vec<usize>,
    pub block: Option<usize>,
    /// Running statistics of a norm layer: state, not a trainable parameter.
    #[serde(skip)]
    pub buffer: bool,
    #[serde(skip)]
    pub batchnorm: bool,
    /// A LoRA factor: with adapters, these are the backbone's only trainable tensors.
    #[serde(skip)]
    pub lora: bool,
}

impl TensorEntry {
    /// Trainable values (0 for buffers).
    pub fn numel(&self) -> usize {
        if self.buffer {
            0
        } else {
            self.shape.iter().product()
        }
    }

    /// Biases and normalization weights (rank ≤ 1), which get no weight decay by default.
    pub fn is_bias_or_norm(&self) -> bool {
        self.shape.len() <= 1
    }
}

/// Every tensor and training flag of a model, in module order.
pub struct ParamTable {
    pub tensors: Vec<TensorEntry>,
    /// Training flags (dropout, batch norm) with their block and whether they are BatchNorm's.
    flags: Vec<(ParamId, Option<usize>, bool)>,
    pub num_blocks: usize,
}

/// The module path being visited, and the container type of each segment.
#[derive(Default)]
pub(crate) struct PathStack(Vec<(String, String)>);

impl PathStack {
    pub(crate) fn enter(&mut self, name: &str, container: &str) {
        self.0.push((name.to_string(), container.to_string()));
    }
    pub(crate) fn exit(&mut self) {
        self.0.pop();
    }
    /// Whether the current tensor is a linear layer's weight, which PyTorch stores transposed.
    pub(crate) fn is_linear_weight(&self) -> bool {
        self.0
            .last()
            .is_some_and(|(name, container)| name == "weight" && container == "Struct:Linear")
    }
    /// Whether the current tensor is a LoRA factor (`<weight>.lora.a` or `.b`), which PEFT
    /// stores transposed as `lora_A.weight` / `lora_B.weight`.
    pub(crate) fn is_lora_factor(&self) -> bool {
        self.0
            .last()
            .is_some_and(|(_, container)| container == "Struct:LoraAdapter")
    }
    pub(crate) fn joined(&self) -> String {
        let names: Vec<&str> = self.0.iter().map(|(name, _)| name.as_str()).collect();
        names.join(".")
    }
}

struct TableVisitor<'a> {
    path: PathStack,
    describe: &'a dyn Describe,
    tensors: Vec<TensorEntry>,
    flags: Vec<(ParamId, Option<usize>, bool)>,
}

impl ModuleVisitor for TableVisitor<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.path.joined();
        let place = self.describe.place(&path);
        let mut shape = param.shape().to_vec();
        let lora = self.path.is_lora_factor();
        if (self.path.is_linear_weight() || lora) && shape.len() == 2 {
            shape.reverse();
        }
        self.tensors.push(TensorEntry {
            lora,
            buffer: path.ends_with("running_mean") || path.ends_with("running_var"),
            batchnorm: self.describe.is_batchnorm(&path),
            name: place.name,
            id: param.id,
            shape,
            block: place.block,
        });
    }
    fn visit_flag(&mut self, flag: &Param<Flag>) {
        let path = self.path.joined();
        let block = self.describe.place(&path).block;
        self.flags
            .push((flag.id, block, self.describe.is_batchnorm(&path)));
    }
}

impl ParamTable {
    pub fn of<M: Module>(model: &M, describe: &dyn Describe) -> Self {
        let mut visitor = TableVisitor {
            path: PathStack::default(),
            describe,
            tensors: Vec::new(),
            flags: Vec::new(),
        };
        model.visit(&mut visitor);
        Self {
            tensors: visitor.tensors,
            flags: visitor.flags,
            num_blocks: describe.num_blocks(),
        }
    }

    pub fn ids_where(&self, keep: impl Fn(&TensorEntry) -> bool) -> Vec<ParamId> {
        self.tensors
            .iter()
            .filter(|t| keep(t))
            .map(|t| t.id)
            .collect()
    }

    /// The frozen tensors at `epoch` (1-based) under `freeze`.
    pub fn frozen_at(&self, freeze: &FreezeSection, epoch: usize) -> Result<FreezeState, String> {
        if let Some(layers) = freeze.layers
            && layers > self.num_blocks
        {
            return Err(format!(
                "[freeze] layers = {layers}, but the backbone has {} blocks",
                self.num_blocks
            ));
        }
        let patterns = freeze
            .patterns
            .iter()
            .map(|p| Regex::new(&format!("^(?:{p})$")).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        // Blocks at or above this index thaw through the unfreeze schedule.
        let thawed_from = freeze
            .unfreeze
            .iter()
            .filter(|s| s.epoch <= epoch)
            .map(|s| match s.layers {
                BlockSelection::All => 0,
                BlockSelection::Last(n) => self.num_blocks.saturating_sub(n),
            })
            .min()
            .unwrap_or(usize::MAX);
        let whole = freeze.whole_backbone();
        let keep_bn = freeze.train_batchnorm;
        // With LoRA the backbone's own tensors never train; [freeze] selects among the adapters.
        let lora = self.tensors.iter().any(|t| t.lora);
        let frozen: BTreeSet<ParamId> = self
            .tensors
            .iter()
            .filter(|t| {
                let Some(block) = t.block else { return false };
                if lora && !t.lora {
                    return true;
                }
                if block >= thawed_from || (keep_bn && t.batchnorm) {
                    return false;
                }
                whole
                    || freeze.layers.is_some_and(|n| block < n)
                    || patterns.iter().any(|p| p.is_match(&t.name))
            })
            .map(|t| t.id)
            .collect();
        // A block's dropout and normalization run as in inference once all its tensors are frozen.
        let blocks_all_frozen: BTreeSet<usize> = (0..self.num_blocks)
            .filter(|&b| {
                let mut in_block = self
                    .tensors
                    .iter()
                    .filter(|t| t.block == Some(b) && !t.buffer && !(keep_bn && t.batchnorm))
                    // With LoRA (PEFT's training), dropout stays on except where [freeze]
                    // stopped a block's adapters.
                    .filter(|t| !lora || t.lora);
                in_block.clone().next().is_some() && in_block.all(|t| frozen.contains(&t.id))
            })
            .collect();
        let flags = self
            .flags
            .iter()
            .filter(|(_, block, bn)| {
                block.is_some_and(|b| blocks_all_frozen.contains(&b)) && !(keep_bn && *bn)
            })
            .map(|(id, _, _)| *id)
            .collect();
        Ok(FreezeState { frozen, flags })
    }
}

/// The frozen tensors (and frozen training flags) at one point of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezeState {
    pub frozen: BTreeSet<ParamId>,
    flags: BTreeSet<ParamId>,
}

impl FreezeState {
    /// Applies the state: everything trainable, then the frozen set frozen with `freeze_group`.
    pub fn apply<M: Module>(&self, model: M) -> M {
        let ids: Vec<ParamId> = self.frozen.iter().chain(&self.flags).copied().collect();
        let model = model.unfreeze();
        if ids.is_empty() {
            model
        } else {
            model.freeze_group(ParamGroup::from_ids(ids))
        }
    }

    pub fn is_frozen(&self, id: &ParamId) -> bool {
        self.frozen.contains(id)
    }
}

struct StableIds {
    path: PathStack,
}

fn path_hash(path: &str) -> u64 {
    // FNV-1a: stable across processes and platforms.
    path.bytes().fold(0xcbf29ce484222325, |hash, byte| {
        (hash ^ byte as u64).wrapping_mul(0x100000001b3)
    })
}

impl ModuleMapper for StableIds {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, mut param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.id = ParamId::from(path_hash(&self.path.joined()));
        param
    }
}

/// Gives every tensor an id derived from its module path.
pub fn stable_ids<M: Module>(model: M) -> M {
    model.map(&mut StableIds {
        path: PathStack::default(),
    })
}
