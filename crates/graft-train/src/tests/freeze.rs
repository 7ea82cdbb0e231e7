//! Freezing on the real MiniLM: a frozen backbone stays bit-identical while the head trains, and
//! with partial freezing plus gradual unfreezing every block stays bit-identical exactly until its
//! unfreeze epoch and changes after it. Models are read back from the per-epoch checkpoints.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::checkpoint::{Checkpoints, load_model};
use crate::classifier::Classifier;
use crate::config::{
    BlockSelection, FreezeSection, HeadSection, LossKind, TrainSection, UnfreezeStep,
};
use crate::fit::{FitSpec, Resume, Split, fit};
use crate::freezing::{ClassifierLayout, Describe};
use crate::head::HeadSpec;
use crate::loss::{Targets, TaskLoss};
use crate::modality::{Encoded, Preparation};
use crate::{EpochMetrics, Progress};
use burn::module::Module;
use burn::store::ModuleSnapshot;
use burn::tensor::Device;
use graft_data::{DataFormat, LabelSet, read_texts};
use graft_model::{Backbone, ModelFolder, Pooling, PoolingOptions};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

type Snapshot = BTreeMap<String, Vec<u8>>;

fn snapshot<M: Module>(model: &M) -> Snapshot {
    model
        .collect(None, None, false)
        .into_iter()
        .map(|t| (t.name.clone(), t.to_bytes().unwrap().to_vec()))
        .collect()
}

/// Records the model of every finished epoch from its checkpoint.
struct EpochSnapshots<M> {
    run_dir: PathBuf,
    template: M,
    seen: RefCell<Vec<Snapshot>>,
}

impl<M: Module> Progress for EpochSnapshots<M> {
    fn epoch(&self, _metrics: &EpochMetrics, _best: bool) {
        let folder = Checkpoints::in_run(&self.run_dir)
            .latest()
            .unwrap()
            .unwrap();
        let model = load_model(self.template.clone(), &folder.join("model.bpk")).unwrap();
        self.seen.borrow_mut().push(snapshot(&model));
    }
}

struct Setup {
    model: Classifier,
    data: Encoded,
    targets: Targets,
    layout: ClassifierLayout,
}

fn setup(device: &Device) -> Setup {
    let folder = ModelFolder::open(&repo().join("models/all-MiniLM-L6-v2"))
        .expect("run scripts/fetch-models.sh");
    let options = PoolingOptions {
        pooling: Pooling::Mean,
        use_pooler: false,
        normalize: true,
    };
    let backbone = Backbone::load(&folder, options, false, device).unwrap();
    let data = repo().join("datasets/fine-foods-mini/train.csv");
    let examples = read_texts(&data, DataFormat::Csv, "review", Some("score")).unwrap();
    let examples = &examples[..16];
    let labels = LabelSet::from_examples(examples, &data).unwrap();
    let targets = Targets::Classes(labels.encode(examples, &data).unwrap());
    let preparation = Preparation::Text {
        pooling: options.pooling,
        use_pooler: false,
        normalize: true,
        max_length: 48,
    };
    let data = preparation
        .encoder(&folder)
        .unwrap()
        .encode(examples)
        .unwrap();
    let head = HeadSpec::new(
        &HeadSection::default(),
        backbone.feature_size(),
        labels.len(),
        None,
    )
    .init(7, device);
    Setup {
        layout: ClassifierLayout::of(&backbone),
        model: Classifier { backbone, head },
        data,
        targets,
    }
}

/// Trains with `freeze` for `epochs` and returns the initial model and each epoch's model.
fn train_epochs(
    freeze: FreezeSection,
    epochs: usize,
    run_dir: &Path,
) -> (Snapshot, Vec<Snapshot>, ClassifierLayout) {
    #[allow(deprecated)]
    let device = Device::flex();
    let train_device = device.clone().autodiff();
    let s = setup(&train_device);
    let initial = snapshot(&s.model);
    let train = TrainSection {
        epochs,
        batch_size: 8,
        lr: 1e-3,
        ..TrainSection::default()
    };
    let loss = TaskLoss {
        kind: LossKind::CrossEntropy,
        weights: None,
        pos_weight: None,
        label_smoothing: 0.0,
        huber_delta: 1.0,
        scale: 20.0,
        margin: 5.0,
    };
    let metrics = |_: &[Vec<f32>]| Default::default();
    let spec = FitSpec {
        train: &train,
        freeze: &freeze,
        loss: &loss,
        train_targets: &s.targets,
        valid_targets: &s.targets,
        metrics: &metrics,
        describe: &s.layout,
        run_dir,
        lengths: None,
        config_text: String::new(),
        resume: Resume::No,
        replicas: &[],
    };
    let progress = EpochSnapshots {
        run_dir: run_dir.to_path_buf(),
        template: s.model.clone(),
        seen: RefCell::new(Vec::new()),
    };
    let data = &s.data;
    fit(
        s.model.clone(),
        |m, split, idx, on| match split {
            Split::Train { .. } => m.forward(data, idx, None, on),
            Split::Valid => m.forward(data, idx, None, &device),
        },
        &spec,
        &train_device,
        &progress,
    )
    .unwrap();
    (initial, progress.seen.into_inner(), s.layout)
}

/// The backbone block of a snapshot entry (burn path), `None` for the head.
fn block_of(layout: &ClassifierLayout, path: &str) -> Option<usize> {
    layout.place(path).block
}

#[test]
fn frozen_backbone_is_bit_identical_after_training_and_head_changes() {
    let run_dir = tempfile::tempdir().unwrap();
    let freeze = FreezeSection::default();
    let (before, epochs, _) = train_epochs(freeze, 2, run_dir.path());
    let after = epochs.last().unwrap();
    assert_eq!(before.len(), after.len());
    let (mut backbone, mut head_changed) = (0, 0);
    for (name, bytes) in &before {
        if name.starts_with("backbone.") {
            assert_eq!(bytes, &after[name], "frozen tensor {name} changed");
            backbone += 1;
        } else if bytes != &after[name] {
            head_changed += 1;
        }
    }
    assert!(backbone > 100, "only {backbone} backbone tensors compared");
    assert_eq!(head_changed, 2, "head weight and bias must both change");
}

#[test]
fn gradual_unfreezing_keeps_blocks_bit_identical_until_their_epoch() {
    // Blocks: 0 = embeddings, 1..=6 = encoder layers 0..5 (the pooler-less MiniLM).
    // Start: blocks 0-2 frozen. Epoch 2: the last 5 blocks (2..6) train. Epoch 3: all.
    let freeze = FreezeSection {
        layers: Some(3),
        unfreeze: vec![
            UnfreezeStep {
                epoch: 2,
                layers: BlockSelection::Last(5),
            },
            UnfreezeStep {
                epoch: 3,
                layers: BlockSelection::All,
            },
        ],
        ..FreezeSection::default()
    };
    let run_dir = tempfile::tempdir().unwrap();
    let (initial, epochs, layout) = train_epochs(freeze, 3, run_dir.path());
    assert_eq!(epochs.len(), 3);
    assert_eq!(layout.num_blocks(), 7);
    let unfreeze_epoch = |block: Option<usize>| match block {
        None => 1,
        Some(b) if b >= 3 => 1,
        Some(2) => 2,
        Some(_) => 3,
    };
    let mut checked = [0usize; 3];
    for (name, bytes) in &initial {
        let first = unfreeze_epoch(block_of(&layout, name));
        for (e, snapshot) in epochs.iter().enumerate() {
            let epoch = e + 1;
            let unchanged = &snapshot[name] == bytes;
            if epoch < first {
                assert!(
                    unchanged,
                    "{name} changed in epoch {epoch}, before its unfreeze epoch {first}"
                );
                checked[0] += 1;
            }
        }
        // Weight matrices change once they train (all get gradients, except the pooler, which
        // mean pooling does not use).
        let used = !name.contains("pooler") && !name.contains("embeddings");
        if name.ends_with("weight") && used {
            let after = &epochs[first - 1][name];
            assert!(
                after != bytes,
                "{name} did not change in its unfreeze epoch {first}"
            );
            checked[1] += 1;
        }
    }
    assert!(
        checked[0] > 50 && checked[1] > 20,
        "too little compared: {checked:?}"
    );
}
