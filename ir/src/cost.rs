//! Cost estimates shared by `carbide inspect` and the optimizer: FLOPs per
//! node from the static types recorded in the graph.

use crate::graph::{Graph, Node};
use crate::types::ValueType;

/// Concrete dims of a value, with symbolic or unknown dims counted as 1.
fn dims(g: &Graph, name: &str) -> Option<Vec<u64>> {
    match g.type_of(name)? {
        ValueType::Tensor(t) => Some(t.shape?.iter().map(|d| d.known().unwrap_or(1) as u64).collect()),
        _ => None,
    }
}

/// A FLOPs estimate for one node: exact for the compute-heavy ops (2 per
/// multiply-add), one per output element otherwise; symbolic dims count as 1.
pub fn node_flops(g: &Graph, n: &Node) -> u64 {
    let out_elems = n
        .outputs
        .first()
        .and_then(|o| dims(g, o))
        .map_or(0, |d| d.iter().product::<u64>());
    let input = |i: usize| n.inputs.get(i).filter(|s| !s.is_empty()).and_then(|s| dims(g, s));
    // Fused ops: the core's cost plus one op per output element for each
    // bias/residual add and the activation.
    let epilogue = || out_elems * (n.inputs.iter().skip(2).filter(|s| !s.is_empty()).count() as u64 + 1);
    match n.op.op_type() {
        "Conv" | "ConvInteger" | "QLinearConv" | "FusedConv" => {
            let w = if n.op.op_type() == "QLinearConv" {
                input(3)
            } else {
                input(1)
            };
            let core = w.map_or(out_elems, |w| 2 * out_elems * w.iter().skip(1).product::<u64>());
            if n.op.op_type() == "FusedConv" {
                core + epilogue()
            } else {
                core
            }
        }
        "ConvTranspose" => match (input(0), input(1)) {
            (Some(x), Some(w)) => 2 * x.iter().product::<u64>() * w.iter().skip(1).product::<u64>(),
            _ => out_elems,
        },
        "MatMul" | "MatMulInteger" => 2 * out_elems * input(0).and_then(|a| a.last().copied()).unwrap_or(1),
        "FusedMatMul" => 2 * out_elems * input(0).and_then(|a| a.last().copied()).unwrap_or(1) + epilogue(),
        "Gemm" | "FusedGemm" => {
            // K from A's size over the output rows, whatever transA says.
            let rows = n
                .outputs
                .first()
                .and_then(|o| dims(g, o))
                .and_then(|d| d.first().copied())
                .unwrap_or(1);
            let a_elems = input(0).map_or(1, |a| a.iter().product::<u64>());
            let core = 2 * out_elems * (a_elems / rows.max(1)).max(1);
            if n.op.op_type() == "FusedGemm" {
                core + epilogue()
            } else {
                core
            }
        }
        _ => out_elems,
    }
}

/// The FLOPs estimate of a graph's top-level nodes.
pub fn graph_flops(g: &Graph) -> u64 {
    g.nodes.iter().map(|n| node_flops(g, n)).sum()
}
