//! Scaled dot-product attention: `Softmax(Q·Kᵀ · scale + mask) · V`, with
//! the head split (Reshape + Transpose) of Q, K, V and the head merge of the
//! result around it, becomes one ONNX `Attention` (opset 23 semantics).
//!
//! Two forms are recognized:
//! - 3-D: Q, K, V are `[B, S, H·D]` values split into heads by
//!   `Reshape [B, S, H, D]` + `Transpose` (`[0,2,1,3]`, K: `[0,2,3,1]`) and
//!   the result is merged back by `Transpose [0,2,1,3]` + `Reshape [B, S, H·Dv]`:
//!   the fused op takes the 3-D values with `q_num_heads`/`kv_num_heads`, so
//!   the reshapes and transposes disappear too;
//! - 4-D: Q `[B, H, S, D]`, K given as `Transpose(K, [0,1,3,2])`, V `[B, H, L, Dv]`.
//!
//! Where they differ from the unfused chain: a row whose mask is `-inf`
//! everywhere gives zeros (the ONNX reference's convention) instead of NaN.

use crate::error::PassError;
use crate::fusion::{apply, Cx, Rewrite};
use crate::manager::PassCtx;
use crate::util::{as_binary, constant, tensor_type};
use carbide_ir::ops::elementwise::Binary;
use carbide_ir::ops::linalg::{AttentionAttrs, SoftmaxKind};
use carbide_ir::ops::{LinalgOp, TensorOp};
use carbide_ir::{DType, Dim, Graph, Node, Op, TensorType};

/// The value `name` as a positive scalar constant.
fn positive_scalar(g: &Graph, name: &str) -> Option<f64> {
    let t = constant(g, name)?;
    if t.len() != 1 || t.dtype() != DType::F32 {
        return None;
    }
    let v = t.to_f64_vec()?[0];
    (v.is_finite() && v > 0.0).then_some(v)
}

fn shape_of(g: &Graph, name: &str) -> Option<Vec<Dim>> {
    let t: TensorType = tensor_type(g, name)?;
    if t.dtype != Some(DType::F32) {
        return None;
    }
    t.shape
}

fn transpose_perm(n: &Node) -> Option<&[i64]> {
    match &n.op {
        Op::Tensor(TensorOp::Transpose { perm: Some(p) }) => Some(p),
        _ => None,
    }
}

/// `name` is `Transpose(Reshape(x, [B, S, H, D]), perm)` with the reshape
/// splitting x's last dim into known heads: returns (x, H, D).
fn split_heads(cx: &Cx, name: &str, perm: &[i64]) -> Option<(String, usize, usize)> {
    let t = cx.inner(name)?;
    (transpose_perm(t)? == perm).then_some(())?;
    let r = cx.inner(&t.inputs[0])?;
    let Op::Tensor(TensorOp::Reshape { .. }) = &r.op else {
        return None;
    };
    let x = &r.inputs[0];
    let (xs, rs) = (shape_of(cx.g, x)?, shape_of(cx.g, &r.outputs[0])?);
    let ([b, s, e], [b2, s2, h, d]) = (xs.as_slice(), rs.as_slice()) else {
        return None;
    };
    let (h, d, e) = (h.known()?, d.known()?, e.known()?);
    let same = |p: &Dim, q: &Dim| p == q && !matches!(p, Dim::Unknown);
    (same(b, b2) && same(s, s2) && h * d == e && h > 0).then(|| (x.clone(), h, d))
}

/// After the 4-D result `y` (`[B, H, S, Dv]`): `Reshape(Transpose(y,
/// [0,2,1,3]), [B, S, H·Dv])` merging the heads: the Reshape node's index.
fn merge_heads(cx: &Cx, y: &str) -> Option<usize> {
    let (_, t) = cx.next(y)?;
    (transpose_perm(t)? == [0, 2, 1, 3]).then_some(())?;
    let (ri, r) = cx.next(&t.outputs[0])?;
    let Op::Tensor(TensorOp::Reshape { .. }) = &r.op else {
        return None;
    };
    let (ts, rs) = (shape_of(cx.g, &t.outputs[0])?, shape_of(cx.g, &r.outputs[0])?);
    let ([b, s, h, dv], [b2, s2, e]) = (ts.as_slice(), rs.as_slice()) else {
        return None;
    };
    let same = |p: &Dim, q: &Dim| p == q && !matches!(p, Dim::Unknown);
    (same(b, b2) && same(s, s2) && h.known()? * dv.known()? == e.known()?).then_some(ri)
}

/// `n` is `MatMul(Q, Kᵀ)`, optionally scaled (Mul or Div by a positive
/// scalar constant): the scale and the MatMul node.
fn scaled_scores<'g>(cx: &Cx<'g>, n: &'g Node) -> Option<(f64, &'g Node)> {
    if matches!(n.op, Op::Linalg(LinalgOp::MatMul)) {
        return Some((1.0, n));
    }
    let b = as_binary(&n.op)?;
    let (s, other) = match b {
        Binary::Mul | Binary::Div if positive_scalar(cx.g, &n.inputs[1]).is_some() => {
            (positive_scalar(cx.g, &n.inputs[1])?, &n.inputs[0])
        }
        Binary::Mul => (positive_scalar(cx.g, &n.inputs[0])?, &n.inputs[1]),
        _ => return None,
    };
    let mm = cx.inner(other)?;
    matches!(mm.op, Op::Linalg(LinalgOp::MatMul)).then_some(())?;
    Some((if b == Binary::Mul { s } else { 1.0 / s }, mm))
}

/// The attention rewrite anchored on Softmax node `sm`, if the chain matches.
fn match_attention(cx: &Cx, sm: &Node) -> Option<Rewrite> {
    let Op::Linalg(LinalgOp::Softmax(a)) = &sm.op else {
        return None;
    };
    let scores_shape = shape_of(cx.g, &sm.inputs[0])?;
    let last = scores_shape.len() as i64 - 1;
    if a.kind != SoftmaxKind::Softmax || scores_shape.len() != 4 || !(a.axis == -1 || a.axis == last) {
        return None;
    }
    // Scores, optionally plus a mask whose Add keeps the scores' shape and
    // whose last dim is the scores' (ONNX Attention pads a shorter last mask
    // dim with -inf instead of broadcasting it).
    let first = cx.inner(&sm.inputs[0])?;
    let mut mask = String::new();
    let (scale, qk) = match scaled_scores(cx, first) {
        Some(found) => found,
        None => {
            if as_binary(&first.op) != Some(Binary::Add) {
                return None;
            }
            let (p, found, m) = [0, 1].into_iter().find_map(|i| {
                let p = cx.inner(&first.inputs[i])?;
                Some((p, scaled_scores(cx, p)?, first.inputs[1 - i].clone()))
            })?;
            let ms = shape_of(cx.g, &m)?;
            let pshape = shape_of(cx.g, &p.outputs[0])?;
            if ms.is_empty() || ms.len() > 4 || pshape != scores_shape || ms.last() != scores_shape.last() {
                return None;
            }
            if matches!(ms.last(), Some(Dim::Unknown)) {
                return None;
            }
            mask = m;
            found
        }
    };
    let cur = qk;
    let (q4, kt4) = (&cur.inputs[0], &cur.inputs[1]);
    // P·V.
    let (pv_at, pv) = cx.next(&sm.outputs[0])?;
    if !matches!(pv.op, Op::Linalg(LinalgOp::MatMul)) || pv.inputs[0] != sm.outputs[0] {
        return None;
    }
    let v4 = &pv.inputs[1];
    let (qs, kts, vs) = (shape_of(cx.g, q4)?, shape_of(cx.g, kt4)?, shape_of(cx.g, v4)?);
    if qs.len() != 4 || kts.len() != 4 || vs.len() != 4 || shape_of(cx.g, &pv.outputs[0])?.len() != 4 {
        return None;
    }
    let attrs = |heads: Option<(usize, usize)>| AttentionAttrs {
        is_causal: false,
        q_num_heads: heads.map(|h| h.0),
        kv_num_heads: heads.map(|h| h.1),
        qk_matmul_output_mode: 0,
        scale: Some(scale as f32),
        softcap: 0.0,
        softmax_precision: None,
        left_window_size: -1,
        right_window_size: -1,
        opset: 23,
    };
    let known_eq = |p: &Dim, q: &Dim| p == q && !matches!(p, Dim::Unknown);
    // 3-D form: heads split from [B, S, H·D] values and merged back after.
    let three_d = (|| {
        let (q, hq, d) = split_heads(cx, q4, &[0, 2, 1, 3])?;
        let (k, hk, dk) = split_heads(cx, kt4, &[0, 2, 3, 1])?;
        let (v, hv, _) = split_heads(cx, v4, &[0, 2, 1, 3])?;
        if hk != hv || d != dk || !(hk == hq || hk == 1) {
            return None;
        }
        // Batch and sequence agree where MatMul would have broadcast them.
        let (q3, k3, v3) = (shape_of(cx.g, &q)?, shape_of(cx.g, &k)?, shape_of(cx.g, &v)?);
        if !(known_eq(&q3[0], &k3[0]) && known_eq(&q3[0], &v3[0]) && known_eq(&k3[1], &v3[1])) {
            return None;
        }
        let at = merge_heads(cx, &pv.outputs[0])?;
        Some(Rewrite {
            at,
            op: Op::Linalg(LinalgOp::Attention(attrs(Some((hq, hk))))),
            inputs: vec![q, k, v, mask.clone()],
            inits: vec![],
        })
    })();
    if three_d.is_some() {
        return three_d;
    }
    // 4-D form: K comes in transposed by its last two axes.
    let kt = cx.inner(kt4)?;
    (transpose_perm(kt)? == [0, 1, 3, 2]).then_some(())?;
    let k4 = &kt.inputs[0];
    let ks = shape_of(cx.g, k4)?;
    // Batch and heads must match exactly: MatMul would broadcast them, Attention does not.
    if !(known_eq(&qs[0], &ks[0]) && known_eq(&qs[0], &vs[0]) && known_eq(&qs[1], &ks[1]) && known_eq(&ks[1], &vs[1])) {
        return None;
    }
    Some(Rewrite {
        at: pv_at,
        op: Op::Linalg(LinalgOp::Attention(attrs(None))),
        inputs: vec![q4.clone(), k4.clone(), v4.clone(), mask],
        inits: vec![],
    })
}

/// Fuses scaled dot-product attention into ONNX `Attention` (see the module doc).
pub fn fuse_attention(g: &mut Graph, _cx: &PassCtx) -> Result<bool, PassError> {
    let cx = Cx::new(g);
    let mut rewrites: Vec<Rewrite> = g.nodes.iter().filter_map(|n| match_attention(&cx, n)).collect();
    for r in &mut rewrites {
        while r.inputs.last().is_some_and(|s| s.is_empty()) {
            r.inputs.pop();
        }
    }
    Ok(apply(g, rewrites))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{op_types, ramp, G};
    use crate::util::binary;
    use carbide_ir::ops::linalg::SoftmaxAttrs;
    use carbide_ir::Tensor;

    fn softmax() -> Op {
        Op::Linalg(LinalgOp::Softmax(SoftmaxAttrs {
            kind: SoftmaxKind::Softmax,
            axis: -1,
            flatten: false,
        }))
    }

    fn transpose(perm: &[i64]) -> Op {
        Op::Tensor(TensorOp::Transpose {
            perm: Some(perm.to_vec()),
        })
    }

    fn reshape() -> Op {
        Op::Tensor(TensorOp::Reshape {
            allowzero: false,
            shape: None,
        })
    }

    fn shape(v: &[i64]) -> Tensor {
        Tensor::I64(carbide_ir::ndarray::ArrayD::from_shape_vec(vec![v.len()], v.to_vec()).unwrap())
    }

    /// BERT's self-attention as PyTorch exports it: B 2, S 5, H 3, D 4.
    fn bert_like(t: &mut G, mask_shape: &[usize]) {
        t.input("x", &[2, 5, 12])
            .input("mask", mask_shape)
            .init("wq", ramp(&[12, 12], 0.05))
            .init("wk", ramp(&[12, 12], 0.07))
            .init("wv", ramp(&[12, 12], 0.03))
            .init("split", shape(&[2, 5, 3, 4]))
            .init("merge", shape(&[2, 5, 12]))
            .init("scale", Tensor::scalar_f32(0.5))
            .node(Op::Linalg(LinalgOp::MatMul), &["x", "wq"], &["q"])
            .node(Op::Linalg(LinalgOp::MatMul), &["x", "wk"], &["k"])
            .node(Op::Linalg(LinalgOp::MatMul), &["x", "wv"], &["v"])
            .node(reshape(), &["q", "split"], &["q4"])
            .node(transpose(&[0, 2, 1, 3]), &["q4"], &["qt"])
            .node(reshape(), &["k", "split"], &["k4"])
            .node(transpose(&[0, 2, 3, 1]), &["k4"], &["kt"])
            .node(reshape(), &["v", "split"], &["v4"])
            .node(transpose(&[0, 2, 1, 3]), &["v4"], &["vt"])
            .node(Op::Linalg(LinalgOp::MatMul), &["qt", "kt"], &["s"])
            .node(binary(Binary::Mul), &["s", "scale"], &["ss"])
            .node(binary(Binary::Add), &["ss", "mask"], &["sm"])
            .node(softmax(), &["sm"], &["p"])
            .node(Op::Linalg(LinalgOp::MatMul), &["p", "vt"], &["o"])
            .node(transpose(&[0, 2, 1, 3]), &["o"], &["ot"])
            .node(reshape(), &["ot", "merge"], &["y"])
            .output("y");
    }

    #[test]
    fn bert_self_attention_fuses_into_3d_attention() {
        let mut t = G::new();
        bert_like(&mut t, &[2, 1, 1, 5]);
        let g = t.check_pass(fuse_attention);
        assert_eq!(op_types(&g), ["MatMul", "MatMul", "MatMul", "Attention"]);
        let Op::Linalg(LinalgOp::Attention(a)) = &g.nodes[3].op else {
            panic!("not attention")
        };
        assert_eq!((a.q_num_heads, a.kv_num_heads, a.scale), (Some(3), Some(3), Some(0.5)));
        assert_eq!(g.nodes[3].inputs, ["q", "k", "v", "mask"]);
    }

    #[test]
    fn mask_broadcast_along_keys_is_not_fused() {
        // ONNX Attention pads a short last mask dim with -inf: not numpy broadcasting.
        let mut t = G::new();
        bert_like(&mut t, &[2, 1, 5, 1]);
        let mut g = t.model().graph;
        let opts = Default::default();
        let changed = fuse_attention(&mut g, &PassCtx { opts: &opts, name: "t" }).unwrap();
        assert!(!changed);
    }

    #[test]
    fn four_d_attention_with_div_scale_and_no_mask_fuses() {
        let mut t = G::new();
        t.input("q", &[1, 2, 6, 4])
            .input("k", &[1, 2, 7, 4])
            .input("v", &[1, 2, 7, 3])
            .init("c", Tensor::scalar_f32(2.0))
            .node(transpose(&[0, 1, 3, 2]), &["k"], &["kt"])
            .node(Op::Linalg(LinalgOp::MatMul), &["q", "kt"], &["s"])
            .node(binary(Binary::Div), &["s", "c"], &["ss"])
            .node(softmax(), &["ss"], &["p"])
            .node(Op::Linalg(LinalgOp::MatMul), &["p", "v"], &["y"])
            .output("y");
        let g = t.check_pass(fuse_attention);
        assert_eq!(op_types(&g), ["Attention"]);
        let Op::Linalg(LinalgOp::Attention(a)) = &g.nodes[0].op else {
            panic!("not attention")
        };
        assert_eq!(a.scale, Some(0.5));
        assert_eq!(g.nodes[0].inputs, ["q", "k", "v"]);
    }

    #[test]
    fn softmax_over_another_axis_is_not_attention() {
        let mut t = G::new();
        t.input("q", &[1, 2, 6, 4])
            .input("k", &[1, 2, 6, 4])
            .input("v", &[1, 2, 6, 3])
            .node(transpose(&[0, 1, 3, 2]), &["k"], &["kt"])
            .node(Op::Linalg(LinalgOp::MatMul), &["q", "kt"], &["s"])
            .node(
                Op::Linalg(LinalgOp::Softmax(SoftmaxAttrs {
                    kind: SoftmaxKind::Softmax,
                    axis: 2,
                    flatten: false,
                })),
                &["s"],
                &["p"],
            )
            .node(Op::Linalg(LinalgOp::MatMul), &["p", "v"], &["y"])
            .output("y");
        let mut g = t.model().graph;
        let opts = Default::default();
        assert!(!fuse_attention(&mut g, &PassCtx { opts: &opts, name: "t" }).unwrap());
    }
}
