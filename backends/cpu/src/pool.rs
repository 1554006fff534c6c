//! 2-D MaxPool / AveragePool over NCHW: one task per (n, c) plane, split
//! across parts; windows with pads, strides, dilations and ceil_mode come
//! from the IR's shared window geometry.

use crate::cexpr::{slot, Params};
use crate::group::{is_f32, shape_text};
use crate::target::Target;
use crate::{CodegenError, KernelGroup, LoweredKernel};
use carbide_ir::kernel::{BufferArg, KernelCall, ParamExpr, Schedule, WeightLayout, WorkloadKey};
use carbide_ir::ops::nn::{NnOp, Window};
use carbide_ir::{Dim, Op};
use std::collections::BTreeMap;
use std::fmt::Write;

pub fn lower(
    group: &KernelGroup,
    target: &Target,
    sched: Option<&Schedule>,
) -> Result<Option<LoweredKernel>, CodegenError> {
    if group.nodes.len() != 1 || group.outputs.len() != 1 {
        return Ok(None);
    }
    let node = &group.nodes[0];
    let (attrs, max) = match &node.op {
        Op::Nn(NnOp::MaxPool(a)) => (a, true),
        Op::Nn(NnOp::AveragePool(a)) => (a, false),
        _ => return Ok(None),
    };
    if node.outputs.iter().skip(1).any(|o| !o.is_empty()) || attrs.kernel_shape.len() != 2 {
        return Ok(None);
    }
    let Some(xi) = group.inputs.iter().position(|v| Some(&v.name) == node.inputs.first()) else {
        return Ok(None);
    };
    let xt = &group.inputs[xi].ty;
    let Some(xs) = xt.shape.clone() else { return Ok(None) };
    if !is_f32(xt) || xs.len() != 4 {
        return Ok(None);
    }
    let (Some(c), Some(h), Some(w)) = (xs[1].known(), xs[2].known(), xs[3].known()) else {
        return Ok(None);
    };
    let Ok(win) = Window::new(
        2,
        attrs.auto_pad,
        &attrs.pads,
        &attrs.strides,
        &attrs.dilations,
        attrs.ceil_mode,
    ) else {
        return Ok(None);
    };
    let (kh, kw) = (attrs.kernel_shape[0] as usize, attrs.kernel_shape[1] as usize);
    let Ok(geo) = win.resolve(&[h, w], &[kh, kw]) else {
        return Ok(None);
    };
    let (oh, ow) = (geo[0].out, geo[1].out);
    let batch = match &xs[0] {
        Dim::Known(n) => ParamExpr::Const(*n as i64),
        Dim::Sym(_) => ParamExpr::InputDim { input: xi, axis: 0 },
        Dim::Unknown => return Ok(None),
    };
    let default = Schedule {
        tiles: BTreeMap::new(),
        loop_order: vec!["plane".into(), "oh".into(), "ow".into()],
        vector_axis: None,
        vector_width: target.vector_width(),
        unroll: BTreeMap::new(),
        parallel_axis: Some("plane".into()),
        weight_layout: WeightLayout::RowMajor,
        microkernel: None,
    };
    if let Some(s) = sched {
        crate::space::require_default(s, &default, &node.name)?;
    }
    let sched = default;
    let workload = WorkloadKey {
        op: if max { "maxpool2d".into() } else { "avgpool2d".into() },
        shapes: vec![shape_text(xt)],
        dtypes: vec!["f32".into()],
        epilogue: vec![],
        attrs: vec![
            format!(
                "{:?}",
                geo.iter()
                    .map(|g| (g.kernel, g.stride, g.dilation, g.pad_begin, g.pad_end))
                    .collect::<Vec<_>>()
            ),
            format!("count_include_pad={}", attrs.count_include_pad),
        ],
        target: target.name().to_string(),
    };
    let entry = format!(
        "carbide_pool_{}_{}",
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
    let (sh, sw, dh, dw) = (geo[0].stride, geo[1].stride, geo[0].dilation, geo[1].dilation);
    let (ph, pw, peh, pew) = (geo[0].pad_begin, geo[1].pad_begin, geo[0].pad_end, geo[1].pad_end);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "void {entry}(void *const *bufs, const int64_t *p, int64_t part, int64_t num_parts) {{"
    );
    let _ = writeln!(s, "    (void)p;");
    let _ = writeln!(s, "    const float *X = (const float *)bufs[{x_slot}];");
    let _ = writeln!(s, "    float *Y = (float *)bufs[{y_slot}];");
    let _ = writeln!(s, "    const int64_t planes = {} * {c};", p.c(batch.clone()));
    let _ = writeln!(
        s,
        "    const int64_t q0 = planes * part / num_parts, q1 = planes * (part + 1) / num_parts;"
    );
    let _ = writeln!(s, "    for (int64_t q = q0; q < q1; q++) {{");
    let _ = writeln!(
        s,
        "        const float *x = X + q * {}; float *y = Y + q * {};",
        h * w,
        oh * ow
    );
    let _ = writeln!(
        s,
        "        for (int64_t i = 0; i < {oh}; i++) for (int64_t j = 0; j < {ow}; j++) {{"
    );
    let _ = writeln!(
        s,
        "            float acc = {}; int64_t cnt = 0, cnt_pad = 0;",
        if max { "-INFINITY" } else { "0.0f" }
    );
    let _ = writeln!(s, "            for (int64_t ky = 0; ky < {kh}; ky++) {{");
    let _ = writeln!(s, "                const int64_t ih = i * {sh} - {ph} + ky * {dh};");
    let _ = writeln!(s, "                for (int64_t kx = 0; kx < {kw}; kx++) {{");
    let _ = writeln!(s, "                    const int64_t iw = j * {sw} - {pw} + kx * {dw};");
    let _ = writeln!(
        s,
        "                    if (ih >= -{ph} && ih < {h} + {peh} && iw >= -{pw} && iw < {w} + {pew}) cnt_pad++;"
    );
    let _ = writeln!(
        s,
        "                    if (ih < 0 || ih >= {h} || iw < 0 || iw >= {w}) continue;"
    );
    if max {
        let _ = writeln!(s, "                    acc = fmaxf(acc, x[ih * {w} + iw]); cnt++;");
    } else {
        let _ = writeln!(s, "                    acc += x[ih * {w} + iw]; cnt++;");
    }
    let _ = writeln!(s, "                }}\n            }}");
    if max {
        let _ = writeln!(s, "            (void)cnt_pad; y[i * {ow} + j] = acc;");
    } else if attrs.count_include_pad {
        let _ = writeln!(s, "            (void)cnt; y[i * {ow} + j] = acc / (float)cnt_pad;");
    } else {
        let _ = writeln!(s, "            (void)cnt_pad; y[i * {ow} + j] = acc / (float)cnt;");
    }
    let _ = writeln!(s, "        }}\n    }}\n}}");
    Ok(Some(LoweredKernel {
        call: KernelCall {
            entry,
            buffers,
            params: p.exprs,
            packed: vec![],
            max_parts: Some(ParamExpr::Mul(Box::new(batch), Box::new(ParamExpr::Const(c as i64)))),
        },
        source: s,
        schedule: sched,
        workload,
    }))
}

#[cfg(test)]
mod tests {
    use crate::testutil::{check, node, rand_tensor, tt};
    use crate::{GroupValue, KernelGroup, Target};
    use carbide_ir::ops::nn::{AutoPad, NnOp, PoolAttrs};
    use carbide_ir::Op;

    #[test]
    fn pools_match_reference() {
        let t = Target::host().unwrap();
        let mk = |k: [i64; 2], s: [i64; 2], pads: [i64; 4], ceil: bool, cip: bool| PoolAttrs {
            auto_pad: AutoPad::NotSet,
            ceil_mode: ceil,
            dilations: None,
            kernel_shape: k.to_vec(),
            pads: Some(pads.to_vec()),
            strides: Some(s.to_vec()),
            storage_order: 0,
            count_include_pad: cip,
            p: 2.0,
        };
        let cases = [
            (
                Op::Nn(NnOp::MaxPool(mk([3, 3], [2, 2], [1, 1, 1, 1], false, false))),
                [1, 3, 12, 12],
            ),
            (
                Op::Nn(NnOp::MaxPool(mk([3, 3], [2, 2], [0, 0, 0, 0], true, false))),
                [2, 2, 13, 10],
            ),
            (
                Op::Nn(NnOp::AveragePool(mk([3, 3], [1, 1], [1, 1, 1, 1], false, false))),
                [1, 3, 7, 7],
            ),
            (
                Op::Nn(NnOp::AveragePool(mk([2, 3], [2, 1], [1, 0, 1, 2], false, true))),
                [1, 2, 9, 6],
            ),
        ];
        for (op, x) in cases {
            // The reference gives the output shape.
            let g0 = KernelGroup {
                nodes: vec![node("pool", op.clone(), &["x"], &["y"])],
                inputs: vec![GroupValue {
                    name: "x".into(),
                    ty: tt(&x),
                    constant: None,
                }],
                outputs: vec![GroupValue {
                    name: "y".into(),
                    ty: tt(&[0]),
                    constant: None,
                }],
            };
            let feeds = vec![rand_tensor(&x, 3)];
            let out = crate::testutil::reference(&g0, &feeds);
            let mut g = g0.clone();
            g.outputs[0].ty = tt(out.shape());
            check(&g, &t, &feeds, 1e-5);
        }
    }
}
