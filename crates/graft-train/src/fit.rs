//! The training loop: seeded shuffling, mini-batch steps with burn's optimizers, validation after
//! every epoch, and the best epoch (lowest validation loss) kept.
//!
//! The loop is written here rather than with burn-train's `Learner` because the frozen-backbone
//! case trains on precomputed features, not on the model's own inputs; the loop is the same for
//! both and takes a closure that yields logits for a list of example indices.

use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::config::{OptimizerKind, TrainSection};
use crate::progress::{EpochMetrics, Progress};

/// Which examples a forward pass is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Valid,
}

pub struct FitOutcome<M> {
    /// The model of the best epoch, in inference mode.
    pub model: M,
    pub history: Vec<EpochMetrics>,
    pub best_epoch: usize,
}

pub fn optimizer(config: &TrainSection) -> ModuleOptimizer {
    match config.optimizer {
        OptimizerKind::Adamw => AdamWConfig::new()
            .with_epsilon(1e-8)
            .with_weight_decay(config.weight_decay as f32)
            .init(),
        OptimizerKind::Adam => AdamConfig::new()
            .with_epsilon(1e-8)
            .with_weight_decay(
                (config.weight_decay > 0.0)
                    .then(|| WeightDecayConfig::new(config.weight_decay as f32)),
            )
            .init(),
        OptimizerKind::Sgd => SgdConfig::new()
            .with_momentum((config.momentum > 0.0).then(|| {
                MomentumConfig::new()
                    .with_momentum(config.momentum)
                    .with_dampening(0.0)
            }))
            .with_weight_decay(
                (config.weight_decay > 0.0)
                    .then(|| WeightDecayConfig::new(config.weight_decay as f32)),
            )
            .init(),
    }
}

fn int_tensor(values: &[usize], device: &Device) -> Tensor<1, Int> {
    let data: Vec<i64> = values.iter().map(|&v| v as i64).collect();
    Tensor::from_data(TensorData::new(data, [values.len()]), device)
}

/// Trains `model` on `device` (an autodiff device). `forward(model, split, indices)` returns the
/// logits of those examples; `train_targets`/`valid_targets` are their classes.
pub fn fit<M, F>(
    model: M,
    forward: F,
    train_targets: &[usize],
    valid_targets: &[usize],
    config: &TrainSection,
    device: &Device,
    progress: &dyn Progress,
) -> FitOutcome<M>
where
    M: Module,
    F: Fn(&M, Split, &[usize]) -> Tensor<2>,
{
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut optim = optimizer(config);
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut order: Vec<usize> = (0..train_targets.len()).collect();
    let mut model = model;
    let mut best: Option<(f64, usize, M)> = None;
    let mut history = Vec::new();
    let steps_per_epoch = train_targets.len().div_ceil(config.batch_size);

    for epoch in 1..=config.epochs {
        let started = Instant::now();
        order.shuffle(&mut rng);
        progress.stage(&format!("epoch {epoch}/{}", config.epochs), steps_per_epoch);
        // Summed on the device and read once per epoch: no host round trip per step.
        let mut loss_sum: Option<Tensor<1>> = None;
        for batch in order.chunks(config.batch_size) {
            let targets: Vec<usize> = batch.iter().map(|&i| train_targets[i]).collect();
            let logits = forward(&model, Split::Train, batch);
            let loss = loss_fn.forward(logits, int_tensor(&targets, device));
            let weighted = loss.clone().without_autodiff() * batch.len() as f64;
            loss_sum = Some(match loss_sum {
                Some(sum) => sum + weighted,
                None => weighted,
            });
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(config.lr, model, grads);
            progress.advance(1);
        }
        progress.finish_stage();

        let inference = model.valid();
        let (valid_loss, valid_accuracy) = evaluate_loss(
            &inference,
            &forward,
            valid_targets,
            config.eval_batch_size,
            device,
        );
        let metrics = EpochMetrics {
            epoch,
            train_loss: loss_sum.map_or(0.0, |s| s.into_scalar::<f32>() as f64)
                / train_targets.len() as f64,
            valid_loss,
            valid_accuracy,
            lr: config.lr,
            seconds: started.elapsed().as_secs_f64(),
        };
        let improved = best.as_ref().is_none_or(|(b, _, _)| valid_loss < *b);
        if improved {
            best = Some((valid_loss, epoch, inference));
        }
        progress.epoch(&metrics, improved);
        history.push(metrics);
    }
    let (_, best_epoch, model) = best.expect("at least one epoch ran");
    FitOutcome {
        model,
        history,
        best_epoch,
    }
}

/// Mean cross-entropy and accuracy of `model` (in inference mode) on the validation examples.
fn evaluate_loss<M, F>(
    model: &M,
    forward: &F,
    targets: &[usize],
    batch_size: usize,
    device: &Device,
) -> (f64, f64)
where
    F: Fn(&M, Split, &[usize]) -> Tensor<2>,
{
    let device = device.clone().without_autodiff();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let indices: Vec<usize> = (0..targets.len()).collect();
    let (mut loss_sum, mut correct) = (0.0, 0usize);
    for batch in indices.chunks(batch_size) {
        let batch_targets: Vec<usize> = batch.iter().map(|&i| targets[i]).collect();
        let logits = forward(model, Split::Valid, batch);
        let predicted = logits.clone().argmax(1).into_data();
        correct += predicted
            .iter::<i64>()
            .zip(&batch_targets)
            .filter(|(p, t)| *p as usize == **t)
            .count();
        let loss = loss_fn.forward(logits, int_tensor(&batch_targets, &device));
        loss_sum += loss.into_scalar::<f32>() as f64 * batch.len() as f64;
    }
    let n = targets.len().max(1) as f64;
    (loss_sum / n, correct as f64 / n)
}
