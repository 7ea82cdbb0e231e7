//! `graft export --format onnx`: every family's export computes what graft computes. The export
//! checks itself (graft-onnx's interpreter against graft's forward pass, at a size the graph was
//! not recorded at); these tests run the written `model.onnx` again on the inputs it was checked
//! on, run a trained run's export on texts tokenized by the exported `tokenizer.json` at other
//! batch sizes and lengths, and run an image classifier's export on real images. The same exports
//! were run in onnxruntime by `scripts/check/onnx_runtime.py` (see README, "ONNX").

mod common;

use std::path::{Path, PathBuf};

use common::{FINE_FOODS_MINI, fails, lite0_folder, ok, repo, write};
use graft_onnx::{ArrayD, IxDyn, Value};
use graft_train::{Backend, Model, Silent};
use prost::Message;

/// One or more folders of each family and of the variants that change the graph.
const FOLDERS: &[&str] = &[
    "native_heads/bert",
    "native_heads/roberta",
    "native_heads/xlm-roberta",
    "native_heads/camembert",
    "native_heads/distilbert",
    "native_heads/electra",
    "native_heads/mpnet",
    "native_heads/deberta-v2",
    "native_heads/deberta-v3",
    "native_heads/modernbert",
    "text_families/roberta",
    "text_families/distilbert",
    "text_families/mpnet",
    "text_families/deberta-v3",
    "text_families/modernbert",
    "text_variants/deberta-p2c",
    "text_variants/mpnet-buckets48",
    "vit/vit",
    "vit/deit",
    "vit/timm-vit-avg",
    "vit/dinov2-reg",
    "vit/clip",
    "convnext/convnext",
    "convnext/timm-convnext",
    "mobilenet_v3/timm-small",
    "mobilenet_v3/tv-large",
    "vision_variants/timm-vit-nocls",
];

fn golden(name: &str) -> PathBuf {
    repo().join("crates/graft-model/tests/golden").join(name)
}

fn export_onnx(model: &Path, out: &Path) -> String {
    ok(&[
        "export",
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--format",
        "onnx",
    ])
}

/// The tensors of a safetensors file, as interpreter values.
fn tensors(path: &Path) -> Vec<(String, Value)> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let shape = IxDyn(view.shape());
            let value = match view.dtype() {
                safetensors::Dtype::I64 => Value::I64(
                    ArrayD::from_shape_vec(
                        shape,
                        view.data()
                            .chunks_exact(8)
                            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                            .collect(),
                    )
                    .unwrap(),
                ),
                _ => Value::F32(
                    ArrayD::from_shape_vec(
                        shape,
                        view.data()
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                            .collect(),
                    )
                    .unwrap(),
                ),
            };
            (name, value)
        })
        .collect()
}

/// The largest difference between `got` and `expected`, relative to the larger of 1 and the
/// largest expected magnitude.
fn distance(got: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(got.len(), expected.len());
    let scale = expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    got.iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs() / scale)
        .fold(
            0.0,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        )
}

/// The exported graph, run by graft's ONNX interpreter on the inputs of the folder's
/// `check.safetensors`, gives the outputs graft computed (to 1e-4 relative); returns the graph.
fn graph_reproduces_its_check(out: &Path, name: &str) -> Vec<u8> {
    let model = std::fs::read(out.join("model.onnx")).unwrap();
    let check = tensors(&out.join("check.safetensors"));
    let inputs: Vec<(&str, Value)> = check
        .iter()
        .filter(|(n, _)| !n.starts_with("expected."))
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    // In the graph's order of outputs.
    let expected: Vec<&Value> = ["logits", "features", "embeddings"]
        .iter()
        .filter_map(|output| {
            let key = format!("expected.{output}");
            check.iter().find(|(n, _)| *n == key).map(|(_, v)| v)
        })
        .collect();
    let got = graft_onnx::run(&model, &inputs).unwrap();
    // The graph's outputs: the head's logits and its features, or the embeddings.
    assert_eq!(got.len(), expected.len(), "{name}");
    for (got, expected) in got.iter().zip(expected) {
        let d = distance(&got.to_f32(), &expected.to_f32());
        assert!(d <= 1e-4, "{name}: the graph is {d:e} from graft");
    }
    model
}

#[test]
fn every_family_exports_a_graph_that_computes_what_graft_computes() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, name) in FOLDERS.iter().enumerate() {
        let out = tmp.path().join(i.to_string());
        let said = export_onnx(&golden(name), &out);
        assert!(said.contains("checked on inputs"), "{name}: {said}");
        let model = graph_reproduces_its_check(&out, name);
        assert!(
            out.join("config.json").is_file(),
            "{name}: the config goes with the model"
        );
        // onnxruntime 1.23 crashes (its SkipLayerNormFusion) on a LayerNormalization without
        // its bias input, as ModernBERT's bias-less norms were first written.
        let proto = graft_onnx::proto::ModelProto::decode(model.as_slice()).unwrap();
        for node in &proto.graph.unwrap().node {
            if node.op_type == "LayerNormalization" {
                assert!(
                    node.input.len() == 3 && node.input.iter().all(|i| !i.is_empty()),
                    "{name}: {} has inputs {:?}",
                    node.name,
                    node.input
                );
            }
        }
    }
}

/// A trained run: its export, fed texts the exported tokenizer encodes (truncated and padded as
/// graft does) in batches of other sizes and lengths than those it was recorded and checked at,
/// gives the logits `Model::outputs` gives.
#[test]
fn a_trained_runs_export_gives_its_logits_at_any_batch_and_length() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let cfg = write(
        tmp.path(),
        "c.toml",
        &format!(
            "[model]\nbackbone = \"models/all-MiniLM-L6-v2\"\nmax_length = 48\n\n{FINE_FOODS_MINI}\
             \n[train]\nepochs = 1\nbatch_size = 8\nlr = 1e-2\nbackend = \"flex\"\n\n\
             [output]\ndir = \"{}\"\n",
            run.display()
        ),
    );
    ok(&["train", cfg.to_str().unwrap()]);
    let out = tmp.path().join("onnx");
    let said = export_onnx(&run, &out);
    assert!(said.contains("logits and features"), "{said}");
    let labels: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(out.join("labels.json")).unwrap()).unwrap();
    assert_eq!(labels.len(), 2);

    let texts = [
        "Wonderful coffee, I will buy it again.",
        "The chips were stale and the bag was half empty, which is a shame because the flavour \
         is one I used to love; I wrote to the seller and nobody has answered in two weeks.",
        "ok",
        "Tastes like cardboard.",
        "My dog loves these treats and they do not upset his stomach.",
    ];
    let device = graft_train::select_device(Backend::Flex).unwrap().device;
    let model = Model::open(&run, &device).unwrap();
    let onnx = std::fs::read(out.join("model.onnx")).unwrap();
    let tokenizer = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    for batch in [&texts[..1], &texts[..]] {
        let examples: Vec<graft_data::TextExample> = batch
            .iter()
            .enumerate()
            .map(|(line, text)| graft_data::TextExample {
                text: text.to_string(),
                label: None,
                line,
                bytes: None,
                pair: None,
                negative: None,
            })
            .collect();
        let expected: Vec<f32> = model.outputs(&examples, 8, &Silent).unwrap().concat();
        let encodings = tokenizer.encode_batch(batch.to_vec(), true).unwrap();
        let length = encodings[0].get_ids().len();
        // The long review is cut at the run's max_length, and the batch padded to its longest.
        assert!(length <= 48, "{length}");
        let column = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| {
            let values: Vec<i64> = encodings
                .iter()
                .flat_map(|e| f(e).iter().map(|v| i64::from(*v)))
                .collect();
            Value::I64(ArrayD::from_shape_vec(IxDyn(&[batch.len(), length]), values).unwrap())
        };
        let inputs = [
            ("input_ids", column(&|e| e.get_ids())),
            ("token_type_ids", column(&|e| e.get_type_ids())),
            ("attention_mask", column(&|e| e.get_attention_mask())),
        ];
        let got = graft_onnx::run(&onnx, &inputs).unwrap();
        let d = distance(&got[0].to_f32(), &expected);
        assert!(d <= 1e-4, "{} texts of {length} tokens: {d:e}", batch.len());
    }
}

/// EfficientNet-Lite0 with its real weights: the export's logits for two photographs, preprocessed
/// as graft preprocesses them, are graft's.
#[test]
fn an_image_classifiers_export_gives_its_logits_for_real_images() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = lite0_folder(tmp.path());
    let out = tmp.path().join("onnx");
    let said = export_onnx(&folder, &out);
    assert!(said.contains("logits and features from pixels"), "{said}");
    assert!(out.join("preprocessor_config.json").is_file());

    let images: Vec<PathBuf> = ["chelsea.png", "coffee.png"]
        .iter()
        .map(|n| golden("vision").join(n))
        .collect();
    let graft_model::Preprocessing::Image(transform) = graft_model::ModelFolder::open(&folder)
        .unwrap()
        .preprocessing()
        .unwrap()
    else {
        panic!("an image model");
    };
    let mut pixels = Vec::new();
    for image in &images {
        pixels.extend(transform.apply(&graft_data::image::load_rgb(image).unwrap()));
    }
    let size = transform.image_size;
    let pixels = Value::F32(ArrayD::from_shape_vec(IxDyn(&[2, 3, size, size]), pixels).unwrap());
    let onnx = std::fs::read(out.join("model.onnx")).unwrap();
    let got = graft_onnx::run(&onnx, &[("pixel_values", pixels)]).unwrap();

    let device = graft_train::select_device(Backend::Flex).unwrap().device;
    let model = Model::open(&folder, &device).unwrap();
    let examples: Vec<graft_data::TextExample> = images
        .iter()
        .enumerate()
        .map(|(line, path)| graft_data::TextExample {
            text: path.display().to_string(),
            label: None,
            line,
            bytes: None,
            pair: None,
            negative: None,
        })
        .collect();
    let expected = model.outputs(&examples, 2, &Silent).unwrap().concat();
    assert_eq!(got[0].shape(), vec![2, 1000]);
    let d = distance(&got[0].to_f32(), &expected);
    assert!(d <= 1e-4, "{d:e}");
}

#[test]
fn onnx_exports_refuse_what_they_cannot_do_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let model = golden("native_heads/bert");
    let model = model.to_str().unwrap();
    let out = tmp.path().join("onnx");
    let out = out.to_str().unwrap();
    // --merge is for the native layout: an ONNX export always folds adapters in.
    let stderr = fails(&[
        "export", "--model", model, "--out", out, "--format", "onnx", "--merge",
    ]);
    assert!(stderr.contains("leave out --merge"), "{stderr}");
    // Something already there is replaced only with --force.
    export_onnx(Path::new(model), Path::new(out));
    let stderr = fails(&["export", "--model", model, "--out", out, "--format", "onnx"]);
    assert!(stderr.contains("--force"), "{stderr}");
    ok(&[
        "export", "--model", model, "--out", out, "--format", "onnx", "--force",
    ]);
    // A model whose check needs more than the interpreter holds (a ViT with 16641 tokens) is
    // an error that says so, not a crash or an unchecked file.
    let stderr = fails(&[
        "export",
        "--model",
        golden("vit/timm-dinov2-reg").to_str().unwrap(),
        "--out",
        tmp.path().join("big").to_str().unwrap(),
        "--format",
        "onnx",
    ]);
    assert!(
        stderr.contains("more than the interpreter holds"),
        "{stderr}"
    );
    assert!(!tmp.path().join("big").exists());
}

/// A PEFT LoRA adapter exports merged into its base: the graph computes what graft computes for
/// the adapter (which `tests/lora.rs` checks against PEFT).
#[test]
fn a_peft_adapter_exports_merged_into_its_base() {
    let tmp = tempfile::tempdir().unwrap();
    let adapter = repo().join("crates/graft/tests/golden/lora/roberta-adapter");
    let out = tmp.path().join("adapter-onnx");
    let said = export_onnx(&adapter, &out);
    assert!(said.contains("checked on inputs"), "{said}");
    graph_reproduces_its_check(&out, "roberta-adapter");
    assert!(out.join("tokenizer.json").is_file());
}
