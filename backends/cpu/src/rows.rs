//! Row-wise kernels over the trailing axes of a tensor: Softmax/LogSoftmax
//! (last axis), LayerNormalization and RMSNormalization, and ReduceSum/Mean/Max over trailing
//! axes. Each row is processed with vector loads and a scalar remainder;
//! parts split the rows.

use crate::cexpr::{flit, slot, Params};
use crate::group::{dim_param, is_f32, shape_text};
use crate::target::Target;
use crate::{CodegenError, KernelGroup, LoweredKernel};
use carbide_ir::kernel::{BufferArg, KernelCall, ParamExpr, Schedule, WeightLayout, WorkloadKey};
use carbide_ir::ops::linalg::{LinalgOp, SoftmaxKind};
use carbide_ir::ops::nn::NnOp;
use carbide_ir::ops::reduce::{ReduceKind, ReduceOp};
use carbide_ir::Op;
use std::collections::BTreeMap;
use std::fmt::Write;

enum RowOp {
    Softmax {
        log: bool,
    },
    /// `rms`: RMSNormalization (no mean subtracted, no bias).
    LayerNorm {
        rms: bool,
        eps: f32,
        scale: usize,
        bias: Option<usize>,
    },
    Reduce(ReduceKind),
}

/// Rows split across parts, each row vectorized along `inner`: the shape of
/// every row-wise kernel (softmax, norms, reductions, attention).
pub fn row_schedule(target: &Target, inner: &str) -> Schedule {
    Schedule {
        tiles: BTreeMap::new(),
        loop_order: vec!["row".into(), inner.into()],
        vector_axis: Some(inner.into()),
        vector_width: target.vector_width(),
        unroll: BTreeMap::new(),
        parallel_axis: Some("row".into()),
        weight_layout: WeightLayout::RowMajor,
        microkernel: None,
    }
}

pub fn lower(
    group: &KernelGroup,
    target: &Target,
    sched: Option<&Schedule>,
) -> Result<Option<LoweredKernel>, CodegenError> {
    if group.nodes.len() != 1 || group.outputs.len() != 1 {
        return Ok(None);
    }
    let node = &group.nodes[0];
    let find = |name: &str| group.inputs.iter().position(|v| v.name == name);
    let Some(xi) = node.inputs.first().and_then(|n| find(n)) else {
        return Ok(None);
    };
    let xt = &group.inputs[xi].ty;
    let Some(xs) = xt.shape.clone() else { return Ok(None) };
    if !is_f32(xt)
        || !is_f32(&group.outputs[0].ty)
        || xs.is_empty()
        || node.outputs.iter().skip(1).any(|o| !o.is_empty())
    {
        return Ok(None);
    }
    let rank = xs.len();
    let norm_axis = |axis: i64| -> Option<usize> {
        let a = if axis < 0 { axis + rank as i64 } else { axis };
        (0..rank as i64).contains(&a).then_some(a as usize)
    };
    let (op, axis) = match &node.op {
        Op::Linalg(LinalgOp::Softmax(a)) if a.kind != SoftmaxKind::Hardmax => {
            let Some(ax) = norm_axis(a.axis) else { return Ok(None) };
            // Opset >= 13 normalizes along `axis` only: a row kernel when it is the last axis.
            if !a.flatten && ax != rank - 1 {
                return Ok(None);
            }
            (
                RowOp::Softmax {
                    log: a.kind == SoftmaxKind::LogSoftmax,
                },
                ax,
            )
        }
        Op::Nn(NnOp::LayerNormalization { axis, epsilon, .. } | NnOp::RMSNormalization { axis, epsilon, .. }) => {
            let rms = matches!(node.op, Op::Nn(NnOp::RMSNormalization { .. }));
            let Some(ax) = norm_axis(*axis) else { return Ok(None) };
            let Some(si) = node.inputs.get(1).and_then(|n| find(n)) else {
                return Ok(None);
            };
            let bi = match node.inputs.get(2).filter(|s| !s.is_empty()) {
                Some(n) => match find(n) {
                    Some(i) => Some(i),
                    None => return Ok(None),
                },
                None => None,
            };
            // Scale and bias must cover the whole normalized shape (no broadcasting inside a row).
            for i in std::iter::once(si).chain(bi) {
                let t = &group.inputs[i].ty;
                if !is_f32(t) || t.shape.as_deref() != Some(&xs[ax..]) {
                    return Ok(None);
                }
            }
            (
                RowOp::LayerNorm {
                    rms,
                    eps: *epsilon,
                    scale: si,
                    bias: bi,
                },
                ax,
            )
        }
        Op::Reduce(ReduceOp::Reduce(a)) if matches!(a.kind, ReduceKind::Sum | ReduceKind::Mean | ReduceKind::Max) => {
            // Axes from the attribute or a constant input; they must be the trailing axes.
            let axes: Vec<i64> = match (&a.axes, node.inputs.get(1).filter(|s| !s.is_empty())) {
                (Some(v), None) => v.clone(),
                (None, Some(n)) => match find(n)
                    .and_then(|i| group.inputs[i].constant.as_ref())
                    .and_then(|t| t.to_i64_vec())
                {
                    Some(v) => v,
                    None => return Ok(None),
                },
                _ => return Ok(None),
            };
            let mut ax: Vec<usize> = match axes.iter().map(|&x| norm_axis(x)).collect::<Option<Vec<_>>>() {
                Some(v) if !v.is_empty() => v,
                _ => return Ok(None),
            };
            ax.sort_unstable();
            ax.dedup();
            if ax != (ax[0]..rank).collect::<Vec<_>>() {
                return Ok(None);
            }
            (RowOp::Reduce(a.kind), ax[0])
        }
        Op::Nn(NnOp::GlobalAveragePool) if rank >= 3 => (RowOp::Reduce(ReduceKind::Mean), 2),
        Op::Nn(NnOp::GlobalMaxPool) if rank >= 3 => (RowOp::Reduce(ReduceKind::Max), 2),
        _ => return Ok(None),
    };
    let default = row_schedule(target, "col");
    if let Some(s) = sched {
        crate::space::require_default(s, &default, &node.name)?;
    }
    let sched = default;
    let mut rows = ParamExpr::Const(1);
    for (d, dim) in xs[..axis].iter().enumerate() {
        let Some(e) = dim_param(dim, xi, d) else {
            return Ok(None);
        };
        rows = crate::cexpr::pmul(rows, e);
    }
    let mut cols = ParamExpr::Const(1);
    for (d, dim) in xs[axis..].iter().enumerate() {
        let Some(e) = dim_param(dim, xi, axis + d) else {
            return Ok(None);
        };
        cols = crate::cexpr::pmul(cols, e);
    }
    let (kind, mut attrs) = match &op {
        RowOp::Softmax { log } => (if *log { "logsoftmax" } else { "softmax" }, vec![]),
        RowOp::LayerNorm { rms, eps, bias, .. } => (
            if *rms { "rmsnorm" } else { "layernorm" },
            vec![format!("eps={eps},bias={}", bias.is_some())],
        ),
        RowOp::Reduce(k) => ("reduce", vec![format!("{k:?}")]),
    };
    attrs.push(format!("axis={axis}"));
    let workload = WorkloadKey {
        op: kind.into(),
        shapes: vec![shape_text(xt)],
        dtypes: vec!["f32".into()],
        epilogue: vec![],
        attrs,
        target: target.name().to_string(),
    };
    let entry = format!(
        "carbide_{kind}_{}_{}",
        workload.hex(),
        node.name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(24)
            .collect::<String>()
    );
    let mut buffers = Vec::new();
    let x_slot = slot(BufferArg::Input(xi), &mut buffers);
    let y_slot = slot(BufferArg::Output(0), &mut buffers);
    let mut p = Params::default();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "void {entry}(void *const *bufs, const int64_t *p, int64_t part, int64_t num_parts) {{"
    );
    let _ = writeln!(s, "    (void)p;");
    let _ = writeln!(s, "    const float *X = (const float *)bufs[{x_slot}];");
    let _ = writeln!(s, "    float *Y = (float *)bufs[{y_slot}];");
    let _ = writeln!(
        s,
        "    const int64_t rows = {}, L = {};",
        p.c(rows.clone()),
        p.c(cols.clone())
    );
    let out_cols = if matches!(op, RowOp::Reduce(_)) { "1" } else { "L" };
    let _ = writeln!(
        s,
        "    const int64_t r0 = rows * part / num_parts, r1 = rows * (part + 1) / num_parts;"
    );
    let _ = writeln!(s, "    for (int64_t r = r0; r < r1; r++) {{");
    let _ = writeln!(s, "        const float *x = X + r * L; float *y = Y + r * {out_cols};");
    let _ = writeln!(s, "        int64_t j;");
    match &op {
        RowOp::Softmax { log } => {
            let _ = writeln!(s, "        vf vm = VSET1(-INFINITY); float m = -INFINITY;");
            let _ = writeln!(
                s,
                "        for (j = 0; j + VW <= L; j += VW) vm = VMAX(vm, VLOAD(x + j));"
            );
            let _ = writeln!(s, "        if (L >= VW) m = VHMAX(vm);");
            let _ = writeln!(s, "        for (; j < L; j++) m = fmaxf(m, x[j]);");
            let _ = writeln!(s, "        vf vs = VZERO(); float sum = 0.0f; const vf vmx = VSET1(m);");
            let _ = writeln!(s, "        for (j = 0; j + VW <= L; j += VW) {{ vf e = v_exp(VSUB(VLOAD(x + j), vmx)); vs = VADD(vs, e); VSTORE(y + j, e); }}");
            let _ = writeln!(s, "        sum = VHSUM(vs);");
            let _ = writeln!(
                s,
                "        for (; j < L; j++) {{ float e = expf(x[j] - m); sum += e; y[j] = e; }}"
            );
            if *log {
                let _ = writeln!(s, "        const float sh = m + logf(sum);");
                let _ = writeln!(
                    s,
                    "        for (j = 0; j + VW <= L; j += VW) VSTORE(y + j, VSUB(VLOAD(x + j), VSET1(sh)));"
                );
                let _ = writeln!(s, "        for (; j < L; j++) y[j] = x[j] - sh;");
            } else {
                let _ = writeln!(s, "        const float inv = 1.0f / sum; const vf vinv = VSET1(inv);");
                let _ = writeln!(
                    s,
                    "        for (j = 0; j + VW <= L; j += VW) VSTORE(y + j, VMUL(VLOAD(y + j), vinv));"
                );
                let _ = writeln!(s, "        for (; j < L; j++) y[j] *= inv;");
            }
        }
        RowOp::LayerNorm { rms, eps, scale, bias } => {
            let sc = slot(BufferArg::Input(*scale), &mut buffers);
            let _ = writeln!(s, "        const float *g = (const float *)bufs[{sc}];");
            let badd = match bias {
                Some(b) => {
                    let bs = slot(BufferArg::Input(*b), &mut buffers);
                    let _ = writeln!(s, "        const float *bb = (const float *)bufs[{bs}];");
                    ("VLOAD(bb + j)", "bb[j]")
                }
                None => ("VZERO()", "0.0f"),
            };
            // One pass for both moments, two accumulator pairs for ILP. The
            // mean form sums d = x - x[0] and d^2: the shift keeps
            // E[d^2] - E[d]^2 from cancelling when the mean is large
            // against the spread.
            let shift = if *rms { "0.0f" } else { "(L > 0 ? x[0] : 0.0f)" };
            let _ = writeln!(s, "        const float k = {shift}; const vf vk = VSET1(k);");
            let _ = writeln!(
                s,
                "        vf vs0 = VZERO(), vs1 = VZERO(), vq0 = VZERO(), vq1 = VZERO(); float sum = 0.0f, sq = 0.0f;"
            );
            let _ = writeln!(s, "        for (j = 0; j + 2 * VW <= L; j += 2 * VW) {{");
            let _ = writeln!(
                s,
                "            const vf d0 = VSUB(VLOAD(x + j), vk), d1 = VSUB(VLOAD(x + j + VW), vk);"
            );
            let _ = writeln!(
                s,
                "            vs0 = VADD(vs0, d0); vs1 = VADD(vs1, d1); vq0 = VFMA(d0, d0, vq0); vq1 = VFMA(d1, d1, vq1);"
            );
            let _ = writeln!(s, "        }}");
            let _ = writeln!(s, "        for (; j + VW <= L; j += VW) {{ const vf d = VSUB(VLOAD(x + j), vk); vs0 = VADD(vs0, d); vq0 = VFMA(d, d, vq0); }}");
            let _ = writeln!(s, "        sum = VHSUM(VADD(vs0, vs1)); sq = VHSUM(VADD(vq0, vq1));");
            let _ = writeln!(
                s,
                "        for (; j < L; j++) {{ const float d = x[j] - k; sum += d; sq += d * d; }}"
            );
            if *rms {
                let _ = writeln!(s, "        const float mean = 0.0f, var = sq / (float)L; (void)sum;");
            } else {
                let _ = writeln!(s, "        const float ms = sum / (float)L, mean = k + ms;");
                let _ = writeln!(s, "        const float var = fmaxf(sq / (float)L - ms * ms, 0.0f);");
            }
            let _ = writeln!(s, "        const vf vmean = VSET1(mean);");
            let _ = writeln!(
                s,
                "        const float rstd = 1.0f / sqrtf(var + {}); const vf vr = VSET1(rstd);",
                flit(*eps)
            );
            let _ = writeln!(s, "        for (j = 0; j + VW <= L; j += VW) VSTORE(y + j, VFMA(VMUL(VSUB(VLOAD(x + j), vmean), vr), VLOAD(g + j), {}));", badd.0);
            let _ = writeln!(
                s,
                "        for (; j < L; j++) y[j] = (x[j] - mean) * rstd * g[j] + {};",
                badd.1
            );
        }
        RowOp::Reduce(k) => {
            let max = *k == ReduceKind::Max;
            let (init, vop, sop) = if max {
                ("-INFINITY", "VMAX", "fmaxf")
            } else {
                ("0.0f", "VADD", "")
            };
            let _ = writeln!(s, "        vf va = VSET1({init}); float a = {init};");
            let _ = writeln!(
                s,
                "        for (j = 0; j + VW <= L; j += VW) va = {vop}(va, VLOAD(x + j));"
            );
            let _ = writeln!(
                s,
                "        if (L >= VW) a = {};",
                if max { "VHMAX(va)" } else { "VHSUM(va)" }
            );
            if max {
                let _ = writeln!(s, "        for (; j < L; j++) a = {sop}(a, x[j]);");
            } else {
                let _ = writeln!(s, "        for (; j < L; j++) a += x[j];");
            }
            if *k == ReduceKind::Mean {
                let _ = writeln!(s, "        a /= (float)L;");
            }
            let _ = writeln!(s, "        y[0] = a;");
        }
    }
    let _ = writeln!(s, "    }}\n}}");
    Ok(Some(LoweredKernel {
        call: KernelCall {
            entry,
            buffers,
            params: p.exprs,
            packed: vec![],
            // A row's few passes run at about 8 elements per ns.
            max_parts: Some(crate::cexpr::parts_for_work(
                rows.clone(),
                crate::cexpr::pmul(rows, cols),
                8,
            )),
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
    use carbide_ir::ops::linalg::{LinalgOp, SoftmaxAttrs, SoftmaxKind};
    use carbide_ir::ops::nn::NnOp;
    use carbide_ir::ops::reduce::{ReduceAttrs, ReduceKind, ReduceOp};
    use carbide_ir::{Op, Tensor};

    fn one(op: Op, x: &[usize], extra: Vec<(GroupValue, Tensor)>, out: &[usize]) -> (KernelGroup, Vec<Tensor>) {
        let tx = rand_tensor(x, 5);
        let mut inputs = vec![GroupValue {
            name: "x".into(),
            ty: tt(x),
            constant: None,
        }];
        let mut feeds = vec![tx];
        let mut names = vec!["x".to_string()];
        for (g, t) in extra {
            names.push(g.name.clone());
            inputs.push(g);
            feeds.push(t);
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        (
            KernelGroup {
                nodes: vec![node("n", op, &names, &["y"])],
                inputs,
                outputs: vec![GroupValue {
                    name: "y".into(),
                    ty: tt(out),
                    constant: None,
                }],
            },
            feeds,
        )
    }

    fn cases() -> Vec<(KernelGroup, Vec<Tensor>)> {
        let mut v = Vec::new();
        for (kind, shape) in [
            (SoftmaxKind::Softmax, vec![3, 4, 37]),
            (SoftmaxKind::LogSoftmax, vec![5, 7]),
            (SoftmaxKind::Softmax, vec![2, 64]),
        ] {
            v.push(one(
                Op::Linalg(LinalgOp::Softmax(SoftmaxAttrs {
                    kind,
                    axis: -1,
                    flatten: false,
                })),
                &shape,
                vec![],
                &shape,
            ));
        }
        for (shape, bias) in [(vec![2, 5, 48], true), (vec![3, 19], false)] {
            let l = *shape.last().unwrap();
            let (s, b) = (rand_tensor(&[l], 6), rand_tensor(&[l], 7));
            let mut extra = vec![(
                GroupValue {
                    name: "s".into(),
                    ty: tt(&[l]),
                    constant: Some(s.clone()),
                },
                s,
            )];
            if bias {
                extra.push((
                    GroupValue {
                        name: "b".into(),
                        ty: tt(&[l]),
                        constant: None,
                    },
                    b,
                ));
            }
            if !bias {
                // RMSNormalization takes X and scale only.
                v.push(one(
                    Op::Nn(NnOp::RMSNormalization {
                        axis: -1,
                        epsilon: 1e-6,
                        stash_type: 1,
                    }),
                    &shape,
                    extra.clone(),
                    &shape,
                ));
            }
            v.push(one(
                Op::Nn(NnOp::LayerNormalization {
                    axis: -1,
                    epsilon: 1e-5,
                    stash_type: 1,
                }),
                &shape,
                extra,
                &shape,
            ));
        }
        for kind in [ReduceKind::Sum, ReduceKind::Mean, ReduceKind::Max] {
            let attrs = ReduceAttrs {
                kind,
                axes: Some(vec![2, 3]),
                keepdims: true,
                noop_with_empty_axes: false,
            };
            v.push(one(
                Op::Reduce(ReduceOp::Reduce(attrs)),
                &[2, 3, 5, 7],
                vec![],
                &[2, 3, 1, 1],
            ));
        }
        // A mean far from zero against a unit spread: the one-pass moments must not cancel.
        let (g, mut feeds) = v[3].clone();
        if let Tensor::F32(a) = &mut feeds[0] {
            a.mapv_inplace(|x| 8.0 + x);
        }
        v.push((g, feeds));
        v.push(one(
            Op::Nn(NnOp::GlobalAveragePool),
            &[2, 3, 7, 7],
            vec![],
            &[2, 3, 1, 1],
        ));
        v.push(one(Op::Nn(NnOp::GlobalMaxPool), &[1, 4, 5, 3], vec![], &[1, 4, 1, 1]));
        v
    }

    #[test]
    fn row_kernels_match_reference() {
        let t = Target::host().unwrap();
        for (g, feeds) in cases() {
            check(&g, &t, &feeds, 1e-5);
        }
    }

    #[test]
    fn neon_row_kernels_under_qemu() {
        for (g, feeds) in cases().into_iter().step_by(3) {
            check_neon(&g, &feeds, 1e-5);
        }
    }
}
