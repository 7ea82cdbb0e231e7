//! The training loop: seeded shuffling, optimizer steps over (accumulated) mini-batches with
//! per-group learning rates and schedules, global-norm clipping, validation after every epoch,
//! the freeze schedule applied at each epoch's start, early stopping on a chosen metric, and a
//! checkpoint after every epoch from which a killed run resumes exactly.
//!
//! The loop is written here rather than with burn-train's `Learner` because the frozen-backbone
//! case trains on precomputed features, not on the model's own inputs, and because exact resume
//! needs the data order and dropout seeds under our control. It takes a closure that yields the
//! outputs for a list of example indices, and uses burn's optimizers, parameter groups
//! (`ModuleOptimizer::with_group`, `ModuleLrScheduler::with_group`) and `freeze_group`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use burn::lr_scheduler::module_lr_scheduler::{ModuleLearningRate, ModuleLrScheduler};
use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{
    AdamConfig, AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer, SgdConfig,
};
use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::checkpoint::{CheckpointState, Checkpoints, changed_keys, load_model};
use crate::config::{FreezeSection, OptimizerKind, Precision, TrainSection};
use crate::error::TrainError;
use crate::files::write_atomic;
use crate::freezing::{FreezeState, ParamTable, stable_ids};
use crate::loss::{Targets, TaskLoss};
use crate::plots::History;
use crate::precision::{LossScaler, cast_model, to_f32};
use crate::progress::{EpochMetrics, Progress, StepMetrics};
use crate::schedule::{ScheduleShape, ScheduledLr};
use crate::task::higher_is_better;

/// Which examples a forward pass is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Training examples, in epoch `epoch` (1-based; seeds any augmentation).
    Train {
        epoch: usize,
    },
    Valid,
}

/// The task's validation metrics from the validation outputs (`[n][k]`, raw model outputs).
pub type MetricsFn<'a> = dyn Fn(&[Vec<f32>]) -> BTreeMap<String, f64> + 'a;

/// What to train and how, besides the model and its forward pass.
pub struct FitSpec<'a> {
    pub train: &'a TrainSection,
    pub freeze: &'a FreezeSection,
    pub loss: &'a TaskLoss,
    pub train_targets: &'a Targets,
    pub valid_targets: &'a Targets,
    pub metrics: &'a MetricsFn<'a>,
    /// Names the model's tensors and blocks (made with the model given to [`fit`]).
    pub describe: &'a dyn crate::freezing::Describe,
    /// The run folder: `metrics.jsonl` and `checkpoints/` go here.
    pub run_dir: &'a Path,
    /// Each training example's length (tokens), for `group_by_length`.
    pub lengths: Option<&'a [usize]>,
    /// The resolved config, stored in checkpoints and compared on resume.
    pub config_text: String,
    pub resume: Resume,
    /// More autodiff devices each training batch is split over (data parallel), besides
    /// [`fit`]'s own; their gradients are summed on that one.
    pub replicas: &'a [Device],
}

/// Whether to continue from the run folder's last checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resume {
    #[default]
    No,
    /// Continue; refuse if the config changed.
    Yes,
    /// Continue even if the config changed.
    Force,
}

pub struct FitOutcome<M> {
    /// The model of the best epoch, in inference mode.
    pub model: M,
    pub history: Vec<EpochMetrics>,
    /// Every optimizer step's metrics, those of epochs before a resume included.
    pub steps: Vec<StepMetrics>,
    pub best_epoch: usize,
    /// Set when early stopping ended the run before its last epoch.
    pub stopped_early: bool,
}

fn adamw(decay: f64) -> AdamWConfig {
    AdamWConfig::new()
        .with_epsilon(1e-8)
        .with_weight_decay(decay as f32)
}

fn adam(decay: f64) -> AdamConfig {
    AdamConfig::new()
        .with_epsilon(1e-8)
        .with_weight_decay((decay > 0.0).then(|| WeightDecayConfig::new(decay as f32)))
}

fn sgd(config: &TrainSection, decay: f64) -> SgdConfig {
    SgdConfig::new()
        .with_momentum((config.momentum > 0.0).then(|| {
            MomentumConfig::new()
                .with_momentum(config.momentum)
                .with_dampening(0.0)
                .with_nesterov(config.nesterov)
        }))
        .with_weight_decay((decay > 0.0).then(|| WeightDecayConfig::new(decay as f32)))
}

/// The optimizer of `config`, with no weight decay on `no_decay` (biases and norms by default).
pub fn optimizer(config: &TrainSection, no_decay: Vec<ParamId>) -> ModuleOptimizer {
    let decay = config.weight_decay;
    let split = decay > 0.0 && !no_decay.is_empty();
    let group = || ParamGroup::from_ids(no_decay.clone());
    match config.optimizer {
        OptimizerKind::Adamw if split => {
            adamw(decay)
                .init()
                .with_group(group(), adamw(0.0).build(), None)
        }
        OptimizerKind::Adamw => adamw(decay).init(),
        OptimizerKind::Adam if split => {
            adam(decay)
                .init()
                .with_group(group(), adam(0.0).build(), None)
        }
        OptimizerKind::Adam => adam(decay).init(),
        OptimizerKind::Sgd if split => {
            sgd(config, decay)
                .init()
                .with_group(group(), sgd(config, 0.0).build(), None)
        }
        OptimizerKind::Sgd => sgd(config, decay).init(),
    }
}

/// Per-group peak learning rates: the head gets `lr`; backbone tensors get `backbone_lr`. With
/// `layer_decay` (timm's), block b of n gets `lr · decay^(n - b)`, or with `backbone_lr` as well,
/// `backbone_lr · decay^(n - 1 - b)` (the top block at `backbone_lr`).
pub fn lr_groups(config: &TrainSection, table: &ParamTable) -> Vec<(Vec<ParamId>, f64)> {
    let n = table.num_blocks;
    let mut groups = Vec::new();
    match (config.backbone_lr, config.layer_decay) {
        (Some(lr), None) => groups.push((table.ids_where(|t| t.block.is_some()), lr)),
        (base, Some(decay)) => {
            for block in 0..n {
                let lr = match base {
                    Some(top) => top * decay.powi((n - 1 - block) as i32),
                    None => config.lr * decay.powi((n - block) as i32),
                };
                groups.push((table.ids_where(|t| t.block == Some(block)), lr));
            }
        }
        (None, None) => {}
    }
    groups.retain(|(ids, _)| !ids.is_empty());
    groups
}

fn scheduler(
    config: &TrainSection,
    table: &ParamTable,
    shape: ScheduleShape,
    step: usize,
) -> ModuleLrScheduler {
    let scheduled = |peak| ScheduledLr { peak, shape, step };
    lr_groups(config, table).into_iter().fold(
        ModuleLrScheduler::new(scheduled(config.lr)),
        |sched, (ids, peak)| sched.with_group(ParamGroup::from_ids(ids), scheduled(peak)),
    )
}

/// Scales all gradients so that their global L2 norm is at most `max_norm`, as PyTorch's
/// `clip_grad_norm_` (coefficient `max_norm / (norm + 1e-6)`, clamped to 1). Everything stays on
/// the device; returns the norm before clipping.
pub fn clip_global_norm<M: Module>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> Option<Tensor<1>> {
    struct SumSquares<'a> {
        grads: &'a GradientsParams,
        total: Option<Tensor<1>>,
    }
    impl ModuleVisitor for SumSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.get::<D>(param.id) {
                let sum = grad.powi_scalar(2).sum();
                self.total = Some(match self.total.take() {
                    Some(total) => total + sum,
                    None => sum,
                });
            }
        }
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: Tensor<1>,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.remove::<D>(param.id) {
                let factor = self.factor.clone().reshape([1; D]);
                self.grads.register(param.id, grad * factor);
            }
        }
    }
    let mut sums = SumSquares { grads, total: None };
    model.visit(&mut sums);
    let norm = sums.total?.sqrt();
    let factor = ((norm.clone() + 1e-6).recip() * max_norm).clamp_max(1.0);
    model.visit(&mut Scale { grads, factor });
    Some(norm)
}

/// `batch` cut into `n` contiguous shards whose sizes differ by at most one (the first ones
/// larger), as PyTorch's `DistributedSampler` splits evenly.
fn shards(batch: &[usize], n: usize) -> Vec<&[usize]> {
    let (base, extra) = (batch.len() / n, batch.len() % n);
    let mut rest = batch;
    (0..n)
        .map(|i| {
            let (shard, tail) = rest.split_at(base + usize::from(i < extra));
            rest = tail;
            shard
        })
        .collect()
}

/// `Some(sum + value)`, or `Some(value)` for the first value.
fn add(sum: Option<Tensor<1>>, value: Tensor<1>) -> Option<Tensor<1>> {
    Some(match sum {
        Some(sum) => sum + value,
        None => value,
    })
}

/// The seed of epoch `epoch`'s shuffle and dropout, derived from the run's seed.
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed.wrapping_mul(0x9e3779b97f4a7c15)
        .wrapping_add(epoch as u64)
        .rotate_left(17)
}

/// The order of the training examples in epoch `epoch`.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(epoch_seed(seed, epoch)));
    order
}

/// The epoch's batches: consecutive runs of the shuffled order, or with `group_by_length`,
/// batches of similar length (each window of 50 batches sorted by length, longest first, as
/// transformers' length-grouped sampler does).
pub fn batches_of(
    order: &[usize],
    config: &TrainSection,
    lengths: Option<&[usize]>,
) -> Vec<Vec<usize>> {
    match lengths {
        Some(lengths) if config.group_by_length => order
            .chunks(config.batch_size * 50)
            .flat_map(|window| {
                let mut window = window.to_vec();
                window.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
                window
                    .chunks(config.batch_size)
                    .map(<[usize]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect(),
        _ => order
            .chunks(config.batch_size)
            .map(<[usize]>::to_vec)
            .collect(),
    }
}

/// Optimizer steps in one epoch of `n` examples.
pub fn steps_per_epoch(n: usize, config: &TrainSection) -> usize {
    n.div_ceil(config.batch_size).div_ceil(config.accumulate)
}

fn trainable_count(table: &ParamTable, state: &FreezeState) -> usize {
    table
        .tensors
        .iter()
        .filter(|t| !state.is_frozen(&t.id))
        .map(|t| t.numel())
        .sum()
}

fn improved(metric: &str, value: f64, best: Option<f64>, min_delta: f64) -> bool {
    match best {
        None => true,
        Some(best) if higher_is_better(metric) => value > best + min_delta,
        Some(best) => value < best - min_delta,
    }
}

/// One `metrics.jsonl` line: `{"kind": kind, ...fields}`.
fn metrics_line<T: serde::Serialize>(kind: &str, record: &T) -> String {
    let mut object = serde_json::Map::new();
    object.insert("kind".into(), kind.into());
    if let serde_json::Value::Object(fields) = serde_json::to_value(record).expect("serializable") {
        object.extend(fields);
    }
    serde_json::Value::Object(object).to_string()
}

fn write_metrics(run_dir: &Path, lines: &[String]) -> Result<(), TrainError> {
    let mut text = lines.join("\n");
    text.push('\n');
    write_atomic(&run_dir.join("metrics.jsonl"), text.as_bytes())
}

/// What the loop carries from one epoch to the next; a checkpoint keeps it.
struct LoopState<M> {
    /// The first epoch still to train.
    next_epoch: usize,
    global_step: usize,
    history: Vec<EpochMetrics>,
    /// Every optimizer step's metrics, those of epochs before a resume included.
    steps: Vec<StepMetrics>,
    /// The lines of `metrics.jsonl` so far.
    lines: Vec<String>,
    /// The best epoch so far: its monitored value, its number and its model in inference mode.
    best: Option<(f64, usize, M)>,
    /// Epochs since the best one.
    since_best: usize,
    /// The best model's file in the checkpoints folder.
    best_file: String,
    /// The freeze state the model is in (none before this run's first epoch).
    frozen: Option<FreezeState>,
    /// f16's loss scale.
    scaler: Option<LossScaler>,
}

impl<M> LoopState<M> {
    fn fresh(precision: Precision) -> Self {
        Self {
            next_epoch: 1,
            global_step: 0,
            history: Vec::new(),
            steps: Vec::new(),
            lines: Vec::new(),
            best: None,
            since_best: 0,
            best_file: String::new(),
            frozen: None,
            scaler: LossScaler::for_precision(precision),
        }
    }
}

/// What an epoch's training leaves for its metrics.
struct EpochTraining {
    train_loss: f64,
    /// The head's learning rate at the epoch's last step.
    last_lr: f64,
}

/// What stays fixed through one [`fit`]: the spec, the forward pass, the model's tensors and
/// where checkpoints go.
struct Trainer<'a, 's, F> {
    spec: &'a FitSpec<'s>,
    forward: F,
    device: &'a Device,
    progress: &'a dyn Progress,
    table: ParamTable,
    checkpoints: Checkpoints,
    /// Optimizer steps per epoch.
    per_epoch: usize,
    /// The tensor whose learning rate the step metrics report as the backbone's: the top
    /// block's, when the backbone has learning rates of its own.
    backbone_lr_param: Option<ParamId>,
}

/// Trains `model` on `device` (an autodiff device). `forward(model, split, indices, device)`
/// returns the outputs of those examples, with the inputs put on `device` (the model's).
pub fn fit<M, F>(
    model: M,
    forward: F,
    spec: &FitSpec,
    device: &Device,
    progress: &dyn Progress,
) -> Result<FitOutcome<M>, TrainError>
where
    M: Module,
    F: Fn(&M, Split, &[usize], &Device) -> Tensor<2> + Sync,
{
    let config = spec.train;
    let model = stable_ids(model);
    let table = ParamTable::of(&model, spec.describe);
    let per_epoch = steps_per_epoch(spec.train_targets.len(), config);
    let shape = ScheduleShape::new(
        config.schedule,
        per_epoch * config.epochs,
        config.warmup_steps,
        config.warmup_ratio,
    );
    let no_decay = if config.decay_norm_and_bias {
        Vec::new()
    } else {
        table.ids_where(|t| t.is_bias_or_norm())
    };
    let separate_backbone_lr = config.backbone_lr.is_some() || config.layer_decay.is_some();
    let top_block_id = table
        .tensors
        .iter()
        .rev()
        .find(|t| t.block.is_some())
        .map(|t| t.id);
    let trainer = Trainer {
        spec,
        forward,
        device,
        progress,
        checkpoints: Checkpoints::in_run(spec.run_dir),
        per_epoch,
        backbone_lr_param: top_block_id.filter(|_| separate_backbone_lr),
        table,
    };
    let (mut model, mut optim, mut state) = trainer.start(model, optimizer(config, no_decay))?;
    let mut sched = scheduler(config, &trainer.table, shape, state.global_step);
    let mut stopped_early = false;
    for epoch in state.next_epoch..=config.epochs {
        if config.patience.is_some_and(|p| state.since_best >= p) {
            stopped_early = true;
            break;
        }
        let started = Instant::now();
        model = trainer.apply_freeze(epoch, model, &mut state)?;
        let trained;
        (model, trained) = trainer.train_epoch(epoch, model, &mut optim, &mut sched, &mut state)?;
        let (metrics, is_best) =
            trainer.validate_epoch(epoch, &model, trained, started, &mut state)?;
        trainer.save_checkpoint(epoch, &model, &optim, &state)?;
        // Reported once the epoch is saved.
        progress.epoch(&metrics, is_best);
    }
    if stopped_early {
        progress.info(&format!(
            "early stopping: {} has not improved for {} epochs",
            config.monitor,
            config.patience.unwrap_or(0)
        ));
    }
    let (_, best_epoch, model) = state.best.ok_or_else(|| {
        TrainError::Unsupported("training ran no epoch (the checkpoint is already complete)".into())
    })?;
    Ok(FitOutcome {
        model,
        history: state.history,
        steps: state.steps,
        best_epoch,
        stopped_early,
    })
}

impl<F> Trainer<'_, '_, F> {
    /// A fresh run's start (an earlier run's checkpoints in the folder removed), or with
    /// `resume`, the last complete checkpoint's.
    fn start<M: Module>(
        &self,
        model: M,
        optim: ModuleOptimizer,
    ) -> Result<(M, ModuleOptimizer, LoopState<M>), TrainError> {
        if self.spec.resume != Resume::No {
            return self.resume(model, optim);
        }
        let dir = &self.checkpoints.dir;
        if dir.exists() {
            // A fresh run replaces an earlier run's checkpoints in this folder.
            std::fs::remove_dir_all(dir).map_err(|source| TrainError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        Ok((model, optim, LoopState::fresh(self.spec.train.precision)))
    }

    /// The model, optimizer and loop state of the last complete checkpoint; a changed config is
    /// refused unless the resume is forced.
    fn resume<M: Module>(
        &self,
        model: M,
        optim: ModuleOptimizer,
    ) -> Result<(M, ModuleOptimizer, LoopState<M>), TrainError> {
        let (spec, checkpoints, progress) = (self.spec, &self.checkpoints, self.progress);
        let Some(folder) = checkpoints.latest()? else {
            return Err(TrainError::NothingToResume {
                path: checkpoints.dir.clone(),
            });
        };
        let saved = Checkpoints::read_state(&folder)?;
        let changed = changed_keys(&saved.config, &spec.config_text);
        if !changed.is_empty() && spec.resume != Resume::Force {
            return Err(TrainError::ConfigChanged {
                path: folder.join("state.json"),
                keys: changed,
            });
        }
        if !changed.is_empty() {
            progress.info(&format!(
                "resuming despite config changes: {}",
                changed.join(", ")
            ));
        }
        let model = stable_ids(load_model(model, &folder.join("model.bpk"))?);
        let optim = Checkpoints::load_optimizer(&folder, optim)?;
        let best_model = stable_ids(load_model(
            model.clone(),
            &checkpoints.dir.join(&saved.best_file),
        )?);
        let steps = match History::parse(&saved.metrics_lines.join("\n")) {
            Ok(earlier) => earlier.steps,
            Err(message) => {
                progress.info(&format!(
                    "warning: the checkpoint's step metrics are unreadable, so the training \
                     plot leaves them out: {message}"
                ));
                Vec::new()
            }
        };
        progress.info(&format!(
            "resumed from {} (epoch {}, step {})",
            folder.display(),
            saved.epoch,
            saved.global_step
        ));
        let state = LoopState {
            next_epoch: saved.epoch + 1,
            global_step: saved.global_step,
            history: saved.history,
            steps,
            lines: saved.metrics_lines,
            best: Some((
                f64::from_bits(saved.best_value_bits),
                saved.best_epoch,
                best_model.valid(),
            )),
            since_best: saved.epoch - saved.best_epoch,
            best_file: saved.best_file,
            frozen: None,
            scaler: saved
                .loss_scaler
                .or_else(|| LossScaler::for_precision(spec.train.precision)),
        };
        Ok((model, optim, state))
    }

    /// Puts `model` in epoch `epoch`'s freeze state, saying so when layers unfreeze.
    fn apply_freeze<M: Module>(
        &self,
        epoch: usize,
        model: M,
        state: &mut LoopState<M>,
    ) -> Result<M, TrainError> {
        let frozen = self
            .table
            .frozen_at(self.spec.freeze, epoch)
            .map_err(|message| TrainError::Config {
                path: self.spec.run_dir.join("config.toml"),
                message,
            })?;
        if state.frozen.as_ref() == Some(&frozen) {
            return Ok(model);
        }
        if state.frozen.is_some() {
            self.progress.info(&format!(
                "epoch {epoch}: unfreezing; {} trainable values",
                trainable_count(&self.table, &frozen)
            ));
        }
        let model = frozen.apply(model);
        state.frozen = Some(frozen);
        Ok(model)
    }

    /// Epoch `epoch`'s optimizer steps over the shuffled batches (accumulated, clipped, at the
    /// scheduled learning rates), each step recorded in `state`.
    fn train_epoch<M: Module>(
        &self,
        epoch: usize,
        mut model: M,
        optim: &mut ModuleOptimizer,
        sched: &mut ModuleLrScheduler,
        state: &mut LoopState<M>,
    ) -> Result<(M, EpochTraining), TrainError>
    where
        F: Fn(&M, Split, &[usize], &Device) -> Tensor<2> + Sync,
    {
        let (spec, config, progress) = (self.spec, self.spec.train, self.progress);
        self.device.seed(epoch_seed(config.seed, epoch));
        let order = epoch_order(spec.train_targets.len(), config.seed, epoch);
        progress.stage(&format!("epoch {epoch}/{}", config.epochs), self.per_epoch);
        // Summed on the device and read once per epoch: no host round trip per step. Each
        // step's loss is kept too, to name the step where a diverging loss went non-finite.
        let mut loss_total: Option<Tensor<1>> = None;
        let mut step_losses: Vec<(usize, f64, Tensor<1>)> = Vec::new();
        let mut last_lr = config.lr;
        let batches = batches_of(&order, config, spec.lengths);
        let batches: Vec<&[usize]> = batches.iter().map(Vec::as_slice).collect();
        let mut skipped = 0;
        for group in batches.chunks(config.accumulate) {
            if let Some(signal) = progress.interrupted() {
                return Err(interrupted(signal, &state.history));
            }
            let scale = state.scaler.map(|s| s.scale);
            let (mut grads, step_loss) =
                self.gradients(&model, epoch, group, &mut loss_total, scale);
            let finite = match &mut state.scaler {
                Some(scaler) => {
                    let finite = scaler.unscale(&model, &mut grads);
                    scaler.update(finite);
                    finite
                }
                None => true,
            };
            if let Some(max_norm) = config.clip_grad_norm.filter(|_| finite) {
                clip_global_norm(&model, &mut grads, max_norm);
            }
            let lrs: ModuleLearningRate = sched.step();
            last_lr = lrs.base();
            let backbone_lr = self.backbone_lr_param.map(|id| lrs.lr_from_param(id, None));
            if finite {
                model = optim.step(lrs, model, grads);
            } else {
                // GradScaler's rule: a step whose gradients overflowed is not taken.
                skipped += 1;
            }
            state.global_step += 1;
            if let Some(loss) = step_loss {
                step_losses.push((state.global_step, last_lr, loss));
            }
            let step = StepMetrics {
                step: state.global_step,
                epoch,
                lr: last_lr,
                backbone_lr,
            };
            state.lines.push(metrics_line("step", &step));
            state.steps.push(step);
            progress.advance(1);
        }
        progress.finish_stage();
        if let Some(scaler) = state.scaler.filter(|_| skipped > 0) {
            progress.info(&format!(
                "f16: {skipped} step(s) skipped because their gradients overflowed; loss scale \
                 now {}",
                scaler.scale
            ));
        }

        let train_loss = loss_total.map_or(0.0, |t| t.into_scalar::<f32>() as f64)
            / spec
                .loss
                .weight(spec.train_targets, &order)
                .max(f64::MIN_POSITIVE);
        if !train_loss.is_finite() {
            return Err(training_diverged(epoch, step_losses, &state.history));
        }
        Ok((
            model,
            EpochTraining {
                train_loss,
                last_lr,
            },
        ))
    }

    /// One optimizer step's gradients over `group`'s batches (each batch's loss divided by the
    /// group's weight, so they sum to the group's mean) and the step's loss; each batch's
    /// weighted loss is added to `loss_total` as well. With replicas, each batch is split into
    /// one shard per device and the shards' gradients summed on the model's device; with a
    /// `scale`, the gradients are those of the loss times the scale.
    fn gradients<M: Module>(
        &self,
        model: &M,
        epoch: usize,
        group: &[&[usize]],
        loss_total: &mut Option<Tensor<1>>,
        scale: Option<f64>,
    ) -> (GradientsParams, Option<Tensor<1>>)
    where
        F: Fn(&M, Split, &[usize], &Device) -> Tensor<2> + Sync,
    {
        let spec = self.spec;
        let denominator = spec
            .loss
            .weight(spec.train_targets, &group.concat())
            .max(f64::MIN_POSITIVE);
        let devices: Vec<&Device> = std::iter::once(self.device)
            .chain(spec.replicas.iter())
            .collect();
        let mut accumulator = GradientsAccumulator::<M>::new();
        let mut single = None;
        let mut step_loss = None;
        let split = Split::Train { epoch };
        let parts = group.len() * devices.len();
        for batch in group {
            // Replicas are made afresh from the model for each batch: a fork is a copy with
            // gradients of its own.
            let models = devices
                .iter()
                .enumerate()
                .map(|(i, &device)| {
                    let copy = if i == 0 {
                        model.clone()
                    } else {
                        model.clone().fork(device)
                    };
                    (copy, device.clone())
                })
                .collect();
            let shards = shards(batch, devices.len());
            let results = self.shard_gradients(models, &shards, split, denominator, scale);
            for (grads, loss) in results {
                let grads = grads.to_device(self.device, model);
                let loss = loss.to_device(self.device);
                *loss_total = add(loss_total.take(), loss.clone() * denominator);
                step_loss = add(step_loss, loss);
                if parts == 1 {
                    single = Some(grads);
                } else {
                    accumulator.accumulate(model, grads);
                }
            }
        }
        (single.unwrap_or_else(|| accumulator.grads()), step_loss)
    }

    /// Each shard's gradients (and loss, without autodiff) on its model's device: in parallel
    /// threads when the devices differ, one after another when a device repeats (a shared
    /// device's random draws then keep one order).
    fn shard_gradients<M: Module>(
        &self,
        models: Vec<(M, Device)>,
        shards: &[&[usize]],
        split: Split,
        denominator: f64,
        scale: Option<f64>,
    ) -> Vec<(GradientsParams, Tensor<1>)>
    where
        F: Fn(&M, Split, &[usize], &Device) -> Tensor<2> + Sync,
    {
        let (forward, spec) = (&self.forward, self.spec);
        let (precision, loss_of, targets) = (spec.train.precision, spec.loss, spec.train_targets);
        let one = move |(model, device): (M, Device), shard: &[usize]| {
            let compute = cast_model(&model, precision);
            let outputs = to_f32(forward(&compute, split, shard, &device));
            let loss = loss_of.sum(outputs, targets, shard) / denominator;
            let scaled = match scale {
                Some(scale) => loss.clone() * scale,
                None => loss.clone(),
            };
            let grads = GradientsParams::from_grads(scaled.backward(), &model);
            (grads, loss.without_autodiff())
        };
        let distinct = models
            .iter()
            .enumerate()
            .all(|(i, (_, d))| models[..i].iter().all(|(_, other)| other != d));
        let pairs = models
            .into_iter()
            .zip(shards.iter().copied())
            .filter(|(_, shard)| !shard.is_empty());
        if !distinct || shards.len() == 1 {
            return pairs.map(|(m, shard)| one(m, shard)).collect();
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = pairs
                .map(|(m, shard)| scope.spawn(move || one(m, shard)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    }

    /// Validates the epoch's model, keeps it when it is the best so far (with checkpoints, its
    /// file too), and appends the epoch to the history and `metrics.jsonl`. Returns the epoch's
    /// metrics and whether it is the best.
    fn validate_epoch<M: Module>(
        &self,
        epoch: usize,
        model: &M,
        trained: EpochTraining,
        started: Instant,
        state: &mut LoopState<M>,
    ) -> Result<(EpochMetrics, bool), TrainError>
    where
        F: Fn(&M, Split, &[usize], &Device) -> Tensor<2> + Sync,
    {
        let config = self.spec.train;
        let inference = model.valid();
        let inference_device = self.device.clone().without_autodiff();
        let (valid_loss, valid) = validate(&inference, &self.forward, self.spec, &inference_device);
        if !valid_loss.is_finite() {
            let last = vec![(state.global_step, trained.last_lr, valid_loss as f32)];
            return Err(diverged("validation loss", epoch, last, &state.history));
        }
        let metrics = EpochMetrics {
            epoch,
            train_loss: trained.train_loss,
            valid_loss,
            valid,
            lr: trained.last_lr,
            trainable_parameters: state
                .frozen
                .as_ref()
                .map_or(0, |s| trainable_count(&self.table, s)),
            seconds: started.elapsed().as_secs_f64(),
        };
        let value = monitored(&config.monitor, &metrics);
        let is_best = improved(
            &config.monitor,
            value,
            state.best.as_ref().map(|b| b.0),
            config.min_delta,
        );
        if is_best {
            if config.checkpoints {
                state.best_file = self.checkpoints.save_best(model, epoch)?;
            }
            state.best = Some((value, epoch, inference));
            state.since_best = 0;
        } else {
            state.since_best += 1;
        }
        state.lines.push(metrics_line("epoch", &metrics));
        state.history.push(metrics.clone());
        write_metrics(self.spec.run_dir, &state.lines)?;
        Ok((metrics, is_best))
    }

    /// Saves epoch `epoch`'s checkpoint (model, optimizer, the loop's state), when
    /// `[train] checkpoints` is on.
    fn save_checkpoint<M: Module>(
        &self,
        epoch: usize,
        model: &M,
        optim: &ModuleOptimizer,
        state: &LoopState<M>,
    ) -> Result<(), TrainError> {
        if !self.spec.train.checkpoints {
            return Ok(());
        }
        let (best_value, best_epoch) = state.best.as_ref().map(|b| (b.0, b.1)).unwrap_or_default();
        let frozen = state
            .frozen
            .as_ref()
            .map(|s| {
                self.table
                    .tensors
                    .iter()
                    .filter(|t| s.is_frozen(&t.id))
                    .map(|t| t.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        self.checkpoints.save(
            model,
            optim,
            &CheckpointState {
                epoch,
                global_step: state.global_step,
                history: state.history.clone(),
                metrics_lines: state.lines.clone(),
                best_epoch,
                best_value_bits: best_value.to_bits(),
                best_file: state.best_file.clone(),
                frozen,
                config: self.spec.config_text.clone(),
                loss_scaler: state.scaler,
            },
        )
    }
}

/// The monitored metric's value among an epoch's metrics (NaN when it has none).
fn monitored(monitor: &str, metrics: &EpochMetrics) -> f64 {
    if monitor == "valid_loss" {
        metrics.valid_loss
    } else {
        metrics.valid.get(monitor).copied().unwrap_or(f64::NAN)
    }
}

/// Which checkpoint a stopped run keeps, for messages.
fn kept(history: &[EpochMetrics]) -> String {
    match history.last() {
        Some(last) => format!(
            "; the checkpoint of epoch {} is kept: resume the run to continue it",
            last.epoch
        ),
        None => "; no epoch had finished, so there is no checkpoint".into(),
    }
}

fn interrupted(signal: &'static str, history: &[EpochMetrics]) -> TrainError {
    TrainError::Interrupted {
        signal,
        kept: kept(history),
        resumable: !history.is_empty(),
    }
}

/// The error for a training loss that became NaN or infinite: `step_losses` holds each step of
/// the epoch (global step, its learning rate, its loss on the device).
fn training_diverged(
    epoch: usize,
    step_losses: Vec<(usize, f64, Tensor<1>)>,
    history: &[EpochMetrics],
) -> TrainError {
    let (steps, losses): (Vec<(usize, f64)>, Vec<Tensor<1>>) = step_losses
        .into_iter()
        .map(|(step, lr, loss)| ((step, lr), loss))
        .unzip();
    let values: Vec<f32> = match losses.is_empty() {
        true => Vec::new(),
        false => Tensor::cat(losses, 0)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default(),
    };
    let steps = steps.into_iter().zip(values).map(|((s, lr), v)| (s, lr, v));
    diverged("training loss", epoch, steps.collect(), history)
}

/// The error for a loss that became NaN or infinite: the first such step among `steps`
/// (global step, its learning rate, its loss).
fn diverged(
    what: &'static str,
    epoch: usize,
    steps: Vec<(usize, f64, f32)>,
    history: &[EpochMetrics],
) -> TrainError {
    let (step, lr, value) =
        steps
            .iter()
            .copied()
            .find(|s| !s.2.is_finite())
            .unwrap_or((0, 0.0, f32::NAN));
    TrainError::Diverged {
        what,
        value: if value.is_nan() {
            "NaN".into()
        } else {
            "infinite".into()
        },
        epoch,
        step,
        lr,
        kept: match history.last() {
            Some(last) => format!(" (the checkpoint of epoch {} is kept)", last.epoch),
            None => String::new(),
        },
    }
}

/// Mean validation loss and the task's metrics, for `model` in inference mode.
fn validate<M, F>(
    model: &M,
    forward: &F,
    spec: &FitSpec,
    device: &Device,
) -> (f64, BTreeMap<String, f64>)
where
    M: Module,
    F: Fn(&M, Split, &[usize], &Device) -> Tensor<2> + Sync,
{
    let indices: Vec<usize> = (0..spec.valid_targets.len()).collect();
    let mut loss_sum = None;
    let mut outputs = Vec::with_capacity(indices.len());
    let precision = spec.train.precision;
    let compute = cast_model(model, precision);
    for batch in indices.chunks(spec.train.eval_batch_size) {
        let out = to_f32(forward(&compute, Split::Valid, batch, device));
        let [_, k] = out.dims();
        let values: Vec<f32> = out
            .clone()
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("f32 data");
        outputs.extend(values.chunks(k).map(<[f32]>::to_vec));
        loss_sum = add(loss_sum, spec.loss.sum(out, spec.valid_targets, batch));
    }
    let loss = loss_sum.map_or(0.0, |t| t.into_scalar::<f32>() as f64)
        / spec
            .loss
            .weight(spec.valid_targets, &indices)
            .max(f64::MIN_POSITIVE);
    (loss, (spec.metrics)(&outputs))
}
