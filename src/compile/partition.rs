//! Cutting a graph into steps: kernel groups (an anchor op with its
//! single-consumer elementwise epilogue, or a chain of elementwise ops),
//! shape-only aliases, and nodes left to the host.

use super::CompileError;
use carbide_ir::ops::{ElementwiseOp, LinalgOp, NnOp, ReduceOp, TensorOp};
use carbide_ir::{Graph, Op, TensorType};
use carbide_runtime::{KernelStep, Step};
use std::collections::{HashMap, HashSet};

/// A candidate kernel: graph nodes (topological order) and the values that
/// cross its boundary.
#[derive(Clone, Debug)]
pub struct Group {
    pub nodes: Vec<usize>,
    /// Values read from outside the group, in first-use order.
    pub inputs: Vec<String>,
    /// Values the group defines that are read after it (or are graph outputs).
    pub outputs: Vec<String>,
}

/// What partitioning asks of a code generator: `Ok(None)` means "no kernel
/// for this group" (partitioning then tries the anchor alone, then the host).
pub trait KernelGen {
    fn lower(&mut self, graph: &Graph, group: &Group) -> Result<Option<KernelStep>, CompileError>;
}

/// Ops that anchor a kernel: the compute-heavy ones a generator builds
/// around, with room for an elementwise epilogue.
pub fn is_anchor(op: &Op) -> bool {
    match op {
        Op::Nn(n) => matches!(
            n,
            NnOp::Conv(_)
                | NnOp::ConvTranspose(_)
                | NnOp::MaxPool(_)
                | NnOp::AveragePool(_)
                | NnOp::GlobalAveragePool
                | NnOp::GlobalMaxPool
                | NnOp::LayerNormalization { .. }
                | NnOp::RMSNormalization { .. }
                | NnOp::BatchNormalization { .. }
        ),
        Op::Linalg(l) => matches!(
            l,
            LinalgOp::MatMul | LinalgOp::Gemm(_) | LinalgOp::Softmax(_) | LinalgOp::Attention(_)
        ),
        Op::Reduce(r) => matches!(r, ReduceOp::Reduce(_)),
        // The optimizer's com.carbide FusedConv/FusedGemm/FusedMatMul.
        Op::Fused(_) => true,
        _ => false,
    }
}

pub fn is_elementwise(op: &Op) -> bool {
    matches!(op, Op::Elementwise(e) if !matches!(e, ElementwiseOp::BitCast { .. }))
}

/// Shape-only ops: their output is the input's data under a new shape.
pub fn is_shape_only(op: &Op) -> bool {
    matches!(
        op,
        Op::Tensor(
            TensorOp::Identity
                | TensorOp::Reshape { .. }
                | TensorOp::Flatten { .. }
                | TensorOp::Squeeze { .. }
                | TensorOp::Unsqueeze { .. }
        )
    )
}

/// Who reads each value: node indices; graph outputs and subgraph uses
/// count as readers that no kernel can absorb (`usize::MAX`).
fn readers(graph: &Graph) -> HashMap<&str, Vec<usize>> {
    let mut r: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        for inp in n.present_inputs() {
            r.entry(inp).or_default().push(i);
        }
        let mut sub = Vec::new();
        for g in n.op.subgraphs() {
            names_used(g, &mut sub);
        }
        for s in sub {
            r.entry(s).or_default().push(usize::MAX);
        }
    }
    for o in &graph.outputs {
        r.entry(o.name.as_str()).or_default().push(usize::MAX);
    }
    r
}

fn names_used<'g>(g: &'g Graph, out: &mut Vec<&'g str>) {
    for n in &g.nodes {
        out.extend(n.present_inputs());
        for sub in n.op.subgraphs() {
            names_used(sub, out);
        }
    }
    out.extend(g.outputs.iter().map(|o| o.name.as_str()));
}

/// The static tensor type of a value, if fully described (dtype and rank).
pub fn tensor_type(graph: &Graph, name: &str) -> Option<TensorType> {
    if let Some(w) = graph.initializers.get(name) {
        return Some(TensorType::new(w.dtype(), carbide_ir::types::shape_of(w.shape())));
    }
    let t = graph.type_of(name)?.as_tensor()?.clone();
    (t.dtype.is_some() && t.shape.is_some()).then_some(t)
}

/// Builds the group's boundary from its nodes.
pub fn make_group(graph: &Graph, nodes: Vec<usize>, readers: &HashMap<&str, Vec<usize>>) -> Group {
    let inside: HashSet<usize> = nodes.iter().copied().collect();
    let mut defined: HashSet<&str> = HashSet::new();
    let mut inputs: Vec<String> = Vec::new();
    let mut outputs = Vec::new();
    for &i in &nodes {
        let n = &graph.nodes[i];
        for inp in n.present_inputs() {
            if !defined.contains(inp) && !inputs.iter().any(|x| x == inp) {
                inputs.push(inp.to_string());
            }
        }
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            defined.insert(o);
            let read_outside = readers
                .get(o.as_str())
                .is_some_and(|r| r.iter().any(|x| !inside.contains(x)));
            if read_outside {
                outputs.push(o.clone());
            }
        }
    }
    Group { nodes, inputs, outputs }
}

/// The single node that reads `value`, if exactly one does (and it is not a
/// graph output or used in a subgraph).
fn sole_reader(readers: &HashMap<&str, Vec<usize>>, value: &str) -> Option<usize> {
    match readers.get(value).map(Vec::as_slice) {
        Some([r]) if *r != usize::MAX => Some(*r),
        _ => None,
    }
}

/// Follows the single-consumer elementwise chain after `start`.
fn epilogue(graph: &Graph, start: usize, readers: &HashMap<&str, Vec<usize>>, taken: &[bool]) -> Vec<usize> {
    let mut chain = vec![start];
    let mut last = start;
    loop {
        let outs: Vec<&String> = graph.nodes[last].outputs.iter().filter(|o| !o.is_empty()).collect();
        let [out] = outs.as_slice() else { break };
        let Some(next) = sole_reader(readers, out) else { break };
        let n = &graph.nodes[next];
        if taken[next] || !is_elementwise(&n.op) || n.outputs.iter().filter(|o| !o.is_empty()).count() != 1 {
            break;
        }
        chain.push(next);
        last = next;
    }
    chain
}

/// Partitions `graph` into steps, asking `gen` for kernels.
pub fn partition(graph: &Graph, gen: &mut dyn KernelGen) -> Result<Vec<Step>, CompileError> {
    let readers = readers(graph);
    let n = graph.nodes.len();
    let mut taken = vec![false; n];
    // Steps keyed by the node position where they run (a group runs where its last node was).
    let mut at: Vec<Vec<Step>> = vec![Vec::new(); n];
    for i in 0..n {
        if taken[i] {
            continue;
        }
        let op = &graph.nodes[i].op;
        if is_shape_only(op) {
            taken[i] = true;
            at[i].push(Step::Alias { node: i });
            continue;
        }
        if !(is_anchor(op) || is_elementwise(op)) {
            taken[i] = true;
            at[i].push(Step::Host { node: i });
            continue;
        }
        let chain = epilogue(graph, i, &readers, &taken);
        let mut candidates = vec![chain.clone()];
        if chain.len() > 1 && is_anchor(op) {
            candidates.push(vec![i]);
        }
        let mut placed = false;
        for nodes in candidates {
            let group = make_group(graph, nodes.clone(), &readers);
            if let Some(k) = gen.lower(graph, &group)? {
                let last = *nodes.last().expect("groups are non-empty");
                for &x in &nodes {
                    taken[x] = true;
                }
                at[last].push(Step::Kernel(Box::new(k)));
                placed = true;
                break;
            }
        }
        if !placed {
            taken[i] = true;
            at[i].push(Step::Host { node: i });
        }
    }
    Ok(at.into_iter().flatten().collect())
}

/// A generator that never makes kernels: every group runs on the host.
pub struct HostOnly;

impl KernelGen for HostOnly {
    fn lower(&mut self, _: &Graph, _: &Group) -> Result<Option<KernelStep>, CompileError> {
        Ok(None)
    }
}
