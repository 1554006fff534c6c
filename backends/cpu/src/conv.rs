//! 2-D convolution (NCHW, groups, pads, strides, dilations) as GEMM over
//! weights pre-packed at compile time, in one of two forms: pixel-vector
//! (weights are the A operand in MR-row panels, each part packs B panels of
//! pixels from the image: implicit im2col, whole-vector copies from a
//! zero-bordered copy of the image when padded or strided) or, for small
//! images, channel-vector (weights are the B operand, output channels are
//! the vector axis and pixels the broadcast rows; a transposed tile goes out
//! through the epilogue). The GEMM microkernel applies the fused
//! bias/activation/residual epilogue before the store. Parts split (batch,
//! group, pixel block, channel block) tasks evenly. Depthwise convolutions
//! have their own row kernel (`crate::depthwise`).

use crate::cexpr::{slot, Params};
use crate::gemm::{
    balanced_tile, check_schedule, emit_epilogue_operands, emit_task_range, microkernel, microkernel_b, GemmKnobs,
    WeightRole,
};
use crate::group::{broadcast_strides, chain, is_f32, shape_text};
use crate::target::Target;
use crate::{CodegenError, KernelGroup, LoweredKernel};
use carbide_ir::kernel::{BinaryFn, BufferArg, Expr, KernelCall, ParamExpr, Schedule, WeightLayout, WorkloadKey};
use carbide_ir::ops::nn::{NnOp, Window};
use carbide_ir::{Dim, Node, Op, Tensor};
use std::fmt::Write;

/// A convolution's resolved window geometry (one image, NCHW).
pub(crate) struct Geometry {
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) m: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) sh: usize,
    pub(crate) sw: usize,
    pub(crate) ph: i64,
    pub(crate) pw: i64,
    pub(crate) dh: usize,
    pub(crate) dw: usize,
    pub(crate) groups: usize,
}

/// The heuristic default schedule of a (non-depthwise) convolution: the
/// GEMM defaults, with the weights as the pre-packed A operand in blocks of
/// `mr` output channels (OIHW{mr}o).
pub fn default_schedule(target: &Target) -> Schedule {
    let mut s = crate::gemm::default_schedule(target);
    let mr = s.microkernel.map_or(1, |t| t.mr);
    s.weight_layout = WeightLayout::Nchwc { block: mr };
    s
}

/// Share of `extent` rounded up to whole tiles that is real work.
fn fill(extent: usize, tile: usize) -> f64 {
    extent as f64 / (extent.div_ceil(tile.max(1)) * tile.max(1)).max(1) as f64
}

/// The tallest register tile of `nr` columns that fits the vector registers
/// (the limit `gemm::check_schedule` enforces).
fn max_rows(target: &Target, nr: usize) -> usize {
    let regs = if target.isa() == crate::target::Isa::Avx2 {
        16
    } else {
        32
    };
    let nv = nr / target.vector_width();
    (regs - nv - 1) / nv
}

/// The heuristic schedule of a convolution with `mg` output channels per
/// group, reduction length `kd` and `pixels` output pixels. Pixels are the vector axis (weights as
/// A, [`default_schedule`]) unless they fill the vector tile badly (7x7 and
/// 14x14 images with 32-wide tiles waste 23% and 12%): then the output
/// channels are the vector axis and pixels the broadcast rows, with a tile
/// height that divides the pixel count (the channel-vector form, weights
/// packed as B panels). MC/NC split the work evenly across parts.
fn heuristic_schedule(
    target: &Target,
    mg: usize,
    kd: usize,
    pixels: usize,
    groups: usize,
    pointwise: bool,
) -> Schedule {
    let mut s = default_schedule(target);
    let Some(t) = s.microkernel else { return s };
    let hi = max_rows(target, t.nr);
    let rows = (hi.div_ceil(2)..=hi)
        .max_by(|a, b| fill(pixels, *a).total_cmp(&fill(pixels, *b)))
        .unwrap_or(t.mr);
    // Costs next to the FMAs, per element, as measured here (VW lanes per
    // cycle): packing an image element costs ~0.5 cycles as vector row
    // copies and ~1.5 as the channel-vector form's gather, against mg / VW
    // cycles of FMAs it feeds; writing T out ~2 cycles against K / VW.
    let vw = target.vector_width() as f64;
    let (mg_f, kd_f) = (mg.max(1) as f64, kd.max(1) as f64);
    let pixel_vector = fill(pixels, t.nr) * fill(mg, t.mr) / (1.0 + 0.5 * vw / mg_f);
    let channel_vector = fill(pixels, rows) * fill(mg, t.nr) / (1.0 + 2.0 * vw / kd_f + 1.5 * vw / mg_f);
    if channel_vector > pixel_vector + 0.03 {
        s.microkernel = Some(carbide_ir::kernel::MicroTile { mr: rows, nr: t.nr });
        s.weight_layout = WeightLayout::PackedPanels { nr: t.nr };
        let mc = balanced_tile(pixels, 256, rows, false);
        let few_pixel_tasks = groups * pixels.div_ceil(mc) < MIN_PIXEL_TASKS;
        s.tiles.insert("m".into(), mc);
        s.tiles
            .insert("n".into(), balanced_tile(mg, 128, t.nr, few_pixel_tasks));
        return s;
    }
    let mut nc = balanced_tile(pixels, s.tile("n", 512), t.nr, true);
    let few_pixel_tasks = groups * pixels.div_ceil(nc) < MIN_PIXEL_TASKS;
    let mut mc = balanced_tile(mg, s.tile("m", 144), t.mr, few_pixel_tasks);
    // Pointwise: B straight from the image rows (measured 0-25% faster
    // than packing on mobilenet_v2's 1x1 shapes, most with few channels).
    if pointwise {
        s.tiles.insert(B_PACK.into(), 0);
        // With few pixel blocks the parts split the pixels, unevenly when the
        // last block is short (14x14: 4 panels against 3, one of them 4
        // pixels wide), and each part streams all the weights. One pixel
        // block makes the parts split the output channels instead: each
        // computes every panel (read in place, so nothing is packed twice)
        // for half the weights. Taken when its busier part has at least 10%
        // less work (28x28 with 192 channels saves 4%, and its 800-pixel
        // block measured 4% slower on one thread).
        if few_pixel_tasks {
            let whole = pixels.div_ceil(t.nr) * t.nr;
            let mc_whole = balanced_tile(mg, s.tile("m", 144), t.mr, true);
            let (nr, mr) = (t.nr, t.mr);
            if 10 * busier_part_work(groups, pixels, whole, nr, mg, mc_whole, mr)
                <= 9 * busier_part_work(groups, pixels, nc, nr, mg, mc, mr)
            {
                (nc, mc) = (whole, mc_whole);
            }
        }
    }
    s.tiles.insert("n".into(), nc);
    s.tiles.insert("m".into(), mc);
    s
}

/// The microkernel calls (`mr x nr` tiles) of the busier of two parts in the
/// pixel-vector form with pixel blocks of `nc` and M blocks of `mc`, split
/// into tasks as [`lower`] does.
fn busier_part_work(groups: usize, pixels: usize, nc: usize, nr: usize, mg: usize, mc: usize, mr: usize) -> usize {
    let (pblocks, mblocks) = (pixels.div_ceil(nc), mg.div_ceil(mc));
    let mchunks = if groups * pblocks >= MIN_PIXEL_TASKS {
        1
    } else {
        mblocks
    };
    let ntasks = groups * pblocks * mchunks;
    let task = |t: usize| {
        let (pb, chunk) = ((t / mchunks) % pblocks, t % mchunks);
        let panels = (pixels - pb * nc).min(nc).div_ceil(nr);
        let (mb0, mb1) = (mblocks * chunk / mchunks, mblocks * (chunk + 1) / mchunks);
        let rows = (mb1 * mc).min(mg) - mb0 * mc;
        panels * rows.div_ceil(mr)
    };
    let half = ntasks / 2;
    let first: usize = (0..half).map(task).sum();
    let second: usize = (half..ntasks).map(task).sum();
    first.max(second)
}

/// A 1x1 stride-1 unpadded conv over an `h x w` image: B's k rows are the
/// image's channel rows.
fn is_pointwise(g: &Geometry, h: usize, w: usize) -> bool {
    g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0 && g.oh == h && g.ow == w
}

/// The `tiles` key of a conv's B operand source: `0` reads B (the image's
/// channel rows, `P` floats apart) in place, for 1x1 stride-1 unpadded
/// convs in the pixel-vector form; absent, each part packs B panels.
pub(crate) const B_PACK: &str = "b_pack";

/// With at least this many (group, pixel block) tasks a conv task covers
/// all output channels, packing its image panels once; with fewer, tasks
/// also split the channel blocks so the parts stay busy.
const MIN_PIXEL_TASKS: usize = 4;

/// Packs OIHW weights per group into panels of `width` output channels,
/// k-major (`[group][panel][k][width]`): the A operand's `mr`-row panels in
/// the pixel-vector form, the B operand's `nr`-column panels in the
/// channel-vector form — the same bytes either way.
fn pack_weights(w: &Tensor, g: &Geometry, width: usize) -> Option<Vec<u8>> {
    let Tensor::F32(arr) = w else { return None };
    let data: Vec<f32> = arr.iter().copied().collect();
    let mg = g.m / g.groups;
    let kd = (g.c / g.groups) * g.kh * g.kw;
    let np = mg.div_ceil(width);
    let mut out = Vec::with_capacity(g.groups * np * kd * width * 4);
    for grp in 0..g.groups {
        for ip in 0..np {
            for k in 0..kd {
                for r in 0..width {
                    let row = ip * width + r;
                    let v = if row < mg { data[(grp * mg + row) * kd + k] } else { 0.0 };
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    Some(out)
}

/// The buffer slots of a conv-family kernel (direct, depthwise, Winograd):
/// image, weights, output, per-part scratch, then the epilogue operands.
pub(crate) struct ConvSlots {
    pub x: usize,
    pub w: usize,
    pub y: usize,
    pub scratch: usize,
    pub epilogue: Vec<usize>,
}

impl ConvSlots {
    /// Opens the kernel's C entry point with the image as `X`, the weights
    /// as `weights` and the output as `Y`.
    pub(crate) fn emit_entry(&self, s: &mut String, entry: &str, weights: &str) {
        let _ = writeln!(
            s,
            "void {entry}(void *const *bufs, const int64_t *p, int64_t part, int64_t num_parts) {{"
        );
        let _ = writeln!(s, "    (void)p;");
        let _ = writeln!(s, "    const float *X = (const float *)bufs[{}];", self.x);
        let _ = writeln!(s, "    const float *{weights} = (const float *)bufs[{}];", self.w);
        let _ = writeln!(s, "    float *Y = (float *)bufs[{}];", self.y);
    }
}

/// Binds the slots of [`ConvSlots`] in their order, with `scratch_bytes`
/// of scratch per part.
pub(crate) fn conv_slots(
    x: usize,
    weights: BufferArg,
    scratch_bytes: usize,
    epilogue_inputs: &[usize],
) -> (Vec<BufferArg>, ConvSlots) {
    let mut buffers = Vec::new();
    let x_slot = slot(BufferArg::Input(x), &mut buffers);
    let w = slot(weights, &mut buffers);
    let y = slot(BufferArg::Output(0), &mut buffers);
    let scratch = slot(
        BufferArg::Scratch {
            bytes: ParamExpr::Const(scratch_bytes as i64),
            per_part: true,
        },
        &mut buffers,
    );
    let epilogue = epilogue_inputs
        .iter()
        .map(|&i| slot(BufferArg::Input(i), &mut buffers))
        .collect();
    (
        buffers,
        ConvSlots {
            x: x_slot,
            w,
            y,
            scratch,
            epilogue,
        },
    )
}

/// The batch size as a kernel parameter: a constant, or input `x`'s dim 0.
pub(crate) fn batch_param(batch: &Dim, x: usize) -> ParamExpr {
    match batch {
        Dim::Known(n) => ParamExpr::Const(*n as i64),
        _ => ParamExpr::InputDim { input: x, axis: 0 },
    }
}

pub fn lower(
    group: &KernelGroup,
    anchor: &Node,
    target: &Target,
    schedule: Option<&Schedule>,
) -> Result<Option<LoweredKernel>, CodegenError> {
    let Op::Nn(NnOp::Conv(attrs)) = &anchor.op else {
        return Ok(None);
    };
    let find = |name: &str| group.inputs.iter().position(|v| v.name == name);
    let (Some(xi), Some(wi)) = (find(&anchor.inputs[0]), anchor.inputs.get(1).and_then(|n| find(n))) else {
        return Ok(None);
    };
    let (xt, wt) = (&group.inputs[xi].ty, &group.inputs[wi].ty);
    let Some(wconst) = group.inputs[wi].constant.clone() else {
        return Ok(None);
    };
    let (Some(xs), Some(ws)) = (xt.shape.as_ref(), wt.concrete_shape()) else {
        return Ok(None);
    };
    if !is_f32(xt) || !is_f32(wt) || xs.len() != 4 || ws.len() != 4 || anchor.outputs.len() != 1 {
        return Ok(None);
    }
    let (Some(c), Some(h), Some(w)) = (xs[1].known(), xs[2].known(), xs[3].known()) else {
        return Ok(None);
    };
    let Some(out_shape) = group.outputs.first().and_then(|o| o.ty.shape.clone()) else {
        return Ok(None);
    };
    if out_shape.len() != 4 || out_shape[0] != xs[0] {
        return Ok(None);
    }
    let groups = attrs.group.max(1) as usize;
    let (m, kh, kw) = (ws[0], ws[2], ws[3]);
    if c % groups != 0 || m % groups != 0 || ws[1] != c / groups {
        return Ok(None);
    }
    if attrs
        .kernel_shape
        .as_ref()
        .is_some_and(|k| k != &[kh as i64, kw as i64])
    {
        return Ok(None);
    }
    let Ok(win) = Window::new(2, attrs.auto_pad, &attrs.pads, &attrs.strides, &attrs.dilations, false) else {
        return Ok(None);
    };
    let Ok(geo) = win.resolve(&[h, w], &[kh, kw]) else {
        return Ok(None);
    };
    let g = Geometry {
        c,
        h,
        w,
        m,
        oh: geo[0].out,
        ow: geo[1].out,
        kh,
        kw,
        sh: geo[0].stride,
        sw: geo[1].stride,
        ph: geo[0].pad_begin,
        pw: geo[1].pad_begin,
        dh: geo[0].dilation,
        dw: geo[1].dilation,
        groups,
    };
    if out_shape[1..] != [Dim::Known(m), Dim::Known(g.oh), Dim::Known(g.ow)] {
        return Ok(None);
    }
    // Epilogue: per-channel bias, then the fused chain.
    let Some(mut ch) = chain(group, &group.nodes[1..], Some(&anchor.outputs[0])) else {
        return Ok(None);
    };
    let mut eop_strides: Vec<(ParamExpr, ParamExpr, i64)> = Vec::new(); // (batch, channel, pixel in {0,1})
    let p_total = g.oh * g.ow;
    for &op in &ch.operands {
        let Some(st) = broadcast_strides(&group.inputs[op].ty, op, &out_shape) else {
            return Ok(None);
        };
        let pix = match (&st[2], &st[3]) {
            (ParamExpr::Const(0), ParamExpr::Const(0)) => 0,
            (ParamExpr::Const(a), ParamExpr::Const(1)) if *a as usize == g.ow => 1,
            _ => return Ok(None),
        };
        eop_strides.push((st[0].clone(), st[1].clone(), pix));
    }
    if let Some(bname) = anchor.inputs.get(2).filter(|s| !s.is_empty()) {
        let Some(bi) = find(bname) else { return Ok(None) };
        if !is_f32(&group.inputs[bi].ty) || group.inputs[bi].ty.concrete_shape() != Some(vec![m]) {
            return Ok(None);
        }
        let slot_ix = ch.operands.len();
        ch.operands.push(bi);
        eop_strides.push((ParamExpr::Const(0), ParamExpr::Const(1), 0));
        ch.expr = crate::gemm::substitute_acc(&ch.expr, &Expr::binary(BinaryFn::Add, Expr::Acc, Expr::Load(slot_ix)));
    }
    if groups == c && m == c && groups > 1 {
        return crate::depthwise::lower(
            &g,
            &ch,
            &eop_strides,
            xi,
            wi,
            &xs[0],
            &anchor.name,
            target,
            schedule,
            xt,
            wt,
            &group.outputs[0].ty,
        )
        .map(Some);
    }
    let sched = match schedule {
        Some(s) => s.clone(),
        None => heuristic_schedule(
            target,
            m / groups,
            (c / groups) * kh * kw,
            g.oh * g.ow,
            groups,
            is_pointwise(&g, h, w),
        ),
    };
    // `b_pack` is the conv's own knob; the rest is the GEMM template's.
    let mut gemm_sched = sched.clone();
    let b_in_place = match gemm_sched.tiles.remove(B_PACK) {
        None => false,
        Some(0) => true,
        Some(v) => {
            return Err(CodegenError::BadSchedule {
                kernel: anchor.name.clone(),
                why: format!("{B_PACK} {v} is not generated (0: B read in place; omit it for packed B panels)"),
            })
        }
    };
    let knobs = check_schedule(&gemm_sched, target, &anchor.name, WeightRole::ConvA)?;
    let GemmKnobs { mr, nr, kc, mc, nc, .. } = knobs;
    // PackedPanels weights select the channel-vector form (see `heuristic_schedule`).
    let channel_vector = matches!(sched.weight_layout, WeightLayout::PackedPanels { .. });
    let pointwise = is_pointwise(&g, h, w);
    if b_in_place && (channel_vector || !pointwise) {
        return Err(CodegenError::BadSchedule {
            kernel: anchor.name.clone(),
            why: format!(
                "{B_PACK} 0 (B read in place) needs a 1x1 stride-1 unpadded conv in the pixel-vector form (Nchwc weights)"
            ),
        });
    }
    let workload = WorkloadKey {
        op: "conv2d".into(),
        shapes: vec![shape_text(xt), shape_text(wt), shape_text(&group.outputs[0].ty)],
        dtypes: vec!["f32".into()],
        epilogue: ch.expr.describe(),
        attrs: vec![format!(
            "group={},strides={}x{},pads={}x{},dilations={}x{}",
            g.groups, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw
        )],
        target: target.name().to_string(),
    };
    let entry = format!(
        "carbide_conv_{}_{}",
        workload.hex(),
        anchor
            .name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(24)
            .collect::<String>()
    );
    if let WeightLayout::Winograd { m: tile } = sched.weight_layout {
        let conv = crate::winograd::WinogradConv {
            geo: &g,
            chain: &ch,
            eop_strides: &eop_strides,
            x: xi,
            weights: &wconst,
            batch: &xs[0],
            tile,
        };
        return crate::winograd::lower(&conv, &anchor.name, target, sched, workload, entry).map(Some);
    }
    let packed = pack_weights(&wconst, &g, if channel_vector { nr } else { mr });
    let Some(packed) = packed else {
        return Ok(None);
    };
    let cg = c / groups;
    let mg = m / groups;
    let kd = cg * kh * kw;
    let np_w = mg.div_ceil(mr);
    if g.ph < 0 || g.pw < 0 || g.oh == 0 || g.ow == 0 {
        return Ok(None);
    }
    let (ph, pw) = (g.ph as usize, g.pw as usize);
    // The image as the packing reads it: when a window leaves the image,
    // each part first copies its group's channels into a zero-bordered
    // scratch image (hp x wp per channel), so packing is plain row copies.
    let hp = (ph + h).max((g.oh - 1) * g.sh + (kh - 1) * g.dh + 1);
    let wp = (pw + w).max((g.ow - 1) * g.sw + (kw - 1) * g.dw + 1);
    let padded = !pointwise && (hp != h || wp != w || ph != 0 || pw != 0);
    // Per part: the packed panels (B, or in the channel-vector form A and
    // the transposed output tile `T`, pixels x channels), then the image copy.
    // A cache line more than the channels, so T's rows (often 2^n floats
    // apart) do not all map to the same L1 sets.
    let ldt = mg.div_ceil(nr) * nr + 64 / 4;
    let panel_bytes = if channel_vector {
        ((mc * kc + mc * ldt) * 4).div_ceil(64) * 64
    } else {
        ((nc * kc + target.vector_width()) * 4).div_ceil(64) * 64
    };
    // The last row's right-border memset runs `pw` floats past the plane,
    // whole-vector packing copies up to 2 vectors past the image.
    let pad_bytes = if padded {
        ((cg * hp * wp + pw + 2 * target.vector_width()) * 4).div_ceil(64) * 64
    } else {
        0
    };
    let scratch_bytes = panel_bytes + pad_bytes;
    let (buffers, slots) = conv_slots(xi, BufferArg::Packed(0), scratch_bytes, &ch.operands);
    let ConvSlots {
        scratch: s_slot,
        epilogue: ref e_slots,
        ..
    } = slots;
    let mut p = Params::default();
    let batch = batch_param(&xs[0], xi);
    let eops_ukr: Vec<(Vec<ParamExpr>, ParamExpr, i64)> = eop_strides
        .iter()
        .map(|(b, mm, px)| (vec![b.clone()], mm.clone(), *px))
        .collect();

    let mut s = String::new();
    s.push_str(
        // The channel-vector form applies the epilogue when it writes T out.
        &(if channel_vector {
            microkernel(mr, nr, knobs.unroll_k, target.vector_width(), &Expr::Acc, &[])
        } else {
            microkernel(mr, nr, knobs.unroll_k, target.vector_width(), &ch.expr, &eops_ukr)
        })
        .replace("void ukr(", &format!("void ukr_{entry}(")),
    );
    if b_in_place {
        s.push_str(
            &microkernel_b(mr, nr, knobs.unroll_k, target.vector_width(), &ch.expr, &eops_ukr, true)
                .replace("void ukr(", &format!("void ukr_in_place_{entry}(")),
        );
    }
    slots.emit_entry(&mut s, &entry, "Wp");
    let _ = writeln!(
        s,
        "    float *Bp = (float *)((char *)bufs[{s_slot}] + part * (int64_t){scratch_bytes});"
    );
    if padded {
        let _ = writeln!(s, "    float *Xpad = (float *)((char *)Bp + {panel_bytes});");
        let _ = writeln!(s, "    int64_t padded_ng = -1;");
    }
    let _ = writeln!(s, "    const int64_t NB = {};", p.c(batch.clone()));
    for (i, sl) in e_slots.iter().enumerate() {
        let _ = writeln!(s, "    const float *E{i} = (const float *)bufs[{sl}];");
        let _ = writeln!(
            s,
            "    const int64_t esb{i} = {}, esm{i} = {};",
            p.c(eop_strides[i].0.clone()),
            p.c(eop_strides[i].1.clone())
        );
    }
    let _ = writeln!(s, "    const int64_t P = {p_total}, K = {kd};");
    let tasks_per_batch = if channel_vector {
        // Channel-vector form: tasks are (batch, group, pixel block,
        // channel block), the channel block fastest; a part's run of one
        // pixel block packs its pixel panels (A) once per K block, runs the
        // microkernel into T (pixels x channels), then writes T transposed
        // to Y through the epilogue.
        let (pblocks, cblocks) = (p_total.div_ceil(mc), mg.div_ceil(nc));
        let (sh, sw, ow) = (g.sh, g.sw, g.ow);
        let _ = writeln!(s, "    float *Ap = Bp, *T = Bp + {};", mc * kc);
        let _ = writeln!(s, "    const int64_t pblocks = {pblocks}, cblocks = {cblocks};");
        let _ = writeln!(s, "    const int64_t ntasks = NB * {groups} * pblocks * cblocks;");
        emit_task_range(&mut s, knobs.parallel);
        let _ = writeln!(s, "    for (int64_t t = t0, te; t < t1; t = te) {{");
        let _ = writeln!(s, "        const int64_t run = t / cblocks;");
        let _ = writeln!(s, "        te = min_i64(t1, (run + 1) * cblocks);");
        let _ = writeln!(
            s,
            "        const int64_t pb = run % pblocks, g = (run / pblocks) % {groups}, n = run / (pblocks * {groups});"
        );
        let _ = writeln!(
            s,
            "        const int64_t c0 = (t % cblocks) * {nc}, c1 = min_i64({mg}, ((te - 1) % cblocks + 1) * {nc});"
        );
        let _ = writeln!(s, "        const int64_t i0 = pb * {mc}, mcur = min_i64({mc}, P - i0);");
        let _ = writeln!(s, "        const float *Bg = Wp + g * {};", mg.div_ceil(nr) * kd * nr);
        emit_image_source(&mut s, &g, padded, hp, wp);
        let _ = writeln!(s, "        for (int64_t pc = 0; pc < K; pc += {kc}) {{");
        let _ = writeln!(s, "            const int64_t kcur = min_i64({kc}, K - pc);");
        let _ = writeln!(s, "            for (int64_t ip = 0; ip < mcur; ip += {mr}) {{");
        let _ = writeln!(s, "                float *dst = Ap + ip * kcur;");
        // Each pixel's offset in a channel of the (padded) image; -1 past P.
        let _ = writeln!(s, "                int64_t off[{mr}];");
        let _ = writeln!(s, "                for (int64_t r = 0; r < {mr}; r++) {{");
        let _ = writeln!(s, "                    const int64_t px = i0 + ip + r;");
        let _ = writeln!(
            s,
            "                    off[r] = px < P ? (px / {ow}) * {} + (px % {ow}) * {sw} : -1;",
            sh * wp
        );
        let _ = writeln!(s, "                }}");
        let _ = writeln!(s, "                for (int64_t k = 0; k < kcur; k++) {{");
        emit_tap(&mut s, &g, hp, wp);
        let _ = writeln!(s, "                    float *d = dst + k * {mr};");
        let _ = writeln!(
            s,
            "                    for (int64_t r = 0; r < {mr}; r++) d[r] = off[r] >= 0 ? tap[off[r]] : 0.0f;"
        );
        let _ = writeln!(s, "                }}\n            }}");
        let _ = writeln!(s, "            for (int64_t jp = c0; jp < c1; jp += {nr}) {{");
        let _ = writeln!(s, "                for (int64_t ip = 0; ip < mcur; ip += {mr}) {{");
        let _ = writeln!(s, "                    ukr_{entry}(kcur, Ap + ip * kcur, Bg + (jp / {nr}) * K * {nr} + pc * {nr}, T + ip * {ldt} + jp, {ldt}, min_i64({mr}, mcur - ip), min_i64({nr}, c1 - jp), pc > 0, 0, 0, 0);");
        let _ = writeln!(s, "                }}\n            }}\n        }}");
        let _ = writeln!(s, "        for (int64_t ch = c0; ch < c1; ch++) {{");
        let _ = writeln!(s, "            float *y = Y + (n * {m} + g * {mg} + ch) * P + i0;");
        let _ = writeln!(s, "            const float *tc = T + ch;");
        for (i, e) in eop_strides.iter().enumerate() {
            let _ = writeln!(
                s,
                "            const float *e{i} = E{i} + n * esb{i} + (g * {mg} + ch) * esm{i} + i0 * {};",
                e.2
            );
        }
        let load = |i: usize| {
            if eop_strides[i].2 == 1 {
                format!("e{i}[px]")
            } else {
                format!("e{i}[0]")
            }
        };
        let _ = writeln!(
            s,
            "            for (int64_t px = 0; px < mcur; px++) {{ const float x = tc[px * {ldt}]; y[px] = {}; }}",
            crate::cexpr::emit(&ch.expr, crate::cexpr::Mode::Scalar, "x", &load)
        );
        let _ = writeln!(s, "        }}\n    }}\n}}");
        groups * pblocks * cblocks
    } else {
        // Tasks are (batch, group, pixel block, M chunk), the M chunk fastest.
        // A part walks its tasks in runs of one pixel block: it packs that
        // block's B panels once per K block and reuses them for every M block
        // of the run (all M blocks when there are enough pixel blocks to keep
        // the parts busy, else the run's share of them).
        let (mblocks, pblocks) = (mg.div_ceil(mc), p_total.div_ceil(nc));
        let mchunks = if groups * pblocks >= MIN_PIXEL_TASKS {
            1
        } else {
            mblocks
        };
        let _ = writeln!(
            s,
            "    const int64_t mblocks = {mblocks}, pblocks = {pblocks}, mchunks = {mchunks};"
        );
        let _ = writeln!(s, "    const int64_t ntasks = NB * {groups} * pblocks * mchunks;");
        emit_task_range(&mut s, knobs.parallel);
        let _ = writeln!(s, "    for (int64_t t = t0, te; t < t1; t = te) {{");
        let _ = writeln!(s, "        const int64_t run = t / mchunks;");
        let _ = writeln!(s, "        te = min_i64(t1, (run + 1) * mchunks);");
        let _ = writeln!(
            s,
            "        const int64_t pb = run % pblocks, g = (run / pblocks) % {groups}, n = run / (pblocks * {groups});"
        );
        let _ = writeln!(
            s,
            "        const int64_t mb0 = mblocks * (t % mchunks) / mchunks, mb1 = mblocks * ((te - 1) % mchunks + 1) / mchunks;"
        );
        let _ = writeln!(s, "        const int64_t j0 = pb * {nc}, ncur = min_i64({nc}, P - j0);");
        let _ = writeln!(s, "        float *Yg = Y + (n * {m} + g * {mg}) * P;");
        let _ = writeln!(s, "        const float *Ag = Wp + g * {};", np_w * kd * mr);
        emit_image_source(&mut s, &g, padded, hp, wp);
        let _ = writeln!(s, "        for (int64_t pc = 0; pc < K; pc += {kc}) {{");
        let _ = writeln!(s, "            const int64_t kcur = min_i64({kc}, K - pc);");
        let _ = writeln!(s, "            for (int64_t jp = 0; jp < ncur; jp += {nr}) {{");
        let _ = writeln!(s, "                float *dst = Bp + jp * kcur;");
        let _ = writeln!(
            s,
            "                const int64_t wdt = min_i64({nr}, ncur - jp), pix0 = j0 + jp;"
        );
        if b_in_place {
            // Full panels are read from the image by the in-place microkernel.
            let _ = writeln!(s, "                if (wdt == {nr}) continue;");
        }
        if pointwise {
            let _ = writeln!(s, "                for (int64_t k = 0; k < kcur; k++) {{");
            let _ = writeln!(s, "                    float *d = dst + k * {nr};");
            let _ = writeln!(s, "                    const float *src = Xs + (pc + k) * P + pix0;");
            let _ = writeln!(
                s,
                "                    int64_t q = 0; for (; q < wdt; q++) d[q] = src[q]; for (; q < {nr}; q++) d[q] = 0.0f;"
            );
            let _ = writeln!(s, "                }}");
        } else {
            // Implicit im2col: the panel's pixels are runs along output rows
            // (found once per panel); per K row each run is one strided copy
            // from the (padded) image, vectorized at stride 1 and 2.
            let (sh, sw, ow) = (g.sh, g.sw, g.ow);
            let _ = writeln!(
                s,
                "                int64_t seg_q[{0}], seg_off[{0}], seg_len[{0}], nseg = 0;",
                nr + 1
            );
            let _ = writeln!(
                s,
                "                for (int64_t q = 0, oh = pix0 / {ow}, o = pix0 % {ow}; q < wdt; o = 0, oh++) {{"
            );
            let _ = writeln!(s, "                    const int64_t len = min_i64(wdt - q, {ow} - o);");
            let _ = writeln!(
                s,
                "                    seg_q[nseg] = q; seg_off[nseg] = oh * {} + o * {sw}; seg_len[nseg] = len; nseg++; q += len;",
                sh * wp
            );
            let _ = writeln!(s, "                }}");
            let _ = writeln!(s, "                for (int64_t k = 0; k < kcur; k++) {{");
            let _ = writeln!(s, "                    float *d = dst + k * {nr};");
            emit_tap(&mut s, &g, hp, wp);
            let _ = writeln!(s, "                    for (int64_t sg = 0; sg < nseg; sg++) {{");
            let _ = writeln!(
                s,
                "                        float *dd = d + seg_q[sg]; const float *src = tap + seg_off[sg]; const int64_t len = seg_len[sg];"
            );
            let _ = writeln!(s, "                        int64_t i = 0;");
            // From the padded copy whole vectors are copied: the overshoot
            // past a run lands in the panel where a later run, the zero
            // tail or the next K row overwrites it (both buffers carry
            // slack). Straight from the image the last vector must not read
            // past the run.
            let whole = if padded { "i < len" } else { "i + VW <= len" };
            match sw {
                1 => {
                    let _ = writeln!(
                        s,
                        "                        for (; {whole}; i += VW) VSTORE(dd + i, VLOAD(src + i));"
                    );
                }
                // Reads 2*VW floats from src + 2i: in the image while i + VW < len.
                2 => {
                    let cond = if padded { "i < len" } else { "i + VW < len" };
                    let _ = writeln!(
                        s,
                        "                        for (; {cond}; i += VW) VSTORE(dd + i, VLOAD_EVEN(src + 2 * i));"
                    );
                }
                _ => {}
            }
            let _ = writeln!(s, "                        for (; i < len; i++) dd[i] = src[i * {sw}];");
            let _ = writeln!(s, "                    }}");
            let _ = writeln!(
                s,
                "                    for (int64_t q = wdt; q < {nr}; q++) d[q] = 0.0f;"
            );
            let _ = writeln!(s, "                }}");
        }
        let _ = writeln!(s, "            }}");
        let _ = writeln!(s, "            for (int64_t mb = mb0; mb < mb1; mb++) {{");
        let _ = writeln!(
            s,
            "            const int64_t i0 = mb * {mc}, mcur = min_i64({mc}, {mg} - i0);"
        );
        let _ = writeln!(s, "            for (int64_t jp = 0; jp < ncur; jp += {nr}) {{");
        let _ = writeln!(s, "                for (int64_t ip = 0; ip < mcur; ip += {mr}) {{");
        let _ = writeln!(s, "                    const int64_t i = i0 + ip, j = j0 + jp;");
        let ne = e_slots.len();
        let bases: Vec<String> = (0..ne)
            .map(|k| format!("E{k} + n * esb{k} + (g * {mg} + i) * esm{k} + j * {}", eop_strides[k].2))
            .collect();
        emit_epilogue_operands(&mut s, &bases);
        let a_panel = format!("Ag + (i / {mr}) * K * {mr} + pc * {mr}");
        let rest = format!(
            "Yg + i * P + j, P, min_i64({mr}, mcur - ip), min_i64({nr}, ncur - jp), pc > 0, pc + kcur >= K, eb, es"
        );
        if b_in_place {
            let _ = writeln!(s, "                    if (ncur - jp >= {nr}) ukr_in_place_{entry}(kcur, {a_panel}, Xs + pc * P + j, P, {rest});");
            let _ = writeln!(s, "                    else");
        }
        let _ = writeln!(
            s,
            "                    ukr_{entry}(kcur, {a_panel}, Bp + jp * kcur, {rest});"
        );
        let _ = writeln!(
            s,
            "                }}\n            }}\n            }}\n        }}\n    }}\n}}"
        );
        groups * pblocks * mchunks
    };
    let tasks = if knobs.parallel {
        ParamExpr::Mul(Box::new(batch), Box::new(ParamExpr::Const(tasks_per_batch as i64)))
    } else {
        ParamExpr::Const(1)
    };
    Ok(Some(LoweredKernel {
        call: KernelCall {
            entry,
            buffers,
            params: p.exprs,
            packed: vec![packed],
            max_parts: Some(tasks),
        },
        source: s,
        schedule: sched,
        workload,
    }))
}

/// Emits `Xs`, the image the packing reads for batch `n`, group `g`: the
/// group's channels of `X`, or their zero-bordered copy (`hp x wp` each).
fn emit_image_source(s: &mut String, geo: &Geometry, padded: bool, hp: usize, wp: usize) {
    let (c, cg, hw) = (geo.c, geo.c / geo.groups, geo.h * geo.w);
    let _ = writeln!(s, "        const float *Xg = X + (n * {c} + g * {cg}) * {hw};");
    if padded {
        emit_pad_copy(s, geo, hp, wp);
        let _ = writeln!(s, "        const float *Xs = Xpad;");
    } else {
        let _ = writeln!(s, "        const float *Xs = Xg;");
    }
}

/// Emits `tap`, where K row `pc + k` (channel, kernel row, kernel column)
/// starts in the image `Xs` with rows `wp` floats apart.
fn emit_tap(s: &mut String, geo: &Geometry, hp: usize, wp: usize) {
    let (kh, kw) = (geo.kh, geo.kw);
    let _ = writeln!(
        s,
        "                    const int64_t kk = pc + k, ci = kk / {}, ky = (kk / {kw}) % {kh}, kx = kk % {kw};",
        kh * kw
    );
    let _ = writeln!(
        s,
        "                    const float *tap = Xs + ci * {} + ky * {} + kx * {};",
        hp * wp,
        geo.dh * wp,
        geo.dw
    );
}

/// Emits the copy of batch `n`, group `g`'s input channels (`Xg`) into the
/// part's zero-bordered image `Xpad` (`hp x wp` per channel, the image at
/// row `ph`, column `pw`), skipped when the part's previous task already
/// copied them.
pub(crate) fn emit_pad_copy(s: &mut String, geo: &Geometry, hp: usize, wp: usize) {
    let (groups, cg, h, w) = (geo.groups, geo.c / geo.groups, geo.h, geo.w);
    let (ph, pw) = (geo.ph as usize, geo.pw as usize);
    let _ = writeln!(s, "        if (padded_ng != n * {groups} + g) {{");
    let _ = writeln!(s, "            padded_ng = n * {groups} + g;");
    let _ = writeln!(s, "            for (int64_t ci = 0; ci < {cg}; ci++) {{");
    let _ = writeln!(s, "                float *dp = Xpad + ci * {};", hp * wp);
    let _ = writeln!(s, "                const float *sp = Xg + ci * {};", h * w);
    let _ = writeln!(s, "                memset(dp, 0, sizeof(float) * {});", ph * wp + pw);
    let _ = writeln!(s, "                for (int64_t i = 0; i < {h}; i++) {{");
    let _ = writeln!(
        s,
        "                    memcpy(dp + {} + i * {wp}, sp + i * {w}, sizeof(float) * {w});",
        ph * wp + pw
    );
    let _ = writeln!(
        s,
        "                    memset(dp + {} + i * {wp}, 0, sizeof(float) * {});",
        ph * wp + pw + w,
        if h > 0 { wp - w } else { 0 }
    );
    let _ = writeln!(s, "                }}");
    let tail = (ph + h) * wp + pw;
    let _ = writeln!(
        s,
        "                memset(dp + {tail}, 0, sizeof(float) * {});",
        hp * wp - tail.min(hp * wp)
    );
    let _ = writeln!(s, "            }}\n        }}");
}

#[cfg(test)]
mod tests {
    use crate::testutil::{check, check_neon, check_with, node, rand_tensor, tt};
    use crate::{GroupValue, KernelGroup, Target};
    use carbide_ir::kernel::{MicroTile, WeightLayout};
    use carbide_ir::ops::elementwise::{Binary, ElementwiseOp, Unary};
    use carbide_ir::ops::nn::{AutoPad, ConvAttrs, NnOp};
    use carbide_ir::{Op, Tensor};

    struct Case {
        x: [usize; 4],
        m: usize,
        k: [usize; 2],
        strides: [i64; 2],
        pads: [i64; 4],
        dil: [i64; 2],
        group: i64,
        bias: bool,
        residual: bool,
        act: Option<Unary>,
    }

    fn build(c: &Case) -> (KernelGroup, Vec<Tensor>) {
        let oh = (c.x[2] as i64 + c.pads[0] + c.pads[2] - c.dil[0] * (c.k[0] as i64 - 1) - 1) / c.strides[0] + 1;
        let ow = (c.x[3] as i64 + c.pads[1] + c.pads[3] - c.dil[1] * (c.k[1] as i64 - 1) - 1) / c.strides[1] + 1;
        let out = [c.x[0], c.m, oh as usize, ow as usize];
        let wshape = [c.m, c.x[1] / c.group as usize, c.k[0], c.k[1]];
        let (x, w, b, r) = (
            rand_tensor(&c.x, 1),
            rand_tensor(&wshape, 2),
            rand_tensor(&[c.m], 3),
            rand_tensor(&out, 4),
        );
        let mut inputs = vec![
            GroupValue {
                name: "x".into(),
                ty: tt(&c.x),
                constant: None,
            },
            GroupValue {
                name: "w".into(),
                ty: tt(&wshape),
                constant: Some(w.clone()),
            },
        ];
        let mut feeds = vec![x, w];
        let mut conv_in = vec!["x", "w"];
        if c.bias {
            inputs.push(GroupValue {
                name: "b".into(),
                ty: tt(&[c.m]),
                constant: Some(b.clone()),
            });
            feeds.push(b);
            conv_in.push("b");
        }
        let attrs = ConvAttrs {
            auto_pad: AutoPad::NotSet,
            dilations: Some(c.dil.to_vec()),
            group: c.group,
            kernel_shape: None,
            pads: Some(c.pads.to_vec()),
            strides: Some(c.strides.to_vec()),
        };
        let mut nodes = vec![node("conv", Op::Nn(NnOp::Conv(attrs)), &conv_in, &["y0"])];
        let mut last = "y0".to_string();
        if c.residual {
            inputs.push(GroupValue {
                name: "r".into(),
                ty: tt(&out),
                constant: None,
            });
            feeds.push(r);
            nodes.push(node(
                "res",
                Op::Elementwise(ElementwiseOp::Binary {
                    op: Binary::Add,
                    legacy_axis: None,
                }),
                &[&last, "r"],
                &["y1"],
            ));
            last = "y1".into();
        }
        if let Some(a) = c.act {
            nodes.push(node("act", Op::Elementwise(ElementwiseOp::Unary(a)), &[&last], &["y2"]));
            last = "y2".into();
        }
        (
            KernelGroup {
                nodes,
                inputs,
                outputs: vec![GroupValue {
                    name: last,
                    ty: tt(&out),
                    constant: None,
                }],
            },
            feeds,
        )
    }

    fn cases() -> Vec<Case> {
        vec![
            Case {
                x: [1, 5, 11, 11],
                m: 13,
                k: [3, 3],
                strides: [1, 1],
                pads: [1, 1, 1, 1],
                dil: [1, 1],
                group: 1,
                bias: true,
                residual: false,
                act: Some(Unary::Relu),
            },
            Case {
                x: [2, 6, 13, 10],
                m: 4,
                k: [3, 2],
                strides: [2, 1],
                pads: [0, 1, 2, 0],
                dil: [2, 1],
                group: 2,
                bias: false,
                residual: false,
                act: None,
            },
            Case {
                x: [2, 40, 7, 9],
                m: 30,
                k: [1, 1],
                strides: [1, 1],
                pads: [0, 0, 0, 0],
                dil: [1, 1],
                group: 1,
                bias: true,
                residual: true,
                act: Some(Unary::Relu),
            },
            Case {
                x: [1, 3, 23, 23],
                m: 16,
                k: [7, 7],
                strides: [2, 2],
                pads: [3, 3, 3, 3],
                dil: [1, 1],
                group: 1,
                bias: true,
                residual: false,
                act: Some(Unary::HardSwish),
            },
            Case {
                x: [1, 8, 9, 9],
                m: 8,
                k: [3, 3],
                strides: [1, 1],
                pads: [1, 1, 1, 1],
                dil: [1, 1],
                group: 8,
                bias: true,
                residual: false,
                act: Some(Unary::Sigmoid),
            },
            Case {
                x: [2, 24, 14, 14],
                m: 24,
                k: [3, 3],
                strides: [1, 1],
                pads: [1, 1, 1, 1],
                dil: [1, 1],
                group: 24,
                bias: true,
                residual: true,
                act: Some(Unary::Relu),
            },
            Case {
                x: [1, 16, 15, 15],
                m: 16,
                k: [5, 5],
                strides: [2, 2],
                pads: [2, 2, 2, 2],
                dil: [1, 1],
                group: 16,
                bias: false,
                residual: false,
                act: Some(Unary::HardSwish),
            },
            Case {
                x: [1, 300, 5, 5],
                m: 20,
                k: [3, 3],
                strides: [1, 1],
                pads: [1, 1, 1, 1],
                dil: [1, 1],
                group: 1,
                bias: true,
                residual: true,
                act: None,
            },
            // Depthwise stride 2 wide enough for the de-interleaving vector loads.
            Case {
                x: [1, 6, 11, 45],
                m: 6,
                k: [3, 3],
                strides: [2, 2],
                pads: [1, 1, 1, 1],
                dil: [1, 1],
                group: 6,
                bias: true,
                residual: true,
                act: Some(Unary::Relu),
            },
            // Several channel and pixel blocks: tasks reuse one packed image
            // panel for all channel blocks.
            Case {
                x: [1, 7, 41, 40],
                m: 300,
                k: [3, 3],
                strides: [1, 1],
                pads: [1, 2, 1, 0],
                dil: [1, 1],
                group: 1,
                bias: true,
                residual: false,
                act: Some(Unary::Relu),
            },
            // Stride 2 with runs long enough for the de-interleaving packing
            // loads, from the zero-bordered copy and straight from the image.
            Case {
                x: [1, 5, 20, 75],
                m: 14,
                k: [3, 3],
                strides: [2, 2],
                pads: [1, 1, 0, 1],
                dil: [1, 1],
                group: 1,
                bias: true,
                residual: false,
                act: None,
            },
            Case {
                x: [2, 9, 6, 67],
                m: 17,
                k: [1, 1],
                strides: [2, 2],
                pads: [0, 0, 0, 0],
                dil: [1, 1],
                group: 1,
                bias: false,
                residual: true,
                act: Some(Unary::Relu),
            },
            // 7x7 pixels: the default is the channel-vector form (two K blocks).
            Case {
                x: [1, 40, 7, 7],
                m: 128,
                k: [3, 3],
                strides: [1, 1],
                pads: [1, 1, 1, 1],
                dil: [1, 1],
                group: 1,
                bias: true,
                residual: true,
                act: Some(Unary::Relu),
            },
            // Few pixels: tasks split the channel blocks instead.
            Case {
                x: [1, 24, 9, 9],
                m: 200,
                k: [3, 3],
                strides: [2, 2],
                pads: [1, 1, 1, 1],
                dil: [1, 1],
                group: 1,
                bias: true,
                residual: true,
                act: None,
            },
        ]
    }

    #[test]
    fn conv2d_matches_reference() {
        for t in ["x86-64-avx2", "x86-64-avx512"].map(|t| Target::parse(t).unwrap()) {
            if !t.runs_on_host() {
                continue;
            }
            for c in cases() {
                let (g, feeds) = build(&c);
                check(&g, &t, &feeds, 1e-4);
            }
        }
    }

    /// Every non-depthwise case in the channel-vector form, with small
    /// blocks so tasks span several pixel blocks, channel blocks and K blocks.
    #[test]
    fn channel_vector_form_matches_reference() {
        for t in ["x86-64-avx2", "x86-64-avx512"].map(|t| Target::parse(t).unwrap()) {
            if !t.runs_on_host() {
                continue;
            }
            let nr = 2 * t.vector_width();
            for c in cases()
                .iter()
                .filter(|c| !(c.group as usize == c.x[1] && c.m == c.x[1]))
            {
                let (g, feeds) = build(c);
                let mut s = crate::default_schedule(&g, &t).unwrap().unwrap();
                s.microkernel = Some(MicroTile { mr: 5, nr });
                s.weight_layout = WeightLayout::PackedPanels { nr };
                s.tiles = [("m".to_string(), 10), ("n".to_string(), nr), ("k".to_string(), 40)]
                    .into_iter()
                    .collect();
                check_with(&g, &t, Some(&s), &feeds, 1e-4);
            }
        }
    }

    /// A 1x1 conv with a residual and Relu (mobilenet's pointwise shape
    /// family, small enough for a test).
    fn pointwise(x: [usize; 4], m: usize) -> Case {
        Case {
            x,
            m,
            k: [1, 1],
            strides: [1, 1],
            pads: [0, 0, 0, 0],
            dil: [1, 1],
            group: 1,
            bias: true,
            residual: true,
            act: Some(Unary::Relu),
        }
    }

    /// B read in place: full pixel panels from the image, the partial one
    /// packed; K split into several blocks, several pixel and channel
    /// blocks, and the default blocks.
    #[test]
    fn pointwise_in_place_b_matches_reference() {
        for t in ["x86-64-avx2", "x86-64-avx512"].map(|t| Target::parse(t).unwrap()) {
            if !t.runs_on_host() {
                continue;
            }
            for case in [pointwise([2, 40, 7, 9], 30), pointwise([1, 70, 13, 29], 24)] {
                let (g, feeds) = build(&case);
                let mut s = super::default_schedule(&t);
                let nr = s.microkernel.unwrap().nr;
                s.tiles.insert(super::B_PACK.into(), 0);
                check_with(&g, &t, Some(&s), &feeds, 1e-4);
                s.tiles.insert("k".into(), 32);
                s.tiles.insert("n".into(), 2 * nr);
                s.tiles.insert("m".into(), s.microkernel.unwrap().mr);
                s.unroll.insert("k".into(), 4);
                let k = check_with(&g, &t, Some(&s), &feeds, 1e-4);
                assert!(k.source.contains("ukr_in_place_"), "the in-place microkernel is used");
            }
        }
    }

    #[test]
    fn in_place_b_is_only_for_pointwise_pixel_vector_convs() {
        let t = Target::parse("x86-64-avx512").unwrap();
        let rejected = |case: &Case, s: &carbide_ir::kernel::Schedule| {
            let (g, _) = build(case);
            matches!(
                crate::lower(&g, &t, Some(s)),
                Err(crate::CodegenError::BadSchedule { why, .. }) if why.contains("b_pack")
            )
        };
        let mut s = super::default_schedule(&t);
        s.tiles.insert(super::B_PACK.into(), 0);
        assert!(rejected(&cases()[0], &s), "3x3 convs pack B");
        let nr = s.microkernel.unwrap().nr;
        let mut cv = s.clone();
        cv.weight_layout = WeightLayout::PackedPanels { nr };
        assert!(rejected(&pointwise([2, 40, 7, 9], 30), &cv), "the channel-vector form");
        let mut one = s.clone();
        one.tiles.insert(super::B_PACK.into(), 1);
        assert!(rejected(&pointwise([2, 40, 7, 9], 30), &one), "only 0 is a value");
    }

    /// 14x14 pointwise convs (mobilenet_v2's): one pixel block, so two
    /// parts split the output channels (21 microkernel calls each for 64
    /// channels, where splitting the pixels gives 24 and 18), and the
    /// result matches the reference on 1 and 3 parts.
    #[test]
    fn small_pointwise_images_split_the_channels_between_parts() {
        let t = Target::parse("x86-64-avx512").unwrap();
        for (x, m, mblocks) in [([1, 96, 14, 14], 64, 2), ([1, 64, 14, 14], 384, 4)] {
            let (g, feeds) = build(&pointwise(x, m));
            let s = crate::default_schedule(&g, &t).unwrap().unwrap();
            assert!(matches!(s.weight_layout, WeightLayout::Nchwc { .. }), "{s:?}");
            assert_eq!(s.tile("n", 0), 224, "one pixel block: {s:?}");
            assert_eq!(m.div_ceil(s.tile("m", 0)), mblocks, "{s:?}");
            if t.runs_on_host() {
                check_with(&g, &t, None, &feeds, 1e-4);
            }
        }
        // 28x28 with 32 channels (three 12-row tiles) keeps its pixel split.
        assert_eq!(super::busier_part_work(1, 784, 416, 32, 32, 24, 12), 39);
        assert_eq!(super::busier_part_work(1, 784, 800, 32, 32, 24, 12), 50);
        let (g, _) = build(&pointwise([1, 144, 28, 28], 32));
        let s = crate::default_schedule(&g, &t).unwrap().unwrap();
        assert_eq!(s.tile("n", 0), 416, "{s:?}");
    }

    #[test]
    fn small_images_default_to_the_channel_vector_form() {
        let case = cases().into_iter().find(|c| c.x == [1, 40, 7, 7]).unwrap();
        let (g, _) = build(&case);
        for t in ["x86-64-avx2", "x86-64-avx512", "aarch64-neon"].map(|t| Target::parse(t).unwrap()) {
            let s = crate::default_schedule(&g, &t).unwrap().unwrap();
            assert!(
                matches!(s.weight_layout, WeightLayout::PackedPanels { .. }),
                "{}: {s:?}",
                t.name()
            );
            // 49 pixels: a tile height that divides them (7) or wastes one row (5 of 50).
            let mr = s.microkernel.unwrap().mr;
            assert!(49 % mr == 0 || mr == 5, "{}: mr {mr}", t.name());
        }
    }

    #[test]
    fn neon_conv2d_under_qemu() {
        let cases = cases();
        let (g, feeds) = build(&cases[0]);
        check_neon(&g, &feeds, 1e-4);
        // Depthwise stride 2 (vld2q de-interleaving loads).
        let dw = cases.iter().find(|c| c.group > 1 && c.strides == [2, 2] && c.x[3] > 40);
        let (g, feeds) = build(dw.expect("a wide stride-2 depthwise case"));
        check_neon(&g, &feeds, 1e-4);
        // The channel-vector form (7x7 pixels).
        let small = cases.iter().find(|c| c.x == [1, 40, 7, 7]).unwrap();
        let (g, feeds) = build(small);
        check_neon(&g, &feeds, 1e-4);
        // B read in place.
        let (g, feeds) = build(&pointwise([1, 70, 13, 29], 24));
        let mut s = super::default_schedule(&Target::parse("aarch64-neon").unwrap());
        s.tiles.insert(super::B_PACK.into(), 0);
        s.tiles.insert("k".into(), 32);
        crate::testutil::check_neon_with(&g, Some(&s), &feeds, 1e-4);
    }
}
