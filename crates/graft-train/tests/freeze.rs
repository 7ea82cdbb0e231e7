//! A frozen backbone really is frozen: training end to end (no feature cache) leaves every backbone
//! tensor bit-identical while the head changes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::module::Module;
use burn::store::ModuleSnapshot;
use burn::tensor::Device;
use graft_data::{DataFormat, LabelSet, TextTokenizer, read_texts};
use graft_model::text_encoder::PoolingOptions;
use graft_model::{ModelFolder, Pooling, TextEncoder};
use graft_train::Silent;
use graft_train::classifier::{TextClassifier, TokenizedTexts};
use graft_train::config::{HeadSection, TrainSection};
use graft_train::fit::{Split, fit};
use graft_train::head::HeadSpec;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn snapshot<M: Module>(model: &M) -> BTreeMap<String, Vec<u8>> {
    model
        .collect(None, None, false)
        .into_iter()
        .map(|t| (t.name.clone(), t.to_bytes().unwrap().to_vec()))
        .collect()
}

#[test]
fn frozen_backbone_is_bit_identical_after_training_and_head_changes() {
    let device = Device::flex();
    let train_device = device.clone().autodiff();
    train_device.seed(7);
    let folder = ModelFolder::open(&repo().join("models/all-MiniLM-L6-v2"))
        .expect("run scripts/fetch-models.sh");
    let options = PoolingOptions {
        pooling: Pooling::Mean,
        use_pooler: false,
        normalize: true,
    };
    let (config, encoder) = TextEncoder::load(&folder, options, &train_device).unwrap();
    let encoder = encoder.freeze();

    let data = repo().join("datasets/fine-foods-mini/train.csv");
    let examples = read_texts(&data, DataFormat::Csv, "review", Some("score")).unwrap();
    let examples = &examples[..16];
    let labels = LabelSet::from_examples(examples, &data).unwrap();
    let targets = labels.encode(examples, &data).unwrap();
    let tokenizer =
        TextTokenizer::from_file(&folder.tokenizer_path(), 64, config.vocab_size).unwrap();
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let tokens = TokenizedTexts::new(&tokenizer, &texts).unwrap();

    let head = HeadSpec::new(&HeadSection::default(), config.hidden_size, labels.len())
        .init(7, &train_device);
    let model = TextClassifier { encoder, head };
    let before = snapshot(&model);

    let train = TrainSection {
        epochs: 2,
        batch_size: 8,
        lr: 1e-2,
        ..TrainSection::default()
    };
    let outcome = fit(
        model,
        |m, split, idx| match split {
            Split::Train => m.forward(&tokens.batch(idx), &train_device),
            Split::Valid => m.forward(&tokens.batch(idx), &device),
        },
        &targets,
        &targets,
        &train,
        &train_device,
        &Silent,
    );
    let after = snapshot(&outcome.model);
    assert_eq!(before.len(), after.len());
    let (mut backbone, mut head_changed) = (0, 0);
    for (name, bytes) in &before {
        if name.starts_with("encoder.") {
            assert_eq!(bytes, &after[name], "frozen tensor {name} changed");
            backbone += 1;
        } else if bytes != &after[name] {
            head_changed += 1;
        }
    }
    assert!(backbone > 100, "only {backbone} backbone tensors compared");
    assert_eq!(head_changed, 2, "head weight and bias must both change");
}
