//! Removal passes: no-ops, common subexpressions, dead code.

use crate::error::PassError;
use crate::manager::PassCtx;
use crate::util::{alias, constant, free_names, scalar, tensor_type, Uses};
use carbide_ir::ops::elementwise::{Binary, ElementwiseOp};
use carbide_ir::ops::{NnOp, TensorOp};
use carbide_ir::{Dim, Graph, Node, Op};
use std::collections::{BTreeSet, HashMap};

/// Ops whose result is not a function of their inputs.
pub fn is_nondeterministic(op: &Op) -> bool {
    matches!(
        op.op_type(),
        "RandomNormal" | "RandomUniform" | "RandomNormalLike" | "RandomUniformLike" | "Multinomial" | "Bernoulli"
    ) || matches!(op, Op::Nn(NnOp::Dropout { .. }))
}

/// Two shapes that are the same at run time: every dim known or the same symbol.
fn same_shape(g: &Graph, a: &str, b: &str) -> bool {
    let (Some(x), Some(y)) = (tensor_type(g, a), tensor_type(g, b)) else {
        return false;
    };
    let (Some(xs), Some(ys)) = (x.shape, y.shape) else {
        return false;
    };
    xs.len() == ys.len()
        && xs.iter().zip(&ys).all(|(p, q)| match (p, q) {
            (Dim::Known(m), Dim::Known(n)) => m == n,
            (Dim::Sym(m), Dim::Sym(n)) => m == n,
            _ => false,
        })
        && x.dtype.is_some()
        && x.dtype == y.dtype
}

/// Whether `n` computes its first input unchanged (so its first output can
/// alias it).
fn is_noop(g: &Graph, uses: &Uses, n: &Node) -> bool {
    let (Some(x), Some(y)) = (n.inputs.first(), n.outputs.first()) else {
        return false;
    };
    if x.is_empty() || y.is_empty() {
        return false;
    }
    // Extra outputs must be absent or unused.
    if n.outputs.iter().skip(1).any(|o| !o.is_empty() && uses.uses(o) > 0) {
        return false;
    }
    let input = |i: usize| n.inputs.get(i).filter(|s| !s.is_empty()).map(String::as_str);
    match &n.op {
        Op::Tensor(TensorOp::Identity) => true,
        Op::Nn(NnOp::Dropout { .. }) => match input(2) {
            None => true,
            Some(t) => constant(g, t)
                .and_then(|t| t.to_i64_vec())
                .is_some_and(|v| v.iter().all(|&b| b == 0)),
        },
        Op::Elementwise(ElementwiseOp::Cast { to, .. }) => tensor_type(g, x).and_then(|t| t.dtype) == Some(*to),
        Op::Tensor(TensorOp::Reshape { .. })
        | Op::Tensor(TensorOp::Expand)
        | Op::Tensor(TensorOp::Flatten { .. })
        | Op::Tensor(TensorOp::Squeeze { .. })
        | Op::Tensor(TensorOp::Unsqueeze { .. }) => same_shape(g, x, y),
        Op::Tensor(TensorOp::Transpose { perm }) => {
            let rank = tensor_type(g, x).and_then(|t| t.rank());
            match (perm, rank) {
                (Some(p), _) => p.iter().enumerate().all(|(i, &d)| d == i as i64),
                (None, Some(r)) => r <= 1,
                _ => false,
            }
        }
        Op::Tensor(TensorOp::Pad { pads, .. }) => {
            let pads = match input(1) {
                Some(p) => constant(g, p).and_then(|t| t.to_i64_vec()),
                None => pads.clone(),
            };
            pads.is_some_and(|p| p.iter().all(|&v| v == 0)) && same_shape(g, x, y)
        }
        Op::Tensor(TensorOp::Slice { .. }) => {
            let unit_steps = match input(4) {
                None => true,
                Some(s) => constant(g, s)
                    .and_then(|t| t.to_i64_vec())
                    .is_some_and(|v| v.iter().all(|&s| s == 1)),
            };
            unit_steps && same_shape(g, x, y)
        }
        Op::Tensor(TensorOp::Concat { .. }) | Op::Elementwise(ElementwiseOp::Variadic(_)) => {
            n.present_inputs().count() == 1 && same_shape(g, x, y)
        }
        Op::Elementwise(ElementwiseOp::Binary { op, legacy_axis: None }) => {
            let Some(c) = input(1).and_then(|c| scalar(g, c)) else {
                return false;
            };
            let neutral = match op {
                Binary::Add | Binary::Sub => c == 0.0,
                Binary::Mul | Binary::Div | Binary::Pow => c == 1.0,
                _ => false,
            };
            neutral && same_shape(g, x, y)
        }
        _ => false,
    }
}

/// Removes nodes that compute their input unchanged.
pub fn remove_noops(g: &mut Graph, _cx: &PassCtx) -> Result<bool, PassError> {
    let mut changed = false;
    let mut i = 0;
    while i < g.nodes.len() {
        let uses = Uses::of(g);
        if is_noop(g, &uses, &g.nodes[i]) {
            let (x, y) = (g.nodes[i].inputs[0].clone(), g.nodes[i].outputs[0].clone());
            if alias(g, &y, &x) {
                g.nodes.remove(i);
                changed = true;
                continue;
            }
        }
        i += 1;
    }
    Ok(changed)
}

/// Merges nodes that compute the same op on the same inputs, after merging
/// small identical constants (so `x * 0.5` written twice is one value).
pub fn cse(g: &mut Graph, _cx: &PassCtx) -> Result<bool, PassError> {
    let mut changed = false;
    // Small constants: the scalars and shape vectors exporters repeat.
    let mut seen: Vec<String> = Vec::new();
    let names: Vec<String> = g
        .initializers
        .iter()
        .filter(|(k, t)| t.len() <= 64 && constant(g, k).is_some())
        .map(|(k, _)| k.clone())
        .collect();
    let outputs: BTreeSet<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
    for name in names {
        if outputs.contains(&name) {
            continue;
        }
        let t = &g.initializers[&name];
        if let Some(first) = seen.iter().find(|s| g.initializers[*s] == *t) {
            let first = first.clone();
            crate::util::replace_uses(g, &name, &first);
            g.initializers.remove(&name);
            changed = true;
        } else {
            seen.push(name);
        }
    }
    let mut by_key: HashMap<(String, Vec<String>), usize> = HashMap::new();
    let mut i = 0;
    while i < g.nodes.len() {
        let n = &g.nodes[i];
        if !n.op.subgraphs().is_empty() || is_nondeterministic(&n.op) || n.present_inputs().count() == 0 {
            i += 1;
            continue;
        }
        let key = (format!("{:?}", n.op), n.inputs.clone());
        match by_key.get(&key) {
            Some(&j) if g.nodes[j].outputs.len() == n.outputs.len() => {
                let pairs: Vec<(String, String)> = n
                    .outputs
                    .iter()
                    .cloned()
                    .zip(g.nodes[j].outputs.iter().cloned())
                    .filter(|(a, _)| !a.is_empty())
                    .collect();
                // Every output must find a twin, or the node stays.
                if pairs.iter().any(|(_, b)| b.is_empty()) {
                    i += 1;
                    continue;
                }
                let outs: BTreeSet<&str> = g.outputs.iter().map(|o| o.name.as_str()).collect();
                if pairs
                    .iter()
                    .any(|(a, b)| outs.contains(a.as_str()) && outs.contains(b.as_str()))
                {
                    i += 1;
                    continue;
                }
                for (a, b) in &pairs {
                    let ok = alias(g, a, b);
                    debug_assert!(ok, "checked above");
                }
                g.nodes.remove(i);
                changed = true;
            }
            _ => {
                by_key.insert(key, i);
                i += 1;
            }
        }
    }
    Ok(changed)
}

/// Removes nodes whose outputs nobody uses, and unused initializers.
pub fn dce(g: &mut Graph, _cx: &PassCtx) -> Result<bool, PassError> {
    let mut live: BTreeSet<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
    let before = g.nodes.len();
    let mut keep = vec![false; g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate().rev() {
        if n.outputs.iter().any(|o| live.contains(o)) {
            keep[i] = true;
            live.extend(n.present_inputs().map(String::from));
            for s in n.op.subgraphs() {
                live.extend(free_names(s));
            }
        }
    }
    let mut k = keep.into_iter();
    g.nodes.retain(|_| k.next().unwrap_or(true));
    let inputs: BTreeSet<String> = g.inputs.iter().map(|i| i.name.clone()).collect();
    let inits_before = g.initializers.len();
    g.initializers.retain(|k, _| live.contains(k) || inputs.contains(k));
    Ok(g.nodes.len() != before || g.initializers.len() != inits_before)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{op_types, ramp, G};
    use crate::util::{binary, unary};
    use carbide_ir::ops::elementwise::Unary;
    use carbide_ir::{DType, Tensor};

    #[test]
    fn noops_go_and_outputs_keep_their_names() {
        let mut t = G::new();
        t.input("x", &[2, 3])
            .init("one", Tensor::scalar_f32(1.0))
            .init("shape", Tensor::from_i64s(vec![2, 3]))
            .node(Op::Tensor(TensorOp::Identity), &["x"], &["a"])
            .node(binary(Binary::Mul), &["a", "one"], &["b"])
            .node(
                Op::Tensor(TensorOp::Reshape {
                    allowzero: false,
                    shape: None,
                }),
                &["b", "shape"],
                &["c"],
            )
            .node(
                Op::Elementwise(ElementwiseOp::Cast {
                    to: DType::F32,
                    attrs: cast_attrs(),
                }),
                &["c"],
                &["d"],
            )
            .node(unary(Unary::Relu), &["d"], &["e"])
            .node(
                Op::Tensor(TensorOp::Transpose { perm: Some(vec![0, 1]) }),
                &["e"],
                &["y"],
            )
            .output("y");
        let g = t.check_pass(remove_noops);
        assert_eq!(op_types(&g), ["Relu"]);
        assert_eq!(g.nodes[0].outputs, ["y"]);
    }

    fn cast_attrs() -> carbide_ir::ops::elementwise::CastAttrs {
        carbide_ir::ops::elementwise::CastAttrs {
            saturate: true,
            round_mode: Default::default(),
        }
    }

    #[test]
    fn a_widening_mul_by_one_stays() {
        let mut t = G::new();
        t.input("x", &[3])
            .init("ones", ramp(&[2, 3], 0.0))
            .node(binary(Binary::Add), &["x", "ones"], &["y"])
            .output("y");
        let m = t.model();
        let mut g = m.graph.clone();
        let opts = Default::default();
        assert!(!remove_noops(&mut g, &PassCtx { opts: &opts, name: "t" }).unwrap());
    }

    #[test]
    fn cse_merges_twins_and_constants() {
        let mut t = G::new();
        t.input("x", &[4])
            .init("h1", Tensor::scalar_f32(0.5))
            .init("h2", Tensor::scalar_f32(0.5))
            .node(binary(Binary::Mul), &["x", "h1"], &["a"])
            .node(binary(Binary::Mul), &["x", "h2"], &["b"])
            .node(unary(Unary::Exp), &["a"], &["c"])
            .node(unary(Unary::Exp), &["b"], &["d"])
            .node(binary(Binary::Add), &["c", "d"], &["y"])
            .output("y");
        let g = t.check_pass(cse);
        assert_eq!(op_types(&g), ["Mul", "Exp", "Add"]);
        assert_eq!(g.nodes[2].inputs[0], g.nodes[2].inputs[1]);
    }

    #[test]
    fn cse_keeps_both_graph_outputs() {
        let mut t = G::new();
        t.input("x", &[4])
            .node(unary(Unary::Exp), &["x"], &["a"])
            .node(unary(Unary::Exp), &["x"], &["b"])
            .output("a")
            .output("b");
        let m = t.model();
        let mut g = m.graph.clone();
        let opts = Default::default();
        assert!(!cse(&mut g, &PassCtx { opts: &opts, name: "t" }).unwrap());
        assert_eq!(g.nodes.len(), 2);
    }

    #[test]
    fn dce_drops_dead_nodes_and_weights() {
        let mut t = G::new();
        t.input("x", &[4])
            .init("w", ramp(&[4], 1.0))
            .node(binary(Binary::Mul), &["x", "w"], &["dead"])
            .node(unary(Unary::Exp), &["x"], &["y"])
            .output("y");
        let g = t.check_pass(dce);
        assert_eq!(op_types(&g), ["Exp"]);
        assert!(g.initializers.is_empty());
    }
}
