//! The Graph IR: a model is a graph of nodes in SSA form over named values.
//!
//! Values are named by strings, as in ONNX: each name is defined once (graph
//! input, initializer or node output) and subgraphs (If/Loop/Scan bodies) may
//! refer to names of enclosing graphs. An empty name in a node's inputs or
//! outputs marks an absent optional slot.

use crate::ops::Op;
use crate::tensor::Tensor;
use crate::types::ValueType;
use std::collections::BTreeMap;

/// A named, typed graph input or output.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ValueInfo {
    pub name: String,
    pub ty: ValueType,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

impl Node {
    /// The input names that are present (non-empty).
    pub fn present_inputs(&self) -> impl Iterator<Item = &str> {
        self.inputs.iter().map(String::as_str).filter(|s| !s.is_empty())
    }
}

#[derive(Clone, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Graph {
    pub name: String,
    /// Declared inputs. An input that also has an initializer is optional
    /// at run time: the initializer is its default.
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    pub initializers: BTreeMap<String, Tensor>,
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
    /// Known types of intermediate values (from the model or from inference).
    pub value_info: BTreeMap<String, ValueType>,
}

impl Graph {
    /// Inputs a caller must feed: those without an initializer.
    pub fn required_inputs(&self) -> impl Iterator<Item = &ValueInfo> {
        self.inputs.iter().filter(|i| !self.initializers.contains_key(&i.name))
    }

    /// The best known type of a value in this graph.
    pub fn type_of(&self, name: &str) -> Option<ValueType> {
        if let Some(i) = self.inputs.iter().chain(&self.outputs).find(|i| i.name == name) {
            if i.ty != ValueType::Unknown {
                return Some(i.ty.clone());
            }
        }
        if let Some(t) = self.initializers.get(name) {
            return Some(crate::Value::Tensor(t.clone()).value_type());
        }
        self.value_info.get(name).cloned()
    }

    /// Total node count, including nodes inside subgraphs.
    pub fn node_count_deep(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| 1 + n.op.subgraphs().iter().map(|g| g.node_count_deep()).sum::<usize>())
            .sum()
    }
}

/// A whole model: the main graph plus the metadata ONNX carries with it.
#[derive(Clone, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Model {
    pub graph: Graph,
    /// Opset version per domain ("" is the default ONNX domain).
    pub opsets: BTreeMap<String, i64>,
    pub ir_version: i64,
    pub producer_name: String,
    pub producer_version: String,
    pub domain: String,
    pub model_version: i64,
    pub doc_string: String,
    pub metadata: Vec<(String, String)>,
}
