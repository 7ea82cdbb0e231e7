//! TF2 object-based checkpoints and SavedModels' `variables/`: their tensors are keyed by an
//! object path (`model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE`, or Keras 3's
//! `optimizer/_trainable_variables/0/...`), which names no layer. The bundle's
//! `_CHECKPOINTABLE_OBJECT_GRAPH` string (a `TrackableObjectGraph` proto, decoded with prost)
//! gives each variable's `full_name` (`sequential/dense/kernel`), and tells the model's variables
//! from the optimizer's: Keras 2's slot variables, and in Keras 3 what only the root's
//! `optimizer` child reaches. Nothing in the graph is run.

use std::collections::{BTreeMap, VecDeque};

use prost::Message;

use crate::ModelError;
use crate::tf_bundle::TensorBundle;

/// The key of the object graph in a TF2 bundle.
pub const OBJECT_GRAPH: &str = "_CHECKPOINTABLE_OBJECT_GRAPH";

#[derive(Clone, PartialEq, Message)]
struct TrackableObjectGraph {
    #[prost(message, repeated, tag = "1")]
    nodes: Vec<TrackableObject>,
}

#[derive(Clone, PartialEq, Message)]
struct TrackableObject {
    #[prost(message, repeated, tag = "1")]
    children: Vec<ObjectReference>,
    #[prost(message, repeated, tag = "2")]
    attributes: Vec<SerializedTensor>,
    #[prost(message, repeated, tag = "3")]
    slot_variables: Vec<SlotVariableReference>,
}

#[derive(Clone, PartialEq, Message)]
struct ObjectReference {
    #[prost(int32, tag = "1")]
    node_id: i32,
    #[prost(string, tag = "2")]
    local_name: String,
}

#[derive(Clone, PartialEq, Message)]
struct SerializedTensor {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    full_name: String,
    #[prost(string, tag = "3")]
    checkpoint_key: String,
}

#[derive(Clone, PartialEq, Message)]
struct SlotVariableReference {
    #[prost(int32, tag = "1")]
    original_variable_node_id: i32,
    #[prost(string, tag = "2")]
    slot_name: String,
    #[prost(int32, tag = "3")]
    slot_variable_node_id: i32,
}

/// What the object graph says of one checkpoint tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedVariable {
    /// The variable's name where it was made (`sequential/dense/kernel`, `dense/kernel`).
    pub full_name: String,
    /// The shortest object path to it through the model (`model/_functional/_operations/1/_kernel`),
    /// else through anything (empty for a slot variable, which no path reaches).
    pub path: String,
    /// Optimizer state (a slot, a step counter, a moment), not a weight of the model.
    pub optimizer: bool,
}

/// Every tensor of a TF2 bundle the object graph describes, by checkpoint key; `None` for a
/// bundle without an object graph (a TF1 checkpoint).
pub fn tracked_variables(
    bundle: &TensorBundle,
) -> Result<Option<BTreeMap<String, TrackedVariable>>, ModelError> {
    if !bundle.tensors().contains_key(OBJECT_GRAPH) {
        return Ok(None);
    }
    let serialized = bundle.strings(OBJECT_GRAPH)?;
    let bad = |message: String| ModelError::CorruptWeights {
        path: bundle.index.clone(),
        message: format!("{OBJECT_GRAPH}: {message}"),
    };
    let [graph] = serialized.as_slice() else {
        return Err(bad(format!("{} elements, not one", serialized.len())));
    };
    let graph = TrackableObjectGraph::decode(graph.as_slice()).map_err(|e| bad(e.to_string()))?;
    let nodes = &graph.nodes;
    let node = |id: i32| usize::try_from(id).ok().filter(|&i| i < nodes.len());
    // Breadth-first from the root: each node's shortest path, its shortest through the model
    // (a root child other than the optimizer), and whether the model reaches it.
    let mut path: Vec<Option<String>> = vec![None; nodes.len()];
    let mut model_path: Vec<Option<String>> = vec![None; nodes.len()];
    let mut by_model = vec![false; nodes.len()];
    let mut queue = VecDeque::new();
    if !nodes.is_empty() {
        path[0] = Some(String::new());
        queue.push_back((0usize, false));
    }
    let mut seen = vec![[false; 2]; nodes.len()];
    while let Some((id, model)) = queue.pop_front() {
        for child in &nodes[id].children {
            let Some(c) = node(child.node_id) else {
                return Err(bad(format!("node {id} names node {}", child.node_id)));
            };
            let model = model || (id == 0 && child.local_name != "optimizer");
            let join = |parent: &Option<String>| match parent.as_deref() {
                None | Some("") => child.local_name.clone(),
                Some(parent) => format!("{parent}/{}", child.local_name),
            };
            if path[c].is_none() {
                path[c] = Some(join(&path[id]));
            }
            if model && model_path[c].is_none() {
                let through = if model_path[id].is_some() {
                    &model_path[id]
                } else {
                    &path[id]
                };
                model_path[c] = Some(join(through));
            }
            by_model[c] |= model;
            if !seen[c][usize::from(model)] {
                seen[c][usize::from(model)] = true;
                queue.push_back((c, model));
            }
        }
    }
    let mut slots = vec![false; nodes.len()];
    for slot in nodes.iter().flat_map(|n| &n.slot_variables) {
        if let Some(s) = node(slot.slot_variable_node_id) {
            slots[s] = true;
        }
    }
    let mut tracked = BTreeMap::new();
    for (id, object) in nodes.iter().enumerate() {
        for attribute in &object.attributes {
            tracked.insert(
                attribute.checkpoint_key.clone(),
                TrackedVariable {
                    full_name: attribute.full_name.clone(),
                    path: model_path[id]
                        .clone()
                        .or_else(|| path[id].clone())
                        .unwrap_or_default(),
                    optimizer: slots[id] || !by_model[id],
                },
            );
        }
    }
    Ok(Some(tracked))
}
