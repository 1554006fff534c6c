//! Graph helpers shared by the passes: who produces and who uses a value,
//! constants, renaming, fresh names and node constructors.

use carbide_ir::ops::elementwise::{Binary, ElementwiseOp, Unary};
use carbide_ir::{Graph, Node, Op, Tensor, TensorType, ValueType};
use std::collections::{BTreeSet, HashMap};

/// Producer and use counts of the values of one graph. Uses count node
/// inputs, references from subgraphs and graph outputs.
pub struct Uses {
    pub producer: HashMap<String, usize>,
    pub count: HashMap<String, usize>,
    pub outputs: BTreeSet<String>,
}

impl Uses {
    pub fn of(g: &Graph) -> Uses {
        let mut producer = HashMap::new();
        let mut count: HashMap<String, usize> = HashMap::new();
        for (i, n) in g.nodes.iter().enumerate() {
            for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                producer.insert(o.clone(), i);
            }
            for inp in n.present_inputs() {
                *count.entry(inp.to_string()).or_default() += 1;
            }
            for sub in n.op.subgraphs() {
                for name in free_names(sub) {
                    *count.entry(name).or_default() += 1;
                }
            }
        }
        let outputs: BTreeSet<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
        for o in &outputs {
            *count.entry(o.clone()).or_default() += 1;
        }
        Uses {
            producer,
            count,
            outputs,
        }
    }

    pub fn uses(&self, name: &str) -> usize {
        self.count.get(name).copied().unwrap_or(0)
    }

    /// Used exactly once, and not a graph output: safe to fuse away.
    pub fn single_use(&self, name: &str) -> bool {
        self.uses(name) == 1 && !self.outputs.contains(name)
    }

    /// The node producing `name` (index into `g.nodes`).
    pub fn producer<'g>(&self, g: &'g Graph, name: &str) -> Option<(usize, &'g Node)> {
        let i = *self.producer.get(name)?;
        Some((i, &g.nodes[i]))
    }
}

/// Names a subgraph (and its nested subgraphs) reads from enclosing scopes.
pub fn free_names(g: &Graph) -> BTreeSet<String> {
    let mut defined: BTreeSet<&str> = g.inputs.iter().map(|i| i.name.as_str()).collect();
    defined.extend(g.initializers.keys().map(String::as_str));
    let mut free = BTreeSet::new();
    for n in &g.nodes {
        for i in n.present_inputs() {
            if !defined.contains(i) {
                free.insert(i.to_string());
            }
        }
        for sub in n.op.subgraphs() {
            for name in free_names(sub) {
                if !defined.contains(name.as_str()) {
                    free.insert(name);
                }
            }
        }
        defined.extend(n.outputs.iter().map(String::as_str));
    }
    for o in &g.outputs {
        if !defined.contains(o.name.as_str()) {
            free.insert(o.name.clone());
        }
    }
    free
}

/// A constant: an initializer that is not also an (overridable) graph input.
pub fn constant<'g>(g: &'g Graph, name: &str) -> Option<&'g Tensor> {
    if name.is_empty() || g.inputs.iter().any(|i| i.name == name) {
        return None;
    }
    g.initializers.get(name)
}

/// A one-element float constant as f64.
pub fn scalar(g: &Graph, name: &str) -> Option<f64> {
    let t = constant(g, name)?;
    if t.len() != 1 || !t.dtype().is_float() {
        return None;
    }
    t.to_f64_vec().map(|v| v[0])
}

/// The static tensor type of a value, if known.
pub fn tensor_type(g: &Graph, name: &str) -> Option<TensorType> {
    match g.type_of(name)? {
        ValueType::Tensor(t) => Some(t),
        _ => None,
    }
}

/// The fully known shape of a value.
pub fn known_shape(g: &Graph, name: &str) -> Option<Vec<usize>> {
    tensor_type(g, name)?.concrete_shape()
}

/// Replaces every use of value `from` by `to` (in nodes and subgraphs).
/// Graph outputs are left alone: the caller decides how to keep them.
pub fn replace_uses(g: &mut Graph, from: &str, to: &str) {
    for n in g.nodes.iter_mut() {
        for i in n.inputs.iter_mut() {
            if i == from {
                *i = to.to_string();
            }
        }
        for sub in carbide_ir::ops::subgraphs_mut(&mut n.op) {
            replace_uses_deep(sub, from, to);
        }
    }
}

fn replace_uses_deep(g: &mut Graph, from: &str, to: &str) {
    // A subgraph that defines `from` itself shadows the outer name.
    let shadows = g.inputs.iter().any(|i| i.name == from)
        || g.initializers.contains_key(from)
        || g.nodes.iter().any(|n| n.outputs.iter().any(|o| o == from));
    if shadows {
        return;
    }
    replace_uses(g, from, to);
    for o in g.outputs.iter_mut() {
        if o.name == from {
            o.name = to.to_string();
        }
    }
}

/// Makes value `from` an alias of `to` so the definition of `from` can go.
/// When `from` is a graph output, the producer of `to` is renamed to
/// produce `from` instead (the interface keeps its names). Returns false
/// when neither works (e.g. both are graph outputs, or `to` is a graph input
/// or constant while `from` is an output); the caller then keeps its node.
pub fn alias(g: &mut Graph, from: &str, to: &str) -> bool {
    let outputs: BTreeSet<&str> = g.outputs.iter().map(|o| o.name.as_str()).collect();
    if !outputs.contains(from) {
        replace_uses(g, from, to);
        return true;
    }
    if outputs.contains(to) {
        return false;
    }
    let Some(p) = g.nodes.iter().position(|n| n.outputs.iter().any(|o| o == to)) else {
        return false;
    };
    for o in g.nodes[p].outputs.iter_mut() {
        if o == to {
            *o = from.to_string();
        }
    }
    replace_uses(g, to, from);
    if let Some(t) = g.value_info.remove(to) {
        g.value_info.entry(from.to_string()).or_insert(t);
    }
    true
}

/// Fresh value/node names that collide with nothing in the graph.
pub struct Namer {
    taken: BTreeSet<String>,
    next: usize,
}

impl Namer {
    pub fn new(g: &Graph) -> Namer {
        let mut taken: BTreeSet<String> = g.inputs.iter().map(|i| i.name.clone()).collect();
        taken.extend(g.initializers.keys().cloned());
        for n in &g.nodes {
            taken.extend(n.outputs.iter().cloned());
            taken.insert(n.name.clone());
            for sub in n.op.subgraphs() {
                taken.extend(free_names(sub));
            }
        }
        Namer { taken, next: 0 }
    }

    pub fn fresh(&mut self, base: &str) -> String {
        loop {
            let name = format!("{base}__{}", self.next);
            self.next += 1;
            if self.taken.insert(name.clone()) {
                return name;
            }
        }
    }
}

pub fn unary(u: Unary) -> Op {
    Op::Elementwise(ElementwiseOp::Unary(u))
}

pub fn binary(b: Binary) -> Op {
    Op::Elementwise(ElementwiseOp::Binary {
        op: b,
        legacy_axis: None,
    })
}

/// The binary op of a node, when it is one (without legacy broadcast).
pub fn as_binary(op: &Op) -> Option<Binary> {
    match op {
        Op::Elementwise(ElementwiseOp::Binary { op, legacy_axis: None }) => Some(*op),
        _ => None,
    }
}

pub fn as_unary(op: &Op) -> Option<Unary> {
    match op {
        Op::Elementwise(ElementwiseOp::Unary(u)) => Some(*u),
        _ => None,
    }
}

pub fn node(name: String, op: Op, inputs: Vec<String>, outputs: Vec<String>) -> Node {
    Node {
        name,
        op,
        inputs,
        outputs,
    }
}

/// Puts nodes back in a topological order, keeping the current order where
/// it already is one (passes that insert nodes may append them late).
pub fn toposort(g: &mut Graph) {
    let mut defined: BTreeSet<String> = g.inputs.iter().map(|i| i.name.clone()).collect();
    defined.extend(g.initializers.keys().cloned());
    let produced: BTreeSet<String> = g.nodes.iter().flat_map(|n| n.outputs.iter().cloned()).collect();
    let mut pending: Vec<Option<Node>> = std::mem::take(&mut g.nodes).into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(pending.len());
    loop {
        let mut progressed = false;
        for slot in pending.iter_mut() {
            let ready = slot.as_ref().is_some_and(|n| {
                n.present_inputs().all(|i| defined.contains(i) || !produced.contains(i))
                    && n.op.subgraphs().iter().all(|s| {
                        free_names(s)
                            .iter()
                            .all(|i| defined.contains(i) || !produced.contains(i))
                    })
            });
            if ready {
                let n = slot.take().expect("checked");
                defined.extend(n.outputs.iter().cloned());
                out.push(n);
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    // A cycle cannot come from a correct pass; keep the rest so the verifier names it.
    out.extend(pending.into_iter().flatten());
    g.nodes = out;
}

/// Drops `value_info` entries of values that no longer exist.
pub fn prune_value_info(g: &mut Graph) {
    let live: BTreeSet<&str> = g
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter().map(String::as_str))
        .collect();
    g.value_info.retain(|k, _| live.contains(k.as_str()));
}
