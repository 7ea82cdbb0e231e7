//! ONNX models from burn graphs, for runtimes that do not run graft (onnxruntime, TensorRT, a
//! browser).
//!
//! burn's capture backend records the operations a model's forward pass performs on a
//! non-executing device ([`burn::tensor::Device::capture`]). [`model`] translates such recordings
//! into one ONNX graph (opset 17): each burn operation becomes the ONNX nodes that compute it as
//! burn's reference does, the recorded weights become initializers. A recording has fixed sizes,
//! so the caller records the forward pass at several batch and sequence sizes; shapes that follow
//! those sizes are computed in the graph from the inputs' own shapes (see [`merge`]). Nothing
//! here knows a model family: any graph burn records exports, or the error names the operation
//! ONNX cannot express.

mod eval;
mod merge;
pub mod proto;
mod translate;

pub use eval::{Value, run};
pub use ndarray::{ArrayD, IxDyn};

use burn::tensor::CapturedGraph;
use prost::Message;

use proto::{
    Dimension, GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto,
    TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto,
};

/// The opset the graphs use (LayerNormalization is in it; Gelu came in 20).
pub const OPSET: i64 = 17;

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("cannot export to ONNX: {0}")]
    Unsupported(String),
}

/// The element type of a graph input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32,
    I64,
}

/// One axis of a graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Axis {
    Fixed(usize),
    /// A variable size, by name (`batch`, `sequence`): one of [`model`]'s `variables`.
    Variable(String),
}

/// A graph input or output: its name, type and axes.
#[derive(Debug, Clone)]
pub struct Port {
    pub name: String,
    pub elem: Elem,
    pub axes: Vec<Axis>,
}

/// One recording of the forward pass, and the value each variable size had in it.
pub struct Recording {
    pub graph: CapturedGraph,
    pub sizes: Vec<usize>,
}

/// The ONNX model (serialized) of the forward pass recorded in `recordings`. Their graphs'
/// declared inputs and outputs are `inputs` and `outputs`, in order; `variables` names the sizes
/// of `Recording::sizes`, each of which some input's axis carries. At least three recordings
/// with distinct sizes are needed to tell how each shape follows them; where a constant table
/// follows the sequence length, the largest recorded length is the longest the model takes.
pub fn model(
    recordings: Vec<Recording>,
    variables: &[&str],
    inputs: &[Port],
    outputs: &[Port],
    metadata: &[(String, String)],
) -> Result<Vec<u8>, OnnxError> {
    if recordings.len() < 3 {
        return Err(OnnxError::Unsupported(
            "fewer than three recordings cannot tell how shapes follow the input size".into(),
        ));
    }
    let sources = merge::Sources {
        variables: variables
            .iter()
            .map(|v| {
                inputs
                    .iter()
                    .find_map(|port| {
                        let axis = port
                            .axes
                            .iter()
                            .position(|a| *a == Axis::Variable(v.to_string()))?;
                        Some((port.name.clone(), axis))
                    })
                    .ok_or_else(|| {
                        OnnxError::Unsupported(format!("no input has the variable axis {v}"))
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    let mut translated: Vec<(Vec<translate::Step>, Vec<i64>)> =
        Vec::with_capacity(recordings.len());
    // Each recording is dropped once translated, and constants equal to the first recording's
    // are not kept twice: a model's weights are held once or twice, not once per recording.
    for recording in recordings {
        let graph = &recording.graph.graph;
        if graph.inputs.len() != inputs.len() || graph.outputs.len() != outputs.len() {
            return Err(OnnxError::Unsupported(format!(
                "the recording has {} inputs and {} outputs, not {} and {}",
                graph.inputs.len(),
                graph.outputs.len(),
                inputs.len(),
                outputs.len()
            )));
        }
        let named = |ids: &[burn_ir::TensorId], ports: &[Port]| {
            ids.iter()
                .zip(ports)
                .map(|(id, port)| (*id, port.name.clone()))
                .collect::<Vec<_>>()
        };
        let steps = translate::translate(
            &graph.operations,
            &recording.graph.values,
            &named(&graph.inputs, inputs),
            &named(&graph.outputs, outputs),
        )?;
        let sizes = recording.sizes.iter().map(|s| *s as i64).collect();
        drop(recording);
        let steps = match translated.first() {
            Some((first, _)) => translate::share_constants(first, steps),
            None => steps,
        };
        translated.push((steps, sizes));
    }
    let merged = merge::merge(&translated, &sources)?;
    let mut graph = GraphProto {
        node: merged.nodes,
        name: "graft".into(),
        initializer: merged.initializers,
        input: inputs.iter().map(value_info).collect(),
        output: outputs.iter().map(value_info).collect(),
    };
    merge::prune(&mut graph);
    let model = ModelProto {
        ir_version: 8,
        producer_name: "graft".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        metadata_props: metadata
            .iter()
            .map(|(key, value)| StringStringEntryProto {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        ..ModelProto::default()
    };
    Ok(model.encode_to_vec())
}

/// The operations of a recording, by kind: two recordings whose structures differ took different
/// paths (burn folds a linear layer's batch into its rows below a size, say) and cannot be
/// merged.
pub fn structure(graph: &CapturedGraph) -> Vec<String> {
    graph
        .graph
        .operations
        .iter()
        .map(translate::op_name)
        .collect()
}

fn value_info(port: &Port) -> ValueInfoProto {
    let elem_type = match port.elem {
        Elem::F32 => proto::data_type::FLOAT,
        Elem::I64 => proto::data_type::INT64,
    };
    let dim = port
        .axes
        .iter()
        .map(|axis| match axis {
            Axis::Fixed(size) => Dimension {
                dim_value: Some(*size as i64),
                dim_param: None,
            },
            Axis::Variable(name) => Dimension {
                dim_value: None,
                dim_param: Some(name.clone()),
            },
        })
        .collect();
    ValueInfoProto {
        name: port.name.clone(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}
