//! Depthwise 2-D convolution (one filter per channel, `group == C == M`),
//! lowered from `conv::lower` once the epilogue chain is known.

use crate::cexpr::Params;
use crate::conv::{batch_param, conv_slots, ConvSlots, Geometry};
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
    let vector_rows = g.sw == 1 || g.sw == 2;
    // Blocks of 2 output rows by default: the tuner picked 2 or 4 rows for
    // every one of mobilenet_v2's depthwise convs (fewer loads per FMA).
    let default_rows = if vector_rows && g.oh >= 2 { 2 } else { 1 };
    let default = Schedule {
        tiles: if default_rows > 1 {
            [("oh".to_string(), default_rows)].into_iter().collect()
        } else {
            Default::default()
        },
        loop_order: vec!["plane".into(), "oh".into(), "ow".into()],
        vector_axis: Some("ow".into()),
        vector_width: vw,
        unroll: Default::default(),
        parallel_axis: Some("plane".into()),
        weight_layout: WeightLayout::RowMajor,
        microkernel: None,
    };
    let sched = schedule.cloned().unwrap_or_else(|| default.clone());
    let knobs = check_schedule(&sched, &default, vector_rows, name)?;
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
    let (buffers, slots) = conv_slots(xi, BufferArg::Input(wi), scratch_bytes, &ch.operands);
    let ConvSlots {
        scratch: s_slot,
        epilogue: ref e_slots,
        ..
    } = slots;
    let mut p = Params::default();
    let batch = batch_param(batch_dim, xi);
    let (c, h, w, oh, ow, kh, kw) = (g.c, g.h, g.w, g.oh, g.ow, g.kh, g.kw);
    let mut s = String::new();
    slots.emit_entry(&mut s, &entry, "Wt");
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
    let eop_px: Vec<i64> = eop_strides.iter().map(|e| e.2).collect();
    if vector_rows {
        // Broadcast weights hoisted out of the row loop (they fit the register file for 3x3).
        for t in 0..kh * kw {
            let _ = writeln!(s, "        const vf w{t} = VSET1(wk[{t}]);");
        }
        let rows = DwBlock {
            g,
            wp,
            expr: &ch.expr,
            eop_px: &eop_px,
        };
        // Blocks of `row_block` output rows, then the leftover rows one by one.
        let _ = writeln!(s, "        int64_t i = 0;");
        if knobs.row_block > 1 {
            let _ = writeln!(s, "        for (; i + {0} <= {oh}; i += {0}) {{", knobs.row_block);
            rows.emit_row_block(&mut s, knobs.row_block, knobs.vectors);
            let _ = writeln!(s, "        }}");
        }
        let _ = writeln!(s, "        for (; i < {oh}; i++) {{");
        rows.emit_row_block(&mut s, 1, knobs.vectors);
        let _ = writeln!(s, "        }}");
    } else {
        let _ = writeln!(s, "        for (int64_t i = 0; i < {oh}; i++) {{");
        let _ = writeln!(s, "            const float *prow = pad + i * {} * {wp};", g.sh);
        let _ = writeln!(s, "            float *yrow = y + i * {ow};");
        let _ = writeln!(s, "            for (int64_t j = 0; j < {ow}; j++) {{");
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
        let _ = writeln!(s, "            }}\n        }}");
    }
    let _ = writeln!(s, "    }}\n}}");
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

/// Output rows per register block (`tiles["oh"]`) the template generates.
pub(crate) const ROW_BLOCKS: [usize; 3] = [1, 2, 4];
/// Vectors per row and step (`unroll["ow"]`) the template generates.
pub(crate) const ROW_VECTORS: [usize; 3] = [1, 2, 4];

/// The schedule knobs of a depthwise kernel (see `space.rs`).
struct DwKnobs {
    row_block: usize,
    vectors: usize,
}

/// Accepts `s` when it is `default` except for the two register-blocking
/// knobs, with values the template generates; rejects it naming the field
/// otherwise.
fn check_schedule(s: &Schedule, default: &Schedule, vector_rows: bool, name: &str) -> Result<DwKnobs, CodegenError> {
    let mut rest = s.clone();
    rest.tiles = default.tiles.clone();
    rest.unroll = default.unroll.clone();
    crate::space::require_default(&rest, default, name)?;
    let bad = |why: String| CodegenError::BadSchedule {
        kernel: name.to_string(),
        why,
    };
    if let Some(other) = s.tiles.keys().find(|k| k.as_str() != "oh") {
        return Err(bad(format!(
            "no loop '{other}' to tile (depthwise tiles only oh: output rows per register block)"
        )));
    }
    if let Some(other) = s.unroll.keys().find(|k| k.as_str() != "ow") {
        return Err(bad(format!(
            "cannot unroll loop '{other}' (depthwise unrolls only ow: vectors per row step)"
        )));
    }
    let knobs = DwKnobs {
        row_block: s.tile("oh", 1),
        vectors: s.unroll_of("ow"),
    };
    if !ROW_BLOCKS.contains(&knobs.row_block) {
        return Err(bad(format!("oh tile {} is not one of {ROW_BLOCKS:?}", knobs.row_block)));
    }
    if !ROW_VECTORS.contains(&knobs.vectors) {
        return Err(bad(format!(
            "ow unroll {} is not one of {ROW_VECTORS:?}",
            knobs.vectors
        )));
    }
    if !vector_rows && (knobs.row_block > 1 || knobs.vectors > 1) {
        return Err(bad(
            "rows with a column stride above 2 run scalar: no oh tile or ow unroll".into(),
        ));
    }
    Ok(knobs)
}

/// Emits the vector row code of a depthwise kernel.
struct DwBlock<'a> {
    g: &'a Geometry,
    /// Padded plane row length.
    wp: usize,
    expr: &'a carbide_ir::kernel::Expr,
    /// Per epilogue operand: 1 when it varies per pixel, 0 when per channel.
    eop_px: &'a [i64],
}

impl DwBlock<'_> {
    /// The `rows` output rows from row `i` (a C variable): whole steps of
    /// `vectors` vectors, then single vectors, then the row's partial
    /// vector (which reads the padded plane's row slack and stores only its
    /// valid lanes).
    fn emit_row_block(&self, s: &mut String, rows: usize, vectors: usize) {
        let ow = self.g.ow;
        let _ = writeln!(
            s,
            "            const float *prow = pad + i * {} * {};",
            self.g.sh, self.wp
        );
        let _ = writeln!(s, "            int64_t j = 0;");
        if vectors > 1 {
            let _ = writeln!(
                s,
                "            for (; j + {vectors} * VW <= {ow}; j += {vectors} * VW) {{"
            );
            self.emit_step(s, rows, vectors, false);
            let _ = writeln!(s, "            }}");
        }
        let _ = writeln!(s, "            for (; j + VW <= {ow}; j += VW) {{");
        self.emit_step(s, rows, 1, false);
        let _ = writeln!(s, "            }}");
        let _ = writeln!(s, "            if (j < {ow}) {{");
        self.emit_step(s, rows, 1, true);
        let _ = writeln!(s, "            }}");
    }

    /// One step: `rows x vectors` accumulators from column `j`. Each input
    /// vector is loaded once and feeds every output row whose window covers
    /// its plane row (at stride 1, a 3x3 block of 2 rows loads 4 input rows
    /// instead of 6); each accumulator sums its taps in (ky, kx) order, so
    /// every blocking gives the same bits.
    fn emit_step(&self, s: &mut String, rows: usize, vectors: usize, partial: bool) {
        let g = self.g;
        let (load, scale) = if g.sw == 1 {
            ("VLOAD", "")
        } else {
            ("VLOAD_EVEN", "2 * ")
        };
        let acc = |r: usize, u: usize| format!("a{r}_{u}");
        for r in 0..rows {
            let vars: Vec<String> = (0..vectors).map(|u| format!("{} = VZERO()", acc(r, u))).collect();
            let _ = writeln!(s, "                vf {};", vars.join(", "));
        }
        let span = (rows - 1) * g.sh + (g.kh - 1) * g.dh + 1;
        for ir in 0..span {
            // (output row, kernel row) pairs that read plane row `ir`.
            let users: Vec<(usize, usize)> = (0..rows)
                .filter_map(|r| {
                    let d = ir.checked_sub(r * g.sh)?;
                    (d % g.dh == 0 && d / g.dh < g.kh).then_some((r, d / g.dh))
                })
                .collect();
            if users.is_empty() {
                continue;
            }
            for kx in 0..g.kw {
                for u in 0..vectors {
                    let _ = writeln!(
                        s,
                        "                {{ const vf xv = {load}(prow + {} + {scale}(j + {u} * VW));",
                        ir * self.wp + kx * g.dw
                    );
                    for &(r, ky) in &users {
                        let _ = writeln!(
                            s,
                            "                  {0} = VFMA(w{1}, xv, {0});",
                            acc(r, u),
                            ky * g.kw + kx
                        );
                    }
                    let _ = writeln!(s, "                }}");
                }
            }
        }
        let ow = g.ow;
        for r in 0..rows {
            for u in 0..vectors {
                let at = format!("(i + {r}) * {ow} + j + {u} * VW");
                let eload = |e: usize| match (self.eop_px[e], partial) {
                    (1, false) => format!("VLOAD(e{e} + {at})"),
                    (1, true) => format!("VLOAD_PART(e{e} + {at}, (int)({ow} - j))"),
                    _ => format!("VSET1(e{e}[0])"),
                };
                let v = crate::cexpr::emit(self.expr, crate::cexpr::Mode::Vector, &acc(r, u), &eload);
                if partial {
                    let _ = writeln!(s, "                VSTORE_PART(y + {at}, {v}, (int)({ow} - j));");
                } else {
                    let _ = writeln!(s, "                VSTORE(y + {at}, {v});");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{check_neon_with, check_with, node, rand_tensor, tt};
    use crate::{lower, schedule_space, CodegenError, GroupValue, KernelGroup, Target};
    use carbide_ir::kernel::Schedule;
    use carbide_ir::ops::elementwise::{Binary, ElementwiseOp, Unary};
    use carbide_ir::ops::nn::{ConvAttrs, NnOp};
    use carbide_ir::{Op, Tensor};

    /// A depthwise conv of `x` ([n, c, h, w]) with a k x k kernel, bias, a
    /// residual add and `act`.
    fn depthwise(x: [usize; 4], k: usize, stride: i64, pad: i64, dil: i64, act: Unary) -> (KernelGroup, Vec<Tensor>) {
        let c = x[1];
        let out_dim = |d: usize| ((d as i64 + 2 * pad - dil * (k as i64 - 1) - 1) / stride + 1) as usize;
        let out = [x[0], c, out_dim(x[2]), out_dim(x[3])];
        let wshape = [c, 1, k, k];
        let feeds = vec![
            rand_tensor(&x, 1),
            rand_tensor(&wshape, 2),
            rand_tensor(&[c], 3),
            rand_tensor(&out, 4),
        ];
        let attrs = ConvAttrs {
            group: c as i64,
            pads: Some(vec![pad; 4]),
            strides: Some(vec![stride; 2]),
            dilations: Some(vec![dil; 2]),
            ..Default::default()
        };
        let value = |name: &str, shape: &[usize], constant: Option<&Tensor>| GroupValue {
            name: name.into(),
            ty: tt(shape),
            constant: constant.cloned(),
        };
        let add = Op::Elementwise(ElementwiseOp::Binary {
            op: Binary::Add,
            legacy_axis: None,
        });
        let g = KernelGroup {
            nodes: vec![
                node("dw", Op::Nn(NnOp::Conv(attrs)), &["x", "w", "b"], &["y0"]),
                node("res", add, &["y0", "r"], &["y1"]),
                node("act", Op::Elementwise(ElementwiseOp::Unary(act)), &["y1"], &["y"]),
            ],
            inputs: vec![
                value("x", &x, None),
                value("w", &wshape, Some(&feeds[1])),
                value("b", &[c], Some(&feeds[2])),
                value("r", &out, None),
            ],
            outputs: vec![value("y", &out, None)],
        };
        (g, feeds)
    }

    /// Vector-row cases: leftover rows after 2- and 4-row blocks, rows of
    /// several whole vectors plus a partial one, stride 2, 5x5, dilation.
    fn vector_cases() -> Vec<(KernelGroup, Vec<Tensor>)> {
        vec![
            depthwise([1, 5, 13, 37], 3, 1, 1, 1, Unary::Relu),
            depthwise([2, 3, 11, 75], 3, 2, 1, 1, Unary::Relu),
            depthwise([1, 4, 15, 21], 5, 2, 2, 1, Unary::HardSwish),
            depthwise([1, 3, 12, 40], 3, 1, 2, 2, Unary::Sigmoid),
        ]
    }

    fn blocked(base: &Schedule, rows: usize, vectors: usize) -> Schedule {
        let mut s = base.clone();
        s.tiles.insert("oh".into(), rows);
        s.unroll.insert("ow".into(), vectors);
        s
    }

    #[test]
    fn every_schedule_in_the_space_matches_the_reference() {
        for t in ["x86-64-avx2", "x86-64-avx512"].map(|t| Target::parse(t).unwrap()) {
            if !t.runs_on_host() {
                continue;
            }
            for (g, feeds) in vector_cases() {
                let space = schedule_space(&g, &t).unwrap();
                assert_eq!(space.len(), 9, "3 row blocks x 3 vector counts");
                assert_eq!(Some(&space[0]), crate::default_schedule(&g, &t).unwrap().as_ref());
                for s in &space {
                    let k = check_with(&g, &t, Some(s), &feeds, 1e-4);
                    assert_eq!(&k.schedule, s);
                }
            }
        }
    }

    #[test]
    fn every_knob_changes_the_generated_code() {
        let t = Target::parse("x86-64-avx512").unwrap();
        let (g, _) = vector_cases().remove(0);
        let space = schedule_space(&g, &t).unwrap();
        let sources: Vec<String> = space
            .iter()
            .map(|s| lower(&g, &t, Some(s)).unwrap().unwrap().source)
            .collect();
        for (i, a) in sources.iter().enumerate() {
            for b in &sources[i + 1..] {
                assert_ne!(a, b, "two schedules generated the same code");
            }
        }
    }

    #[test]
    fn unsupported_knobs_are_rejected_with_the_field() {
        let t = Target::parse("x86-64-avx512").unwrap();
        let (g, _) = vector_cases().remove(0);
        let base = crate::default_schedule(&g, &t).unwrap().unwrap();
        let reject = |g: &KernelGroup, s: Schedule, field: &str| match lower(g, &t, Some(&s)) {
            Err(CodegenError::BadSchedule { why, .. }) => assert!(why.contains(field), "{why}"),
            other => panic!(
                "{s:?} should be rejected, got {:?}",
                other.map(|k| k.map(|k| k.schedule))
            ),
        };
        reject(&g, blocked(&base, 3, 1), "oh tile 3");
        reject(&g, blocked(&base, 1, 8), "ow unroll 8");
        let mut s = base.clone();
        s.tiles.insert("m".into(), 4);
        reject(&g, s, "'m'");
        let mut s = base.clone();
        s.unroll.insert("oh".into(), 2);
        reject(&g, s, "'oh'");
        let mut s = base.clone();
        s.parallel_axis = None;
        reject(&g, s, "parallel_axis");
        // Stride 3 runs scalar: only its default schedule exists.
        let (g3, feeds) = depthwise([1, 4, 14, 20], 3, 3, 1, 1, Unary::Relu);
        let space = schedule_space(&g3, &t).unwrap();
        assert_eq!(space.len(), 1);
        reject(&g3, blocked(&space[0], 2, 1), "scalar");
        if t.runs_on_host() {
            check_with(&g3, &t, None, &feeds, 1e-4);
        }
    }

    #[test]
    fn neon_blocked_rows_under_qemu() {
        let t = Target::parse("aarch64-neon").unwrap();
        for (g, feeds) in vector_cases().into_iter().take(2) {
            let base = crate::default_schedule(&g, &t).unwrap().unwrap();
            check_neon_with(&g, Some(&blocked(&base, 2, 2)), &feeds, 1e-4);
            check_neon_with(&g, Some(&blocked(&base, 4, 4)), &feeds, 1e-4);
        }
    }
}
