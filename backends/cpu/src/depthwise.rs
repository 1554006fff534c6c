//! Depthwise 2-D convolution (one filter per channel, `group == C == M`),
//! lowered from `conv::lower` once the epilogue chain is known.

use crate::cexpr::{slot, Params};
use crate::conv::Geometry;
use crate::group::shape_text;
use crate::target::Target;
use crate::{CodegenError, LoweredKernel};
use carbide_ir::kernel::{BufferArg, KernelCall, ParamExpr, Schedule, WeightLayout, WorkloadKey};
use carbide_ir::Dim;
use std::fmt::Write;

/// Depthwise convolution (one filter per channel): each part copies its
/// channel planes into a scratch plane whose zero border it writes once,
/// then computes output rows with vector FMAs along the width (stride 1 and
/// 2; the last partial vector masked) or scalar loops (other strides), with
/// the fused epilogue applied before the store.
#[allow(clippy::too_many_arguments)]
pub(crate) fn lower(
    g: &Geometry,
    ch: &crate::group::Chain,
    eop_strides: &[(ParamExpr, ParamExpr, i64)],
    xi: usize,
    wi: usize,
    batch_dim: &Dim,
    name: &str,
    target: &Target,
    schedule: Option<&Schedule>,
    xt: &carbide_ir::TensorType,
    wt: &carbide_ir::TensorType,
    yt: &carbide_ir::TensorType,
) -> Result<LoweredKernel, CodegenError> {
    let vw = target.vector_width();
    let default = Schedule {
        tiles: Default::default(),
        loop_order: vec!["plane".into(), "oh".into(), "ow".into()],
        vector_axis: Some("ow".into()),
        vector_width: vw,
        unroll: Default::default(),
        parallel_axis: Some("plane".into()),
        weight_layout: WeightLayout::RowMajor,
        microkernel: None,
    };
    let sched = match schedule {
        Some(s) => {
            crate::space::require_default(s, &default, name)?;
            s.clone()
        }
        None => default,
    };
    let workload = WorkloadKey {
        op: "depthwise2d".into(),
        shapes: vec![shape_text(xt), shape_text(wt), shape_text(yt)],
        dtypes: vec!["f32".into()],
        epilogue: ch.expr.describe(),
        attrs: vec![format!(
            "strides={}x{},pads={}x{},dilations={}x{}",
            g.sh, g.sw, g.ph, g.pw, g.dh, g.dw
        )],
        target: target.name().to_string(),
    };
    let entry = format!(
        "carbide_dw_{}_{}",
        workload.hex(),
        name.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(24)
            .collect::<String>()
    );
    // Padded plane: every window of every output fits, plus a vector of slack per row.
    let hp = (g.h as i64 + g.ph).max(((g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1) as i64) as usize;
    // A stride-2 vector load reads 2*VW floats from its first element.
    let wp = (g.w as i64 + g.pw).max(((g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1) as i64) as usize + 2 * vw;
    let scratch_bytes = (hp * wp * 4).div_ceil(64) * 64;
    let mut buffers = Vec::new();
    let x_slot = slot(BufferArg::Input(xi), &mut buffers);
    let w_slot = slot(BufferArg::Input(wi), &mut buffers);
    let y_slot = slot(BufferArg::Output(0), &mut buffers);
    let s_slot = slot(
        BufferArg::Scratch {
            bytes: ParamExpr::Const(scratch_bytes as i64),
            per_part: true,
        },
        &mut buffers,
    );
    let e_slots: Vec<usize> = ch
        .operands
        .iter()
        .map(|&i| slot(BufferArg::Input(i), &mut buffers))
        .collect();
    let mut p = Params::default();
    let batch = match batch_dim {
        Dim::Known(n) => ParamExpr::Const(*n as i64),
        _ => ParamExpr::InputDim { input: xi, axis: 0 },
    };
    let (c, h, w, oh, ow, kh, kw) = (g.c, g.h, g.w, g.oh, g.ow, g.kh, g.kw);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "void {entry}(void *const *bufs, const int64_t *p, int64_t part, int64_t num_parts) {{"
    );
    let _ = writeln!(s, "    (void)p;");
    let _ = writeln!(s, "    const float *X = (const float *)bufs[{x_slot}];");
    let _ = writeln!(s, "    const float *Wt = (const float *)bufs[{w_slot}];");
    let _ = writeln!(s, "    float *Y = (float *)bufs[{y_slot}];");
    let _ = writeln!(
        s,
        "    float *pad = (float *)((char *)bufs[{s_slot}] + part * (int64_t){scratch_bytes});"
    );
    for (i, sl) in e_slots.iter().enumerate() {
        let _ = writeln!(s, "    const float *E{i} = (const float *)bufs[{sl}];");
        let _ = writeln!(
            s,
            "    const int64_t esb{i} = {}, esm{i} = {};",
            p.c(eop_strides[i].0.clone()),
            p.c(eop_strides[i].1.clone())
        );
    }
    let _ = writeln!(s, "    const int64_t planes = {} * {c};", p.c(batch.clone()));
    let _ = writeln!(
        s,
        "    const int64_t q0 = planes * part / num_parts, q1 = planes * (part + 1) / num_parts;"
    );
    let _ = writeln!(s, "    for (int64_t q = q0; q < q1; q++) {{");
    let _ = writeln!(s, "        const int64_t n = q / {c}, ch = q % {c};");
    let _ = writeln!(
        s,
        "        const float *x = X + q * {}; float *y = Y + q * {}; const float *wk = Wt + ch * {};",
        h * w,
        oh * ow,
        kh * kw
    );
    // Every plane of a part has the same geometry: the zero border (and the
    // row slack) is written once per part, each plane only copies its interior.
    let _ = writeln!(s, "        if (q == q0) memset(pad, 0, sizeof(float) * {});", hp * wp);
    let _ = writeln!(s, "        for (int64_t i = 0; i < {h}; i++) memcpy(pad + (i + {}) * {wp} + {}, x + i * {w}, sizeof(float) * {w});", g.ph, g.pw);
    for i in 0..e_slots.len() {
        let _ = writeln!(s, "        const float *e{i} = E{i} + n * esb{i} + ch * esm{i};");
    }
    let vector_rows = g.sw == 1 || g.sw == 2;
    let taps = kh * kw;
    // Broadcast weights hoisted out of the row loop (they fit the register file for 3x3).
    if vector_rows {
        for t in 0..taps {
            let _ = writeln!(s, "        const vf w{t} = VSET1(wk[{t}]);");
        }
    }
    let _ = writeln!(s, "        for (int64_t i = 0; i < {oh}; i++) {{");
    let _ = writeln!(s, "            const float *prow = pad + i * {} * {wp};", g.sh);
    let _ = writeln!(s, "            float *yrow = y + i * {ow};");
    let _ = writeln!(s, "            int64_t j = 0;");
    let eop_px: Vec<i64> = eop_strides.iter().map(|e| e.2).collect();
    if vector_rows {
        // Stride 2 loads the even elements of two vectors (VLOAD_EVEN). The
        // last, partial vector of a row (all of it when the row is narrower
        // than a vector: 7x7 and 14x14 planes) reads the padded plane's row
        // slack and stores only its valid lanes.
        let (load, jx) = if g.sw == 1 {
            ("VLOAD", "j")
        } else {
            ("VLOAD_EVEN", "2 * j")
        };
        let taps_sum = |s: &mut String| {
            let _ = writeln!(s, "                vf acc = VZERO();");
            for ky in 0..kh {
                for kx in 0..kw {
                    let _ = writeln!(
                        s,
                        "                acc = VFMA(w{}, {load}(prow + {} + {jx}), acc);",
                        ky * kw + kx,
                        ky * g.dh * wp + kx * g.dw
                    );
                }
            }
        };
        let epilogue = |partial: bool| {
            let load = |i: usize| match (eop_px[i], partial) {
                (1, false) => format!("VLOAD(e{i} + i * {ow} + j)"),
                (1, true) => format!("VLOAD_PART(e{i} + i * {ow} + j, (int)({ow} - j))"),
                _ => format!("VSET1(e{i}[0])"),
            };
            crate::cexpr::emit(&ch.expr, crate::cexpr::Mode::Vector, "acc", &load)
        };
        let _ = writeln!(s, "            for (; j + VW <= {ow}; j += VW) {{");
        taps_sum(&mut s);
        let _ = writeln!(s, "                VSTORE(yrow + j, {});", epilogue(false));
        let _ = writeln!(s, "            }}");
        let _ = writeln!(s, "            if (j < {ow}) {{");
        taps_sum(&mut s);
        let _ = writeln!(
            s,
            "                VSTORE_PART(yrow + j, {}, (int)({ow} - j));",
            epilogue(true)
        );
        let _ = writeln!(s, "            }}");
    } else {
        let _ = writeln!(s, "            for (; j < {ow}; j++) {{");
        let _ = writeln!(
            s,
            "                float acc = 0.0f; const float *pw0 = prow + j * {};",
            g.sw
        );
        for ky in 0..kh {
            for kx in 0..kw {
                let _ = writeln!(
                    s,
                    "                acc += wk[{}] * pw0[{}];",
                    ky * kw + kx,
                    ky * g.dh * wp + kx * g.dw
                );
            }
        }
        let sload = |i: usize| {
            if eop_px[i] == 1 {
                format!("e{i}[i * {ow} + j]")
            } else {
                format!("e{i}[0]")
            }
        };
        let _ = writeln!(
            s,
            "                yrow[j] = {};",
            crate::cexpr::emit(&ch.expr, crate::cexpr::Mode::Scalar, "acc", &sload)
        );
        let _ = writeln!(s, "            }}");
    }
    let _ = writeln!(s, "        }}\n    }}\n}}");
    Ok(LoweredKernel {
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
    })
}
