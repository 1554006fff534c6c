//! Algebraic rewrites: BatchNormalization and constant scales folded into
//! Conv/Gemm/MatMul weights, Transpose/Reshape chains collapsed, and
//! MatMul + Add turned into one Gemm where both are 2-D.

use crate::error::PassError;
use crate::manager::PassCtx;
use crate::util::{as_binary, constant, known_shape, Namer, Uses};
use carbide_ir::ndarray::ArrayD;
use carbide_ir::ops::elementwise::Binary;
use carbide_ir::ops::linalg::GemmAttrs;
use carbide_ir::ops::{LinalgOp, NnOp, TensorOp};
use carbide_ir::{DType, Graph, Op, Tensor};

fn f32s(t: &Tensor) -> Option<Vec<f32>> {
    match t {
        Tensor::F32(a) => Some(a.iter().copied().collect()),
        _ => None,
    }
}

fn f32_tensor(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::F32(ArrayD::from_shape_vec(shape.to_vec(), v).expect("length matches shape"))
}

/// A per-channel vector of length `m` from a constant that broadcasts as
/// `[m, 1, ..., 1]` against a tensor of rank `rank` whose channel dim is
/// `axis` (or a scalar). `None` when it has any other shape.
fn per_channel(t: &Tensor, m: usize, axis: usize, rank: usize) -> Option<Vec<f32>> {
    let v = f32s(t)?;
    if v.len() == 1 {
        return Some(vec![v[0]; m]);
    }
    if v.len() != m || t.rank() > rank {
        return None;
    }
    // Align the constant's dims to the right of the output's.
    let off = rank - t.rank();
    let ok = t
        .shape()
        .iter()
        .enumerate()
        .all(|(k, &d)| if off + k == axis { d == m } else { d == 1 });
    ok.then_some(v)
}

/// Scales output channel `m` (dim 0 of W, rows of `len / M`) of a weight.
fn scale_rows(w: &Tensor, s: &[f32]) -> Option<Tensor> {
    let mut v = f32s(w)?;
    let m = *w.shape().first()?;
    if m != s.len() || m == 0 {
        return None;
    }
    let row = v.len() / m;
    for (k, x) in v.iter_mut().enumerate() {
        *x *= s[k / row];
    }
    Some(f32_tensor(w.shape(), v))
}

/// Scales column `m` (the last dim) of a 2-D weight.
fn scale_cols(w: &Tensor, s: &[f32]) -> Option<Tensor> {
    let mut v = f32s(w)?;
    let cols = *w.shape().last()?;
    if w.rank() != 2 || cols != s.len() {
        return None;
    }
    for (k, x) in v.iter_mut().enumerate() {
        *x *= s[k % cols];
    }
    Some(f32_tensor(w.shape(), v))
}

/// A 1-D f32 tensor of ones (a neutral LayerNorm/RMSNorm scale).
pub fn ones(n: usize) -> Tensor {
    f32_tensor(&[n], vec![1.0; n])
}

/// A producer's new op, inputs and the new initializers they read.
type Rewritten = (Op, Vec<String>, Vec<(String, Tensor)>);

struct Bn {
    scale: Vec<f32>,
    shift: Vec<f32>,
}

/// `y = x * scale + shift` of an inference BatchNormalization with constant parameters.
fn bn_affine(g: &Graph, n: &carbide_ir::Node) -> Option<Bn> {
    let Op::Nn(NnOp::BatchNormalization {
        epsilon,
        training: false,
        spatial: true,
        ..
    }) = n.op
    else {
        return None;
    };
    let p: Vec<Vec<f32>> = (1..5)
        .map(|i| f32s(constant(g, n.inputs.get(i)?)?))
        .collect::<Option<_>>()?;
    let m = p[0].len();
    if p.iter().any(|v| v.len() != m) {
        return None;
    }
    let scale: Vec<f32> = (0..m).map(|c| p[0][c] / (p[3][c] + epsilon).sqrt()).collect();
    let shift = (0..m).map(|c| p[1][c] - p[2][c] * scale[c]).collect();
    Some(Bn { scale, shift })
}

/// Folds an inference BatchNormalization into the Conv, Gemm or 2-D MatMul
/// before it (whose output only it uses): the weights are scaled per output
/// channel and the bias shifted.
pub fn fold_batchnorm(g: &mut Graph, _cx: &PassCtx) -> Result<bool, PassError> {
    let mut changed = false;
    let mut namer = Namer::new(g);
    let mut i = 0;
    while i < g.nodes.len() {
        let uses = Uses::of(g);
        let n = &g.nodes[i];
        let extra_used = n.outputs.iter().skip(1).any(|o| !o.is_empty() && uses.uses(o) > 0);
        let Some(bn) = (!extra_used).then(|| bn_affine(g, n)).flatten() else {
            i += 1;
            continue;
        };
        let x = n.inputs[0].clone();
        let Some((p, prod)) = uses.producer(g, &x).filter(|_| uses.single_use(&x)) else {
            i += 1;
            continue;
        };
        let m = bn.scale.len();
        let rewritten: Option<Rewritten> = (|| match &prod.op {
            Op::Nn(NnOp::Conv(_)) => {
                let w = constant(g, &prod.inputs[1])?;
                let b = match prod.inputs.get(2).filter(|s| !s.is_empty()) {
                    Some(b) => f32s(constant(g, b)?)?,
                    None => vec![0.0; m],
                };
                if b.len() != m {
                    return None;
                }
                let w2 = scale_rows(w, &bn.scale)?;
                let b2: Vec<f32> = (0..m).map(|c| b[c] * bn.scale[c] + bn.shift[c]).collect();
                let (wn, bnm) = (
                    namer.fresh(&format!("{}_w", prod.name)),
                    namer.fresh(&format!("{}_b", prod.name)),
                );
                Some((
                    prod.op.clone(),
                    vec![prod.inputs[0].clone(), wn.clone(), bnm.clone()],
                    vec![(wn, w2), (bnm, f32_tensor(&[m], b2))],
                ))
            }
            Op::Linalg(LinalgOp::Gemm(a)) => {
                let w = constant(g, &prod.inputs[1])?;
                let c = match prod.inputs.get(2).filter(|s| !s.is_empty()) {
                    Some(c) => {
                        let t = constant(g, c)?;
                        if !(t.len() == 1 || t.shape() == [m] || t.shape() == [1, m]) {
                            return None;
                        }
                        let v = f32s(t)?;
                        (0..m).map(|k| v[if v.len() == 1 { 0 } else { k }] * a.beta).collect()
                    }
                    None => vec![0.0; m],
                };
                let s: Vec<f32> = bn.scale.iter().map(|s| s * a.alpha).collect();
                let w2 = if a.trans_b {
                    scale_rows(w, &s)?
                } else {
                    scale_cols(w, &s)?
                };
                let c2: Vec<f32> = (0..m).map(|k| c[k] * bn.scale[k] + bn.shift[k]).collect();
                let (wn, cn) = (
                    namer.fresh(&format!("{}_w", prod.name)),
                    namer.fresh(&format!("{}_c", prod.name)),
                );
                let attrs = GemmAttrs {
                    alpha: 1.0,
                    beta: 1.0,
                    trans_a: a.trans_a,
                    trans_b: a.trans_b,
                };
                Some((
                    Op::Linalg(LinalgOp::Gemm(attrs)),
                    vec![prod.inputs[0].clone(), wn.clone(), cn.clone()],
                    vec![(wn, w2), (cn, f32_tensor(&[m], c2))],
                ))
            }
            Op::Linalg(LinalgOp::MatMul) => {
                let w = constant(g, &prod.inputs[1])?;
                if known_shape(g, &prod.inputs[0])?.len() != 2 || w.rank() != 2 {
                    return None;
                }
                let w2 = scale_cols(w, &bn.scale)?;
                let (wn, cn) = (
                    namer.fresh(&format!("{}_w", prod.name)),
                    namer.fresh(&format!("{}_c", prod.name)),
                );
                let attrs = GemmAttrs {
                    alpha: 1.0,
                    beta: 1.0,
                    trans_a: false,
                    trans_b: false,
                };
                Some((
                    Op::Linalg(LinalgOp::Gemm(attrs)),
                    vec![prod.inputs[0].clone(), wn.clone(), cn.clone()],
                    vec![(wn, w2), (cn, f32_tensor(&[m], bn.shift.clone()))],
                ))
            }
            _ => None,
        })();
        let Some((op, inputs, inits)) = rewritten else {
            i += 1;
            continue;
        };
        let out = g.nodes[i].outputs[0].clone();
        g.initializers.extend(inits);
        let pn = &mut g.nodes[p];
        pn.op = op;
        pn.inputs = inputs;
        pn.outputs = vec![out];
        g.nodes.remove(i);
        changed = true;
    }
    Ok(changed)
}

/// Folds a constant per-channel (or scalar) Mul or Add after a Conv, a
/// scalar Mul after a Gemm, and a per-column Mul after a MatMul with a
/// constant 2-D weight, into the weights and bias.
pub fn fold_scale_into_weights(g: &mut Graph, _cx: &PassCtx) -> Result<bool, PassError> {
    let mut changed = false;
    let mut namer = Namer::new(g);
    let mut i = 0;
    while i < g.nodes.len() {
        let uses = Uses::of(g);
        let n = &g.nodes[i];
        let Some(b @ (Binary::Mul | Binary::Add)) = as_binary(&n.op) else {
            i += 1;
            continue;
        };
        // The operand that is produced by a foldable node, and the constant.
        let found = (0..2).find_map(|k| {
            let (x, c) = (&n.inputs[k], &n.inputs[1 - k]);
            let c = constant(g, c)?;
            let (p, prod) = uses.producer(g, x).filter(|_| uses.single_use(x))?;
            Some((p, prod, c))
        });
        let Some((p, prod, c)) = found else {
            i += 1;
            continue;
        };
        let out_shape = known_shape(g, &n.outputs[0]);
        let prod_shape = known_shape(g, &prod.outputs[0]);
        if out_shape.is_none() || out_shape != prod_shape {
            i += 1;
            continue;
        }
        let shape = prod_shape.expect("checked");
        let rewritten: Option<Rewritten> = (|| match (&prod.op, b) {
            (Op::Nn(NnOp::Conv(_)), _) => {
                let m = *shape.get(1)?;
                let s = per_channel(c, m, 1, shape.len())?;
                let w = constant(g, &prod.inputs[1])?;
                let bias = match prod.inputs.get(2).filter(|s| !s.is_empty()) {
                    Some(b) => f32s(constant(g, b)?)?,
                    None => vec![0.0; m],
                };
                let (w2, b2) = if b == Binary::Mul {
                    (scale_rows(w, &s)?, (0..m).map(|k| bias[k] * s[k]).collect())
                } else {
                    (w.clone(), (0..m).map(|k| bias[k] + s[k]).collect::<Vec<f32>>())
                };
                let (wn, bn) = (
                    namer.fresh(&format!("{}_w", prod.name)),
                    namer.fresh(&format!("{}_b", prod.name)),
                );
                Some((
                    prod.op.clone(),
                    vec![prod.inputs[0].clone(), wn.clone(), bn.clone()],
                    vec![(wn, w2), (bn, f32_tensor(&[m], b2))],
                ))
            }
            (Op::Linalg(LinalgOp::Gemm(a)), Binary::Mul) if c.len() == 1 => {
                let s = f32s(c)?[0];
                let mut a = a.clone();
                a.alpha *= s;
                a.beta *= s;
                Some((Op::Linalg(LinalgOp::Gemm(a)), prod.inputs.clone(), vec![]))
            }
            (Op::Linalg(LinalgOp::MatMul), Binary::Mul) => {
                let w = constant(g, &prod.inputs[1])?;
                let m = *shape.last()?;
                let s = per_channel(c, m, shape.len() - 1, shape.len())?;
                let w2 = scale_cols(w, &s)?;
                let wn = namer.fresh(&format!("{}_w", prod.name));
                Some((
                    prod.op.clone(),
                    vec![prod.inputs[0].clone(), wn.clone()],
                    vec![(wn, w2)],
                ))
            }
            _ => None,
        })();
        let Some((op, inputs, inits)) = rewritten else {
            i += 1;
            continue;
        };
        let out = g.nodes[i].outputs[0].clone();
        g.initializers.extend(inits);
        let pn = &mut g.nodes[p];
        pn.op = op;
        pn.inputs = inputs;
        pn.outputs = vec![out];
        g.nodes.remove(i);
        changed = true;
    }
    Ok(changed)
}

/// Transpose of a Transpose becomes one Transpose (the identity one is then
/// removed as a no-op); Reshape of a Reshape reads the first one's input.
pub fn cancel_transposes(g: &mut Graph, _cx: &PassCtx) -> Result<bool, PassError> {
    let mut changed = false;
    let uses = Uses::of(g);
    for i in 0..g.nodes.len() {
        let n = &g.nodes[i];
        let Some(x) = n.inputs.first() else { continue };
        let Some((_, prod)) = uses.producer(g, x) else { continue };
        match (&n.op, &prod.op) {
            (
                Op::Tensor(TensorOp::Transpose { perm: Some(p2) }),
                Op::Tensor(TensorOp::Transpose { perm: Some(p1) }),
            ) if p1.len() == p2.len() => {
                let composed: Option<Vec<i64>> = p2
                    .iter()
                    .map(|&k| usize::try_from(k).ok().and_then(|k| p1.get(k).copied()))
                    .collect();
                let Some(composed) = composed else { continue };
                let src = prod.inputs[0].clone();
                let n = &mut g.nodes[i];
                n.op = Op::Tensor(TensorOp::Transpose { perm: Some(composed) });
                n.inputs = vec![src];
                changed = true;
            }
            (
                Op::Tensor(TensorOp::Reshape {
                    allowzero: false,
                    shape: None,
                }),
                Op::Tensor(TensorOp::Reshape { shape: None, .. }),
            ) => {
                // The outer target must not copy dims (0) from the middle value.
                let Some(t) = n
                    .inputs
                    .get(1)
                    .and_then(|s| constant(g, s))
                    .and_then(|t| t.to_i64_vec())
                else {
                    continue;
                };
                if t.contains(&0) {
                    continue;
                }
                let src = prod.inputs[0].clone();
                g.nodes[i].inputs[0] = src;
                changed = true;
            }
            _ => {}
        }
    }
    Ok(changed)
}

/// MatMul of 2-D operands followed by an Add of a constant that broadcasts
/// onto the product becomes one Gemm (no reshapes needed, so it pays).
pub fn matmul_add_to_gemm(g: &mut Graph, _cx: &PassCtx) -> Result<bool, PassError> {
    let mut changed = false;
    let mut i = 0;
    while i < g.nodes.len() {
        let uses = Uses::of(g);
        let n = &g.nodes[i];
        if as_binary(&n.op) != Some(Binary::Add) {
            i += 1;
            continue;
        }
        let found = (0..2).find_map(|k| {
            let (x, c) = (&n.inputs[k], &n.inputs[1 - k]);
            let ct = constant(g, c)?;
            let (p, prod) = uses.producer(g, x).filter(|_| uses.single_use(x))?;
            if prod.op != Op::Linalg(LinalgOp::MatMul) {
                return None;
            }
            let a = known_shape(g, &prod.inputs[0])?;
            let b = known_shape(g, &prod.inputs[1])?;
            let y = known_shape(g, x)?;
            let out = known_shape(g, &n.outputs[0])?;
            let c_ok = ct.rank() <= 2 && ct.dtype() == DType::F32 && {
                let off = 2 - ct.rank();
                ct.shape().iter().enumerate().all(|(k, &d)| d == 1 || d == y[off + k])
            };
            (a.len() == 2 && b.len() == 2 && out == y && c_ok).then(|| (p, prod.inputs.clone(), c.clone()))
        });
        let Some((p, ab, c)) = found else {
            i += 1;
            continue;
        };
        let out = n.outputs[0].clone();
        let pn = &mut g.nodes[p];
        pn.op = Op::Linalg(LinalgOp::Gemm(GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
        }));
        pn.inputs = vec![ab[0].clone(), ab[1].clone(), c];
        pn.outputs = vec![out];
        g.nodes.remove(i);
        changed = true;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{conv_same_3x3, op_types, positive, ramp, G};
    use crate::util::binary;

    fn bn() -> Op {
        Op::Nn(NnOp::BatchNormalization {
            epsilon: 1e-5,
            momentum: 0.9,
            training: false,
            spatial: true,
            legacy_outputs: false,
        })
    }

    fn bn_params(t: &mut G, m: usize) {
        t.init("gamma", positive(&[m]))
            .init("beta", ramp(&[m], 0.3))
            .init("mean", ramp(&[m], 0.2))
            .init("var", positive(&[m]));
    }

    #[test]
    fn batchnorm_folds_into_conv() {
        let mut t = G::new();
        t.input("x", &[1, 2, 5, 5])
            .init("w", ramp(&[3, 2, 3, 3], 0.1))
            .init("b", ramp(&[3], 0.1));
        bn_params(&mut t, 3);
        t.node(conv_same_3x3(), &["x", "w", "b"], &["c"])
            .node(bn(), &["c", "gamma", "beta", "mean", "var"], &["y"])
            .output("y");
        assert_eq!(op_types(&t.check_pass(fold_batchnorm)), ["Conv"]);
    }

    #[test]
    fn batchnorm_folds_into_gemm_and_matmul() {
        let mut t = G::new();
        t.input("x", &[4, 6])
            .init("w", ramp(&[5, 6], 0.1))
            .init("c", ramp(&[5], 0.1));
        bn_params(&mut t, 5);
        t.node(
            Op::Linalg(LinalgOp::Gemm(GemmAttrs {
                alpha: 0.5,
                beta: 2.0,
                trans_a: false,
                trans_b: true,
            })),
            &["x", "w", "c"],
            &["g"],
        )
        .node(bn(), &["g", "gamma", "beta", "mean", "var"], &["y"])
        .output("y");
        assert_eq!(op_types(&t.check_pass(fold_batchnorm)), ["Gemm"]);

        let mut t = G::new();
        t.input("x", &[4, 6]).init("w", ramp(&[6, 5], 0.1));
        bn_params(&mut t, 5);
        t.node(Op::Linalg(LinalgOp::MatMul), &["x", "w"], &["g"])
            .node(bn(), &["g", "gamma", "beta", "mean", "var"], &["y"])
            .output("y");
        assert_eq!(op_types(&t.check_pass(fold_batchnorm)), ["Gemm"]);
    }

    #[test]
    fn scales_and_shifts_fold_into_weights() {
        let mut t = G::new();
        t.input("x", &[1, 2, 4, 4])
            .init("w", ramp(&[3, 2, 3, 3], 0.1))
            .init("s", ramp(&[3, 1, 1], 0.2))
            .init("sh", ramp(&[1, 3, 1, 1], 0.2))
            .node(conv_same_3x3(), &["x", "w"], &["c"])
            .node(binary(Binary::Mul), &["s", "c"], &["m"])
            .node(binary(Binary::Add), &["m", "sh"], &["y"])
            .output("y");
        let m = t.model();
        let opts = crate::PassOptions::default();
        let cx = PassCtx { opts: &opts, name: "t" };
        let mut g = m.graph.clone();
        assert!(fold_scale_into_weights(&mut g, &cx).unwrap());
        assert_eq!(op_types(&t.check_pass(fold_scale_into_weights)), ["Conv"]);

        let mut t = G::new();
        t.input("x", &[3, 4, 6])
            .init("w", ramp(&[6, 5], 0.1))
            .init("s", ramp(&[5], 0.2))
            .node(Op::Linalg(LinalgOp::MatMul), &["x", "w"], &["mm"])
            .node(binary(Binary::Mul), &["mm", "s"], &["y"])
            .output("y");
        assert_eq!(op_types(&t.check_pass(fold_scale_into_weights)), ["MatMul"]);
    }

    #[test]
    fn a_scale_that_widens_does_not_fold() {
        let mut t = G::new();
        t.input("x", &[4, 6])
            .init("w", ramp(&[6, 5], 0.1))
            .init("s", ramp(&[2, 4, 5], 0.2))
            .node(Op::Linalg(LinalgOp::MatMul), &["x", "w"], &["mm"])
            .node(binary(Binary::Mul), &["mm", "s"], &["y"])
            .output("y");
        let m = t.model();
        let opts = crate::PassOptions::default();
        let mut g = m.graph.clone();
        assert!(!fold_scale_into_weights(&mut g, &PassCtx { opts: &opts, name: "t" }).unwrap());
    }

    #[test]
    fn transposes_and_reshapes_collapse() {
        let mut t = G::new();
        t.input("x", &[2, 3, 4])
            .init("s1", Tensor::from_i64s(vec![6, 4]))
            .init("s2", Tensor::from_i64s(vec![4, -1]))
            .node(
                Op::Tensor(TensorOp::Transpose {
                    perm: Some(vec![2, 0, 1]),
                }),
                &["x"],
                &["a"],
            )
            .node(
                Op::Tensor(TensorOp::Transpose {
                    perm: Some(vec![1, 2, 0]),
                }),
                &["a"],
                &["b"],
            )
            .node(
                Op::Tensor(TensorOp::Reshape {
                    allowzero: false,
                    shape: None,
                }),
                &["b", "s1"],
                &["c"],
            )
            .node(
                Op::Tensor(TensorOp::Reshape {
                    allowzero: false,
                    shape: None,
                }),
                &["c", "s2"],
                &["y"],
            )
            .output("y");
        t.check_pass(cancel_transposes);
        let g = t.check_level(1);
        assert_eq!(op_types(&g), ["Reshape"]);
    }

    #[test]
    fn matmul_add_becomes_gemm() {
        let mut t = G::new();
        t.input("x", &[4, 6])
            .init("w", ramp(&[6, 5], 0.1))
            .init("c", ramp(&[5], 0.2))
            .node(Op::Linalg(LinalgOp::MatMul), &["x", "w"], &["mm"])
            .node(binary(Binary::Add), &["c", "mm"], &["y"])
            .output("y");
        assert_eq!(op_types(&t.check_pass(matmul_add_to_gemm)), ["Gemm"]);
    }
}
