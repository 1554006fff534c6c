//! The reference interpreter: runs a graph node by node with the host
//! kernels of [`crate::ops`]. Values live in a scope keyed by name and are
//! dropped after their last use; subgraphs run in a child scope that sees
//! the names of the enclosing graphs.

use crate::error::{invalid, OpResult, RuntimeError};
use crate::ops::{eval, EvalCtx, SubgraphRunner};
use carbide_ir::{Dim, Graph, Model, Node, TensorType, Value, ValueType};
use std::collections::HashMap;

pub(crate) struct Scope<'p> {
    pub(crate) values: HashMap<String, Value>,
    /// Values owned elsewhere (the session's weights), read after `values`.
    pub(crate) borrowed: Option<&'p HashMap<String, Value>>,
    pub(crate) parent: Option<&'p Scope<'p>>,
}

impl Scope<'_> {
    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        if let Some(v) = self.values.get(name) {
            return Some(v);
        }
        if let Some(v) = self.borrowed.and_then(|b| b.get(name)) {
            return Some(v);
        }
        self.parent.and_then(|p| p.get(name))
    }
}

/// Symbolic dim name → the extent the feeds bound it to.
pub(crate) type DimBindings = HashMap<String, usize>;

/// Checks `feeds` against the graph's inputs (dtype, rank, dims, symbolic
/// dims bound consistently) and returns them by name, with the bound
/// symbolic dims. An input that has a
/// weight of the same name may be left out; an unknown name is an error.
pub(crate) fn bind_feeds(
    graph: &Graph,
    weights: &HashMap<String, Value>,
    feeds: Vec<(String, Value)>,
) -> Result<(HashMap<String, Value>, DimBindings), RuntimeError> {
    let mut feeds: HashMap<String, Value> = feeds.into_iter().collect();
    let mut bound = HashMap::new();
    let mut syms: HashMap<String, usize> = HashMap::new();
    for input in &graph.inputs {
        match feeds.remove(&input.name) {
            Some(v) => {
                check_input(&input.name, &input.ty, &v, &mut syms)?;
                bound.insert(input.name.clone(), v);
            }
            None if weights.contains_key(&input.name) => {}
            None => return Err(RuntimeError::MissingInput(input.name.clone())),
        }
    }
    if let Some(name) = feeds.keys().next() {
        return Err(RuntimeError::BadInput {
            name: name.clone(),
            reason: "the model has no such input".into(),
        });
    }
    Ok((bound, syms))
}

/// A loaded model ready to run on the reference runtime.
pub struct Session {
    model: Model,
    /// The main graph's initializers, wrapped once so runs borrow them.
    weights: HashMap<String, Value>,
    /// Seed for random ops without a `seed` attribute.
    pub seed: u64,
}

impl Session {
    pub fn new(model: Model) -> Session {
        let weights = model
            .graph
            .initializers
            .iter()
            .map(|(k, t)| (k.clone(), Value::Tensor(t.clone())))
            .collect();
        Session {
            model,
            weights,
            seed: 0,
        }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Runs the main graph. `feeds` must hold every required input; inputs
    /// with an initializer may be overridden. Returns the graph outputs in
    /// declaration order.
    pub fn run(&self, feeds: Vec<(String, Value)>) -> Result<Vec<(String, Value)>, RuntimeError> {
        let graph = &self.model.graph;
        let (bound, _) = bind_feeds(graph, &self.weights, feeds)?;
        let top = Scope {
            values: bound,
            borrowed: Some(&self.weights),
            parent: None,
        };
        let outs = run_graph(graph, top, self.seed)?;
        Ok(graph.outputs.iter().map(|o| o.name.clone()).zip(outs).collect())
    }
}

/// Checks a fed value against the declared input type, binding symbolic dims.
pub(crate) fn check_input(
    name: &str,
    declared: &ValueType,
    v: &Value,
    syms: &mut HashMap<String, usize>,
) -> Result<(), RuntimeError> {
    let bad = |reason: String| RuntimeError::BadInput {
        name: name.to_string(),
        reason,
    };
    let (ValueType::Tensor(TensorType { dtype, shape }), Value::Tensor(t)) = (declared, v) else {
        return Ok(());
    };
    if let Some(d) = dtype {
        if *d != t.dtype() {
            return Err(bad(format!("expected dtype {d}, got {}", t.dtype())));
        }
    }
    if let Some(shape) = shape {
        if shape.len() != t.rank() {
            return Err(bad(format!("expected rank {}, got shape {:?}", shape.len(), t.shape())));
        }
        for (i, (d, &n)) in shape.iter().zip(t.shape()).enumerate() {
            match d {
                Dim::Known(k) if *k != n => {
                    return Err(bad(format!("dim {i} must be {k}, got {n} (shape {:?})", t.shape())))
                }
                Dim::Sym(s) => {
                    let prev = *syms.entry(s.clone()).or_insert(n);
                    if prev != n {
                        return Err(bad(format!(
                            "dim {i} ('{s}') is {n}, but '{s}' was bound to {prev} by another input"
                        )));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Runs `graph`'s nodes in `scope` and returns its outputs in order.
fn run_graph(graph: &Graph, mut scope: Scope<'_>, seed: u64) -> Result<Vec<Value>, RuntimeError> {
    let last_use = last_uses(graph);
    for (i, node) in graph.nodes.iter().enumerate() {
        let outs = eval_node(node, &scope, seed)?;
        for (name, v) in node.outputs.iter().zip(outs) {
            if !name.is_empty() {
                scope.values.insert(name.clone(), v);
            }
        }
        for inp in node.present_inputs() {
            if last_use.get(inp) == Some(&i) {
                scope.values.remove(inp);
            }
        }
    }
    graph
        .outputs
        .iter()
        .map(|o| {
            scope
                .get(&o.name)
                .cloned()
                .ok_or_else(|| RuntimeError::Undefined(o.name.clone()))
        })
        .collect()
}

/// Runs one node's host kernel on values from `scope`; returns its outputs
/// (at least as many as the node names).
pub(crate) fn eval_node(node: &Node, scope: &Scope<'_>, seed: u64) -> Result<Vec<Value>, RuntimeError> {
    let op_type = node.op.op_type();
    let node_err = |cause| RuntimeError::Node {
        node: node.name.clone(),
        op: op_type.to_string(),
        cause,
    };
    let inputs = node
        .inputs
        .iter()
        .map(|n| {
            if n.is_empty() {
                Ok(None)
            } else {
                scope.get(n).map(Some).ok_or_else(|| RuntimeError::Undefined(n.clone()))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let runner = ScopeRunner { scope, seed };
    let cx = EvalCtx {
        num_outputs: node.outputs.len(),
        runner: &runner,
        seed,
    };
    let outs = eval(&node.op, &inputs, &cx).map_err(node_err)?;
    let wanted = node.outputs.iter().rposition(|o| !o.is_empty()).map_or(0, |p| p + 1);
    if outs.len() < wanted {
        return Err(node_err(invalid(format!(
            "produced {} outputs, the node names {wanted}",
            outs.len()
        ))));
    }
    Ok(outs)
}

/// For each name, the index of the last node that reads it (directly or
/// from a subgraph). Graph outputs are never dropped.
fn last_uses(graph: &Graph) -> HashMap<&str, usize> {
    fn names_used<'g>(g: &'g Graph, out: &mut Vec<&'g str>) {
        for n in &g.nodes {
            out.extend(n.present_inputs());
            for sub in n.op.subgraphs() {
                names_used(sub, out);
            }
        }
        out.extend(g.outputs.iter().map(|o| o.name.as_str()));
    }
    let mut last = HashMap::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        for inp in node.present_inputs() {
            last.insert(inp, i);
        }
        let mut used = Vec::new();
        for sub in node.op.subgraphs() {
            names_used(sub, &mut used);
        }
        for u in used {
            last.insert(u, i);
        }
    }
    for o in &graph.outputs {
        last.insert(o.name.as_str(), usize::MAX);
    }
    last
}

struct ScopeRunner<'s> {
    scope: &'s Scope<'s>,
    seed: u64,
}

impl SubgraphRunner for ScopeRunner<'_> {
    fn run_subgraph(&self, graph: &Graph, inputs: Vec<Value>) -> OpResult<Vec<Value>> {
        if inputs.len() > graph.inputs.len() {
            return Err(invalid(format!(
                "subgraph '{}' takes {} inputs, got {}",
                graph.name,
                graph.inputs.len(),
                inputs.len()
            )));
        }
        let mut values: HashMap<String, Value> = graph.inputs.iter().map(|i| i.name.clone()).zip(inputs).collect();
        for (k, t) in &graph.initializers {
            values.entry(k.clone()).or_insert_with(|| Value::Tensor(t.clone()));
        }
        let child = Scope {
            values,
            borrowed: None,
            parent: Some(self.scope),
        };
        run_graph(graph, child, self.seed).map_err(|e| match e {
            RuntimeError::Node {
                cause: crate::error::OpError::Unsupported(m),
                node,
                op,
            } => crate::error::unsupported(format!("in subgraph node '{node}' ({op}): {m}")),
            e => invalid(format!("in subgraph '{}': {e}", graph.name)),
        })
    }
}
