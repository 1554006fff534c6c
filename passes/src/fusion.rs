//! Fusions: decomposed activations and normalizations back into their ONNX
//! ops (Gelu, Swish, HardSwish, LayerNormalization, RMSNormalization), and
//! Conv/Gemm/MatMul + bias + residual + activation into Carbide's fused ops.
//!
//! Each matcher anchors on one node, walks single-use intermediates, and
//! rewrites the last node of the chain in place (so every input it reads is
//! already defined there); the intermediates die and DCE removes them.

use crate::error::PassError;
use crate::manager::PassCtx;
use crate::util::{as_binary, as_unary, constant, known_shape, scalar, tensor_type, unary, Namer, Uses};
use carbide_ir::ops::elementwise::{Binary, ElementwiseOp, Unary};
use carbide_ir::ops::fused::{Activation, FusedOp};
use carbide_ir::ops::reduce::{ReduceKind, ReduceOp};
use carbide_ir::ops::{LinalgOp, NnOp};
use carbide_ir::{Graph, Node, Op, Tensor};
use std::collections::HashMap;

pub(crate) struct Cx<'g> {
    pub(crate) g: &'g Graph,
    pub(crate) uses: Uses,
    consumers: HashMap<String, Vec<usize>>,
}

impl<'g> Cx<'g> {
    pub(crate) fn new(g: &'g Graph) -> Self {
        let mut consumers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, n) in g.nodes.iter().enumerate() {
            for x in n.present_inputs() {
                consumers.entry(x.to_string()).or_default().push(i);
            }
        }
        Cx {
            g,
            uses: Uses::of(g),
            consumers,
        }
    }

    /// The producer of an intermediate value only the pattern uses.
    pub(crate) fn inner(&self, name: &str) -> Option<&'g Node> {
        if !self.uses.single_use(name) {
            return None;
        }
        self.uses.producer(self.g, name).map(|(_, n)| n)
    }

    /// The one consumer of a single-use intermediate.
    pub(crate) fn next(&self, name: &str) -> Option<(usize, &'g Node)> {
        if !self.uses.single_use(name) {
            return None;
        }
        let &i = self.consumers.get(name)?.first()?;
        Some((i, &self.g.nodes[i]))
    }

    /// `n` is `b(v, c)` (or `b(c, v)` for commutative `b`) with scalar
    /// constant `c` close to `want`: returns `v`.
    pub(crate) fn with_scalar(&self, n: &Node, b: Binary, want: f64) -> Option<String> {
        if as_binary(&n.op)? != b {
            return None;
        }
        let close = |c: f64| (c - want).abs() <= 1e-4 * want.abs().max(1.0);
        if scalar(self.g, &n.inputs[1]).is_some_and(close) {
            return Some(n.inputs[0].clone());
        }
        let commutes = matches!(b, Binary::Add | Binary::Mul);
        (commutes && scalar(self.g, &n.inputs[0]).is_some_and(close)).then(|| n.inputs[1].clone())
    }

    /// The other operand of binary `n` given one operand.
    pub(crate) fn other<'n>(&self, n: &'n Node, one: &str) -> Option<&'n str> {
        match (n.inputs[0] == one, n.inputs[1] == one) {
            (true, _) => Some(&n.inputs[1]),
            (_, true) => Some(&n.inputs[0]),
            _ => None,
        }
    }
}

/// A rewrite of node `at` (the last of its chain).
pub(crate) struct Rewrite {
    pub(crate) at: usize,
    pub(crate) op: Op,
    pub(crate) inputs: Vec<String>,
    pub(crate) inits: Vec<(String, Tensor)>,
}

pub(crate) fn apply(g: &mut Graph, rewrites: Vec<Rewrite>) -> bool {
    let changed = !rewrites.is_empty();
    for r in rewrites {
        g.initializers.extend(r.inits);
        let n = &mut g.nodes[r.at];
        n.op = r.op;
        n.inputs = r.inputs;
        n.outputs.truncate(1);
    }
    if changed {
        let opts = Default::default();
        let _ = crate::cleanup::dce(
            g,
            &PassCtx {
                opts: &opts,
                name: "dce",
            },
        );
    }
    changed
}

/// From `a = 1 + f(x)`: the node computing `0.5 * x * a` and x's name.
fn half_x_times(cx: &Cx, a: &str, x: &str) -> Option<usize> {
    let (i1, m1) = cx.next(a)?;
    if as_binary(&m1.op)? != Binary::Mul {
        return None;
    }
    let o = cx.other(m1, a)?;
    if o == x {
        let (i2, m2) = cx.next(&m1.outputs[0])?;
        return (cx.with_scalar(m2, Binary::Mul, 0.5)? == m1.outputs[0]).then_some(i2);
    }
    if scalar(cx.g, o).is_some_and(|c| c == 0.5) {
        // (0.5 * a) * x
        let (i2, m2) = cx.next(&m1.outputs[0])?;
        return (as_binary(&m2.op)? == Binary::Mul && cx.other(m2, &m1.outputs[0])? == x).then_some(i2);
    }
    let h = cx.inner(o)?;
    (cx.with_scalar(h, Binary::Mul, 0.5)? == x).then_some(i1)
}

/// `x * 0.5 * (1 + erf(x / sqrt 2))` and the tanh form -> Gelu;
/// `x * sigmoid(x)` -> Swish(alpha 1); `x * HardSigmoid(x; 1/6, 1/2)` -> HardSwish.
pub fn fuse_activations(g: &mut Graph, _cx: &PassCtx) -> Result<bool, PassError> {
    let cx = Cx::new(g);
    let mut rewrites = Vec::new();
    let mut done = std::collections::BTreeSet::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let found: Option<(usize, Unary, String)> = (|| match as_unary(&n.op)? {
            Unary::Erf => {
                let d = cx.inner(&n.inputs[0])?;
                let x = cx
                    .with_scalar(d, Binary::Div, std::f64::consts::SQRT_2)
                    .or_else(|| cx.with_scalar(d, Binary::Mul, std::f64::consts::FRAC_1_SQRT_2))?;
                let (_, a) = cx.next(&n.outputs[0])?;
                (cx.with_scalar(a, Binary::Add, 1.0)? == n.outputs[0]).then_some(())?;
                Some((half_x_times(&cx, &a.outputs[0], &x)?, Unary::Gelu { tanh: false }, x))
            }
            Unary::Tanh => {
                let u = cx.inner(&n.inputs[0])?;
                let v = cx.with_scalar(u, Binary::Mul, (2.0 / std::f64::consts::PI).sqrt())?;
                let v = cx.inner(&v)?;
                if as_binary(&v.op)? != Binary::Add {
                    return None;
                }
                // One operand is x, the other 0.044715 * x^3.
                let (x, w) = [(0, 1), (1, 0)].into_iter().find_map(|(a, b)| {
                    let w = cx.inner(&v.inputs[b])?;
                    let p = cx.with_scalar(w, Binary::Mul, 0.044715)?;
                    let p = cx.inner(&p)?;
                    let x = &v.inputs[a];
                    let cube = cx.with_scalar(p, Binary::Pow, 3.0).is_some_and(|b| &b == x)
                        || (as_binary(&p.op) == Some(Binary::Mul)
                            && cx.other(p, x).and_then(|sq| cx.inner(sq)).is_some_and(|sq| {
                                as_binary(&sq.op) == Some(Binary::Mul) && sq.inputs[0] == *x && sq.inputs[1] == *x
                            }));
                    cube.then(|| (x.clone(), w))
                })?;
                let _ = w;
                let (_, a) = cx.next(&n.outputs[0])?;
                (cx.with_scalar(a, Binary::Add, 1.0)? == n.outputs[0]).then_some(())?;
                Some((half_x_times(&cx, &a.outputs[0], &x)?, Unary::Gelu { tanh: true }, x))
            }
            Unary::Sigmoid | Unary::HardSigmoid { .. } => {
                let want = match as_unary(&n.op)? {
                    Unary::Sigmoid => Unary::Swish { alpha: 1.0 },
                    Unary::HardSigmoid { alpha, beta }
                        if (alpha - 1.0 / 6.0).abs() < 1e-6 && (beta - 0.5).abs() < 1e-6 =>
                    {
                        Unary::HardSwish
                    }
                    _ => return None,
                };
                let x = n.inputs[0].clone();
                let (j, m) = cx.next(&n.outputs[0])?;
                (as_binary(&m.op)? == Binary::Mul && cx.other(m, &n.outputs[0])? == x).then_some(())?;
                Some((j, want, x))
            }
            _ => None,
        })();
        if let Some((at, u, x)) = found {
            if done.insert(at) {
                let _ = i;
                rewrites.push(Rewrite {
                    at,
                    op: unary(u),
                    inputs: vec![x],
                    inits: vec![],
                });
            }
        }
    }
    Ok(apply(g, rewrites))
}

/// The reduced axes of a ReduceMean over exactly the last axis, kept.
fn mean_over_last(cx: &Cx, n: &Node) -> bool {
    let Op::Reduce(ReduceOp::Reduce(a)) = &n.op else {
        return false;
    };
    if a.kind != ReduceKind::Mean || !a.keepdims {
        return false;
    }
    let axes = match &a.axes {
        Some(v) => Some(v.clone()),
        None => n
            .inputs
            .get(1)
            .and_then(|s| constant(cx.g, s))
            .and_then(|t| t.to_i64_vec()),
    };
    let rank = tensor_type(cx.g, &n.inputs[0]).and_then(|t| t.rank());
    match (axes.as_deref(), rank) {
        (Some([-1]), _) => true,
        (Some([k]), Some(r)) => *k == r as i64 - 1,
        _ => false,
    }
}

/// The square of `d` (`Pow(d, 2)` or `d * d`), as a single-use node.
fn is_square_of(cx: &Cx, n: &Node, d: &str) -> bool {
    cx.with_scalar(n, Binary::Pow, 2.0).is_some_and(|b| b == d)
        || (as_binary(&n.op) == Some(Binary::Mul) && n.inputs[0] == d && n.inputs[1] == d)
}

/// From `s = sqrt(mean + eps)`'s input `e`: (the mean's input, eps).
fn mean_plus_eps(cx: &Cx, e: &str) -> Option<(String, f32)> {
    let add = cx.inner(e)?;
    if as_binary(&add.op)? != Binary::Add {
        return None;
    }
    let (v, eps) = if let Some(c) = scalar(cx.g, &add.inputs[1]) {
        (&add.inputs[0], c)
    } else {
        (&add.inputs[1], scalar(cx.g, &add.inputs[0])?)
    };
    let mean = cx.inner(v)?;
    mean_over_last(cx, mean).then(|| (mean.inputs[0].clone(), eps as f32))
}

/// Optional `* gamma` then `+ beta` (constants over the last axis) after `y`:
/// the last node after gamma, the last node after beta, gamma and beta.
fn affine_tail(cx: &Cx, at: usize, y: &str) -> (usize, usize, Option<String>, Option<String>) {
    let c = |n: &Node, v: &str| -> Option<String> {
        let o = cx.other(n, v)?;
        constant(cx.g, o).filter(|t| t.rank() <= 1).map(|_| o.to_string())
    };
    let Some((i1, m)) = cx.next(y).filter(|(_, m)| as_binary(&m.op) == Some(Binary::Mul)) else {
        return (at, at, None, None);
    };
    let Some(gamma) = c(m, y) else {
        return (at, at, None, None);
    };
    match cx
        .next(&m.outputs[0])
        .filter(|(_, a)| as_binary(&a.op) == Some(Binary::Add))
    {
        Some((i2, a)) => match c(a, &m.outputs[0]) {
            Some(beta) => (i1, i2, Some(gamma), Some(beta)),
            None => (i1, i1, Some(gamma), None),
        },
        None => (i1, i1, Some(gamma), None),
    }
}

/// Decomposed LayerNorm (`(x - mean) / sqrt(var + eps) * gamma + beta` over
/// the last axis) -> LayerNormalization; RMSNorm (`x / sqrt(mean(x^2) + eps)
/// * gamma`) -> RMSNormalization.
pub fn fuse_norms(g: &mut Graph, _cx: &PassCtx) -> Result<bool, PassError> {
    let cx = Cx::new(g);
    let mut rewrites = Vec::new();
    let mut namer = Namer::new(g);
    for (i, n) in g.nodes.iter().enumerate() {
        // Anchor: the Div by the square root.
        if as_binary(&n.op) != Some(Binary::Div) {
            continue;
        }
        let found = (|| {
            let s = cx.inner(&n.inputs[1])?;
            (as_unary(&s.op)? == Unary::Sqrt).then_some(())?;
            let (sq_in, eps) = mean_plus_eps(&cx, &s.inputs[0])?;
            let num = &n.inputs[0];
            let sq = cx.inner(&sq_in)?;
            if !is_square_of(&cx, sq, num) {
                return None;
            }
            let dtype = tensor_type(g, num)?.dtype?;
            if dtype != carbide_ir::DType::F32 {
                return None;
            }
            let last = *known_shape(g, num)
                .or_else(|| {
                    let t = tensor_type(g, num)?;
                    t.shape?.last()?.known().map(|d| vec![d])
                })?
                .last()?;
            // LayerNorm: num = x - mean(x), used by the square and this Div only.
            let sub = cx.uses.producer(g, num).map(|(_, p)| p).filter(|p| {
                as_binary(&p.op) == Some(Binary::Sub) && cx.uses.uses(num) == 2 && !cx.uses.outputs.contains(num)
            });
            let layer = sub.and_then(|p| {
                let m = cx.inner(&p.inputs[1])?;
                (mean_over_last(&cx, m) && m.inputs[0] == p.inputs[0]).then(|| p.inputs[0].clone())
            });
            let (after_gamma, after_beta, gamma, beta) = affine_tail(&cx, i, &n.outputs[0]);
            let mut inits = Vec::new();
            let gamma = gamma.unwrap_or_else(|| {
                let name = namer.fresh(&format!("{}_scale", n.name));
                inits.push((name.clone(), crate::algebra::ones(last)));
                name
            });
            match layer {
                Some(x) => Some(Rewrite {
                    at: after_beta,
                    op: Op::Nn(NnOp::LayerNormalization {
                        axis: -1,
                        epsilon: eps,
                        stash_type: 1,
                    }),
                    inputs: vec![x, gamma, beta.unwrap_or_default()],
                    inits,
                }),
                None => {
                    // RMSNormalization has no bias: a beta Add stays after it.
                    Some(Rewrite {
                        at: after_gamma,
                        op: Op::Nn(NnOp::RMSNormalization {
                            axis: -1,
                            epsilon: eps,
                            stash_type: 1,
                        }),
                        inputs: vec![num.clone(), gamma],
                        inits,
                    })
                }
            }
        })();
        rewrites.extend(found);
    }
    Ok(apply(g, rewrites))
}

/// The fused activation equivalent to node `n` applied to its input 0.
fn activation_of(g: &Graph, n: &Node) -> Option<Activation> {
    match &n.op {
        Op::Elementwise(ElementwiseOp::Unary(u)) => Some(match *u {
            Unary::Relu => Activation::Relu,
            Unary::LeakyRelu { alpha } => Activation::LeakyRelu { alpha },
            Unary::Sigmoid => Activation::Sigmoid,
            Unary::Tanh => Activation::Tanh,
            Unary::Gelu { tanh } => Activation::Gelu { tanh },
            Unary::HardSwish => Activation::HardSwish,
            Unary::HardSigmoid { alpha, beta } => Activation::HardSigmoid { alpha, beta },
            Unary::Swish { alpha: 1.0 } => Activation::Silu,
            _ => return None,
        }),
        Op::Elementwise(ElementwiseOp::Clip { min, max }) => {
            let bound = |i: usize, attr: Option<f32>, default: f32| -> Option<f32> {
                match n.inputs.get(i).filter(|s| !s.is_empty()) {
                    Some(s) => scalar(g, s).map(|v| v as f32),
                    None => Some(attr.unwrap_or(default)),
                }
            };
            let lo = bound(1, *min, f32::NEG_INFINITY)?;
            let hi = bound(2, *max, f32::INFINITY)?;
            Some(Activation::Clip { min: lo, max: hi })
        }
        _ => None,
    }
}

/// Conv / Gemm / MatMul followed by a bias Add (MatMul), a residual Add and
/// an activation -> FusedConv / FusedGemm / FusedMatMul. A lone MatMul or a
/// Gemm without anything to fuse stays as it is.
pub fn fuse_bias_activation(g: &mut Graph, _cx: &PassCtx) -> Result<bool, PassError> {
    let cx = Cx::new(g);
    let mut rewrites = Vec::new();
    for n in &g.nodes {
        let (core_n, fused) = match &n.op {
            Op::Nn(NnOp::Conv(c)) => (
                3,
                FusedOp::FusedConv {
                    conv: c.clone(),
                    activation: Activation::Identity,
                },
            ),
            Op::Linalg(LinalgOp::Gemm(a)) => (
                3,
                FusedOp::FusedGemm {
                    gemm: a.clone(),
                    activation: Activation::Identity,
                },
            ),
            Op::Linalg(LinalgOp::MatMul) => (
                2,
                FusedOp::FusedMatMul {
                    activation: Activation::Identity,
                },
            ),
            _ => continue,
        };
        if tensor_type(g, &n.outputs[0]).and_then(|t| t.dtype) != Some(carbide_ir::DType::F32) {
            continue;
        }
        let Some(shape) = tensor_type(g, &n.outputs[0]).and_then(|t| t.shape) else {
            continue;
        };
        let mut inputs: Vec<String> = n.inputs.iter().take(core_n).cloned().collect();
        inputs.resize(4, String::new());
        let mut cur = n.outputs[0].clone();
        let mut at = None;
        let mut activation = Activation::Identity;
        // Adds: a bias (MatMul, constant over the last axis) then a residual.
        for _ in 0..2 {
            let Some((j, a)) = cx.next(&cur) else { break };
            if as_binary(&a.op) != Some(Binary::Add) || !inputs[3].is_empty() {
                break;
            }
            let Some(o) = cx.other(a, &cur).map(String::from) else {
                break;
            };
            if o == cur || tensor_type(g, &a.outputs[0]).and_then(|t| t.shape).as_ref() != Some(&shape) {
                break;
            }
            let is_bias = constant(g, &o).is_some_and(|t| t.rank() <= 1);
            if matches!(fused, FusedOp::FusedMatMul { .. }) && is_bias && inputs[2].is_empty() && at.is_none() {
                inputs[2] = o;
            } else if !is_bias {
                inputs[3] = o;
            } else {
                break;
            }
            cur = a.outputs[0].clone();
            at = Some(j);
        }
        if let Some((j, a)) = cx.next(&cur) {
            if a.inputs[0] == cur {
                if let Some(act) = activation_of(g, a) {
                    activation = act;
                    at = Some(j);
                }
            }
        }
        let Some(at) = at else { continue };
        let op = match fused {
            FusedOp::FusedConv { conv, .. } => FusedOp::FusedConv { conv, activation },
            FusedOp::FusedGemm { gemm, .. } => FusedOp::FusedGemm { gemm, activation },
            FusedOp::FusedMatMul { .. } => FusedOp::FusedMatMul { activation },
        };
        while inputs.last().is_some_and(|s| s.is_empty()) {
            inputs.pop();
        }
        rewrites.push(Rewrite {
            at,
            op: Op::Fused(op),
            inputs,
            inits: vec![],
        });
    }
    Ok(apply(g, rewrites))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{conv_same_3x3, op_types, positive, ramp, G};
    use crate::util::binary;
    use carbide_ir::ops::reduce::ReduceAttrs;

    fn mean_last() -> Op {
        Op::Reduce(ReduceOp::Reduce(ReduceAttrs {
            kind: ReduceKind::Mean,
            axes: Some(vec![-1]),
            keepdims: true,
            noop_with_empty_axes: false,
        }))
    }

    #[test]
    fn gelu_erf_and_tanh_forms_fuse() {
        let mut t = G::new();
        t.input("x", &[2, 8])
            .init("sqrt2", Tensor::scalar_f32(std::f32::consts::SQRT_2))
            .init("one", Tensor::scalar_f32(1.0))
            .init("half", Tensor::scalar_f32(0.5))
            .node(binary(Binary::Div), &["x", "sqrt2"], &["d"])
            .node(unary(Unary::Erf), &["d"], &["e"])
            .node(binary(Binary::Add), &["e", "one"], &["a"])
            .node(binary(Binary::Mul), &["x", "a"], &["m"])
            .node(binary(Binary::Mul), &["m", "half"], &["y"])
            .output("y");
        assert_eq!(op_types(&t.check_pass(fuse_activations)), ["Gelu"]);

        // PyTorch's export: x * ((1 + erf(x / sqrt 2)) * 0.5).
        let mut t = G::new();
        t.input("x", &[2, 8])
            .init("sqrt2", Tensor::scalar_f32(std::f32::consts::SQRT_2))
            .init("one", Tensor::scalar_f32(1.0))
            .init("half", Tensor::scalar_f32(0.5))
            .node(binary(Binary::Div), &["x", "sqrt2"], &["d"])
            .node(unary(Unary::Erf), &["d"], &["e"])
            .node(binary(Binary::Add), &["e", "one"], &["a"])
            .node(binary(Binary::Mul), &["half", "a"], &["m"])
            .node(binary(Binary::Mul), &["x", "m"], &["y"])
            .output("y");
        assert_eq!(op_types(&t.check_pass(fuse_activations)), ["Gelu"]);

        let mut t = G::new();
        t.input("x", &[2, 8])
            .init("three", Tensor::scalar_f32(3.0))
            .init("k", Tensor::scalar_f32(0.044715))
            .init("c", Tensor::scalar_f32((2.0 / std::f32::consts::PI).sqrt()))
            .init("one", Tensor::scalar_f32(1.0))
            .init("half", Tensor::scalar_f32(0.5))
            .node(binary(Binary::Pow), &["x", "three"], &["p"])
            .node(binary(Binary::Mul), &["k", "p"], &["w"])
            .node(binary(Binary::Add), &["x", "w"], &["v"])
            .node(binary(Binary::Mul), &["v", "c"], &["u"])
            .node(unary(Unary::Tanh), &["u"], &["th"])
            .node(binary(Binary::Add), &["one", "th"], &["a"])
            .node(binary(Binary::Mul), &["x", "half"], &["h"])
            .node(binary(Binary::Mul), &["h", "a"], &["y"])
            .output("y");
        assert_eq!(op_types(&t.check_pass(fuse_activations)), ["Gelu"]);
    }

    #[test]
    fn silu_and_hardswish_fuse() {
        let mut t = G::new();
        t.input("x", &[2, 8])
            .node(unary(Unary::Sigmoid), &["x"], &["s"])
            .node(binary(Binary::Mul), &["s", "x"], &["y"])
            .node(
                unary(Unary::HardSigmoid {
                    alpha: 1.0 / 6.0,
                    beta: 0.5,
                }),
                &["y"],
                &["h"],
            )
            .node(binary(Binary::Mul), &["y", "h"], &["z"])
            .output("z");
        assert_eq!(op_types(&t.check_pass(fuse_activations)), ["Swish", "HardSwish"]);
    }

    #[test]
    fn layernorm_and_rmsnorm_fuse() {
        let mut t = G::new();
        t.input("x", &[2, 3, 8])
            .init("two", Tensor::scalar_f32(2.0))
            .init("eps", Tensor::scalar_f32(1e-5))
            .init("gamma", positive(&[8]))
            .init("beta", ramp(&[8], 0.1))
            .node(mean_last(), &["x"], &["m"])
            .node(binary(Binary::Sub), &["x", "m"], &["d"])
            .node(binary(Binary::Pow), &["d", "two"], &["sq"])
            .node(mean_last(), &["sq"], &["v"])
            .node(binary(Binary::Add), &["v", "eps"], &["ve"])
            .node(unary(Unary::Sqrt), &["ve"], &["s"])
            .node(binary(Binary::Div), &["d", "s"], &["n"])
            .node(binary(Binary::Mul), &["n", "gamma"], &["ng"])
            .node(binary(Binary::Add), &["ng", "beta"], &["y"])
            .output("y");
        assert_eq!(op_types(&t.check_pass(fuse_norms)), ["LayerNormalization"]);

        let mut t = G::new();
        t.input("x", &[2, 3, 8])
            .init("eps", Tensor::scalar_f32(1e-6))
            .init("gamma", positive(&[8]))
            .node(binary(Binary::Mul), &["x", "x"], &["sq"])
            .node(mean_last(), &["sq"], &["v"])
            .node(binary(Binary::Add), &["eps", "v"], &["ve"])
            .node(unary(Unary::Sqrt), &["ve"], &["s"])
            .node(binary(Binary::Div), &["x", "s"], &["n"])
            .node(binary(Binary::Mul), &["gamma", "n"], &["y"])
            .output("y");
        assert_eq!(op_types(&t.check_pass(fuse_norms)), ["RMSNormalization"]);
    }

    #[test]
    fn conv_residual_relu_and_matmul_bias_gelu_fuse() {
        let mut t = G::new();
        t.input("x", &[1, 3, 5, 5])
            .init("w", ramp(&[3, 3, 3, 3], 0.1))
            .init("b", ramp(&[3], 0.1))
            .node(conv_same_3x3(), &["x", "w", "b"], &["c"])
            .node(binary(Binary::Add), &["x", "c"], &["s"])
            .node(unary(Unary::Relu), &["s"], &["y"])
            .output("y");
        let g = t.check_pass(fuse_bias_activation);
        assert_eq!(op_types(&g), ["FusedConv"]);
        assert_eq!(g.nodes[0].inputs, ["x", "w", "b", "x"]);

        let mut t = G::new();
        t.input("x", &[2, 3, 6])
            .input("r", &[2, 3, 5])
            .init("w", ramp(&[6, 5], 0.1))
            .init("b", ramp(&[5], 0.1))
            .node(Op::Linalg(LinalgOp::MatMul), &["x", "w"], &["m"])
            .node(binary(Binary::Add), &["b", "m"], &["mb"])
            .node(binary(Binary::Add), &["mb", "r"], &["s"])
            .node(unary(Unary::Gelu { tanh: false }), &["s"], &["y"])
            .output("y");
        let g = t.check_pass(fuse_bias_activation);
        assert_eq!(op_types(&g), ["FusedMatMul"]);
        assert_eq!(g.nodes[0].inputs, ["x", "w", "b", "r"]);
    }

    #[test]
    fn clip_activation_and_gemm_relu_fuse() {
        let mut t = G::new();
        t.input("x", &[4, 6])
            .init("w", ramp(&[5, 6], 0.1))
            .init("lo", Tensor::scalar_f32(0.0))
            .init("hi", Tensor::scalar_f32(0.3))
            .node(
                Op::Linalg(LinalgOp::Gemm(carbide_ir::ops::linalg::GemmAttrs {
                    alpha: 1.0,
                    beta: 1.0,
                    trans_a: false,
                    trans_b: true,
                })),
                &["x", "w"],
                &["g"],
            )
            .node(
                Op::Elementwise(ElementwiseOp::Clip { min: None, max: None }),
                &["g", "lo", "hi"],
                &["y"],
            )
            .output("y");
        assert_eq!(op_types(&t.check_pass(fuse_bias_activation)), ["FusedGemm"]);
    }
}
