//! Graph-level shape and type inference: walks nodes in order, asks each op
//! for its output types, and records them in `Graph::value_info`. Symbolic
//! dims flow through unchanged; constants (initializers) are visible to ops
//! whose output shape depends on an input's value (Reshape, Expand, ...).

use crate::error::IrResult;
use crate::graph::Graph;
use crate::ops::InferCtx;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType, ValueType};
use std::collections::BTreeMap;

/// Infers types for every node of `graph` (and its subgraphs). `outer` holds
/// the types of names visible from enclosing graphs.
pub fn infer_graph(graph: &mut Graph, outer: &BTreeMap<String, ValueType>) -> IrResult<()> {
    let mut env: BTreeMap<String, ValueType> = outer.clone();
    for i in &graph.inputs {
        env.insert(i.name.clone(), i.ty.clone());
    }
    for (name, t) in &graph.initializers {
        let ty = crate::Value::Tensor(t.clone()).value_type();
        let declared = env.get(name).cloned().unwrap_or(ValueType::Unknown);
        env.insert(name.clone(), merge(&declared, &ty));
    }
    let consts: BTreeMap<String, Tensor> = graph.initializers.clone();
    let mut nodes = std::mem::take(&mut graph.nodes);
    let result = (|| {
        for node in nodes.iter_mut() {
            for g in crate::ops::subgraphs_mut(&mut node.op) {
                infer_graph(g, &env)?;
            }
            let inputs: Vec<Option<ValueType>> = node
                .inputs
                .iter()
                .map(|n| {
                    if n.is_empty() {
                        None
                    } else {
                        Some(env.get(n).cloned().unwrap_or(ValueType::Unknown))
                    }
                })
                .collect();
            let const_vals: Vec<Option<&Tensor>> = node
                .inputs
                .iter()
                .map(|n| if n.is_empty() { None } else { consts.get(n) })
                .collect();
            let op_type = node.op.op_type();
            let cx = InferCtx {
                inputs: &inputs,
                consts: &const_vals,
                num_outputs: node.outputs.len(),
                op: op_type,
            };
            let out = node.op.infer(&cx).map_err(|e| e.at_node(&node.name, op_type))?;
            for (k, name) in node.outputs.iter().enumerate() {
                if name.is_empty() {
                    continue;
                }
                let inferred = out.get(k).cloned().unwrap_or(ValueType::Unknown);
                let declared = graph.value_info.get(name).cloned().unwrap_or(ValueType::Unknown);
                let ty = merge(&declared, &inferred);
                env.insert(name.clone(), ty.clone());
                graph.value_info.insert(name.clone(), ty);
            }
        }
        Ok(())
    })();
    graph.nodes = nodes;
    result?;
    for o in graph.outputs.iter_mut() {
        if let Some(t) = env.get(&o.name) {
            o.ty = merge(&o.ty, t);
        }
    }
    Ok(())
}

/// Combines two descriptions of the same value, keeping whatever each knows.
pub fn merge(a: &ValueType, b: &ValueType) -> ValueType {
    match (a, b) {
        (ValueType::Unknown, x) | (x, ValueType::Unknown) => x.clone(),
        (ValueType::Tensor(x), ValueType::Tensor(y)) => {
            let dtype = x.dtype.or(y.dtype);
            let shape = match (&x.shape, &y.shape) {
                (Some(s), Some(t)) if s.len() == t.len() => Some(
                    s.iter()
                        .zip(t)
                        .map(|(p, q)| match (p, q) {
                            (Dim::Known(n), _) | (_, Dim::Known(n)) => Dim::Known(*n),
                            (Dim::Sym(s), _) | (_, Dim::Sym(s)) => Dim::Sym(s.clone()),
                            _ => Dim::Unknown,
                        })
                        .collect(),
                ),
                (Some(s), _) => Some(s.clone()),
                (None, t) => t.clone(),
            };
            ValueType::Tensor(TensorType { dtype, shape })
        }
        (ValueType::Sequence(x), ValueType::Sequence(y)) => ValueType::Sequence(Box::new(merge(x, y))),
        (ValueType::Optional(x), ValueType::Optional(y)) => ValueType::Optional(Box::new(merge(x, y))),
        (x, _) => x.clone(),
    }
}
