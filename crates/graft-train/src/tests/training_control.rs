//! Training control against PyTorch references (`tests/golden/training/`, made by
//! `scripts/golden/training_control.py`): the task losses and their gradients, the learning-rate
//! schedules, global-norm clipping, and optimizer steps with no weight decay on biases and norms.
//! Also: gradient accumulation gives the same update as one large batch, and the embedding
//! losses against sentence-transformers' own (`embedding_losses.json`, made by
//! `scripts/golden/make_embedding_loss_goldens.py`).

use std::path::PathBuf;

use crate::Silent;
use crate::config::{FreezeSection, LossKind, OptimizerKind, Precision, Schedule, TrainSection};
use crate::fit::{FitSpec, Resume, Split, clip_global_norm, fit, optimizer};
use crate::freezing::{HeadOnly, ParamTable};
use crate::loss::{Targets, TaskLoss, TextTargets, balanced_class_weights};
use crate::schedule::ScheduleShape;
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use serde_json::Value;

fn golden(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/training")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        other => panic!("not numeric: {other}"),
    }
}

fn dims(v: &Value) -> Vec<usize> {
    match v {
        Value::Array(items) => {
            let mut d = vec![items.len()];
            if let Some(first) = items.first() {
                d.extend(dims(first));
            }
            d
        }
        _ => vec![],
    }
}

fn tensor2(v: &Value, device: &Device) -> Tensor<2> {
    let d = dims(v);
    let shape = if d.len() == 1 {
        [d[0], 1]
    } else {
        [d[0], d[1]]
    };
    Tensor::from_data(TensorData::new(floats(v), shape), device)
}

fn values(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= tol, "{what}: max abs diff {worst:e} > {tol:e}");
}

fn loss(kind: LossKind) -> TaskLoss {
    TaskLoss {
        kind,
        weights: None,
        pos_weight: None,
        label_smoothing: 0.0,
        huber_delta: 1.0,
        scale: 20.0,
        margin: 5.0,
    }
}

/// Loss value and gradient w.r.t. the inputs, on an autodiff device.
fn loss_and_grad(
    loss: &TaskLoss,
    input: &Value,
    targets: &Targets,
    device: &Device,
) -> (f32, Vec<f32>) {
    let x = tensor2(input, device).require_grad();
    let n = targets.len();
    let indices: Vec<usize> = (0..n).collect();
    let l = loss.mean(x.clone(), targets, &indices);
    let value = l.clone().into_scalar::<f32>();
    let grads = l.backward();
    let grad = x.grad(&grads).unwrap();
    (value, grad.into_data().try_into_vec_as::<f32>().unwrap())
}

/// Checks loss `name` and its gradient against the golden values.
fn check_loss(
    g: &Value,
    name: &str,
    loss: &TaskLoss,
    input: &str,
    targets: &Targets,
    device: &Device,
) {
    let (value, grad) = loss_and_grad(loss, &g[input], targets, device);
    assert_close(name, &[value], &[g[name].as_f64().unwrap() as f32], 2e-6);
    assert_close(
        &format!("{name} grad"),
        &grad,
        &floats(&g[format!("{name}_grad")]),
        1e-6,
    );
}

/// MultipleNegativesRankingLoss (pairs, hard negatives, another scale), CosineSimilarityLoss and
/// TripletLoss (with and without zero hinge terms): values and gradients as sentence-transformers
/// computes them from the same embeddings.
#[test]
fn embedding_losses_and_gradients_match_sentence_transformers() {
    #[allow(deprecated)]
    let device = Device::flex().autodiff();
    let g = golden("embedding_losses.json");
    for case in g["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let kind = match case["loss"].as_str().unwrap() {
            "multiple_negatives_ranking" => LossKind::MultipleNegativesRanking,
            "cosine_similarity" => LossKind::CosineSimilarity,
            "triplet" => LossKind::Triplet,
            other => panic!("{other}"),
        };
        let params = &case["params"];
        let l = TaskLoss {
            scale: params["scale"].as_f64().unwrap_or(20.0),
            margin: params["margin"].as_f64().unwrap_or(5.0),
            ..loss(kind)
        };
        let targets = Targets::Texts(TextTargets {
            examples: case["examples"].as_u64().unwrap() as usize,
            texts: case["texts"].as_u64().unwrap() as usize,
            scores: case["labels"].as_array().map(|_| floats(&case["labels"])),
        });
        let (value, grad) = loss_and_grad(&l, &case["embeddings"], &targets, &device);
        let want = case["value"].as_f64().unwrap() as f32;
        assert_close(name, &[value], &[want], 2e-6 * want.abs().max(1.0));
        assert_close(&format!("{name} grad"), &grad, &floats(&case["grad"]), 1e-6);
    }
}

#[test]
fn losses_and_gradients_match_pytorch() {
    #[allow(deprecated)]
    let device = Device::flex().autodiff();
    let g = golden("losses.json");
    let classes = Targets::Classes(
        g["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect(),
    );
    let weights = Some(floats(&g["ce_weight"]));
    let smoothing = g["label_smoothing"].as_f64().unwrap();
    let cases = [
        ("ce_plain", None, 0.0),
        ("ce_weights", weights.clone(), 0.0),
        ("ce_smoothing", None, smoothing),
        ("ce_weights_smoothing", weights, smoothing),
    ];
    for (name, weights, label_smoothing) in cases {
        let l = TaskLoss {
            weights,
            label_smoothing,
            ..loss(LossKind::CrossEntropy)
        };
        check_loss(&g, name, &l, "logits", &classes, &device);
    }

    let balanced: Vec<usize> = g["balanced_targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_close(
        "balanced weights",
        &balanced_class_weights(&balanced, 4),
        &floats(&g["balanced_weights"]),
        1e-7,
    );

    let rows = Targets::MultiLabel(
        g["ml_targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| floats(r).iter().map(|&v| v == 1.0).collect())
            .collect(),
    );
    let cases = [
        ("bce_plain", None, None),
        (
            "bce_pos_weight",
            Some(floats(&g["bce_pos_weight_vec"])),
            None,
        ),
        ("bce_weight", None, Some(floats(&g["bce_weight_vec"]))),
    ];
    for (name, pos_weight, weights) in cases {
        let l = TaskLoss {
            pos_weight,
            weights,
            ..loss(LossKind::Bce)
        };
        check_loss(&g, name, &l, "ml_logits", &rows, &device);
    }

    let targets = Targets::Values(floats(&g["reg_target"]));
    for (name, kind, delta) in [
        ("mse", LossKind::Mse, 1.0),
        ("huber_1", LossKind::Huber, 1.0),
        ("huber_05", LossKind::Huber, 0.5),
    ] {
        let l = TaskLoss {
            huber_delta: delta,
            ..loss(kind)
        };
        check_loss(&g, name, &l, "reg_pred", &targets, &device);
    }
}

#[test]
fn schedules_match_transformers_and_pytorch() {
    let g = golden("schedules.json");
    let peak = g["settings"]["peak_lr"].as_f64().unwrap();
    let total = g["settings"]["total_steps"].as_u64().unwrap() as usize;
    let cases = [
        ("constant_warmup", Schedule::Constant, Some(5)),
        ("linear_warmup", Schedule::Linear, Some(5)),
        ("cosine_warmup", Schedule::Cosine, Some(5)),
        ("linear_nowarmup", Schedule::Linear, None),
        ("cosine_nowarmup", Schedule::Cosine, None),
        ("one_cycle", Schedule::OneCycle, None),
    ];
    for (name, kind, warmup) in cases {
        let shape = ScheduleShape::new(kind, total, warmup, None);
        let want = g["cases"][name]["lrs"].as_array().unwrap();
        for (step, want) in want.iter().enumerate() {
            let got = peak * shape.factor(step);
            let want = want.as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-12,
                "{name} step {step}: {got} != {want}"
            );
        }
    }
}

#[derive(Module, Debug)]
struct Tiny {
    norm: LayerNorm,
    linear: Linear,
}

#[derive(Module, Debug)]
struct Three {
    a: Param<Tensor<2>>,
    b: Param<Tensor<1>>,
    c: Param<Tensor<2>>,
}

#[test]
fn global_norm_clipping_matches_clip_grad_norm() {
    #[allow(deprecated)]
    let device = Device::flex().autodiff();
    let g = golden("clip.json");
    let grads_in = g["grads"].as_array().unwrap();
    let zeros2 = |r, c| Param::from_tensor(Tensor::<2>::zeros([r, c], &device));
    let model = Three {
        a: zeros2(3, 4),
        b: Param::from_tensor(Tensor::<1>::zeros([4], &device)),
        c: zeros2(2, 2),
    };
    for case in ["max_norm_1", "max_norm_10"] {
        let want = &g["cases"][case];
        // Gradients of sum(param * g) are exactly g.
        let loss = (model.a.val() * tensor2(&grads_in[0], &device)).sum()
            + (model.b.val()
                * Tensor::<1>::from_data(TensorData::new(floats(&grads_in[1]), [4]), &device))
            .sum()
            + (model.c.val() * tensor2(&grads_in[2], &device)).sum();
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        let norm = clip_global_norm(&model, &mut grads, want["max_norm"].as_f64().unwrap())
            .unwrap()
            .into_scalar::<f32>() as f64;
        assert!(
            (norm - want["total_norm"].as_f64().unwrap()).abs() < 1e-6,
            "{case}: norm {norm}"
        );
        let clipped = want["clipped_grads"].as_array().unwrap();
        let a: Tensor<2> = grads.get(model.a.id).unwrap();
        let b: Tensor<1> = grads.get(model.b.id).unwrap();
        let c: Tensor<2> = grads.get(model.c.id).unwrap();
        assert_close(case, &values(a), &floats(&clipped[0]), 1e-7);
        assert_close(
            case,
            &b.into_data().try_into_vec_as::<f32>().unwrap(),
            &floats(&clipped[1]),
            1e-7,
        );
        assert_close(case, &values(c), &floats(&clipped[2]), 1e-7);
    }
}

#[test]
fn optimizer_steps_with_decay_groups_match_pytorch() {
    #[allow(deprecated)]
    let device = Device::flex().autodiff();
    let g = golden("optim_steps.json");
    let x = tensor2(&g["x"], &device);
    let targets = Targets::Classes(
        g["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect(),
    );
    let init = &g["init"];
    let cases = [
        ("adamw", OptimizerKind::Adamw, 0.01, 0.1, 0.0, false, false),
        (
            "adam_l2",
            OptimizerKind::Adam,
            0.01,
            0.01,
            0.0,
            false,
            false,
        ),
        (
            "sgd_nesterov",
            OptimizerKind::Sgd,
            0.1,
            0.01,
            0.9,
            true,
            false,
        ),
        (
            "sgd_momentum",
            OptimizerKind::Sgd,
            0.1,
            0.01,
            0.9,
            false,
            false,
        ),
        (
            "adamw_all_decay",
            OptimizerKind::Adamw,
            0.01,
            0.1,
            0.0,
            false,
            true,
        ),
    ];
    for (name, kind, lr, weight_decay, momentum, nesterov, all_decay) in cases {
        let mut norm = LayerNormConfig::new(4).with_epsilon(1e-5).init(&device);
        norm.gamma = Param::from_data(TensorData::new(floats(&init["norm.weight"]), [4]), &device);
        norm.beta = Some(Param::from_data(
            TensorData::new(floats(&init["norm.bias"]), [4]),
            &device,
        ));
        let mut linear = LinearConfig::new(4, 3).init(&device);
        // PyTorch stores [out, in]; burn [in, out].
        linear.weight = Param::from_tensor(tensor2(&init["linear.weight"], &device).transpose());
        linear.bias = Some(Param::from_data(
            TensorData::new(floats(&init["linear.bias"]), [3]),
            &device,
        ));
        let mut model = Tiny { norm, linear };
        let config = TrainSection {
            optimizer: kind,
            lr,
            weight_decay,
            momentum,
            nesterov,
            decay_norm_and_bias: all_decay,
            ..TrainSection::default()
        };
        let table = ParamTable::of(&model, &HeadOnly);
        // What `fit` does: biases and norms go without decay unless `decay_norm_and_bias`.
        let no_decay = if config.decay_norm_and_bias {
            Vec::new()
        } else {
            table.ids_where(|t| t.is_bias_or_norm())
        };
        let mut optim = optimizer(&config, no_decay);
        let want = &g["cases"][name];
        let ce = loss(LossKind::CrossEntropy);
        for step in 0..3 {
            let logits = model.linear.forward(model.norm.forward(x.clone()));
            let l = ce.mean(logits, &targets, &[0, 1, 2, 3, 4]);
            let value = l.clone().into_scalar::<f32>();
            let expected = want["losses"][step].as_f64().unwrap() as f32;
            assert!(
                (value - expected).abs() < 2e-6,
                "{name} step {step}: loss {value} != {expected}"
            );
            let grads = GradientsParams::from_grads(l.backward(), &model);
            model = optim.step(lr, model, grads);
            let after = &want["params_after"][step];
            let w = values(model.linear.weight.val().transpose());
            assert_close(
                &format!("{name} {step} linear.weight"),
                &w,
                &floats(&after["linear.weight"]),
                2e-6,
            );
            let vec1 = |t: Tensor<1>| t.into_data().try_into_vec_as::<f32>().unwrap();
            let b = vec1(model.linear.bias.as_ref().unwrap().val());
            assert_close(
                &format!("{name} {step} linear.bias"),
                &b,
                &floats(&after["linear.bias"]),
                2e-6,
            );
            let nw = vec1(model.norm.gamma.val());
            assert_close(
                &format!("{name} {step} norm.weight"),
                &nw,
                &floats(&after["norm.weight"]),
                2e-6,
            );
            let nb = vec1(model.norm.beta.as_ref().unwrap().val());
            assert_close(
                &format!("{name} {step} norm.bias"),
                &nb,
                &floats(&after["norm.bias"]),
                2e-6,
            );
        }
    }
}

/// Fixed features of 64 examples with 3 classes, and a linear head for them.
fn features(device: &Device) -> Tensor<2> {
    let n = 64;
    let values: Vec<f32> = (0..n * 8)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    Tensor::<2>::from_data(TensorData::new(values, [n, 8]), device)
}

fn classes(shift: usize) -> Targets {
    Targets::Classes((0..64).map(|i| (i * 7 % 3 + shift) % 3).collect())
}

/// Trains a linear head with `config` and returns the outcome and the run folder.
fn fit_head(
    config: &TrainSection,
    valid: &Targets,
) -> (crate::fit::FitOutcome<crate::head::Head>, tempfile::TempDir) {
    fit_head_on(config, valid, &[])
}

/// [`fit_head`] with each batch split over `replicas` too.
fn fit_head_on(
    config: &TrainSection,
    valid: &Targets,
    replicas: &[Device],
) -> (crate::fit::FitOutcome<crate::head::Head>, tempfile::TempDir) {
    #[allow(deprecated)]
    let device = Device::flex();
    let train_device = device.clone().autodiff();
    let features = features(&device);
    let head_section = crate::config::HeadSection {
        dropout: 0.0,
        ..Default::default()
    };
    let head = crate::head::HeadSpec::new(&head_section, 8, 3, None).init(1, &train_device);
    let run_dir = tempfile::tempdir().unwrap();
    let metrics = |_: &[Vec<f32>]| Default::default();
    let spec = FitSpec {
        train: config,
        freeze: &FreezeSection::default(),
        loss: &loss(LossKind::CrossEntropy),
        train_targets: &classes(0),
        valid_targets: valid,
        metrics: &metrics,
        describe: &HeadOnly,
        run_dir: run_dir.path(),
        lengths: None,
        config_text: String::new(),
        resume: Resume::No,
        replicas,
    };
    let rows = |idx: &[usize]| {
        let idx: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
        let len = idx.len();
        features
            .clone()
            .select(0, Tensor::from_data(TensorData::new(idx, [len]), &device))
    };
    let outcome = fit(
        head,
        |head, _split: Split, idx, on: &Device| head.forward(rows(idx).to_device(on)),
        &spec,
        &train_device,
        &Silent,
    )
    .unwrap();
    (outcome, run_dir)
}

/// Trains a linear head on fixed features and returns its final weights.
fn train_head(batch_size: usize, accumulate: usize) -> Vec<f32> {
    let config = TrainSection {
        epochs: 2,
        batch_size,
        accumulate,
        lr: 0.05,
        checkpoints: false,
        schedule: Schedule::Cosine,
        warmup_steps: Some(1),
        clip_grad_norm: Some(0.5),
        ..TrainSection::default()
    };
    let (outcome, run_dir) = fit_head(&config, &classes(0));
    let steps = std::fs::read_to_string(run_dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(
        steps
            .lines()
            .filter(|l| l.contains("\"kind\":\"step\""))
            .count(),
        2 * 64usize.div_ceil(batch_size * accumulate),
        "one logged step per optimizer step"
    );
    values(outcome.model.layers[0].weight.val())
}

#[test]
fn early_stopping_restores_the_best_epoch() {
    // Validation labels are the training labels rotated: the better the head fits the training
    // data, the worse the validation loss, so the first epoch is the best.
    let config = TrainSection {
        epochs: 20,
        batch_size: 16,
        lr: 0.05,
        patience: Some(3),
        ..TrainSection::default()
    };
    let (outcome, run_dir) = fit_head(&config, &classes(1));
    assert!(outcome.stopped_early);
    assert_eq!(outcome.history.len(), outcome.best_epoch + 3);
    let losses: Vec<f64> = outcome.history.iter().map(|m| m.valid_loss).collect();
    let best = losses.iter().cloned().fold(f64::INFINITY, f64::min);
    assert_eq!(losses[outcome.best_epoch - 1], best);
    // The returned model is the best epoch's, not the last.
    #[allow(deprecated)]
    let device = Device::flex();
    let checkpoint = run_dir
        .path()
        .join(format!("checkpoints/best-{:04}.bpk", outcome.best_epoch));
    let template = crate::head::HeadSpec::new(&Default::default(), 8, 3, None).init(0, &device);
    let saved = crate::checkpoint::load_model(template, &checkpoint).unwrap();
    assert_eq!(
        values(saved.layers[0].weight.val()),
        values(outcome.model.layers[0].weight.val())
    );
}

#[test]
fn accumulation_averages_to_the_large_batch_update() {
    let big = train_head(32, 1);
    let accumulated = train_head(8, 4);
    assert_close("accumulate 4 x 8 vs batch 32", &accumulated, &big, 1e-5);
    let small = train_head(8, 1);
    let differs = small.iter().zip(&big).any(|(a, b)| (a - b).abs() > 1e-3);
    assert!(
        differs,
        "batch 8 without accumulation should train differently"
    );
}

/// A head trained for three epochs of 5 steps with clipping and a schedule: its weights and
/// per-epoch losses.
fn train_head_with(precision: Precision, replicas: &[Device]) -> (Vec<f32>, Vec<f64>) {
    let config = TrainSection {
        epochs: 3,
        batch_size: 13,
        lr: 0.05,
        checkpoints: false,
        schedule: Schedule::Cosine,
        warmup_steps: Some(1),
        clip_grad_norm: Some(0.5),
        precision,
        devices: replicas.len() + 1,
        ..TrainSection::default()
    };
    let (outcome, _run_dir) = fit_head_on(&config, &classes(0), replicas);
    let weight = outcome.model.layers[0].weight.val();
    assert_eq!(
        weight.dtype(),
        burn::tensor::DType::F32,
        "master weights stay f32"
    );
    let losses = outcome.history.iter().map(|m| m.train_loss).collect();
    (values(outcome.model.layers[0].weight.val()), losses)
}

#[test]
fn data_parallel_gives_the_single_device_curve() {
    #[allow(deprecated)]
    let flex = Device::flex().autodiff();
    let (one, one_losses) = train_head_with(Precision::F32, &[]);
    // Batches of 13 split in shards of 7 + 6 and 5 + 4 + 4: the summed gradients are the
    // batch's, so the weights and the loss curve are the single device's up to rounding.
    for replicas in [vec![flex.clone()], vec![flex.clone(), flex.clone()]] {
        let (split, split_losses) = train_head_with(Precision::F32, &replicas);
        assert_close("weights", &split, &one, 1e-6);
        for (a, b) in split_losses.iter().zip(&one_losses) {
            assert!((a - b).abs() < 1e-6, "loss {a} vs {b}");
        }
    }
}

#[test]
fn half_precision_training_follows_f32_with_f32_weights() {
    let (f32_weights, f32_losses) = train_head_with(Precision::F32, &[]);
    for (precision, tol) in [(Precision::Bf16, 3e-2), (Precision::F16, 3e-3)] {
        let (weights, losses) = train_head_with(precision, &[]);
        assert_close(&format!("{precision} weights"), &weights, &f32_weights, tol);
        for (a, b) in losses.iter().zip(&f32_losses) {
            assert!(
                (a - b).abs() < tol as f64,
                "{precision} loss {a} vs f32 {b}"
            );
        }
        assert_ne!(losses, f32_losses, "{precision} ran in f32");
    }
}
