//! Attention (opset 23-25), FlexAttention (ai.onnx.preview) and
//! LinearAttention, following the ONNX reference step by step: values are
//! computed in f64 and rounded to the I/O dtype wherever the reference's
//! numpy code works in that dtype.

use super::floats::{array, from_f64, merge_heads, rounder, split_heads, to_f64, Round};
use super::matmul::{gemm, MAX_ELEMS};
use crate::error::{invalid, OpResult};
use crate::ops::EvalCtx;
use carbide_ir::ndarray::{ArrayD, Axis};
use carbide_ir::ops::linalg::{AttentionAttrs, FlexAttentionAttrs, LinearAttentionAttrs, LinearUpdateRule};
use carbide_ir::{DType, Graph, Tensor, Value};
use rayon::prelude::*;

/// Q·Kᵀ of one head: q [sq, d], k [skv, d] (row-major) -> [sq, skv].
fn qk(q: &[f64], k: &[f64], sq: usize, skv: usize, d: usize) -> OpResult<Vec<f64>> {
    let mut out = vec![0.0; sq * skv];
    gemm(sq, d, skv, 1.0, q, (d, 1), k, (1, d), 0.0, &mut out, skv)?;
    Ok(out)
}

/// P·V of one head: p [sq, skv], v [skv, dv] -> [sq, dv].
fn pv(p: &[f64], v: &[f64], sq: usize, skv: usize, dv: usize) -> OpResult<Vec<f64>> {
    let mut out = vec![0.0; sq * dv];
    gemm(sq, skv, dv, 1.0, p, (skv, 1), v, (dv, 1), 0.0, &mut out, dv)?;
    Ok(out)
}

fn dims4(a: &ArrayD<f64>, what: &str) -> OpResult<[usize; 4]> {
    match a.shape() {
        &[x, y, z, w] => Ok([x, y, z, w]),
        s => Err(invalid(format!("{what} must be 4-D here, got {s:?}"))),
    }
}

/// Checks that 4-D Q (B, Hq, Sq, D), K (B, Hkv, Skv, D) and V (B, Hkv, Skv,
/// Dv) agree and that the kv heads divide the q heads; returns
/// `[B, Hq, Sq, D]` and `[Hkv, Skv, Dv]`.
fn qkv_dims(q: &ArrayD<f64>, k: &ArrayD<f64>, v: &ArrayD<f64>) -> OpResult<([usize; 4], [usize; 3])> {
    let [bsz, hq, sq, d] = dims4(q, "Q")?;
    let [kb, hkv, skv, kd] = dims4(k, "K")?;
    let [vb, vh, vs, dv] = dims4(v, "V")?;
    if kb != bsz || vb != bsz || vh != hkv || vs != skv || kd != d {
        return Err(invalid(format!(
            "inconsistent Q {:?}, K {:?}, V {:?}",
            q.shape(),
            k.shape(),
            v.shape()
        )));
    }
    if hkv == 0 || hq % hkv != 0 {
        return Err(invalid(format!("q heads {hq} is not a multiple of kv heads {hkv}")));
    }
    Ok(([bsz, hq, sq, d], [hkv, skv, dv]))
}

fn check_size(parts: &[usize], what: &str) -> OpResult<()> {
    match parts.iter().try_fold(1usize, |a, &b| a.checked_mul(b)) {
        Some(n) if n <= MAX_ELEMS => Ok(()),
        _ => Err(invalid(format!("{what} would be too large: {parts:?}"))),
    }
}

/// Row-wise softmax with the reference's fully-masked-row convention
/// (an all `-inf` row gives zeros, not NaN), rounding through `rs`.
/// `seq` rounds the running sum at every step, as numpy's reduction does
/// for bfloat16 (an ml_dtypes type without pairwise float accumulation).
fn softmax_rows(x: &mut [f64], len: usize, rs: Round, guard: bool, seq: bool) {
    if len == 0 {
        return;
    }
    for row in x.chunks_mut(len) {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let safe = if guard && max == f64::NEG_INFINITY { 0.0 } else { max };
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = rs(rs(*v - safe).exp());
            sum = if seq { rs(sum + *v) } else { sum + *v };
        }
        let sum = rs(sum);
        let sum = if guard && sum == 0.0 { 1.0 } else { sum };
        for v in row.iter_mut() {
            *v = rs(*v / sum);
        }
    }
}

/// Right-aligned broadcast index of a mask of shape `ms` (rank <= 4) for
/// the (b, h, i) row; returns the row's offset into the contiguous mask.
fn mask_row_offset(ms: &[usize], b: usize, h: usize, i: usize) -> usize {
    let idx = [b, h, i];
    let r = ms.len();
    let mut off = 0;
    let mut stride = ms[r - 1];
    for k in (0..r - 1).rev() {
        // ms[k] corresponds to dim 4 - r + k of (b, h, i, j).
        let dim = 4 - r + k;
        let ix = if ms[k] == 1 { 0 } else { idx[dim] };
        off += ix * stride;
        stride *= ms[k];
    }
    off
}

pub fn attention(at: &AttentionAttrs, ins: &[Option<&Tensor>], cx: &EvalCtx) -> OpResult<Vec<Value>> {
    let get = |i: usize, n: &str| {
        ins.get(i)
            .copied()
            .flatten()
            .ok_or_else(|| invalid(format!("input {n} is required")))
    };
    let (qt, kt, vt) = (get(0, "Q")?, get(1, "K")?, get(2, "V")?);
    let dtype = qt.dtype();
    let r = rounder(dtype)?;
    if kt.dtype() != dtype {
        return Err(invalid(format!("K has dtype {}, Q has {dtype}", kt.dtype())));
    }
    let mask_t = ins.get(3).copied().flatten();
    let past_k = ins.get(4).copied().flatten();
    let past_v = ins.get(5).copied().flatten();
    let nonpad_t = ins.get(6).copied().flatten();
    if past_k.is_some() != past_v.is_some() {
        return Err(invalid("past_key and past_value must be given together"));
    }
    if nonpad_t.is_some() && past_k.is_some() {
        return Err(invalid("nonpad_kv_seqlen cannot be combined with past_key/past_value"));
    }
    let (mut q, mut k, mut v) = (to_f64(qt, "Q")?, to_f64(kt, "K")?, to_f64(vt, "V")?);
    let rank = q.ndim();
    if rank != k.ndim() || rank != v.ndim() || !(rank == 3 || rank == 4) {
        return Err(invalid(format!(
            "Q, K, V must all be 3-D or 4-D, got {:?} {:?} {:?}",
            q.shape(),
            k.shape(),
            v.shape()
        )));
    }
    if rank == 4 && at.opset >= 25 && (at.q_num_heads.is_some() || at.kv_num_heads.is_some()) {
        return Err(invalid("q_num_heads and kv_num_heads must not be given for 4-D inputs"));
    }
    if rank == 3 {
        let (Some(nq), Some(nkv)) = (at.q_num_heads, at.kv_num_heads) else {
            return Err(invalid("3-D inputs need q_num_heads and kv_num_heads"));
        };
        q = split_heads(&q, nq, "Q")?;
        k = split_heads(&k, nkv, "K")?;
        v = split_heads(&v, nkv, "V")?;
    }
    let ([bsz, hq, sq, d], [hkv, skv, dv]) = qkv_dims(&q, &k, &v)?;
    // KV cache: present = concat(past, new) on the sequence axis.
    let mut past_len = 0;
    if let (Some(pk), Some(pvt)) = (past_k, past_v) {
        let (pk, pvv) = (to_f64(pk, "past_key")?, to_f64(pvt, "past_value")?);
        let [pb, ph, pl, pd] = dims4(&pk, "past_key")?;
        let [qb, qh, ql, qd] = dims4(&pvv, "past_value")?;
        if pb != bsz || ph != hkv || pd != d || qb != bsz || qh != hkv || ql != pl || qd != dv {
            return Err(invalid(format!(
                "past_key {:?} / past_value {:?} do not match K/V",
                pk.shape(),
                pvv.shape()
            )));
        }
        past_len = pl;
        k = carbide_ir::ndarray::concatenate(Axis(2), &[pk.view(), k.view()]).map_err(|e| invalid(e.to_string()))?;
        v = carbide_ir::ndarray::concatenate(Axis(2), &[pvv.view(), v.view()]).map_err(|e| invalid(e.to_string()))?;
    }
    let total = skv + past_len;
    check_size(&[bsz, hq, sq, total], "attention scores")?;
    check_size(&[bsz, hq, sq, dv], "attention output")?;
    let nonpad: Option<Vec<i64>> = match nonpad_t {
        Some(t) => {
            let v = t
                .to_i64_vec()
                .ok_or_else(|| invalid("nonpad_kv_seqlen must be int64"))?;
            if v.len() != bsz {
                return Err(invalid(format!(
                    "nonpad_kv_seqlen has {} entries for batch {bsz}",
                    v.len()
                )));
            }
            Some(v)
        }
        None => None,
    };
    // The mask as f64 values (bool: attend -> 0, else -inf), contiguous.
    let mask: Option<(Vec<usize>, Vec<f64>)> = match mask_t {
        None => None,
        Some(m) => {
            let ms = m.shape().to_vec();
            if ms.is_empty() || ms.len() > 4 {
                return Err(invalid(format!("attn_mask must have rank 1..4, got {ms:?}")));
            }
            let vals: Vec<f64> = match m {
                Tensor::Bool(a) => a.iter().map(|&b| if b { 0.0 } else { f64::NEG_INFINITY }).collect(),
                t => to_f64(t, "attn_mask")?.as_standard_layout().iter().copied().collect(),
            };
            let full = [bsz, hq, sq, total];
            for (k2, &dm) in ms.iter().enumerate() {
                let want = full[4 - ms.len() + k2];
                let last = k2 == ms.len() - 1;
                if !(dm == 1 || dm == want || (last && dm < want)) {
                    return Err(invalid(format!("attn_mask {ms:?} does not broadcast to {full:?}")));
                }
            }
            Some((ms, vals))
        }
    };
    let scale = match at.scale {
        Some(s) => s as f64,
        None => 1.0 / (d as f64).sqrt(),
    };
    let sc = r(scale.sqrt());
    let qs: Vec<f64> = q.iter().map(|&x| r(x * sc)).collect();
    let ks: Vec<f64> = k.as_standard_layout().iter().map(|&x| r(x * sc)).collect();
    let vs_: Vec<f64> = v.as_standard_layout().iter().copied().collect();
    let softcap = at.softcap as f64;
    let cap = r(softcap);
    let rs: Round = match at.softmax_precision {
        Some(p) => rounder(p)?,
        None => r,
    };
    let group = hq / hkv;
    let windowed = at.left_window_size >= 0 || at.right_window_size >= 0;
    let offset = |b: usize| -> i64 {
        match (&nonpad, past_len) {
            (Some(np), 0) => np[b].saturating_sub(sq as i64),
            _ => past_len as i64,
        }
    };
    // Per (b, h): Y rows and the requested qk output.
    let heads: Vec<(usize, usize)> = (0..bsz).flat_map(|b| (0..hq).map(move |h| (b, h))).collect();
    let mode = at.qk_matmul_output_mode;
    let results = heads
        .par_iter()
        .map(|&(b, h)| -> OpResult<(Vec<f64>, Vec<f64>)> {
            let kvh = h / group;
            let qo = (b * hq + h) * sq * d;
            let ko = (b * hkv + kvh) * total * d;
            let vo = (b * hkv + kvh) * total * dv;
            let mut s = qk(&qs[qo..qo + sq * d], &ks[ko..ko + total * d], sq, total, d)?;
            s.iter_mut().for_each(|x| *x = r(*x));
            let raw = if mode == 0 { s.clone() } else { Vec::new() };
            if softcap > 0.0 {
                s.iter_mut().for_each(|x| *x = r(r(r(*x / cap).tanh()) * cap));
            }
            let capped = if mode == 1 { s.clone() } else { Vec::new() };
            let off = offset(b);
            let mut masked_rows = vec![false; sq];
            for i in 0..sq {
                let row_off = mask.as_ref().map(|(ms, _)| mask_row_offset(ms, b, h, i));
                let mut row_max = f64::NEG_INFINITY;
                for j in 0..total {
                    let mut bias = 0.0;
                    if let (Some((ms, mv)), Some(ro)) = (&mask, row_off) {
                        let ml = ms[ms.len() - 1];
                        // A short last dim is padded with -inf (as the
                        // reference does, even for length 1).
                        bias += if j < ml { mv[ro + j] } else { f64::NEG_INFINITY };
                    }
                    let p = (i as i64).saturating_add(off);
                    let jj = j as i64;
                    if at.is_causal && jj > p {
                        bias += f64::NEG_INFINITY;
                    }
                    if windowed {
                        let diff = p.saturating_sub(jj);
                        let ok = (at.left_window_size < 0 || diff <= at.left_window_size)
                            && (at.right_window_size < 0 || diff.saturating_neg() <= at.right_window_size);
                        if !ok {
                            bias += f64::NEG_INFINITY;
                        }
                    }
                    if let Some(np) = &nonpad {
                        if jj >= np[b] {
                            bias += f64::NEG_INFINITY;
                        }
                    }
                    let x = &mut s[i * total + j];
                    *x = r(*x + r(bias));
                    row_max = row_max.max(bias);
                }
                masked_rows[i] = row_max == f64::NEG_INFINITY;
            }
            let biased = if mode == 2 { s.clone() } else { Vec::new() };
            s.iter_mut().for_each(|x| *x = rs(*x));
            softmax_rows(
                &mut s,
                total,
                rs,
                true,
                at.softmax_precision.unwrap_or(dtype) == DType::BF16,
            );
            for (i, m) in masked_rows.iter().enumerate() {
                if *m {
                    s[i * total..(i + 1) * total].iter_mut().for_each(|x| *x = 0.0);
                }
            }
            s.iter_mut().for_each(|x| *x = r(*x));
            let mut y = pv(&s, &vs_[vo..vo + total * dv], sq, total, dv)?;
            y.iter_mut().for_each(|x| *x = r(*x));
            let qk_out = match mode {
                0 => raw,
                1 => capped,
                2 => biased,
                _ => s,
            };
            Ok((y, qk_out))
        })
        .collect::<OpResult<Vec<_>>>()?;
    let mut y = Vec::with_capacity(bsz * hq * sq * dv);
    let mut qk_all = Vec::new();
    for (yy, qq) in results {
        y.extend(yy);
        if cx.num_outputs > 3 {
            qk_all.extend(qq);
        }
    }
    let mut y = array(&[bsz, hq, sq, dv], y)?;
    if rank == 3 {
        y = merge_heads(&y)?;
    }
    let mut outs = vec![Value::Tensor(from_f64(dtype, y)?)];
    if cx.num_outputs > 1 {
        outs.push(Value::Tensor(from_f64(kt.dtype(), k)?));
    }
    if cx.num_outputs > 2 {
        outs.push(Value::Tensor(from_f64(vt.dtype(), v)?));
    }
    if cx.num_outputs > 3 {
        outs.push(Value::Tensor(from_f64(dtype, array(&[bsz, hq, sq, total], qk_all)?)?));
    }
    Ok(outs)
}

fn run_mod(cx: &EvalCtx, g: &Graph, dtype: DType, shape: &[usize], data: Vec<f64>, what: &str) -> OpResult<Vec<f64>> {
    let t = from_f64(dtype, array(shape, data)?)?;
    let outs = cx.runner.run_subgraph(g, vec![Value::Tensor(t)])?;
    let out = outs
        .into_iter()
        .next()
        .ok_or_else(|| invalid(format!("{what} produced no output")))?;
    let t = out
        .as_tensor()
        .ok_or_else(|| invalid(format!("{what} output is not a tensor")))?;
    if t.shape() != shape {
        return Err(invalid(format!(
            "{what} changed the shape {shape:?} to {:?}",
            t.shape()
        )));
    }
    let rc = rounder(dtype)?;
    Ok(to_f64(t, what)?.iter().map(|&v| rc(v)).collect())
}

pub fn flex_attention(fa: &FlexAttentionAttrs, ins: &[Option<&Tensor>], cx: &EvalCtx) -> OpResult<Vec<Value>> {
    let get = |i: usize, n: &str| {
        ins.get(i)
            .copied()
            .flatten()
            .ok_or_else(|| invalid(format!("input {n} is required")))
    };
    let (qt, kt, vt) = (get(0, "Q")?, get(1, "K")?, get(2, "V")?);
    let dtype = qt.dtype();
    if kt.dtype() != dtype || vt.dtype() != dtype {
        return Err(invalid("Q, K and V must share a dtype"));
    }
    let r = rounder(dtype)?;
    let (q, k, v) = (to_f64(qt, "Q")?, to_f64(kt, "K")?, to_f64(vt, "V")?);
    let ([b, hq, l, e], [hkv, s, ev]) = qkv_dims(&q, &k, &v)?;
    check_size(&[b, hq, l, s], "attention scores")?;
    let scale = fa.scale.map(|v| v as f64).unwrap_or(1.0 / (e as f64).sqrt());
    let ss = r(((scale as f32).sqrt()) as f64);
    let cdt = match fa.softmax_precision {
        Some(p) => p,
        None if dtype == DType::F64 => DType::F64,
        None => DType::F32,
    };
    let rc = rounder(cdt)?;
    let qs: Vec<f64> = q.iter().map(|&x| r(x * ss)).collect();
    let ks: Vec<f64> = k.iter().map(|&x| r(x * ss)).collect();
    let vv: Vec<f64> = v.iter().map(|&x| rc(x)).collect();
    let group = hq / hkv;
    let mut scores = Vec::with_capacity(b * hq * l * s);
    for bi in 0..b {
        for h in 0..hq {
            let kvh = h / group;
            let qo = (bi * hq + h) * l * e;
            let ko = (bi * hkv + kvh) * s * e;
            let sc = qk(&qs[qo..qo + l * e], &ks[ko..ko + s * e], l, s, e)?;
            scores.extend(sc.into_iter().map(|x| rc(r(x))));
        }
    }
    let shape = [b, hq, l, s];
    if let Some(g) = &fa.score_mod {
        scores = run_mod(cx, g, cdt, &shape, scores, "score_mod")?;
    }
    softmax_rows(&mut scores, s, rc, false, cdt == DType::BF16);
    if let Some(g) = &fa.prob_mod {
        scores = run_mod(cx, g, cdt, &shape, scores, "prob_mod")?;
    }
    let mut y = Vec::with_capacity(b * hq * l * ev);
    for bi in 0..b {
        for h in 0..hq {
            let kvh = h / group;
            let po = (bi * hq + h) * l * s;
            let vo = (bi * hkv + kvh) * s * ev;
            let o = pv(&scores[po..po + l * s], &vv[vo..vo + s * ev], l, s, ev)?;
            y.extend(o.into_iter().map(|x| r(rc(x))));
        }
    }
    Ok(vec![Value::Tensor(from_f64(dtype, array(&[b, hq, l, ev], y)?)?)])
}

/// Unpacks a rank-3 (B, T, H*D) f32-rounded input to (B, H, T, D).
fn unpack(t: &Tensor, heads: usize, what: &str) -> OpResult<ArrayD<f64>> {
    let a = to_f64(t, what)?;
    if a.ndim() != 3 {
        return Err(invalid(format!(
            "{what} must be rank 3 (B, T, H*D), got {:?}",
            a.shape()
        )));
    }
    split_heads(&a.mapv(|v| v as f32 as f64), heads, what)
}

pub fn linear_attention(la: &LinearAttentionAttrs, ins: &[Option<&Tensor>]) -> OpResult<Vec<Value>> {
    let get = |i: usize, n: &str| {
        ins.get(i)
            .copied()
            .flatten()
            .ok_or_else(|| invalid(format!("input {n} is required")))
    };
    let (qt, kt, vt) = (get(0, "query")?, get(1, "key")?, get(2, "value")?);
    let past = ins.get(3).copied().flatten();
    let decay = ins.get(4).copied().flatten();
    let beta = ins.get(5).copied().flatten();
    let gating = matches!(la.update_rule, LinearUpdateRule::Gated | LinearUpdateRule::GatedDelta);
    let delta = matches!(la.update_rule, LinearUpdateRule::Delta | LinearUpdateRule::GatedDelta);
    if gating != decay.is_some() {
        return Err(invalid(format!(
            "update_rule {:?} {} the decay input",
            la.update_rule,
            if gating { "requires" } else { "forbids" }
        )));
    }
    if delta != beta.is_some() {
        return Err(invalid(format!(
            "update_rule {:?} {} the beta input",
            la.update_rule,
            if delta { "requires" } else { "forbids" }
        )));
    }
    let (hq, hkv) = (la.q_num_heads, la.kv_num_heads);
    let q = unpack(qt, hq, "query")?;
    let k = unpack(kt, hkv, "key")?;
    let v = unpack(vt, hkv, "value")?;
    let [b, _, t, dk] = dims4(&q, "query")?;
    let [kb, _, kt_, kdk] = dims4(&k, "key")?;
    let [vb, _, vt_, dv] = dims4(&v, "value")?;
    if kb != b || vb != b || kt_ != t || vt_ != t || kdk != dk {
        return Err(invalid(format!(
            "inconsistent query {:?}, key {:?}, value {:?}",
            qt.shape(),
            kt.shape(),
            vt.shape()
        )));
    }
    check_size(&[b, hkv, dk, dv], "state")?;
    let f = |x: f64| x as f32 as f64;
    // decay as (B, H_kv, T, dk or 1); beta as (B, H_kv or 1, T).
    let decay4: Option<(ArrayD<f64>, bool)> = match decay {
        None => None,
        Some(dt) => {
            let a = to_f64(dt, "decay")?;
            let s = a.shape().to_vec();
            if s.len() != 3 || s[0] != b || s[1] != t {
                return Err(invalid(format!("decay must be (B, T, ...), got {s:?}")));
            }
            if s[2] == hkv {
                Some((split_heads(&a, hkv, "decay")?.mapv(f), false))
            } else if s[2] == hkv * dk {
                Some((split_heads(&a, hkv, "decay")?.mapv(f), true))
            } else {
                return Err(invalid(format!(
                    "decay last dim {} must be {hkv} or {}",
                    s[2],
                    hkv * dk
                )));
            }
        }
    };
    let beta3: Option<(ArrayD<f64>, usize)> = match beta {
        None => None,
        Some(bt) => {
            let a = to_f64(bt, "beta")?;
            let s = a.shape().to_vec();
            if s.len() != 3 || s[0] != b || s[1] != t || !(s[2] == hkv || s[2] == 1) {
                return Err(invalid(format!("beta must be (B, T, {hkv} or 1), got {s:?}")));
            }
            Some((a.mapv(f), s[2]))
        }
    };
    let (state_dtype, mut state) = match past {
        Some(p) => {
            let a = to_f64(p, "past_state")?;
            if a.shape() != [b, hkv, dk, dv] {
                return Err(invalid(format!(
                    "past_state {:?} must be {:?}",
                    a.shape(),
                    [b, hkv, dk, dv]
                )));
            }
            (
                p.dtype(),
                a.as_standard_layout().iter().map(|&x| f(x)).collect::<Vec<f64>>(),
            )
        }
        None => (qt.dtype(), vec![0.0; b * hkv * dk * dv]),
    };
    let scale = if la.scale == 0.0 {
        f(1.0 / (dk as f64).sqrt())
    } else {
        f(la.scale as f64)
    };
    let group = hq / hkv;
    let mut out = vec![0.0; b * hq * t * dv];
    let mut vt_buf = vec![0.0; dv];
    for bi in 0..b {
        for step in 0..t {
            for h in 0..hkv {
                let st = &mut state[(bi * hkv + h) * dk * dv..(bi * hkv + h + 1) * dk * dv];
                if let Some((d4, per_dim)) = &decay4 {
                    for di in 0..dk {
                        let g = if *per_dim {
                            d4[[bi, h, step, di]]
                        } else {
                            d4[[bi, h, step, 0]]
                        };
                        let e = f(g.exp());
                        st[di * dv..(di + 1) * dv].iter_mut().for_each(|x| *x = f(*x * e));
                    }
                }
                for m in 0..dv {
                    vt_buf[m] = v[[bi, h, step, m]];
                }
                if let Some((b3, w)) = &beta3 {
                    let bv = b3[[bi, step, if *w == 1 { 0 } else { h }]];
                    for m in 0..dv {
                        let mut ret = 0.0;
                        for di in 0..dk {
                            ret += st[di * dv + m] * k[[bi, h, step, di]];
                        }
                        vt_buf[m] = f(bv * f(vt_buf[m] - f(ret)));
                    }
                }
                for di in 0..dk {
                    let kv = k[[bi, h, step, di]];
                    for m in 0..dv {
                        st[di * dv + m] = f(st[di * dv + m] + f(kv * vt_buf[m]));
                    }
                }
                for g in 0..group {
                    let qh = h * group + g;
                    for m in 0..dv {
                        let mut acc = 0.0;
                        for di in 0..dk {
                            acc += q[[bi, qh, step, di]] * st[di * dv + m];
                        }
                        out[((bi * hq + qh) * t + step) * dv + m] = f(scale * f(acc));
                    }
                }
            }
        }
    }
    let y = merge_heads(&array(&[b, hq, t, dv], out)?)?;
    let st = array(&[b, hkv, dk, dv], state)?;
    Ok(vec![
        Value::Tensor(from_f64(qt.dtype(), y)?),
        Value::Tensor(from_f64(state_dtype, st)?),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::SubgraphRunner;

    struct NoRunner;
    impl SubgraphRunner for NoRunner {
        fn run_subgraph(&self, _: &Graph, _: Vec<Value>) -> OpResult<Vec<Value>> {
            Err(invalid("no subgraphs here"))
        }
    }

    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::F32(ArrayD::from_shape_vec(carbide_ir::ndarray::IxDyn(shape), v).unwrap())
    }

    fn attrs() -> AttentionAttrs {
        AttentionAttrs::default()
    }

    fn run(at: &AttentionAttrs, mask: Option<&Tensor>) -> Vec<f64> {
        let (q, k, v) = (
            t(&[1, 1, 2, 1], vec![1., 1.]),
            t(&[1, 1, 2, 1], vec![1., 2.]),
            t(&[1, 1, 2, 1], vec![10., 20.]),
        );
        let cx = EvalCtx {
            num_outputs: 1,
            runner: &NoRunner,
            seed: 0,
        };
        let out = attention(at, &[Some(&q), Some(&k), Some(&v), mask], &cx).unwrap();
        out[0].as_tensor().unwrap().to_f64_vec().unwrap()
    }

    #[test]
    fn causal_and_fully_masked_rows() {
        let p = 1.0 / (1.0 + (-1f64).exp()); // weight of k1 in row 1
        let y = run(
            &AttentionAttrs {
                is_causal: true,
                ..attrs()
            },
            None,
        );
        assert!(
            (y[0] - 10.0).abs() < 1e-5 && (y[1] - (10.0 * (1.0 - p) + 20.0 * p)).abs() < 1e-4,
            "{y:?}"
        );
        let mask = Tensor::Bool(
            ArrayD::from_shape_vec(carbide_ir::ndarray::IxDyn(&[2, 2]), vec![true, true, false, false]).unwrap(),
        );
        let y = run(&attrs(), Some(&mask));
        assert!(
            (y[0] - (10.0 * (1.0 - p) + 20.0 * p)).abs() < 1e-4 && y[1] == 0.0,
            "{y:?}"
        );
    }

    #[test]
    fn linear_attention_linear_rule() {
        let la = LinearAttentionAttrs {
            q_num_heads: 1,
            kv_num_heads: 1,
            scale: 1.0,
            update_rule: LinearUpdateRule::Linear,
            chunk_size: 64,
        };
        let (q, k, v) = (
            t(&[1, 2, 1], vec![1., 1.]),
            t(&[1, 2, 1], vec![1., 2.]),
            t(&[1, 2, 1], vec![3., 4.]),
        );
        let out = linear_attention(&la, &[Some(&q), Some(&k), Some(&v), None, None, None]).unwrap();
        assert_eq!(out[0].as_tensor().unwrap().to_f64_vec().unwrap(), vec![3.0, 11.0]);
        assert_eq!(out[1].as_tensor().unwrap().to_f64_vec().unwrap(), vec![11.0]);
    }
}
