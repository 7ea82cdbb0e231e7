//! A model as an ONNX folder: `model.onnx` computing the head's logits (and the features it reads)
//! from token ids or pixels, with the tokenizer or image settings and the labels beside it, so
//! onnxruntime, optimum or a browser runs the tuned model without graft.
//!
//! The forward pass is recorded on burn's capture device at several batch and sequence sizes and
//! translated by graft-onnx; the batch (and, for text, the sequence length up to the model's
//! `max_length`) stay variable in the exported graph.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use burn::backend::Capture;
use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData, TensorId};
use graft_model::{Backbone, Inputs};
use graft_onnx::{Axis, Elem, Port, Recording};
use serde_json::{Value, json};

use crate::error::{TrainError, TrainError as E};
use crate::files::{self, TensorBytes, write_json_atomic};
use crate::head::Head;
use crate::modality::Encoder;
use crate::model::{EmbedOptions, Model};
use graft_data::TextExample;

/// Batches of the text recordings: distinct primes, so that each shape's dependence on the batch
/// is unambiguous.
const BATCHES: [usize; 3] = [2, 3, 5];

/// The largest batch an image recording is tried at.
const MAX_IMAGE_BATCH: usize = 64;

/// Sequence lengths are recorded at multiples of this: burn folds a linear layer's batch into its
/// rows unless the rows (the length) fill its matmul row tiles of 32, and every recording must
/// take the same path for the graphs to merge. The batched path the multiples take is right at
/// any length.
const LENGTH_STEP: usize = 32;

/// The (batch, length) of each recording of a text model whose longest input is `longest`
/// tokens: two lengths at each of two batches, and the longest, rounded up to the step, for the
/// tables that follow the length.
fn text_sizes(longest: usize) -> Vec<(usize, usize)> {
    let table = longest.div_ceil(LENGTH_STEP).max(2) * LENGTH_STEP;
    let mut sizes = vec![
        (BATCHES[0], LENGTH_STEP),
        (BATCHES[1], 2 * LENGTH_STEP),
        (BATCHES[2], LENGTH_STEP),
    ];
    sizes.push((BATCHES[0], table));
    sizes
}

/// Writes `model` (opened from `source`) as an ONNX folder at `out` and says what it holds.
pub fn write(model: &Model, out: &Path, replace: bool) -> Result<String, TrainError> {
    super::check_destination(out, replace)?;
    let (backbone, head, encoder, folder) = model.parts();
    // An embedding run's head has no layers: like a folder without a head, it is its embedding.
    let head = head.filter(|head| !head.layers.is_empty());
    // Without a head the model is its embedding, as `graft embed` computes it by default.
    let embedding;
    let (backbone, encoder) = match head {
        Some(_) => (backbone, encoder),
        None => {
            embedding = model.embedding_backbone(&EmbedOptions {
                pooling: None,
                normalize: None,
                max_length: None,
                batch_size: 1,
            })?;
            (&embedding.0, &*embedding.1)
        }
    };
    let name = |s: &str| s.to_string();
    let variable = |s: &str| Axis::Variable(s.to_string());
    let mut check_batch = 4;
    let (recordings, variables, inputs) = match encoder {
        Encoder::Text(tokenizer) | Encoder::Words(_, tokenizer) => {
            let recordings = text_sizes(tokenizer.max_length())
                .iter()
                .map(|&(batch, seq)| record_text(backbone, head, batch, seq))
                .collect::<Result<Vec<_>, _>>()?;
            // A family that reads no token types takes no such input (as optimum exports it).
            let uses_types = recordings[0].graph.graph.inputs.len() == 3;
            let mut inputs = vec![Port {
                name: name("input_ids"),
                elem: Elem::I64,
                axes: vec![variable("batch"), variable("sequence")],
            }];
            if uses_types {
                inputs.push(Port {
                    name: name("token_type_ids"),
                    elem: Elem::I64,
                    axes: vec![variable("batch"), variable("sequence")],
                });
            }
            inputs.push(Port {
                name: name("attention_mask"),
                elem: Elem::I64,
                axes: vec![variable("batch"), variable("sequence")],
            });
            (recordings, vec!["batch", "sequence"], inputs)
        }
        Encoder::Image(transform) => {
            let size = transform.image_size;
            let batches = image_batches(backbone, head, size)?;
            check_batch = (2..).find(|b| !batches.contains(b)).expect("a batch");
            let recordings = batches
                .iter()
                .map(|&batch| record_image(backbone, head, batch, size))
                .collect::<Result<Vec<_>, _>>()?;
            let inputs = vec![Port {
                name: name("pixel_values"),
                elem: Elem::F32,
                axes: vec![
                    variable("batch"),
                    Axis::Fixed(3),
                    Axis::Fixed(size),
                    Axis::Fixed(size),
                ],
            }];
            (recordings, vec!["batch"], inputs)
        }
    };
    let mut outputs = Vec::new();
    if let Some(head) = head {
        outputs.push(Port {
            name: name("logits"),
            elem: Elem::F32,
            axes: vec![variable("batch"), Axis::Fixed(head.output_size())],
        });
    }
    outputs.push(Port {
        name: name(if head.is_some() {
            "features"
        } else {
            "embeddings"
        }),
        elem: Elem::F32,
        axes: vec![variable("batch"), Axis::Fixed(backbone.feature_size())],
    });
    let labels = head.and(model.task()).map(|spec| spec.labels.clone());
    let mut metadata = vec![(
        "architecture".to_string(),
        folder.architecture.name().to_string(),
    )];
    if let Some(labels) = &labels {
        metadata.push((
            "labels".into(),
            serde_json::to_string(labels).unwrap_or_default(),
        ));
    }
    let origin = model.source().path.display().to_string();
    let bytes = graft_onnx::model(recordings, &variables, &inputs, &outputs, &metadata)
        .map_err(|e| E::Unsupported(format!("{origin}: {e}")))?;
    let (checked, check_tensors) = check(
        &bytes,
        backbone,
        head,
        encoder,
        &inputs,
        &outputs,
        check_batch,
    )
    .map_err(|e| E::Unsupported(format!("{origin}: {e}")))?;

    let staging = files::staging_dir(out, "export")?;
    let written = (|| -> Result<(), TrainError> {
        let onnx = staging.join("model.onnx");
        std::fs::write(&onnx, &bytes).map_err(super::io(&onnx))?;
        let mut config = folder.config.clone();
        if let (Some(labels), Some(object)) = (&labels, config.as_object_mut()) {
            super::insert_label_maps(object, labels);
            if let Some(spec) = model.task() {
                object.insert(
                    "problem_type".into(),
                    json!(spec.task.logic().problem_type()),
                );
            }
            write_json_atomic(&staging.join("labels.json"), labels)?;
        }
        write_json_atomic(&staging.join("config.json"), &config)?;
        files::write_safetensors(&staging.join(CHECK_FILE), &check_tensors, None)?;
        if let Encoder::Image(transform) = encoder {
            write_json_atomic(
                &staging.join("preprocessor_config.json"),
                &super::transformers::processor_config(transform),
            )?;
        }
        super::copy_tokenizer_files(&folder.dir, &staging)?;
        if let Encoder::Text(tokenizer) | Encoder::Words(_, tokenizer) = encoder {
            truncate_as_graft(&staging.join("tokenizer.json"), tokenizer.max_length())?;
        }
        Ok(())
    })();
    match written {
        Ok(()) => files::publish_dir(&staging, out)?,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    }
    let modality = match encoder {
        Encoder::Text(_) | Encoder::Words(..) => "token ids",
        Encoder::Image(_) => "pixels",
    };
    let what = if head.is_some() {
        "logits and features"
    } else {
        "embeddings"
    };
    Ok(format!(
        "ONNX (opset {}: {what} from {modality}, {} MB; {checked})",
        graft_onnx::OPSET,
        bytes.len().div_ceil(1 << 20)
    ))
}

/// Three consecutive batches at which an image model's recordings take the same path. burn folds
/// a linear layer's batch into its rows while that brings the product closer to square, so the
/// path changes at some batch sizes (each layer's own); between them, consecutive batches agree.
fn image_batches(
    backbone: &Backbone,
    head: Option<&Head>,
    size: usize,
) -> Result<Vec<usize>, TrainError> {
    let mut previous: Vec<(usize, Vec<String>)> = Vec::new();
    for batch in 2..=MAX_IMAGE_BATCH {
        let recording = record_image(backbone, head, batch, size)?;
        let structure = graft_onnx::structure(&recording.graph);
        drop(recording);
        previous.retain(|(_, s)| *s == structure);
        previous.push((batch, structure));
        if previous.len() == 3 {
            return Ok(previous.into_iter().map(|(b, _)| b).collect());
        }
    }
    Err(E::Unsupported(format!(
        "the forward pass takes a different path at every batch size up to {MAX_IMAGE_BATCH}"
    )))
}

fn float_id<const D: usize>(tensor: &Tensor<D>) -> TensorId {
    tensor
        .clone()
        .try_into_primitive::<Capture>()
        .expect("a tensor on the capture device")
        .id()
}

fn int_id<const D: usize>(tensor: &Tensor<D, Int>) -> TensorId {
    tensor
        .clone()
        .try_into_primitive::<Capture>()
        .expect("a tensor on the capture device")
        .id()
}

fn run_forward(backbone: &Backbone, head: Option<&Head>, inputs: Inputs) -> Vec<Tensor<2>> {
    let features = backbone.forward(inputs);
    let mut outputs = Vec::new();
    if let Some(head) = head {
        outputs.push(head.forward(features.clone()));
    }
    outputs.push(features);
    outputs
}

/// Records the forward pass on a fresh capture device, on the inputs `inputs` makes there
/// (returned with their ids, the graph's inputs).
fn record(
    backbone: &Backbone,
    head: Option<&Head>,
    inputs: impl FnOnce(&Device) -> (Inputs, Vec<TensorId>),
) -> Result<burn::tensor::CapturedGraph, TrainError> {
    let capture = Device::capture();
    let result = catch_unwind(AssertUnwindSafe(|| {
        capture.capture_scope(|scope| {
            let backbone = detached(backbone).to_device(&capture);
            let head = head.map(|h| detached(h).to_device(&capture));
            let (inputs, input_ids) = inputs(&capture);
            let outputs = run_forward(&backbone, head.as_ref(), inputs);
            let output_ids: Vec<TensorId> = outputs.iter().map(float_id).collect();
            scope.complete(input_ids, output_ids)
        })
    }));
    finish(result)
}

fn record_text(
    backbone: &Backbone,
    head: Option<&Head>,
    batch: usize,
    seq: usize,
) -> Result<Recording, TrainError> {
    let graph = record(backbone, head, |capture| {
        // Placeholders: the graph's inputs, whose values are not recorded as constants.
        let filled = |value: i64| {
            let data = TensorData::new(vec![value; batch * seq], [batch, seq]);
            Tensor::<2, Int>::from_data(data, capture)
        };
        let (ids, types, mask) = (filled(1), filled(0), filled(1));
        let input_ids = [&ids, &types, &mask].map(int_id).to_vec();
        let inputs = Inputs::Text {
            input_ids: ids,
            token_type_ids: types,
            attention_mask: Some(mask),
        };
        (inputs, input_ids)
    })?;
    Ok(Recording {
        graph: drop_unread_inputs(graph),
        sizes: vec![batch, seq],
    })
}

fn record_image(
    backbone: &Backbone,
    head: Option<&Head>,
    batch: usize,
    size: usize,
) -> Result<Recording, TrainError> {
    let graph = record(backbone, head, |capture| {
        let data = TensorData::new(vec![0f32; batch * 3 * size * size], [batch, 3, size, size]);
        let pixels = Tensor::<4>::from_data(data, capture);
        let input = float_id(&pixels);
        (Inputs::Image(pixels), vec![input])
    })?;
    Ok(Recording {
        graph,
        sizes: vec![batch],
    })
}

/// A copy of `module` that shares nothing with it: burn's running statistics (BatchNorm's) are
/// shared between clones, and moving a clone to the capture device would move the original's;
/// `valid` gives each its own.
fn detached<M: Module>(module: &M) -> M {
    module.valid()
}

fn finish(
    result: std::thread::Result<Result<burn::tensor::CapturedGraph, burn::tensor::CaptureError>>,
) -> Result<burn::tensor::CapturedGraph, TrainError> {
    match result {
        Ok(Ok(graph)) => Ok(graph),
        Ok(Err(e)) => Err(E::Unsupported(format!(
            "recording the forward pass for ONNX: {e:?}"
        ))),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(E::Unsupported(format!(
                "the forward pass cannot be recorded for ONNX: {message}"
            )))
        }
    }
}

/// The token types are declared an input only when some operation reads them.
fn drop_unread_inputs(mut graph: burn::tensor::CapturedGraph) -> burn::tensor::CapturedGraph {
    let types = graph.graph.inputs[1];
    let read = graph.graph.operations.iter().any(|op| {
        !matches!(
            op,
            burn_ir::OperationIr::Init(_) | burn_ir::OperationIr::Drop(_)
        ) && op.nodes().iter().any(|t| t.id == types)
    });
    if !read {
        graph.graph.inputs.remove(1);
        graph
            .graph
            .operations
            .retain(|op| !matches!(op, burn_ir::OperationIr::Init(init) if init.out.id == types));
    }
    graph
}

/// Sets the exported `tokenizer.json` to encode as graft does: truncated to the model's
/// `max_length`, padded to the longest text of a batch.
fn truncate_as_graft(path: &Path, max_length: usize) -> Result<(), TrainError> {
    let text = std::fs::read_to_string(path).map_err(super::io(path))?;
    let mut tokenizer: Value = serde_json::from_str(&text).map_err(|e| E::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    tokenizer["truncation"] = json!({
        "direction": "Right",
        "max_length": max_length,
        "strategy": "LongestFirst",
        "stride": 0,
    });
    if let Some(padding) = tokenizer.get_mut("padding").and_then(Value::as_object_mut) {
        padding.insert("strategy".into(), json!("BatchLongest"));
    }
    write_json_atomic(path, &tokenizer)
}

/// The inputs the export was checked on and graft's outputs for them (`expected.<output>`), so
/// any runtime can be checked against graft the same way.
pub const CHECK_FILE: &str = "check.safetensors";

/// Texts the check encodes: of different lengths, so the batch is padded.
const CHECK_TEXTS: [&str; 3] = [
    "The tea arrived fresh and tasted wonderful.",
    "Stale.",
    "Half of the cookies were broken when the parcel came, which was a pity.",
];

/// Runs the exported graph in graft-onnx's interpreter on inputs of a size it was not recorded
/// at (`image_batch` images), and graft's own forward pass on the same inputs: an export whose
/// outputs differ by more than 1e-4 (relative to the outputs' scale) is an error. Says the
/// distance, and returns the inputs and graft's outputs.
fn check(
    bytes: &[u8],
    backbone: &Backbone,
    head: Option<&Head>,
    encoder: &Encoder,
    ports: &[Port],
    outputs: &[Port],
    image_batch: usize,
) -> Result<(String, Vec<TensorBytes>), TrainError> {
    #[allow(deprecated)]
    let device = Device::flex();
    let inputs = match encoder {
        Encoder::Text(_) | Encoder::Words(..) => {
            let examples: Vec<TextExample> = CHECK_TEXTS
                .iter()
                .enumerate()
                .map(|(line, text)| TextExample {
                    text: text.to_string(),
                    label: None,
                    line,
                    bytes: None,
                    pair: None,
                    negative: None,
                })
                .collect();
            let encoded = encoder.encode(&examples)?;
            encoded.batch(&[0, 1, 2], None, &device)
        }
        Encoder::Image(transform) => {
            let size = transform.image_size;
            let n = image_batch * 3 * size * size;
            // A fixed pattern of normalized pixels in about [-2, 2].
            let pixels: Vec<f32> = (0..n)
                .map(|i| ((i * 7919 % 1000) as f32 / 250.0) - 2.0)
                .collect();
            Inputs::Image(Tensor::from_data(
                TensorData::new(pixels, [image_batch, 3, size, size]),
                &device,
            ))
        }
    };
    let feeds: Vec<(String, graft_onnx::Value)> = match &inputs {
        Inputs::Text {
            input_ids,
            token_type_ids,
            attention_mask,
        } => {
            let mask = attention_mask
                .clone()
                .unwrap_or_else(|| input_ids.ones_like());
            let int_value = |t: &Tensor<2, Int>| {
                let dims = t.dims();
                let values: Vec<i64> = t.to_data().convert::<i64>().try_to_vec().expect("ints");
                graft_onnx::Value::I64(
                    graft_onnx::ArrayD::from_shape_vec(graft_onnx::IxDyn(&dims), values)
                        .expect("shape"),
                )
            };
            let all = [
                ("input_ids", int_value(input_ids)),
                ("token_type_ids", int_value(token_type_ids)),
                ("attention_mask", int_value(&mask)),
            ];
            all.into_iter()
                .filter(|(name, _)| ports.iter().any(|p| p.name == *name))
                .map(|(name, value)| (name.to_string(), value))
                .collect()
        }
        Inputs::Image(pixels) => {
            let dims = pixels.dims();
            let values: Vec<f32> = pixels.to_data().try_to_vec().expect("floats");
            vec![(
                "pixel_values".to_string(),
                graft_onnx::Value::F32(
                    graft_onnx::ArrayD::from_shape_vec(graft_onnx::IxDyn(&dims), values)
                        .expect("shape"),
                ),
            )]
        }
    };
    let shape = match &inputs {
        Inputs::Text { input_ids, .. } => format!("{:?}", input_ids.dims()),
        Inputs::Image(pixels) => format!("{:?}", pixels.dims()),
    };
    let inputs = match inputs {
        Inputs::Text {
            input_ids,
            token_type_ids,
            attention_mask,
        } => {
            let mask = attention_mask.unwrap_or_else(|| input_ids.ones_like());
            Inputs::Text {
                input_ids,
                token_type_ids,
                attention_mask: Some(mask),
            }
        }
        image => image,
    };
    let expected = run_forward(backbone, head, inputs);
    let feeds: Vec<(&str, graft_onnx::Value)> =
        feeds.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    let got = graft_onnx::run(bytes, &feeds)
        .map_err(|e| E::Unsupported(format!("running the exported graph: {e}")))?;
    let mut tensors: Vec<TensorBytes> = feeds
        .iter()
        .map(|(name, value)| match value {
            graft_onnx::Value::I64(a) => TensorBytes {
                name: name.to_string(),
                shape: a.shape().to_vec(),
                bytes: a.iter().flat_map(|v| v.to_le_bytes()).collect(),
                dtype: safetensors::Dtype::I64,
            },
            other => TensorBytes::f32(*name, other.shape(), &other.to_f32()),
        })
        .collect();
    let mut worst = 0.0f32;
    for ((expected, got), port) in expected.iter().zip(&got).zip(outputs) {
        let shape = expected.dims().to_vec();
        let expected: Vec<f32> = expected.to_data().try_to_vec().expect("floats");
        tensors.push(TensorBytes::f32(
            format!("expected.{}", port.name),
            shape,
            &expected,
        ));
        let got = got.to_f32();
        let scale = expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        if got.len() != expected.len() {
            return Err(E::Unsupported(format!(
                "the exported graph gives {} values where graft gives {}",
                got.len(),
                expected.len()
            )));
        }
        let diff = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs() / scale)
            .fold(
                0.0f32,
                |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
            );
        worst = worst.max(diff);
    }
    if worst > 1e-4 {
        return Err(E::Unsupported(format!(
            "the exported graph does not compute what graft computes: on inputs {shape} its \
             outputs differ by {worst:.2e} (relative), more than 1e-4"
        )));
    }
    Ok((
        format!("checked on inputs {shape}: within {worst:.1e} of graft"),
        tensors,
    ))
}
