//! ONNX `Attention` (what the optimizer fuses scaled dot-product attention
//! into): per query row, `s = scale · q·Kᵀ + mask`, a row softmax, then
//! `p·V`, with 3-D (`[B, S, H·D]`, heads interleaved in the last axis) or
//! 4-D (`[B, H, S, D]`) operands read in place through strides. Each part
//! takes a contiguous range of (batch, head, query) rows; for each head it
//! meets, it first copies that head's K transposed (`[D, L]`) into its
//! scratch so the scores are vectorized along the keys, and `p·V` is
//! vectorized along the value dim. Query rows go in blocks ([`row_blocks`]) so
//! every loaded K or V vector feeds several independent FMA chains. Batch
//! and sequence lengths are runtime parameters; heads and head sizes are
//! compile-time constants.
//!
//! Supported: f32, no KV cache or padding lengths, no softcap or sliding
//! window, an f32 mask whose last dim is the keys' (anything else is
//! `Ok(None)`, i.e. the host kernel). A row masked everywhere gives zeros,
//! as the reference does.

use crate::cexpr::{flit, pmul, slot, Params};
use crate::group::{broadcast_strides, dim_param, is_f32, shape_text};
use crate::target::Target;
use crate::{CodegenError, KernelGroup, LoweredKernel};
use carbide_ir::kernel::{BufferArg, KernelCall, ParamExpr, Schedule, WorkloadKey};
use carbide_ir::ops::linalg::LinalgOp;
use carbide_ir::{DType, Dim, Op};
use std::fmt::Write;

/// Two dims that are provably equal at run time.
fn same(a: &Dim, b: &Dim) -> bool {
    a == b && !matches!(a, Dim::Unknown)
}

/// Q, K, V and the output agree on the batch, K and V on the keys, Q and
/// the output on the queries (sequence axis `seq`).
fn consistent(qs: &[Dim], ks: &[Dim], vs: &[Dim], os: &[Dim], seq: usize) -> bool {
    let batch = same(&qs[0], &ks[0]) && same(&qs[0], &vs[0]) && same(&qs[0], &os[0]);
    batch && same(&ks[seq], &vs[seq]) && same(&qs[seq], &os[seq])
}

/// Element strides of one operand along (batch, head, row) with the head
/// dim contiguous.
struct Strides {
    b: ParamExpr,
    h: ParamExpr,
    r: ParamExpr,
}

/// Query-row blocks, largest first: each loaded K or V vector feeds one
/// FMA chain per row of the block, two vectors wide, so a block of `n` keeps
/// 2n accumulators in registers — 8 rows (16 accumulators) where there are
/// 32 vector registers (AVX-512, NEON), 4 rows with AVX2's 16.
fn row_blocks(target: &Target) -> &'static [usize] {
    match target.isa() {
        crate::target::Isa::Avx2 => &[4, 1],
        crate::target::Isa::Avx512 | crate::target::Isa::Neon => &[8, 4, 1],
    }
}

/// C for `n` consecutive query rows `i..i+n` of head `(b, h)`: scores
/// (two key vectors at a time, so 2n accumulators), mask, softmax with
/// unnormalized probabilities left in `sc`, then p·V (two value vectors at
/// a time) scaled by each row's 1/sum. Columns past a row's causal limit
/// hold zero probability, so all rows share one key range.
fn emit_rows(s: &mut String, n: usize, causal: bool, mask: bool) {
    let rows = 0..n;
    let ind = "            ";
    let mut l = |line: String| {
        s.push_str(ind);
        s.push_str(&line);
        s.push('\n');
    };
    for r in rows.clone() {
        l(format!(
            "const float *q{r} = Q + b * qsb + h * qsh + (i + {r}) * qsr; float *s{r} = sc + {r} * Lp; float inv{r};"
        ));
    }
    if causal {
        l(format!("const int64_t Lmax = i + {n} < L ? i + {n} : L;"));
    } else {
        l("const int64_t Lmax = L;".into());
    }
    l("const int64_t Lv = (Lmax + VW - 1) / VW * VW;".into());
    l("int64_t j = 0;".into());
    // Scores, `w` key vectors at a time (w = 2, then 1 for the rest: Lv is
    // a whole number of vectors).
    for w in [2, 1] {
        let us = 0..w;
        l(format!("for (; j + {w} * VW <= Lv; j += {w} * VW) {{"));
        let accs: Vec<String> = (rows.clone())
            .flat_map(|r| us.clone().map(move |u| format!("a{r}_{u} = VZERO()")))
            .collect();
        l(format!("    vf {};", accs.join(", ")));
        l("    for (int64_t c = 0; c < D; c++) {".into());
        let loads: Vec<String> = us.clone().map(|u| format!("k{u} = VLOAD(kr + {u} * VW)")).collect();
        l(format!(
            "        const float *kr = kt + c * Lp + j; const vf {};",
            loads.join(", ")
        ));
        for r in rows.clone() {
            let fmas: String = us
                .clone()
                .map(|u| format!(" a{r}_{u} = VFMA(qb, k{u}, a{r}_{u});"))
                .collect();
            l(format!("        {{ const vf qb = VSET1(q{r}[c]);{fmas} }}"));
        }
        l("    }".into());
        for r in rows.clone() {
            let stores: String = us
                .clone()
                .map(|u| format!(" VSTORE(s{r} + j + {u} * VW, VMUL(a{r}_{u}, vscale));"))
                .collect();
            l(format!("   {stores}"));
        }
        l("}".into());
    }
    // Softmax of the block's rows, interleaved so each pass runs n
    // independent chains (a single row's max and sum are latency-bound).
    // Columns past a row's causal limit are -inf for the max and zero after
    // the exponentials; a row masked everywhere gets 1/sum = 0.
    let each = |f: &dyn Fn(usize) -> String| -> String { rows.clone().map(f).collect::<Vec<_>>().join(" ") };
    if causal {
        for r in rows.clone() {
            l(format!(
                "const int64_t Lr{r} = i + {r} + 1 < L ? i + {r} + 1 : L; for (int64_t t = Lr{r}; t < Lmax; t++) s{r}[t] = -INFINITY;"
            ));
        }
    }
    if mask {
        for r in rows.clone() {
            l(format!("const float *mr{r} = M + b * msb + h * msh + (i + {r}) * msr;"));
        }
    }
    l(format!(
        "vf {};",
        each(&|r| format!("vm{r} = VSET1(-INFINITY){}", if r + 1 < n { "," } else { "" }))
    ));
    l("int64_t t;".into());
    let vmax = |r: usize| {
        if mask {
            format!("{{ const vf x = VADD(VLOAD(s{r} + t), VLOAD(mr{r} + t)); VSTORE(s{r} + t, x); vm{r} = VMAX(vm{r}, x); }}")
        } else {
            format!("vm{r} = VMAX(vm{r}, VLOAD(s{r} + t));")
        }
    };
    l(format!("for (t = 0; t + VW <= Lmax; t += VW) {{ {} }}", each(&vmax)));
    l(format!(
        "float {};",
        each(&|r| format!("m{r} = VHMAX(vm{r}){}", if r + 1 < n { "," } else { "" }))
    ));
    let smax = |r: usize| {
        if mask {
            format!("s{r}[t] += mr{r}[t]; m{r} = fmaxf(m{r}, s{r}[t]);")
        } else {
            format!("m{r} = fmaxf(m{r}, s{r}[t]);")
        }
    };
    l(format!("for (; t < Lmax; t++) {{ {} }}", each(&smax)));
    for r in rows.clone() {
        l(format!(
            "const int dead{r} = m{r} == -INFINITY; if (dead{r}) m{r} = 0.0f; const vf vmx{r} = VSET1(m{r}); vf vs{r} = VZERO();"
        ));
    }
    l(format!(
        "for (t = 0; t + VW <= Lmax; t += VW) {{ {} }}",
        each(&|r| format!(
            "{{ const vf e = v_exp(VSUB(VLOAD(s{r} + t), vmx{r})); vs{r} = VADD(vs{r}, e); VSTORE(s{r} + t, e); }}"
        ))
    ));
    l(format!(
        "float {};",
        each(&|r| format!("sum{r} = VHSUM(vs{r}){}", if r + 1 < n { "," } else { "" }))
    ));
    l(format!(
        "for (; t < Lmax; t++) {{ {} }}",
        each(&|r| format!("{{ const float e = expf(s{r}[t] - m{r}); sum{r} += e; s{r}[t] = e; }}"))
    ));
    for r in rows.clone() {
        if causal {
            l(format!("for (t = Lr{r}; t < Lmax; t++) s{r}[t] = 0.0f;"));
        }
        l(format!("inv{r} = dead{r} ? 0.0f : 1.0f / sum{r};"));
    }
    // p·V, `w` value vectors at a time, then scalar columns.
    l("int64_t c = 0;".into());
    for w in [2, 1] {
        let us = 0..w;
        l(format!("for (; c + {w} * VW <= Dv; c += {w} * VW) {{"));
        let accs: Vec<String> = (rows.clone())
            .flat_map(|r| us.clone().map(move |u| format!("a{r}_{u} = VZERO()")))
            .collect();
        l(format!("    vf {};", accs.join(", ")));
        l("    for (int64_t t = 0; t < Lmax; t++) {".into());
        let loads: Vec<String> = us.clone().map(|u| format!("v{u} = VLOAD(vr + {u} * VW)")).collect();
        l(format!(
            "        const float *vr = vh + t * vsr + c; const vf {};",
            loads.join(", ")
        ));
        for r in rows.clone() {
            let fmas: String = us
                .clone()
                .map(|u| format!(" a{r}_{u} = VFMA(pb, v{u}, a{r}_{u});"))
                .collect();
            l(format!("        {{ const vf pb = VSET1(s{r}[t]);{fmas} }}"));
        }
        l("    }".into());
        for r in rows.clone() {
            let stores: String = us
                .clone()
                .map(|u| format!(" VSTORE(y + {u} * VW, VMUL(a{r}_{u}, vi));"))
                .collect();
            l(format!(
                "    {{ float *y = Y + b * ysb + h * ysh + (i + {r}) * ysr + c; const vf vi = VSET1(inv{r});{stores} }}"
            ));
        }
        l("}".into());
    }
    l("for (; c < Dv; c++) {".into());
    for r in rows {
        l(format!("    {{ float a = 0.0f; for (int64_t t = 0; t < Lmax; t++) a += s{r}[t] * vh[t * vsr + c]; Y[b * ysb + h * ysh + (i + {r}) * ysr + c] = a * inv{r}; }}"));
    }
    l("}".into());
}

pub fn lower(
    group: &KernelGroup,
    target: &Target,
    sched: Option<&Schedule>,
) -> Result<Option<LoweredKernel>, CodegenError> {
    let [node] = group.nodes.as_slice() else {
        return Ok(None);
    };
    let Op::Linalg(LinalgOp::Attention(at)) = &node.op else {
        return Ok(None);
    };
    let plain = at.softcap == 0.0
        && at.left_window_size < 0
        && at.right_window_size < 0
        && matches!(at.softmax_precision, None | Some(DType::F32))
        && node.inputs.iter().skip(4).all(String::is_empty)
        && node.outputs.iter().skip(1).all(String::is_empty)
        && group.outputs.len() == 1;
    if !plain {
        return Ok(None);
    }
    let find = |i: usize| -> Option<usize> {
        let name = node.inputs.get(i).filter(|s| !s.is_empty())?;
        group.inputs.iter().position(|v| &v.name == name)
    };
    let (Some(qi), Some(ki), Some(vi)) = (find(0), find(1), find(2)) else {
        return Ok(None);
    };
    let mi = find(3);
    if node.inputs.get(3).is_some_and(|s| !s.is_empty()) && mi.is_none() {
        return Ok(None);
    }
    let ty = |i: usize| &group.inputs[i].ty;
    let out_ty = &group.outputs[0].ty;
    if ![qi, ki, vi].iter().all(|&i| is_f32(ty(i))) || !is_f32(out_ty) || mi.is_some_and(|m| !is_f32(ty(m))) {
        return Ok(None);
    }
    let (Some(qs), Some(ks), Some(vs), Some(os)) = (
        ty(qi).shape.clone(),
        ty(ki).shape.clone(),
        ty(vi).shape.clone(),
        out_ty.shape.clone(),
    ) else {
        return Ok(None);
    };
    let rank = qs.len();
    if ks.len() != rank || vs.len() != rank || os.len() != rank || !(rank == 3 || rank == 4) {
        return Ok(None);
    }
    // Heads and head sizes (compile-time), the sequence dims and strides.
    let (hq, hkv, d, dv, sq_dim, l_dim);
    let (qst, kst, vst, ost);
    if rank == 3 {
        let (Some(nq), Some(nkv)) = (at.q_num_heads, at.kv_num_heads) else {
            return Ok(None);
        };
        let (Some(eq), Some(ek), Some(ev), Some(eo)) = (qs[2].known(), ks[2].known(), vs[2].known(), os[2].known())
        else {
            return Ok(None);
        };
        if nq == 0 || nkv == 0 || eq % nq != 0 || ek % nkv != 0 || ev % nkv != 0 || eq / nq != ek / nkv {
            return Ok(None);
        }
        (hq, hkv, d, dv) = (nq, nkv, eq / nq, ev / nkv);
        if eo != hq * dv {
            return Ok(None);
        }
        (sq_dim, l_dim) = (qs[1].clone(), ks[1].clone());
        if !consistent(&qs, &ks, &vs, &os, 1) {
            return Ok(None);
        }
        let (Some(sq), Some(l)) = (dim_param(&qs[1], qi, 1), dim_param(&ks[1], ki, 1)) else {
            return Ok(None);
        };
        let c = |x: usize| ParamExpr::Const(x as i64);
        let row3 = |seq: ParamExpr, e: usize, hd: usize| Strides {
            b: pmul(seq, c(e)),
            h: c(hd),
            r: c(e),
        };
        qst = row3(sq.clone(), eq, d);
        kst = row3(l.clone(), ek, d);
        vst = row3(l, ev, dv);
        ost = row3(sq, eo, dv);
    } else {
        let known = [qs[1].known(), ks[1].known(), qs[3].known(), vs[3].known()];
        let [Some(a), Some(b), Some(c3), Some(e)] = known else {
            return Ok(None);
        };
        (hq, hkv, d, dv) = (a, b, c3, e);
        if ks[3].known() != Some(d)
            || vs[1].known() != Some(hkv)
            || os[1].known() != Some(hq)
            || os[3].known() != Some(dv)
        {
            return Ok(None);
        }
        (sq_dim, l_dim) = (qs[2].clone(), ks[2].clone());
        if !consistent(&qs, &ks, &vs, &os, 2) {
            return Ok(None);
        }
        let (Some(sq), Some(l)) = (dim_param(&qs[2], qi, 2), dim_param(&ks[2], ki, 2)) else {
            return Ok(None);
        };
        let c = |x: usize| ParamExpr::Const(x as i64);
        let row4 = |seq: ParamExpr, heads: usize, hd: usize| Strides {
            b: pmul(pmul(seq.clone(), c(heads)), c(hd)),
            h: pmul(seq, c(hd)),
            r: c(hd),
        };
        qst = row4(sq.clone(), hq, d);
        kst = row4(l.clone(), hkv, d);
        vst = row4(l, hkv, dv);
        ost = row4(sq, hq, dv);
    }
    if hkv == 0 || hq % hkv != 0 || d == 0 || dv == 0 {
        return Ok(None);
    }
    let Some(batch) = dim_param(&qs[0], qi, 0) else {
        return Ok(None);
    };
    let (Some(sq), Some(l)) = (
        dim_param(&sq_dim, qi, if rank == 3 { 1 } else { 2 }),
        dim_param(&l_dim, ki, if rank == 3 { 1 } else { 2 }),
    ) else {
        return Ok(None);
    };
    // The mask broadcasts onto the scores [B, Hq, Sq, L]; its last dim must
    // be L itself (ONNX pads a shorter one with -inf rather than broadcasting).
    let mask = match mi {
        None => None,
        Some(m) => {
            let scores = [qs[0].clone(), Dim::Known(hq), sq_dim.clone(), l_dim.clone()];
            let Some(ms) = ty(m).shape.as_ref() else {
                return Ok(None);
            };
            if ms.is_empty() || ms.len() > 4 || !same(ms.last().expect("non-empty"), &l_dim) {
                return Ok(None);
            }
            let Some(st) = broadcast_strides(ty(m), m, &scores) else {
                return Ok(None);
            };
            Some((m, st))
        }
    };
    let scale = at.scale.unwrap_or(1.0 / (d as f32).sqrt());

    let sched = sched
        .cloned()
        .unwrap_or_else(|| crate::rows::row_schedule(target, "key"));
    let mut shapes = vec![shape_text(ty(qi)), shape_text(ty(ki)), shape_text(ty(vi))];
    shapes.extend(mi.map(|m| shape_text(ty(m))));
    let workload = WorkloadKey {
        op: "attention".into(),
        shapes,
        dtypes: vec!["f32".into()],
        epilogue: vec![],
        attrs: vec![format!(
            "heads={hq}/{hkv},scale={scale},causal={},mask={}",
            at.is_causal,
            mask.is_some()
        )],
        target: target.name().to_string(),
    };
    let entry = format!(
        "carbide_attention_{}_{}",
        workload.hex(),
        node.name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(24)
            .collect::<String>()
    );
    let rows = pmul(pmul(batch, ParamExpr::Const(hq as i64)), sq.clone());
    // Per part: K of one head transposed (D x Lp, Lp = L rounded up to 16)
    // and the score rows of one block of queries.
    let lp = ParamExpr::CeilDiv(Box::new(l.clone()), Box::new(ParamExpr::Const(16)));
    let blocks = row_blocks(target);
    let scratch_bytes = pmul(
        pmul(lp, ParamExpr::Const(16 * 4)),
        ParamExpr::Const((d + blocks[0]) as i64),
    );
    let mut buffers = Vec::new();
    let mut p = Params::default();
    let q_slot = slot(BufferArg::Input(qi), &mut buffers);
    let k_slot = slot(BufferArg::Input(ki), &mut buffers);
    let v_slot = slot(BufferArg::Input(vi), &mut buffers);
    let y_slot = slot(BufferArg::Output(0), &mut buffers);
    let s_slot = slot(
        BufferArg::Scratch {
            bytes: scratch_bytes.clone(),
            per_part: true,
        },
        &mut buffers,
    );
    let mut s = String::new();
    let w = |s: &mut String, line: &str| {
        s.push_str(line);
        s.push('\n');
    };
    let _ = writeln!(
        s,
        "void {entry}(void *const *bufs, const int64_t *p, int64_t part, int64_t num_parts) {{"
    );
    w(&mut s, "    (void)p;");
    let _ = writeln!(s, "    const float *Q = (const float *)bufs[{q_slot}];");
    let _ = writeln!(s, "    const float *K = (const float *)bufs[{k_slot}];");
    let _ = writeln!(s, "    const float *V = (const float *)bufs[{v_slot}];");
    let _ = writeln!(s, "    float *Y = (float *)bufs[{y_slot}];");
    let _ = writeln!(
        s,
        "    const int64_t rows = {}, Sq = {}, L = {}, Lp = (L + 15) / 16 * 16;",
        p.c(rows.clone()),
        p.c(sq),
        p.c(l)
    );
    let _ = writeln!(
        s,
        "    float *kt = (float *)((char *)bufs[{s_slot}] + part * {});",
        p.c(scratch_bytes)
    );
    let _ = writeln!(s, "    float *sc = kt + {d} * Lp;");
    let _ = writeln!(s, "    const int64_t D = {d}, Dv = {dv}, Hq = {hq}, G = {};", hq / hkv);
    for (name, st) in [("q", &qst), ("k", &kst), ("v", &vst), ("y", &ost)] {
        let _ = writeln!(
            s,
            "    const int64_t {name}sb = {}, {name}sh = {}, {name}sr = {};",
            p.c(st.b.clone()),
            p.c(st.h.clone()),
            p.c(st.r.clone())
        );
    }
    if let Some((m, st)) = &mask {
        let m_slot = slot(BufferArg::Input(*m), &mut buffers);
        let _ = writeln!(s, "    const float *M = (const float *)bufs[{m_slot}];");
        let _ = writeln!(
            s,
            "    const int64_t msb = {}, msh = {}, msr = {};",
            p.c(st[0].clone()),
            p.c(st[1].clone()),
            p.c(st[2].clone())
        );
    }
    w(
        &mut s,
        "    const int64_t r0 = rows * part / num_parts, r1 = rows * (part + 1) / num_parts;",
    );
    let _ = writeln!(s, "    const vf vscale = VSET1({});", flit(scale));
    w(&mut s, "    int64_t have = -1;");
    w(&mut s, "    for (int64_t r = r0; r < r1;) {");
    w(
        &mut s,
        "        const int64_t bh = r / Sq, i = r % Sq, b = bh / Hq, h = bh % Hq, hk = h / G;",
    );
    // K of this head, transposed into kt[c * Lp + j], zero-padded to Lp keys.
    w(&mut s, "        if (bh != have) {");
    w(&mut s, "            const float *kh = K + b * ksb + hk * ksh;");
    w(
        &mut s,
        "            for (int64_t j = 0; j < L; j++) for (int64_t c = 0; c < D; c++) kt[c * Lp + j] = kh[j * ksr + c];",
    );
    w(
        &mut s,
        "            for (int64_t c = 0; c < D; c++) for (int64_t j = L; j < Lp; j++) kt[c * Lp + j] = 0.0f;",
    );
    w(&mut s, "            have = bh;");
    w(&mut s, "        }");
    w(&mut s, "        const float *vh = V + b * vsb + hk * vsh;");
    for (bi, &n) in blocks.iter().enumerate() {
        let opener = if bi == 0 { "        " } else { " else " };
        if n == 1 {
            let _ = writeln!(s, "{opener}{{");
        } else {
            let _ = writeln!(s, "{opener}if (r + {n} <= r1 && i + {n} <= Sq) {{");
        }
        emit_rows(&mut s, n, at.is_causal, mask.is_some());
        let _ = write!(s, "            r += {n};\n        }}");
    }
    s.push('\n');
    w(&mut s, "    }");
    w(&mut s, "}");
    Ok(Some(LoweredKernel {
        call: KernelCall {
            entry,
            buffers,
            params: p.exprs,
            packed: vec![],
            max_parts: Some(rows),
        },
        source: s,
        schedule: sched,
        workload,
    }))
}

#[cfg(test)]
mod tests {
    use crate::testutil::{check, check_neon, node, rand_tensor, tt};
    use crate::{GroupValue, KernelGroup, Target};
    use carbide_ir::ndarray::{ArrayD, IxDyn};
    use carbide_ir::ops::linalg::{AttentionAttrs, LinalgOp};
    use carbide_ir::{Op, Tensor};

    fn attrs(heads: Option<(usize, usize)>, causal: bool, scale: Option<f32>) -> Op {
        Op::Linalg(LinalgOp::Attention(AttentionAttrs {
            is_causal: causal,
            q_num_heads: heads.map(|h| h.0),
            kv_num_heads: heads.map(|h| h.1),
            scale,
            ..Default::default()
        }))
    }

    fn group(op: Op, shapes: &[&[usize]], out: &[usize], feeds: Option<Vec<Tensor>>) -> (KernelGroup, Vec<Tensor>) {
        let names = ["q", "k", "v", "mask"];
        let feeds: Vec<Tensor> = feeds.unwrap_or_else(|| {
            shapes
                .iter()
                .enumerate()
                .map(|(i, s)| rand_tensor(s, 7 + i as u64))
                .collect()
        });
        let inputs = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| GroupValue {
                name: names[i].into(),
                ty: tt(s),
                constant: None,
            })
            .collect();
        let g = KernelGroup {
            nodes: vec![node("attn", op, &names[..shapes.len()], &["y"])],
            inputs,
            outputs: vec![GroupValue {
                name: "y".into(),
                ty: tt(out),
                constant: None,
            }],
        };
        (g, feeds)
    }

    fn targets() -> Vec<Target> {
        ["x86-64-avx2", "x86-64-avx512"]
            .into_iter()
            .map(|t| Target::parse(t).unwrap())
            .filter(Target::runs_on_host)
            .collect()
    }

    #[test]
    fn three_d_heads_with_mask_match_the_reference() {
        // Sq 15 (blocks of 8 and 4 and single rows with AVX-512, of 4 and
        // single rows with AVX2), L 75 (vector pairs, single vectors,
        // padding), 3 heads of 5, mask [B, 1, 1, L]; value heads of 3
        // (scalar only) and 40 (vector pairs, single vectors, remainder).
        for t in targets() {
            for dv in [3, 40] {
                let (g, feeds) = group(
                    attrs(Some((3, 3)), false, Some(0.3)),
                    &[&[2, 15, 15], &[2, 75, 15], &[2, 75, 3 * dv], &[2, 1, 1, 75]],
                    &[2, 15, 3 * dv],
                    None,
                );
                check(&g, &t, &feeds, 1e-4);
            }
        }
    }

    #[test]
    fn four_d_grouped_causal_and_default_scale_match_the_reference() {
        for t in targets() {
            let (g, feeds) = group(
                attrs(None, true, None),
                &[&[1, 4, 9, 16], &[1, 2, 9, 16], &[1, 2, 9, 20], &[9, 9]],
                &[1, 4, 9, 20],
                None,
            );
            check(&g, &t, &feeds, 1e-4);
        }
    }

    #[test]
    fn fully_masked_rows_give_zeros() {
        // Row 1 is inside a block of 4 query rows, row 4 a single one.
        let mut mask = vec![0.0f32; 5 * 40];
        mask[40..80].iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
        mask[160..200].iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
        let shapes: [&[usize]; 4] = [&[1, 2, 5, 8], &[1, 2, 40, 8], &[1, 2, 40, 8], &[5, 40]];
        let mut feeds: Vec<Tensor> = shapes[..3].iter().map(|s| rand_tensor(s, 3)).collect();
        feeds.push(Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[5, 40]), mask).unwrap()));
        for t in targets() {
            let (g, feeds) = group(attrs(None, false, None), &shapes, &[1, 2, 5, 8], Some(feeds.clone()));
            check(&g, &t, &feeds, 1e-4);
        }
    }

    #[test]
    fn short_mask_and_kv_cache_fall_back_to_the_host() {
        let t = Target::parse("x86-64-avx2").unwrap();
        let (g, _) = group(
            attrs(None, false, None),
            &[&[1, 2, 3, 8], &[1, 2, 40, 8], &[1, 2, 40, 8], &[3, 1]],
            &[1, 2, 3, 8],
            None,
        );
        assert!(crate::lower(&g, &t, None).unwrap().is_none());
        let (mut g, _) = group(
            attrs(None, false, None),
            &[&[1, 2, 3, 8], &[1, 2, 40, 8], &[1, 2, 40, 8]],
            &[1, 2, 3, 8],
            None,
        );
        g.nodes[0]
            .inputs
            .extend(["".to_string(), "pk".to_string(), "pv".to_string()]);
        assert!(crate::lower(&g, &t, None).unwrap().is_none());
    }

    #[test]
    fn neon_attention_matches_under_qemu() {
        // Sq 13: one block each of 8, 4 and 1 rows.
        let (g, feeds) = group(
            attrs(Some((2, 1)), false, None),
            &[&[1, 13, 12], &[1, 21, 6], &[1, 21, 10], &[1, 1, 13, 21]],
            &[1, 13, 20],
            None,
        );
        check_neon(&g, &feeds, 1e-4);
    }
}
