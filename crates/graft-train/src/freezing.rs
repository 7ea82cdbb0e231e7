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

use crate::config::{BlockSelection, FreezeSection};

/// Where a module path sits, as the user sees it.
pub struct Placement {
    /// The upstream tensor name (`encoder.layer.0.attention.self.query.weight`) or the head's.
    pub name: String,
    /// The backbone block (0 = embeddings / stem), `None` for the head.
    pub block: Option<usize>,
    /// A linear layer's weight, which upstream stores transposed (`[out, in]`).
    pub transposed: bool,
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

/// An image classifier: a CNN under `backbone.` (EfficientNet-Lite or ResNet), the head under
/// `head.`. Blocks: the stem (0), then each stage, then (EfficientNet) the head convolution.
pub struct VisionLayout {
    pub backbone: graft_model::vision::VisionArchitecture,
    /// EfficientNet: the stage of each MBConv block.
    pub stage_of_block: Vec<usize>,
}

impl VisionLayout {
    pub fn of(backbone: &graft_model::vision::VisionBackbone) -> Self {
        use graft_model::vision::{VisionArchitecture, VisionBackbone};
        match backbone {
            VisionBackbone::EfficientNet(m) => {
                // A stage starts where the width changes or the block strides.
                let mut stage = 0;
                let mut stages = Vec::new();
                for (i, block) in m.blocks.iter().enumerate() {
                    let width = block.bn2.gamma.dims()[0];
                    let previous = i.checked_sub(1).map(|p| m.blocks[p].bn2.gamma.dims()[0]);
                    if previous.is_some_and(|p| p != width) {
                        stage += 1;
                    }
                    stages.push(stage);
                }
                Self {
                    backbone: VisionArchitecture::EfficientnetLite,
                    stage_of_block: stages,
                }
            }
            VisionBackbone::ResNet(_) => Self {
                backbone: VisionArchitecture::Resnet,
                stage_of_block: Vec::new(),
            },
        }
    }

    /// The backbone-relative path: without `backbone.` and the enum variant.
    fn inner<'p>(&self, path: &'p str) -> Option<&'p str> {
        let rest = path.strip_prefix("backbone.")?;
        Some(
            rest.strip_prefix("EfficientNet.")
                .or_else(|| rest.strip_prefix("ResNet."))
                .unwrap_or(rest),
        )
    }
}

impl Describe for VisionLayout {
    fn place(&self, path: &str) -> Placement {
        use graft_model::vision::VisionArchitecture;
        let Some(inner) = self.inner(path) else {
            return Placement {
                name: path.to_string(),
                block: None,
                transposed: path.ends_with(".weight"),
            };
        };
        let first = inner.split('.').next().unwrap_or("");
        let index = inner
            .split('.')
            .nth(1)
            .and_then(|i| i.parse::<usize>().ok())
            .unwrap_or(0);
        let (name, block) = match self.backbone {
            VisionArchitecture::EfficientnetLite => {
                let stages = self.stage_of_block.last().map_or(0, |s| s + 1);
                let block = match first {
                    "conv_stem" | "bn0" => 0,
                    "blocks" => 1 + self.stage_of_block.get(index).copied().unwrap_or(0),
                    _ => stages + 1,
                };
                (graft_model::efficientnet::upstream_name(inner), block)
            }
            VisionArchitecture::Resnet => {
                let block = match first {
                    "layer1" => 1,
                    "layer2" => 2,
                    "layer3" => 3,
                    "layer4" => 4,
                    _ => 0,
                };
                (graft_model::resnet::upstream_name(inner), block)
            }
        };
        Placement {
            transposed: first == "fc" && name.ends_with(".weight"),
            name: norm_names(name),
            block: Some(block),
        }
    }

    fn num_blocks(&self) -> usize {
        match self.backbone {
            graft_model::vision::VisionArchitecture::EfficientnetLite => {
                self.stage_of_block.last().map_or(0, |s| s + 1) + 2
            }
            graft_model::vision::VisionArchitecture::Resnet => 5,
        }
    }

    fn is_batchnorm(&self, path: &str) -> bool {
        path.split('.').any(|segment| {
            segment.starts_with("bn") && segment[2..].chars().all(|c| c.is_ascii_digit())
        })
    }
}

/// A model whose only parameters are a head (trained on cached features).
pub struct HeadOnly;

impl Describe for HeadOnly {
    fn place(&self, path: &str) -> Placement {
        Placement {
            name: format!("head.{path}"),
            block: None,
            transposed: path.ends_with(".weight"),
        }
    }
    fn num_blocks(&self) -> usize {
        0
    }
}

/// A text classifier: the BERT encoder under `encoder.bert.`, the head under `head.`. Blocks are
/// the embeddings, then each encoder layer; the pooler belongs to the last layer's block.
pub struct BertClassifierLayout {
    pub num_layers: usize,
}

impl Describe for BertClassifierLayout {
    fn place(&self, path: &str) -> Placement {
        let Some(inner) = path.strip_prefix("encoder.bert.") else {
            return Placement {
                name: path.to_string(),
                block: None,
                transposed: path.ends_with(".weight"),
            };
        };
        let block = if inner.starts_with("embeddings.") {
            0
        } else if let Some(rest) = inner.strip_prefix("encoder.layer.") {
            rest.split('.')
                .next()
                .and_then(|i| i.parse::<usize>().ok())
                .map_or(0, |i| i + 1)
        } else {
            self.num_layers
        };
        // burn's LayerNorm names its affine parameters gamma and beta.
        let name = norm_names(graft_model::bert::upstream_name(inner));
        Placement {
            transposed: name.ends_with(".weight")
                && !inner.starts_with("embeddings.")
                && !name.contains("LayerNorm"),
            name,
            block: Some(block),
        }
    }
    fn num_blocks(&self) -> usize {
        self.num_layers + 1
    }
}

/// One tensor of the model.
#[derive(Debug, Clone, Serialize)]
pub struct TensorEntry {
    pub name: String,
    #[serde(skip)]
    pub path: String,
    #[serde(skip)]
    pub id: ParamId,
    pub shape: Vec<usize>,
    pub block: Option<usize>,
    /// Running statistics of a norm layer: state, not a trainable parameter.
    #[serde(skip)]
    pub buffer: bool,
    #[serde(skip)]
    pub batchnorm: bool,
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

#[derive(Default)]
struct PathStack(Vec<String>);

impl PathStack {
    fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
    fn exit(&mut self) {
        self.0.pop();
    }
    fn joined(&self) -> String {
        self.0.join(".")
    }
}

struct TableVisitor<'a> {
    path: PathStack,
    describe: &'a dyn Describe,
    tensors: Vec<TensorEntry>,
    flags: Vec<(ParamId, Option<usize>, bool)>,
}

impl ModuleVisitor for TableVisitor<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.path.joined();
        let place = self.describe.place(&path);
        let mut shape = param.shape().to_vec();
        if place.transposed && shape.len() == 2 {
            shape.reverse();
        }
        self.tensors.push(TensorEntry {
            buffer: path.ends_with("running_mean") || path.ends_with("running_var"),
            batchnorm: self.describe.is_batchnorm(&path),
            name: place.name,
            path,
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
        let frozen: BTreeSet<ParamId> = self
            .tensors
            .iter()
            .filter(|t| {
                let Some(block) = t.block else { return false };
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
                    .filter(|t| t.block == Some(b) && !t.buffer && !(keep_bn && t.batchnorm));
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
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bert_paths_map_to_upstream_names_and_blocks() {
        let layout = BertClassifierLayout { num_layers: 6 };
        let p = layout.place("encoder.bert.encoder.layer.3.attention.self_attn.query.weight");
        assert_eq!(p.name, "encoder.layer.3.attention.self.query.weight");
        assert_eq!(p.block, Some(4));
        assert!(p.transposed);
        let p = layout.place("encoder.bert.embeddings.layer_norm.gamma");
        assert_eq!(p.name, "embeddings.LayerNorm.weight");
        assert!(!p.transposed);
        assert_eq!(p.block, Some(0));
        assert_eq!(
            layout.place("encoder.bert.pooler.dense.bias").block,
            Some(6)
        );
        assert_eq!(layout.place("head.layers.0.weight").block, None);
    }
}
