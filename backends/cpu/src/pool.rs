//! 2-D MaxPool / AveragePool over NCHW: one task per (n, c) plane, split
//! across parts; windows with pads, strides, dilations and ceil_mode come
//! from the IR's shared window geometry. Output rows are vectorized along
//! the width: stride 1 with plain loads, stride 2 with de-interleaving
//! loads (`VLOAD_EVEN`), a partial store for the last columns; wider
//! strides run scalar. Padded or overhanging windows read a scratch copy of
//! the plane bordered by the fill value, so no tap is ever bounds-checked.

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
    // Empty outputs and absurd windows are the host's.
    if oh == 0 || ow == 0 || kh == 0 || kw == 0 || kh > 4096 || kw > 4096 {
        return Ok(None);
    }
    let batch = match &xs[0] {
        Dim::Known(n) => ParamExpr::Const(*n as i64),
        Dim::Sym(_) => ParamExpr::InputDim { input: xi, axis: 0 },
        Dim::Unknown => return Ok(None),
    };
    let default = Schedule {
        tiles: BTreeMap::new(),
        loop_order: vec!["plane".into(), "oh".into(), "ow".into()],
        vector_axis: Some("ow".into()),
        vector_width: target.vector_width(),
        unroll: BTreeMap::new(),
        parallel_axis: Some("plane".into()),
        weight_layout: WeightLayout::RowMajor,
        microkernel: None,
    };
    let sched = sched.cloned().unwrap_or_else(|| default.clone());
    let vectors = check_schedule(&sched, &default, geo[1].stride <= 2, &node.name)?;
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
    let vw = target.vector_width();
    let (sh, sw, dh, dw) = (geo[0].stride, geo[1].stride, geo[0].dilation, geo[1].dilation);
    let (ph, pw) = (geo[0].pad_begin, geo[1].pad_begin);
    if ph < 0 || pw < 0 || geo.iter().any(|g| g.pad_end < 0) {
        return Ok(None);
    }
    let (ph, pw) = (ph as usize, pw as usize);
    // Extent a window set reaches along one axis: the last window's last tap + 1.
    let reach =
        |g: &carbide_ir::ops::nn::geom::DimGeom| (g.out.max(1) - 1) * g.stride + (g.kernel - 1) * g.dilation + 1;
    // Without pads and with every window inside the plane, the kernel reads
    // the input in place; otherwise each part copies a plane into a scratch
    // plane bordered by the fill value (−inf for max, 0 for average).
    let direct = ph == 0 && pw == 0 && reach(&geo[0]) <= h && reach(&geo[1]) <= w;
    let vector = sw <= 2;
    let ow_round = ow.div_ceil(vw) * vw;
    let (plane_h, plane_w) = if direct {
        (h, w)
    } else {
        // Room for every window, and for whole vectors past the last output column.
        let wr = if vector { sw * ow_round + (kw - 1) * dw } else { 0 };
        ((h + ph).max(reach(&geo[0])), (w + pw).max(reach(&geo[1])).max(wr))
    };
    let scratch_bytes = (plane_h * plane_w * 4).div_ceil(64) * 64;
    if scratch_bytes > 1 << 28 {
        return Ok(None);
    }
    // Averages divide by (taps counted in rows) x (taps counted in columns):
    // inside the input, or inside the padded extent with count_include_pad.
    let counts = |g: &carbide_ir::ops::nn::geom::DimGeom| -> Vec<usize> {
        let (lo, hi) = if attrs.count_include_pad {
            (-g.pad_begin, g.input as i64 + g.pad_end)
        } else {
            (0, g.input as i64)
        };
        (0..g.out)
            .map(|o| {
                let start = (o * g.stride) as i64 - g.pad_begin;
                (0..g.kernel as i64)
                    .filter(|k| (lo..hi).contains(&(start + k * g.dilation as i64)))
                    .count()
            })
            .collect()
    };
    let (cnt_h, cnt_w) = (counts(&geo[0]), counts(&geo[1]));
    let uniform = cnt_h.windows(2).all(|p| p[0] == p[1]) && cnt_w.windows(2).all(|p| p[0] == p[1]);

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
    let fill = if max { "(-INFINITY)" } else { "0.0f" };
    if !direct {
        let sc = slot(
            BufferArg::Scratch {
                bytes: ParamExpr::Const(scratch_bytes as i64),
                per_part: true,
            },
            &mut buffers,
        );
        let _ = writeln!(
            s,
            "    float *pad = (float *)((char *)bufs[{sc}] + part * (int64_t){scratch_bytes});"
        );
        // The border keeps the fill value: each plane overwrites only the interior.
        let _ = writeln!(
            s,
            "    for (int64_t t = 0; t < {}; t++) pad[t] = {fill};",
            plane_h * plane_w
        );
    }
    if !max && !uniform {
        let list = |v: &[usize], n: usize| -> String {
            let mut v: Vec<String> = v.iter().map(|c| format!("{c}.0f")).collect();
            v.resize(n, "1.0f".into());
            v.join(", ")
        };
        let _ = writeln!(s, "    static const float cnt_h[{oh}] = {{{}}};", list(&cnt_h, oh));
        let _ = writeln!(
            s,
            "    static const float cnt_w[{ow_round}] = {{{}}};",
            list(&cnt_w, ow_round)
        );
    }
    let _ = writeln!(s, "    const int64_t planes = {} * {c};", p.c(batch.clone()));
    let _ = writeln!(
        s,
        "    const int64_t q0 = planes * part / num_parts, q1 = planes * (part + 1) / num_parts;"
    );
    let _ = writeln!(s, "    for (int64_t q = q0; q < q1; q++) {{");
    let _ = writeln!(s, "        float *y = Y + q * {};", oh * ow);
    if direct {
        let _ = writeln!(s, "        const float *x = X + q * {};", h * w);
    } else {
        let _ = writeln!(s, "        const float *xq = X + q * {};", h * w);
        let _ = writeln!(
            s,
            "        for (int64_t r = 0; r < {h}; r++) memcpy(pad + (r + {ph}) * {plane_w} + {pw}, xq + r * {w}, sizeof(float) * {w});"
        );
        let _ = writeln!(s, "        const float *x = pad;");
    }
    let _ = writeln!(s, "        for (int64_t i = 0; i < {oh}; i++) {{");
    let _ = writeln!(
        s,
        "            const float *xr = x + i * {}; float *yr = y + i * {ow};",
        sh * plane_w
    );
    let _ = writeln!(s, "            int64_t j = 0;");
    // Window taps as offsets from the window's top-left input element.
    let taps: Vec<usize> = (0..kh)
        .flat_map(|ky| (0..kw).map(move |kx| ky * dh * plane_w + kx * dw))
        .collect();
    let unrolled = taps.len() <= 64;
    let reduce = |s: &mut String, tap: &dyn Fn(&str) -> String| {
        let ind = "                ";
        if unrolled {
            for t in &taps {
                let _ = writeln!(s, "{ind}{}", tap(&t.to_string()));
            }
        } else {
            let _ = writeln!(
                s,
                "{ind}for (int64_t ky = 0; ky < {kh}; ky++) for (int64_t kx = 0; kx < {kw}; kx++) {}",
                tap(&format!("(ky * {} + kx * {dw})", dh * plane_w))
            );
        }
    };
    let load = if sw == 1 { "VLOAD" } else { "VLOAD_EVEN" };
    // One tap folded into `acc`, vector or scalar.
    let fold = |vector: bool, off: &str| match (vector, max) {
        (true, true) => format!("acc = VMAX({load}(xr + {off} + {sw} * j), acc);"),
        (true, false) => format!("acc = VADD(acc, {load}(xr + {off} + {sw} * j));"),
        (false, true) => format!("acc = fmaxf(acc, xr[{off} + {sw} * j]);"),
        (false, false) => format!("acc += xr[{off} + {sw} * j];"),
    };
    let divisor = cnt_h.first().copied().unwrap_or(1) * cnt_w.first().copied().unwrap_or(1);
    let finish = |vector: bool| match (max, vector, uniform) {
        (true, ..) => "acc".to_string(),
        (false, true, true) => format!("VDIV(acc, VSET1({divisor}.0f))"),
        (false, false, true) => format!("acc / {divisor}.0f"),
        (false, true, false) => "VDIV(acc, VMUL(VSET1(cnt_h[i]), VLOAD(cnt_w + j)))".to_string(),
        (false, false, false) => "acc / (cnt_h[i] * cnt_w[j])".to_string(),
    };
    // A loop or branch over output columns: `head` opens it, the window
    // folds into `acc`, `store` writes the result.
    let block = |s: &mut String, head: &str, vector: bool, store: &str| {
        let _ = writeln!(s, "            {head} {{");
        let _ = writeln!(
            s,
            "                {} acc = {};",
            if vector { "vf" } else { "float" },
            match (vector, max) {
                (true, true) => "VSET1(-INFINITY)",
                (true, false) => "VZERO()",
                (false, _) => fill,
            }
        );
        reduce(s, &|off: &str| fold(vector, off));
        let _ = writeln!(s, "                {store}");
        let _ = writeln!(s, "            }}");
    };
    if vector {
        // `n` vectors of outputs at column j read `sw * n * VW` floats from
        // each tap; in place, only while that stays inside the plane.
        let fits = |n: usize| {
            if direct {
                format!(
                    " && i * {} + {} + {sw} * j + {sw} * {n} * VW <= {}",
                    sh * plane_w,
                    taps.last().copied().unwrap_or(0),
                    h * w
                )
            } else {
                String::new()
            }
        };
        if vectors > 1 {
            // Steps of `vectors` vectors: independent accumulator chains.
            let col = |u: usize| format!("(j + {u} * VW)");
            let _ = writeln!(
                s,
                "            for (; j + {vectors} * VW <= {ow}{}; j += {vectors} * VW) {{",
                fits(vectors)
            );
            let init = if max { "VSET1(-INFINITY)" } else { "VZERO()" };
            let accs: Vec<String> = (0..vectors).map(|u| format!("acc{u} = {init}")).collect();
            let _ = writeln!(s, "                vf {};", accs.join(", "));
            reduce(&mut s, &|off: &str| {
                let folds: Vec<String> = (0..vectors)
                    .map(|u| {
                        let (a, x) = (format!("acc{u}"), format!("{load}(xr + {off} + {sw} * {})", col(u)));
                        if max {
                            format!("{a} = VMAX({x}, {a});")
                        } else {
                            format!("{a} = VADD({a}, {x});")
                        }
                    })
                    .collect();
                format!("{{ {} }}", folds.join(" "))
            });
            for u in 0..vectors {
                let a = format!("acc{u}");
                let v = match (max, uniform) {
                    (true, _) => a,
                    (false, true) => format!("VDIV({a}, VSET1({divisor}.0f))"),
                    (false, false) => format!("VDIV({a}, VMUL(VSET1(cnt_h[i]), VLOAD(cnt_w + {})))", col(u)),
                };
                let _ = writeln!(s, "                VSTORE(yr + {}, {v});", col(u));
            }
            let _ = writeln!(s, "            }}");
        }
        let fits = fits(1);
        let v = finish(true);
        block(
            &mut s,
            &format!("for (; j + VW <= {ow}{fits}; j += VW)"),
            true,
            &format!("VSTORE(yr + j, {v});"),
        );
        block(
            &mut s,
            &format!("if (j < {ow}{fits})"),
            true,
            &format!("VSTORE_PART(yr + j, {v}, (int)({ow} - j)); j = {ow};"),
        );
    }
    block(
        &mut s,
        &format!("for (; j < {ow}; j++)"),
        false,
        &format!("yr[j] = {};", finish(false)),
    );
    let _ = writeln!(s, "        }}\n    }}\n}}");
    Ok(Some(LoweredKernel {
        call: KernelCall {
            entry,
            buffers,
            params: p.exprs,
            packed: vec![],
            // Window taps at about 8 per ns.
            max_parts: Some(crate::cexpr::parts_for_work(
                crate::cexpr::pmul(batch.clone(), ParamExpr::Const(c as i64)),
                crate::cexpr::pmul(batch, ParamExpr::Const((c * oh * ow * kh * kw) as i64)),
                8,
            )),
        },
        source: s,
        schedule: sched,
        workload,
    }))
}

/// Vectors per row step (`unroll["ow"]`) the pooling template generates.
pub(crate) const POOL_VECTORS: [usize; 3] = [1, 2, 4];

/// Accepts `s` when it is `default` except for `unroll["ow"]` (vector rows
/// only) with a value the template generates, returning that unroll;
/// rejects it naming the field otherwise.
fn check_schedule(s: &Schedule, default: &Schedule, vector_rows: bool, name: &str) -> Result<usize, CodegenError> {
    let mut rest = s.clone();
    rest.unroll = default.unroll.clone();
    crate::space::require_default(&rest, default, name)?;
    let bad = |why: String| CodegenError::BadSchedule {
        kernel: name.to_string(),
        why,
    };
    if let Some(other) = s.unroll.keys().find(|k| k.as_str() != "ow") {
        return Err(bad(format!(
            "cannot unroll loop '{other}' (pooling unrolls only ow: vectors per row step)"
        )));
    }
    let vectors = s.unroll_of("ow");
    if !POOL_VECTORS.contains(&vectors) {
        return Err(bad(format!("ow unroll {vectors} is not one of {POOL_VECTORS:?}")));
    }
    if !vector_rows && vectors > 1 {
        return Err(bad("rows with a column stride above 2 run scalar: no ow unroll".into()));
    }
    Ok(vectors)
}

#[cfg(test)]
mod tests {
    use crate::testutil::{check, check_neon, check_with, node, rand_tensor, tt};
    use crate::{GroupValue, KernelGroup, Target};
    use carbide_ir::ops::nn::{AutoPad, NnOp, PoolAttrs};
    use carbide_ir::{Op, Tensor};

    /// Pool groups with their inputs; the reference gives each output shape.
    fn cases() -> Vec<(KernelGroup, Vec<Tensor>)> {
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
        // (max pool?, attributes, input shape)
        let cases = [
            (true, mk([3, 3], [2, 2], [1, 1, 1, 1], false, false), [1, 3, 12, 12]),
            (true, mk([3, 3], [2, 2], [0, 0, 0, 0], true, false), [2, 2, 13, 10]),
            (false, mk([3, 3], [1, 1], [1, 1, 1, 1], false, false), [1, 3, 7, 7]),
            (false, mk([2, 3], [2, 1], [1, 0, 1, 2], false, true), [1, 2, 9, 6]),
            // In place (no pads, windows inside): squeezenet's stride-2 max
            // pool, wide enough for whole vectors, partial ones and the
            // last rows falling back to scalar near the plane's end.
            (true, mk([3, 3], [2, 2], [0, 0, 0, 0], true, false), [1, 3, 71, 71]),
            (false, mk([2, 2], [1, 1], [0, 0, 0, 0], false, false), [2, 3, 5, 40]),
            // Padded stride 2 and 1 over wide rows, both count modes, ceil overhang.
            (true, mk([3, 3], [2, 2], [1, 1, 1, 1], false, false), [1, 2, 40, 45]),
            (false, mk([3, 3], [2, 2], [1, 1, 0, 0], true, true), [1, 2, 20, 38]),
            (false, mk([3, 2], [1, 1], [1, 1, 1, 1], true, false), [1, 2, 6, 35]),
            // Stride 3 (scalar over the scratch plane) and a 9x9 = 81-tap window (loops).
            (true, mk([2, 2], [3, 3], [0, 1, 0, 1], true, false), [1, 2, 11, 23]),
            (false, mk([9, 9], [1, 1], [0, 0, 0, 0], false, false), [1, 1, 12, 30]),
        ];
        let mut dilated = mk([2, 3], [1, 2], [1, 0, 0, 2], false, false);
        dilated.dilations = Some(vec![2, 2]);
        let cases = cases
            .into_iter()
            .chain([(true, dilated.clone(), [1, 2, 9, 40]), (false, dilated, [1, 2, 9, 40])]);
        let mut out = Vec::new();
        for (max, a, x) in cases {
            let op = Op::Nn(if max { NnOp::MaxPool(a) } else { NnOp::AveragePool(a) });
            let g0 = KernelGroup {
                nodes: vec![node("pool", op, &["x"], &["y"])],
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
            let shape = crate::testutil::reference(&g0, &feeds);
            let mut g = g0;
            g.outputs[0].ty = tt(shape.shape());
            out.push((g, feeds));
        }
        out
    }

    /// Every schedule of every case's space (the unrolled ones where rows
    /// are vectors) against the reference; unrolling changes the code.
    #[test]
    fn pool_spaces_match_reference() {
        for t in ["x86-64-avx2", "x86-64-avx512"].map(|t| Target::parse(t).unwrap()) {
            if !t.runs_on_host() {
                continue;
            }
            let mut unrolled = 0;
            for (g, feeds) in cases() {
                let space = crate::schedule_space(&g, &t).unwrap();
                let sources: Vec<String> = space
                    .iter()
                    .map(|s| check_with(&g, &t, Some(s), &feeds, 1e-5).source)
                    .collect();
                for (i, a) in sources.iter().enumerate() {
                    assert!(sources[i + 1..].iter().all(|b| a != b), "every unroll changes the code");
                }
                unrolled += usize::from(space.len() == 3);
            }
            assert!(unrolled >= 10, "vector-row pools have a space: {unrolled}");
        }
    }

    #[test]
    fn pool_unroll_is_checked() {
        let t = Target::parse("x86-64-avx512").unwrap();
        let cases = cases();
        let base = crate::default_schedule(&cases[0].0, &t).unwrap().unwrap();
        let why = |g: &KernelGroup, s: &carbide_ir::kernel::Schedule| match crate::lower(g, &t, Some(s)) {
            Err(crate::CodegenError::BadSchedule { why, .. }) => why,
            other => panic!("expected a rejection, got {:?}", other.map(|k| k.map(|k| k.schedule))),
        };
        let mut s = base.clone();
        s.unroll.insert("ow".into(), 3);
        assert!(why(&cases[0].0, &s).contains("ow unroll 3"));
        let mut s = base.clone();
        s.unroll.insert("oh".into(), 2);
        assert!(why(&cases[0].0, &s).contains("'oh'"));
        let mut s = base.clone();
        s.tiles.insert("oh".into(), 2);
        assert!(why(&cases[0].0, &s).contains("tiles"));
        // Stride 3 runs scalar: no unroll.
        let (g3, _) = cases
            .iter()
            .find(|(g, _)| g.inputs[0].ty == tt(&[1, 2, 11, 23]))
            .unwrap();
        let mut s = base.clone();
        s.unroll.insert("ow".into(), 2);
        assert!(why(g3, &s).contains("scalar"));
        assert_eq!(crate::schedule_space(g3, &t).unwrap().len(), 1);
    }

    #[test]
    fn neon_unrolled_pools_under_qemu() {
        let t = Target::parse("aarch64-neon").unwrap();
        for (g, feeds) in cases()
            .iter()
            .filter(|(g, _)| g.inputs[0].ty.concrete_shape().unwrap()[3] >= 38)
        {
            let mut s = crate::default_schedule(g, &t).unwrap().unwrap();
            s.unroll.insert("ow".into(), 4);
            crate::testutil::check_neon_with(g, Some(&s), feeds, 1e-5);
        }
    }

    #[test]
    fn pools_match_reference() {
        for t in ["x86-64-avx2", "x86-64-avx512"].map(|t| Target::parse(t).unwrap()) {
            if t.runs_on_host() {
                for (g, feeds) in cases() {
                    check(&g, &t, &feeds, 1e-5);
                }
            }
        }
    }

    #[test]
    fn neon_pools_under_qemu() {
        for (g, feeds) in cases().into_iter().step_by(2) {
            check_neon(&g, &feeds, 1e-5);
        }
    }
}
