//! Scaled dot-product attention: `Softmax(Q·Kᵀ · scale + mask) · V`, with
//! the head split (Reshape + Transpose) of Q, K, V and the head merge of the
//! result around it, becomes one ONNX `Attention` (opset 23 semantics).
//!
//! Two forms are recognized:
//! - 3-D: Q, K, V are `[B, S, H·D]` values split into heads by
//!   `Reshape [B, S, H, D]` + `Transpose` (`[0,2,1,3]`, K: `[0,2,3,1]`, or
//!   `[0,2,1,3]` then `[0,1,3,2]`) and the result is merged back by
//!   `Transpose [0,2,1,3]` + `Reshape [B, S, H·Dv]`: the fused op takes the
//!   3-D values with `q_num_heads`/`kv_num_heads`, so the reshapes and
//!   transposes disappear too. The reshape targets are read as shape values
//!   (constants, or `Concat`s of `Shape` dims as exporters write them), so a
//!   `0`, `-1` or the input's own symbolic dim all count as "keep B, S";
//! - 4-D: Q `[B, H, S, D]`, K given as `Transpose(K, [0,1,3,2])`, V `[B, H, L, Dv]`.
//!
//! The scale may sit on the scores, or on Q and/or K before the product
//! (`Q·s`, `Q/√d`, SDPA's `Q·√s` and `Kᵀ·√s`, in 3-D or 4-D): positive
//! scalar factors are peeled off and their product becomes `scale`, which
//! changes nothing but float rounding. A scale applied after the mask add is
//! not a scale of the scores alone and is left unfused.
//!
//! Where types leave a dim unknown (a sequence length that went through a
//! position-table `Slice`), [`extent`] proves dims equal from how they were
//! computed; the fusion never relies on a dim it cannot prove.
//!
//! Where the fused op differs from the unfused chain: a row whose mask is `-inf`
//! everywhere gives zeros (the ONNX reference's convention) instead of NaN.

use crate::error::PassError;
use crate::fold::{shape_value_resolving, Elem};
use crate::fusion::{apply, Cx, Rewrite};
use crate::manager::PassCtx;
use crate::util::{as_binary, constant, tensor_type};
use carbide_ir::ops::elementwise::{Binary, ElementwiseOp};
use carbide_ir::ops::fused::FusedOp;
use carbide_ir::ops::linalg::{AttentionAttrs, SoftmaxKind};
use carbide_ir::ops::{LinalgOp, NnOp, TensorOp};
use carbide_ir::{DType, Dim, Graph, Node, Op, TensorType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Deref;

/// The value `name` as a positive scalar constant of rank at most `max_rank`
/// (a higher rank would broadcast the scaled value to more dims).
fn positive_scalar(g: &Graph, name: &str, max_rank: usize) -> Option<f64> {
    let t = constant(g, name)?;
    if t.len() != 1 || t.dtype() != DType::F32 || t.rank() > max_rank {
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

/// `n` is `x·c`, `c·x` or `x/c` with `c` a positive scalar that does not
/// raise x's rank: x and the factor.
fn scaled_by(g: &Graph, n: &Node) -> Option<(String, f64)> {
    let b = as_binary(&n.op)?;
    let rank = |x: &str| shape_of(g, x).map(|s| s.len());
    let factor = |c: usize, x: usize| positive_scalar(g, &n.inputs[c], rank(&n.inputs[x])?);
    match b {
        Binary::Mul => match factor(1, 0) {
            Some(c) => Some((n.inputs[0].clone(), c)),
            None => Some((n.inputs[1].clone(), factor(0, 1)?)),
        },
        Binary::Div => Some((n.inputs[0].clone(), 1.0 / factor(1, 0)?)),
        _ => None,
    }
}

/// Peels single-use scalar scalings off `name`: the unscaled value and the
/// product of the factors (1 when there are none).
fn peel_scale(cx: &Cx, name: &str) -> (String, f64) {
    let (mut cur, mut scale) = (name.to_string(), 1.0);
    while let Some((x, c)) = cx.inner(&cur).and_then(|n| scaled_by(cx.g, n)) {
        cur = x;
        scale *= c;
    }
    (cur, scale)
}

/// The matcher's view of the graph: [`Cx`] plus the extents derived so far
/// (residual branches reach the same values many times).
struct Ex<'c, 'g> {
    cx: &'c Cx<'g>,
    memo: RefCell<HashMap<(String, usize), Option<Extent>>>,
}

impl<'g> Deref for Ex<'_, 'g> {
    type Target = Cx<'g>;

    fn deref(&self) -> &Cx<'g> {
        self.cx
    }
}

/// What is proven about one dim of a value at run time.
#[derive(Clone, Debug, PartialEq)]
enum Extent {
    /// Exactly this known or symbolic dim (never `Dim::Unknown`).
    Is(Dim),
    /// `min(s, n)` for symbol `s` and a known `n ≥ 1`: the prefix
    /// `Slice(x, 0, s)` of an axis with n entries (a position table cut to
    /// the sequence length).
    Prefix(String, usize),
}

/// The numpy broadcast of the operands' extents along output axis `axis`
/// (of `rank`), where provable; `known` are extents already found for it.
fn broadcast_extent(
    cx: &Ex,
    operands: &[&str],
    rank: usize,
    axis: usize,
    depth: usize,
    known: Vec<Extent>,
) -> Option<Extent> {
    let mut found = known;
    for x in operands {
        let r = tensor_type(cx.g, x)?.shape?.len();
        if let Some(a) = (axis + r).checked_sub(rank) {
            found.push(extent_at(cx, x, a, depth + 1)?);
        }
    }
    join(found)
}

/// The broadcast of extents. `s` broadcast with `min(s, n)` is `s`: the two
/// are equal when s ≤ n, and otherwise n must be 1 for the broadcast to
/// succeed, which gives s again.
fn join(extents: Vec<Extent>) -> Option<Extent> {
    let mut found: Vec<Extent> = Vec::new();
    for e in extents {
        if e != Extent::Is(Dim::Known(1)) && !found.contains(&e) {
            found.push(e);
        }
    }
    match found.as_slice() {
        [] => Some(Extent::Is(Dim::Known(1))),
        [e] => Some(e.clone()),
        [Extent::Is(Dim::Sym(s)), Extent::Prefix(p, _)] | [Extent::Prefix(p, _), Extent::Is(Dim::Sym(s))] if s == p => {
            Some(Extent::Is(Dim::Sym(s.clone())))
        }
        _ => None,
    }
}

/// The extent of dim `axis` of value `name`: its static type where that
/// knows it, else derived through the ops that computed it.
fn extent(cx: &Ex, name: &str, axis: usize) -> Option<Extent> {
    extent_at(cx, name, axis, 0)
}

fn extent_at(cx: &Ex, name: &str, axis: usize, depth: usize) -> Option<Extent> {
    // Deep enough for chains of layers, and never a stack overflow.
    if depth > 512 {
        return None;
    }
    let key = (name.to_string(), axis);
    if let Some(known) = cx.memo.borrow().get(&key) {
        return known.clone();
    }
    let found = derive_extent(cx, name, axis, depth);
    cx.memo.borrow_mut().insert(key, found.clone());
    found
}

fn derive_extent(cx: &Ex, name: &str, axis: usize, depth: usize) -> Option<Extent> {
    let dims = tensor_type(cx.g, name)?.shape?;
    let rank = dims.len();
    match dims.get(axis)? {
        Dim::Unknown => {}
        d => return Some(Extent::Is(d.clone())),
    }
    let (_, n) = cx.uses.producer(cx.g, name)?;
    let input = |i: usize| n.inputs.get(i).map(String::as_str).filter(|s| !s.is_empty());
    let same = |i: usize, a: usize| extent_at(cx, input(i)?, a, depth + 1);
    let present: Vec<&str> = n.present_inputs().collect();
    match &n.op {
        Op::Elementwise(ElementwiseOp::Unary(_) | ElementwiseOp::Cast { .. } | ElementwiseOp::Clip { .. })
        | Op::Nn(NnOp::LayerNormalization { .. } | NnOp::RMSNormalization { .. })
        | Op::Linalg(LinalgOp::Softmax(_))
        | Op::Tensor(TensorOp::Identity) => same(0, axis),
        // Attention's output is [B, S, ..] (3-D) or [B, H, S, ..] (4-D) of Q.
        Op::Linalg(LinalgOp::Attention(_)) if axis + 1 < rank => same(0, axis),
        Op::Elementwise(ElementwiseOp::Binary { legacy_axis: None, .. } | ElementwiseOp::Where) => {
            broadcast_extent(cx, &present, rank, axis, depth, Vec::new())
        }
        // Rows from A, columns from B, batch dims broadcast; FusedMatMul's
        // bias and residual broadcast into the product.
        Op::Linalg(LinalgOp::MatMul) | Op::Fused(FusedOp::FusedMatMul { .. }) => {
            let (ra, rb) = (
                tensor_type(cx.g, input(0)?)?.shape?.len(),
                tensor_type(cx.g, input(1)?)?.shape?.len(),
            );
            if ra < 2 || rb < 2 || ra.max(rb) != rank {
                return None;
            }
            let product = if axis + 2 == rank {
                same(0, ra - 2)?
            } else if axis + 1 == rank {
                same(1, rb - 1)?
            } else {
                let mut batch = Vec::new();
                for (i, r) in [(0, ra), (1, rb)] {
                    if let Some(a) = (axis + r).checked_sub(rank) {
                        batch.push(same(i, a)?);
                    }
                }
                join(batch)?
            };
            broadcast_extent(cx, &present[2..], rank, axis, depth, vec![product])
        }
        Op::Tensor(TensorOp::Transpose { perm: Some(p) }) => same(0, usize::try_from(*p.get(axis)?).ok()?),
        Op::Tensor(TensorOp::Reshape {
            allowzero: false,
            shape: None,
        }) => match shape_value_of(cx, input(1)?, depth + 1)?.elems.get(axis)? {
            Elem::Known(0) => same(0, axis),
            Elem::Sym(s) => Some(Extent::Is(Dim::Sym(s.clone()))),
            _ => None,
        },
        Op::Tensor(TensorOp::Slice { starts: None, .. }) => {
            let ints = |i: usize| shape_value_of(cx, input(i)?, depth + 1).map(|p| p.elems);
            let (starts, ends) = (ints(1)?, ints(2)?);
            let axes: Vec<i64> = match input(3) {
                Some(_) => ints(3)?
                    .iter()
                    .map(|e| match e {
                        Elem::Known(a) if *a < 0 => Some(a + rank as i64),
                        Elem::Known(a) => Some(*a),
                        _ => None,
                    })
                    .collect::<Option<_>>()?,
                None => (0..starts.len() as i64).collect(),
            };
            let Some(k) = axes.iter().position(|&a| a == axis as i64) else {
                return same(0, axis);
            };
            if input(4).is_some_and(|s| ints_of(cx.g, s).map(|v| v.get(k) != Some(&1)).unwrap_or(true)) {
                return None;
            }
            match (starts.get(k)?, ends.get(k)?, same(0, axis)?) {
                (Elem::Known(0), Elem::Sym(s), Extent::Is(Dim::Known(n))) if n >= 1 => {
                    Some(Extent::Prefix(s.clone(), n))
                }
                _ => None,
            }
        }
        Op::Tensor(TensorOp::Gather { axis: ga }) => {
            let r = tensor_type(cx.g, input(0)?)?.shape?.len() as i64;
            let q = tensor_type(cx.g, input(1)?)?.shape?.len();
            let ga = usize::try_from(if *ga < 0 { ga + r } else { *ga }).ok()?;
            if axis < ga {
                same(0, axis)
            } else if axis < ga + q {
                same(1, axis - ga)
            } else {
                same(0, axis + 1 - q)
            }
        }
        _ => None,
    }
}

/// The shape value `name` (see [`crate::fold::shape_value`]), with `Shape`
/// dims that types leave unknown read through [`extent`].
fn shape_value_of(cx: &Ex, name: &str, depth: usize) -> Option<crate::fold::Partial> {
    let resolve = |v: &str, axis: usize| match extent_at(cx, v, axis, depth + 1) {
        Some(Extent::Is(Dim::Known(n))) => Elem::Known(n as i64),
        Some(Extent::Is(Dim::Sym(s))) => Elem::Sym(s),
        _ => Elem::Unknown,
    };
    shape_value_resolving(cx.g, &cx.uses, name, &resolve)
}

/// A proven dim as a `Dim` (`Unknown` where not proven exactly).
fn proven_dim(e: Option<Extent>) -> Dim {
    match e {
        Some(Extent::Is(d)) => d,
        _ => Dim::Unknown,
    }
}

fn ints_of(g: &Graph, name: &str) -> Option<Vec<i64>> {
    constant(g, name)?.to_i64_vec()
}

/// Both dims are proven equal.
fn same_extent(cx: &Ex, a: (&str, usize), b: (&str, usize)) -> bool {
    matches!((extent(cx, a.0, a.1), extent(cx, b.0, b.1)), (Some(x), Some(y)) if x == y)
}

/// The target of Reshape node `r` as shape-value elements, and `allowzero`.
fn reshape_target(cx: &Ex, r: &Node) -> Option<(Vec<Elem>, bool)> {
    let Op::Tensor(TensorOp::Reshape { allowzero, shape }) = &r.op else {
        return None;
    };
    let elems = match shape {
        Some(s) => s.iter().map(|&v| Elem::Known(v)).collect(),
        None => {
            let p = shape_value_of(cx, r.inputs.get(1)?, 0)?;
            (!p.scalar).then_some(p.elems)?
        }
    };
    Some((elems, *allowzero))
}

/// Target element `t` keeps input dim `d`: a `0` (without allowzero), or
/// the same known or symbolic dim.
fn keeps(t: &Elem, allowzero: bool, d: &Dim) -> bool {
    match (t, d) {
        (Elem::Known(0), _) => !allowzero,
        (Elem::Known(v), Dim::Known(n)) => *v > 0 && *v as usize == *n,
        (Elem::Sym(s), Dim::Sym(n)) => s == n,
        _ => false,
    }
}

/// Leading target elements `lead` keep the input's leading dims `dims`,
/// where one of them may be the `-1` (`minus_one_free`: no other `-1`
/// exists) since the trailing dims account for the rest exactly.
fn keeps_leading(lead: &[Elem], dims: &[Dim], allowzero: bool, minus_one_free: bool) -> bool {
    let minus = lead.iter().filter(|t| **t == Elem::Known(-1)).count();
    let kept = lead.iter().zip(dims).filter(|(t, d)| keeps(t, allowzero, d)).count();
    kept == lead.len() || (minus_one_free && minus == 1 && kept + 1 == lead.len())
}

/// `name` is `Transpose(Reshape(x, [B, S, H, D]), perm)` with the reshape
/// splitting x's last dim into known heads: returns (x, H, D).
fn split_heads(cx: &Ex, name: &str, perm: &[i64]) -> Option<(String, usize, usize)> {
    let t = cx.inner(name)?;
    (transpose_perm(t)? == perm).then_some(())?;
    let r = cx.inner(&t.inputs[0])?;
    let (target, allowzero) = reshape_target(cx, r)?;
    let x = &r.inputs[0];
    let xs = shape_of(cx.g, x)?;
    let ([_, _, e], [t0, t1, t2, t3]) = (xs.as_slice(), target.as_slice()) else {
        return None;
    };
    let (b, s) = (proven_dim(extent(cx, x, 0)), proven_dim(extent(cx, x, 1)));
    let e = e.known().filter(|&e| e > 0)?;
    let positive = |t: &Elem| match t {
        Elem::Known(v) if *v > 0 => Some(*v as usize),
        _ => None,
    };
    let minus = |t: &Elem| *t == Elem::Known(-1);
    let lead = [t0.clone(), t1.clone()];
    let dims = [b.clone(), s.clone()];
    let (h, d) = match (positive(t2), positive(t3)) {
        (Some(h), Some(d)) => keeps_leading(&lead, &dims, allowzero, true).then_some((h, d))?,
        (None, Some(d)) if minus(t2) && e % d == 0 => {
            keeps_leading(&lead, &dims, allowzero, false).then_some((e / d, d))?
        }
        (Some(h), None) if minus(t3) && e % h == 0 => {
            keeps_leading(&lead, &dims, allowzero, false).then_some((h, e / h))?
        }
        _ => return None,
    };
    (h * d == e).then(|| (x.clone(), h, d))
}

/// After the 4-D result `y` (`[B, H, S, Dv]`: `lead` is [B, S] as far as
/// known, H and Dv given): `Reshape(Transpose(y, [0,2,1,3]), [B, S, H·Dv])`
/// merging the heads: the Reshape node's index.
fn merge_heads(cx: &Ex, y: &str, lead: [Dim; 2], heads: usize, dv: usize) -> Option<usize> {
    let (_, t) = cx.next(y)?;
    (transpose_perm(t)? == [0, 2, 1, 3]).then_some(())?;
    let (ri, r) = cx.next(&t.outputs[0])?;
    let (target, allowzero) = reshape_target(cx, r)?;
    let [t0, t1, t2] = target.as_slice() else {
        return None;
    };
    let (dims, lead) = (lead, [t0.clone(), t1.clone()]);
    let ok = match t2 {
        Elem::Known(v) if *v > 0 => *v as usize == heads * dv && keeps_leading(&lead, &dims, allowzero, true),
        Elem::Known(-1) => keeps_leading(&lead, &dims, allowzero, false),
        _ => false,
    };
    ok.then_some(ri)
}

/// `n` is `MatMul(Q, Kᵀ)`, optionally scaled (Mul or Div by a positive
/// scalar constant, repeatedly): the scale and the MatMul node.
fn scaled_scores<'g>(cx: &Cx<'g>, n: &'g Node) -> Option<(f64, &'g Node)> {
    let (mut cur, mut scale) = (n, 1.0);
    while !matches!(cur.op, Op::Linalg(LinalgOp::MatMul)) {
        let (x, c) = scaled_by(cx.g, cur)?;
        cur = cx.inner(&x)?;
        scale *= c;
    }
    Some((scale, cur))
}

/// Heads split from a 3-D value: `[B, S, heads·dim]`.
struct Split {
    value: String,
    heads: usize,
    dim: usize,
    /// Scalar factors peeled between this value and the scores MatMul.
    scale: f64,
}

/// Q, K or V traced back from the two MatMuls: the 4-D value (K
/// untransposed) where there is one, and the 3-D one its heads were split
/// from, each with the scale peeled on the way.
struct Operand {
    four: Option<(String, f64)>,
    three: Option<Split>,
}

/// A 4-D value `[B, H, S, D]` (K: already untransposed to this layout)
/// whose heads may come from a 3-D value: the split, with its input's own
/// scale peeled too.
fn split_of(cx: &Ex, four: &str, scale: f64) -> Option<Split> {
    let (x, heads, dim) = split_heads(cx, four, &[0, 2, 1, 3])?;
    let (value, s) = peel_scale(cx, &x);
    Some(Split {
        value,
        heads,
        dim,
        scale: scale * s,
    })
}

fn query(cx: &Ex, q4: &str) -> Operand {
    let (q, scale) = peel_scale(cx, q4);
    Operand {
        three: split_of(cx, &q, scale),
        four: Some((q, scale)),
    }
}

/// K enters the scores MatMul transposed: split and transposed in one
/// (`[0,2,3,1]`, 3-D only) or a 4-D K transposed by `[0,1,3,2]`.
fn key(cx: &Ex, kt4: &str) -> Option<Operand> {
    let (kt, scale) = peel_scale(cx, kt4);
    if let Some((x, heads, dim)) = split_heads(cx, &kt, &[0, 2, 3, 1]) {
        let (value, s) = peel_scale(cx, &x);
        let three = Split {
            value,
            heads,
            dim,
            scale: scale * s,
        };
        return Some(Operand {
            four: None,
            three: Some(three),
        });
    }
    let t = cx.inner(&kt)?;
    (transpose_perm(t)? == [0, 1, 3, 2]).then_some(())?;
    let (k, s) = peel_scale(cx, &t.inputs[0]);
    Some(Operand {
        three: split_of(cx, &k, scale * s),
        four: Some((k, scale * s)),
    })
}

fn attention_op(scale: f64, heads: Option<(usize, usize)>) -> Op {
    Op::Linalg(LinalgOp::Attention(AttentionAttrs {
        q_num_heads: heads.map(|h| h.0),
        kv_num_heads: heads.map(|h| h.1),
        scale: Some(scale as f32),
        ..Default::default()
    }))
}

/// The attention rewrite anchored on Softmax node `sm`, if the chain matches.
fn match_attention(cx: &Ex, sm: &Node) -> Option<Rewrite> {
    let Op::Linalg(LinalgOp::Softmax(a)) = &sm.op else {
        return None;
    };
    let scores_shape = shape_of(cx.g, &sm.inputs[0])?;
    let last = scores_shape.len() as i64 - 1;
    if a.kind != SoftmaxKind::Softmax || scores_shape.len() != 4 || !(a.axis == -1 || a.axis == last) {
        return None;
    }
    // Scores, optionally plus a mask (checked against the scores' dims below).
    let first = cx.inner(&sm.inputs[0])?;
    let mut mask = String::new();
    let (score_scale, qk) = match scaled_scores(cx, first) {
        Some(found) => found,
        None => {
            if as_binary(&first.op) != Some(Binary::Add) {
                return None;
            }
            let (_, found, m) = [0, 1].into_iter().find_map(|i| {
                let p = cx.inner(&first.inputs[i])?;
                Some((p, scaled_scores(cx, p)?, first.inputs[1 - i].clone()))
            })?;
            let ms = shape_of(cx.g, &m)?;
            if ms.is_empty() || ms.len() > 4 {
                return None;
            }
            mask = m;
            found
        }
    };
    // The mask must not broadcast the scores `[B, H, S, L]` (`scores`: their
    // extents) to a larger shape, and its last dim must be L exactly: ONNX
    // Attention pads a shorter last mask dim with -inf instead of broadcasting it.
    let mask_fits = |scores: [Option<Extent>; 4]| {
        let rank = shape_of(cx.g, &mask).map_or(0, |s| s.len());
        mask.is_empty()
            || (0..rank).all(|i| {
                let (have, want) = (extent(cx, &mask, i), &scores[4 - rank + i]);
                let broadcasts = i + 1 < rank && have == Some(Extent::Is(Dim::Known(1)));
                broadcasts || (have.is_some() && have == *want)
            })
    };
    let (q4, kt4) = (&qk.inputs[0], &qk.inputs[1]);
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
    let (q, k) = (query(cx, q4), key(cx, kt4)?);
    let v = Operand {
        three: split_heads(cx, v4, &[0, 2, 1, 3]).map(|(value, heads, dim)| Split {
            value,
            heads,
            dim,
            scale: 1.0,
        }),
        four: Some((v4.clone(), 1.0)),
    };
    let inputs = |q: &str, k: &str, v: &str| vec![q.to_string(), k.to_string(), v.to_string(), mask.clone()];
    // 3-D form: heads split from [B, S, H·D] values and merged back after.
    if let (Some(q3), Some(k3), Some(v3)) = (&q.three, &k.three, &v.three) {
        let (hq, hk) = (q3.heads, k3.heads);
        // Batch and sequence agree where MatMul would have broadcast them.
        let (qv, kv, vv) = (q3.value.as_str(), k3.value.as_str(), v3.value.as_str());
        let fits = hk == v3.heads
            && q3.dim == k3.dim
            && (hk == hq || hk == 1)
            && same_extent(cx, (qv, 0), (kv, 0))
            && same_extent(cx, (qv, 0), (vv, 0))
            && same_extent(cx, (kv, 1), (vv, 1))
            && mask_fits([
                extent(cx, qv, 0),
                Some(Extent::Is(Dim::Known(hq))),
                extent(cx, qv, 1),
                extent(cx, kv, 1),
            ]);
        // The merged result is [B, S] of Q.
        let lead = [proven_dim(extent(cx, qv, 0)), proven_dim(extent(cx, qv, 1))];
        if let Some(at) = fits
            .then(|| merge_heads(cx, &pv.outputs[0], lead, hq, v3.dim))
            .flatten()
        {
            return Some(Rewrite {
                at,
                op: attention_op(score_scale * q3.scale * k3.scale, Some((hq, hk))),
                inputs: inputs(qv, kv, vv),
                inits: vec![],
            });
        }
    }
    // 4-D form.
    let ((q4, qscale), (k4, kscale), (v4, _)) = (q.four?, k.four?, v.four?);
    // Batch and heads must match exactly: MatMul would broadcast them, Attention does not.
    let fits = same_extent(cx, (&q4, 0), (&k4, 0))
        && same_extent(cx, (&q4, 0), (&v4, 0))
        && same_extent(cx, (&q4, 1), (&k4, 1))
        && same_extent(cx, (&k4, 1), (&v4, 1))
        && mask_fits([
            extent(cx, &q4, 0),
            extent(cx, &q4, 1),
            extent(cx, &q4, 2),
            extent(cx, &k4, 2),
        ]);
    fits.then(|| Rewrite {
        at: pv_at,
        op: attention_op(score_scale * qscale * kscale, None),
        inputs: inputs(&q4, &k4, &v4),
        inits: vec![],
    })
}

/// Fuses scaled dot-product attention into ONNX `Attention` (see the module doc).
pub fn fuse_attention(g: &mut Graph, _cx: &PassCtx) -> Result<bool, PassError> {
    let cx = Cx::new(g);
    let ex = Ex {
        cx: &cx,
        memo: RefCell::default(),
    };
    let mut rewrites: Vec<Rewrite> = g.nodes.iter().filter_map(|n| match_attention(&ex, n)).collect();
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

    /// Where the test graph applies the attention scale.
    #[derive(Clone, Copy, PartialEq)]
    enum Scaled {
        /// `(Q·Kᵀ)·0.5`, as BERT's export does.
        Scores,
        /// `(Q·0.5)` before the head split (BART) and `0.25·Kᵀ` after it.
        QueryAndKey,
    }

    /// Self-attention over x `[B, S, 12]` (3 heads of 4) plus `mask`, with
    /// the head split/merge targets `split` and `merge`: the caller declares
    /// x, mask and the targets.
    fn self_attention(t: &mut G, scaled: Scaled) {
        let pre = scaled == Scaled::QueryAndKey;
        t.init("wq", ramp(&[12, 12], 0.05))
            .init("wk", ramp(&[12, 12], 0.07))
            .init("wv", ramp(&[12, 12], 0.03))
            .init("scale", Tensor::scalar_f32(0.5))
            .init("kscale", Tensor::from_f32s(vec![0.25]))
            .node(Op::Linalg(LinalgOp::MatMul), &["x", "wq"], &["q"])
            .node(Op::Linalg(LinalgOp::MatMul), &["x", "wk"], &["k"])
            .node(Op::Linalg(LinalgOp::MatMul), &["x", "wv"], &["v"]);
        if pre {
            t.node(binary(Binary::Mul), &["q", "scale"], &["qs"]);
        }
        t.node(reshape(), &[if pre { "qs" } else { "q" }, "split"], &["q4"])
            .node(transpose(&[0, 2, 1, 3]), &["q4"], &["qt"])
            .node(reshape(), &["k", "split"], &["k4"])
            .node(transpose(&[0, 2, 3, 1]), &["k4"], &["kt"])
            .node(reshape(), &["v", "split"], &["v4"])
            .node(transpose(&[0, 2, 1, 3]), &["v4"], &["vt"]);
        if pre {
            t.node(binary(Binary::Mul), &["kscale", "kt"], &["kts"]).node(
                Op::Linalg(LinalgOp::MatMul),
                &["qt", "kts"],
                &["ss"],
            );
        } else {
            t.node(Op::Linalg(LinalgOp::MatMul), &["qt", "kt"], &["s"]).node(
                binary(Binary::Mul),
                &["s", "scale"],
                &["ss"],
            );
        }
        t.node(binary(Binary::Add), &["ss", "mask"], &["sm"])
            .node(softmax(), &["sm"], &["p"])
            .node(Op::Linalg(LinalgOp::MatMul), &["p", "vt"], &["o"])
            .node(transpose(&[0, 2, 1, 3]), &["o"], &["ot"])
            .node(reshape(), &["ot", "merge"], &["y"])
            .output("y");
    }

    /// BERT's self-attention as PyTorch exports it: B 2, S 5, H 3, D 4.
    fn bert_like(t: &mut G, mask_shape: &[usize]) {
        t.input("x", &[2, 5, 12])
            .input("mask", mask_shape)
            .init("split", shape(&[2, 5, 3, 4]))
            .init("merge", shape(&[2, 5, 12]));
        self_attention(t, Scaled::Scores);
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

    fn attention_attrs(g: &Graph) -> (&AttentionAttrs, &Node) {
        let n = g
            .nodes
            .iter()
            .find(|n| matches!(n.op, Op::Linalg(LinalgOp::Attention(_))))
            .expect("an Attention node");
        let Op::Linalg(LinalgOp::Attention(a)) = &n.op else {
            unreachable!()
        };
        (a, n)
    }

    fn unchanged(t: &G) {
        let mut g = t.model().graph;
        let opts = Default::default();
        assert!(!fuse_attention(&mut g, &PassCtx { opts: &opts, name: "t" }).unwrap());
    }

    /// BART-style: Q scaled as a 3-D value before the head split, K by √s
    /// after its split (SDPA), no scale on the scores.
    #[test]
    fn prescaled_3d_query_and_key_fold_into_the_scale() {
        let mut t = G::new();
        t.input("x", &[2, 5, 12])
            .input("mask", &[2, 1, 1, 5])
            .init("split", shape(&[0, 0, 3, 4]))
            .init("merge", shape(&[0, 0, 12]));
        self_attention(&mut t, Scaled::QueryAndKey);
        let g = t.check_pass(fuse_attention);
        assert_eq!(op_types(&g), ["MatMul", "MatMul", "MatMul", "Attention"]);
        let (a, n) = attention_attrs(&g);
        assert_eq!(
            (a.q_num_heads, a.kv_num_heads, a.scale),
            (Some(3), Some(3), Some(0.125))
        );
        assert_eq!(n.inputs, ["q", "k", "v", "mask"]);
    }

    /// PyTorch's SDPA export (opset 14+): `Q·√s` and `Transpose(K)·√s`.
    #[test]
    fn sdpa_export_with_split_sqrt_scales_fuses_4d() {
        let root = (0.5f32).sqrt();
        let mut t = G::new();
        t.input("q", &[1, 2, 6, 4])
            .input("k", &[1, 2, 7, 4])
            .input("v", &[1, 2, 7, 3])
            .input("mask", &[1, 1, 6, 7])
            .init("c", Tensor::scalar_f32(root))
            .node(binary(Binary::Mul), &["q", "c"], &["qs"])
            .node(transpose(&[0, 1, 3, 2]), &["k"], &["kt"])
            .node(binary(Binary::Mul), &["kt", "c"], &["kts"])
            .node(Op::Linalg(LinalgOp::MatMul), &["qs", "kts"], &["s"])
            .node(binary(Binary::Add), &["s", "mask"], &["sm"])
            .node(softmax(), &["sm"], &["p"])
            .node(Op::Linalg(LinalgOp::MatMul), &["p", "v"], &["y"])
            .output("y");
        let g = t.check_pass(fuse_attention);
        assert_eq!(op_types(&g), ["Attention"]);
        let (a, n) = attention_attrs(&g);
        assert!((a.scale.unwrap() - 0.5).abs() < 1e-6, "{:?}", a.scale);
        assert_eq!(n.inputs, ["q", "k", "v", "mask"]);
    }

    /// `Q/√d` on the 4-D query, K transposed in two steps (head split, then
    /// the `[0,1,3,2]` SDPA writes): still the 3-D form.
    #[test]
    fn query_divided_by_sqrt_d_and_two_step_key_transpose_fuse_3d() {
        let mut t = G::new();
        t.input("q", &[2, 5, 12])
            .input("k", &[2, 5, 12])
            .input("v", &[2, 5, 12])
            .init("split", shape(&[2, 5, 3, 4]))
            .init("merge", shape(&[2, 5, -1]))
            .init("d", Tensor::scalar_f32(2.0))
            .node(reshape(), &["q", "split"], &["q4"])
            .node(transpose(&[0, 2, 1, 3]), &["q4"], &["qt"])
            .node(binary(Binary::Div), &["qt", "d"], &["qs"])
            .node(reshape(), &["k", "split"], &["k4"])
            .node(transpose(&[0, 2, 1, 3]), &["k4"], &["kh"])
            .node(transpose(&[0, 1, 3, 2]), &["kh"], &["kt"])
            .node(reshape(), &["v", "split"], &["v4"])
            .node(transpose(&[0, 2, 1, 3]), &["v4"], &["vt"])
            .node(Op::Linalg(LinalgOp::MatMul), &["qs", "kt"], &["s"])
            .node(softmax(), &["s"], &["p"])
            .node(Op::Linalg(LinalgOp::MatMul), &["p", "vt"], &["o"])
            .node(transpose(&[0, 2, 1, 3]), &["o"], &["ot"])
            .node(reshape(), &["ot", "merge"], &["y"])
            .output("y");
        let g = t.check_pass(fuse_attention);
        assert_eq!(op_types(&g), ["Attention"]);
        let (a, n) = attention_attrs(&g);
        assert_eq!((a.q_num_heads, a.scale), (Some(3), Some(0.5)));
        assert_eq!(n.inputs, ["q", "k", "v"]);
    }

    #[test]
    fn a_scale_after_the_mask_add_is_not_moved() {
        // Softmax((QKᵀ + mask)·s) scales the mask too: not Attention's scale.
        let mut t = G::new();
        t.input("q", &[1, 2, 6, 4])
            .input("k", &[1, 2, 7, 4])
            .input("v", &[1, 2, 7, 3])
            .input("mask", &[1, 1, 6, 7])
            .init("c", Tensor::scalar_f32(0.5))
            .node(transpose(&[0, 1, 3, 2]), &["k"], &["kt"])
            .node(Op::Linalg(LinalgOp::MatMul), &["q", "kt"], &["s"])
            .node(binary(Binary::Add), &["s", "mask"], &["sm"])
            .node(binary(Binary::Mul), &["sm", "c"], &["ss"])
            .node(softmax(), &["ss"], &["p"])
            .node(Op::Linalg(LinalgOp::MatMul), &["p", "v"], &["y"])
            .output("y");
        unchanged(&t);
    }

    fn op(op: TensorOp) -> Op {
        Op::Tensor(op)
    }

    /// Exporter-style head split over symbolic `batch`/`seq`: the reshape
    /// target is `Concat(Shape(x)[0], Shape(x)[1], [H], [D])`.
    fn symbolic_self_attention(t: &mut G, mask_last: Result<usize, &str>) {
        let (b, s) = (Err("batch"), Err("seq"));
        t.sym_input("x", &[b, s, Ok(12)], &[2, 5, 12])
            .sym_input("mask", &[b, Ok(1), Ok(1), mask_last], &[2, 1, 1, 5])
            .init("i0", Tensor::scalar_i64(0))
            .init("i1", Tensor::scalar_i64(1))
            .init("ax", shape(&[0]))
            .init("heads", shape(&[3]))
            .init("hd", shape(&[4]))
            .node(op(TensorOp::Shape { start: 0, end: None }), &["x"], &["xs"])
            .node(op(TensorOp::Gather { axis: 0 }), &["xs", "i0"], &["b"])
            .node(op(TensorOp::Gather { axis: 0 }), &["xs", "i1"], &["n"])
            .node(op(TensorOp::Unsqueeze { axes: None }), &["b", "ax"], &["b1"])
            .node(op(TensorOp::Unsqueeze { axes: None }), &["n", "ax"], &["n1"])
            .node(
                op(TensorOp::Concat { axis: 0 }),
                &["b1", "n1", "heads", "hd"],
                &["split"],
            )
            .init("e", shape(&[12]))
            .node(op(TensorOp::Concat { axis: 0 }), &["b1", "n1", "e"], &["merge"]);
        self_attention(t, Scaled::Scores);
    }

    #[test]
    fn symbolic_shape_concat_reshape_targets_fuse() {
        let mut t = G::new();
        symbolic_self_attention(&mut t, Err("seq"));
        let g = t.check_pass(fuse_attention);
        let (a, n) = attention_attrs(&g);
        assert_eq!((a.q_num_heads, a.kv_num_heads, a.scale), (Some(3), Some(3), Some(0.5)));
        assert_eq!(n.inputs, ["q", "k", "v", "mask"]);
        assert!(!op_types(&g).contains(&"Transpose"), "{:?}", op_types(&g));
    }

    #[test]
    fn a_mask_of_another_length_symbol_is_not_fused() {
        // `keys` may be 1 where `seq` is not: Add broadcasts, Attention pads.
        let mut t = G::new();
        symbolic_self_attention(&mut t, Err("keys"));
        unchanged(&t);
    }

    /// The tiny encoder's shape: the sequence dim goes through a position
    /// table sliced to `seq` rows, which types leave unknown; `extent`
    /// proves it is `seq` (the mask's length). The whole -O2 pipeline runs,
    /// so shape folding first turns the Concat targets into `[0, -1, H, D]`.
    #[test]
    fn position_table_sequence_length_is_proven_and_fuses() {
        let mut t = G::new();
        t.sym_input("tok", &[Err("batch"), Err("seq"), Ok(12)], &[2, 5, 12])
            .init("table", ramp(&[16, 12], 0.02))
            .init("one", shape(&[1]))
            .init("two", shape(&[2]))
            .init("zero", shape(&[0]))
            .node(op(TensorOp::Shape { start: 0, end: None }), &["tok"], &["ts"])
            .node(
                op(TensorOp::Slice {
                    starts: None,
                    ends: None,
                    axes: None,
                }),
                &["ts", "one", "two"],
                &["len"],
            )
            .node(
                op(TensorOp::Slice {
                    starts: None,
                    ends: None,
                    axes: None,
                }),
                &["table", "zero", "len", "zero"],
                &["pos"],
            )
            .node(binary(Binary::Add), &["tok", "pos"], &["x"]);
        // The attention reads x, whose seq dim types cannot name.
        let mut inner = G::new();
        symbolic_self_attention(&mut inner, Err("seq"));
        for (name, init) in inner.g.initializers.clone() {
            t.init(&name, init);
        }
        t.sym_input("mask", &[Err("batch"), Ok(1), Ok(1), Err("seq")], &[2, 1, 1, 5]);
        for n in inner.g.nodes.clone() {
            let ins: Vec<&str> = n.inputs.iter().map(String::as_str).collect();
            let outs: Vec<&str> = n.outputs.iter().map(String::as_str).collect();
            t.node(n.op.clone(), &ins, &outs);
        }
        t.output("y");
        let before = t.model();
        let x_ty = tensor_type(&before.graph, "x").unwrap();
        assert_eq!(x_ty.shape.unwrap()[1], Dim::Unknown, "the test needs an unknown seq");
        let g = t.check_level(2);
        let (a, _) = attention_attrs(&g);
        assert_eq!((a.q_num_heads, a.scale), (Some(3), Some(0.5)));
    }

    #[test]
    fn extents_are_proven_through_position_slices_and_matmuls() {
        let slice = || {
            op(TensorOp::Slice {
                starts: None,
                ends: None,
                axes: None,
            })
        };
        let mut t = G::new();
        t.sym_input("tok", &[Err("batch"), Err("seq"), Ok(4)], &[2, 3, 4])
            .sym_input("other", &[Err("batch"), Err("keys"), Ok(4)], &[2, 3, 4])
            .init("table", ramp(&[8, 4], 0.1))
            .init("one", shape(&[1]))
            .init("two", shape(&[2]))
            .init("zero", shape(&[0]))
            .node(op(TensorOp::Shape { start: 0, end: None }), &["tok"], &["ts"])
            .node(slice(), &["ts", "one", "two"], &["len"])
            .node(slice(), &["table", "zero", "len", "zero"], &["pos"])
            .node(binary(Binary::Add), &["tok", "pos"], &["x"])
            .node(binary(Binary::Add), &["other", "pos"], &["y"])
            .node(transpose(&[0, 2, 1]), &["x"], &["xt"])
            .node(Op::Linalg(LinalgOp::MatMul), &["x", "xt"], &["z"])
            .output("z")
            .output("y");
        let g = t.model().graph;
        assert_eq!(tensor_type(&g, "z").unwrap().shape.unwrap()[2], Dim::Unknown);
        let cx = Cx::new(&g);
        let ex = Ex {
            cx: &cx,
            memo: RefCell::default(),
        };
        let seq = Some(Extent::Is(Dim::Sym("seq".into())));
        assert_eq!(extent(&ex, "pos", 0), Some(Extent::Prefix("seq".into(), 8)));
        assert_eq!(extent(&ex, "x", 1), seq);
        assert_eq!(extent(&ex, "z", 1), seq);
        assert_eq!(extent(&ex, "z", 2), seq);
        // `keys` rows plus `min(seq, 8)` rows: nothing to prove.
        assert_eq!(extent(&ex, "y", 1), None);
    }
}
