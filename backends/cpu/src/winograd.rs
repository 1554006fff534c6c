//! Winograd F(m x m, 3 x 3) convolution (Lavin & Gray) for f32 3x3
//! stride-1 ungrouped convolutions: (m + 2)^2 / (9 m^2) of the direct
//! multiplies (m = 2: 0.44, m = 4: 0.25), at the price of ~10x the rounding
//! error for m = 4 — so it is never the default, only a schedule point
//! (`WeightLayout::Winograd { m }`) the autotuner measures and verifies.
//!
//! Per (image, block of `n` tiles) task: the input tiles (from a
//! zero-bordered copy of the image) go through V = B^T d B, vectorized over
//! VW consecutive tiles gathered lane by lane; then alpha^2 GEMMs
//! M = U V (output channels x input channels x tiles, tiles the vector axis)
//! with the GEMM microkernel over weights U = G g G^T transformed and packed
//! at compile time; then Y = A^T M A, the fused epilogue, and a masked
//! scatter of the m x m outputs (edge tiles store only their valid pixels).

use crate::cexpr::{emit, flit, Mode, Params};
use crate::conv::{batch_param, conv_slots, emit_pad_copy, ConvSlots, Geometry};
use crate::gemm::{check_schedule, emit_task_range, microkernel, GemmKnobs, WeightRole};
use crate::group::Chain;
use crate::target::Target;
use crate::{CodegenError, LoweredKernel};
use carbide_ir::kernel::{BufferArg, Expr, KernelCall, MicroTile, ParamExpr, Schedule, WeightLayout, WorkloadKey};
use carbide_ir::{Dim, Tensor};
use std::fmt::Write;

/// The output tile sizes generated.
pub(crate) const TILE_SIZES: [usize; 2] = [2, 4];

/// With fewer (image, tile block) tasks per image than this, tasks also
/// split the output channels so the parts stay busy (as in `conv`).
const MIN_TILE_TASKS: usize = 4;

/// What `conv::lower` has resolved about the convolution.
pub(crate) struct WinogradConv<'a> {
    pub geo: &'a Geometry,
    pub chain: &'a Chain,
    /// Per epilogue operand: (batch stride, channel stride, pixel stride 0/1).
    pub eop_strides: &'a [(ParamExpr, ParamExpr, i64)],
    /// The image's input index.
    pub x: usize,
    pub weights: &'a Tensor,
    pub batch: &'a Dim,
    /// Output tile size `m`.
    pub tile: usize,
}

/// The transform matrices of F(m x m, 3 x 3): B^T (alpha x alpha), G
/// (alpha x 3), A^T (m x alpha), alpha = m + 2 (interpolation points 0, ±1,
/// ±2 and infinity, the usual choice for small error).
struct Matrices {
    bt: Vec<Vec<f64>>,
    g: Vec<Vec<f64>>,
    at: Vec<Vec<f64>>,
}

fn matrices(m: usize) -> Option<Matrices> {
    let rows = |r: &[&[f64]]| r.iter().map(|x| x.to_vec()).collect::<Vec<_>>();
    match m {
        2 => Some(Matrices {
            bt: rows(&[
                &[1.0, 0.0, -1.0, 0.0],
                &[0.0, 1.0, 1.0, 0.0],
                &[0.0, -1.0, 1.0, 0.0],
                &[0.0, 1.0, 0.0, -1.0],
            ]),
            g: rows(&[&[1.0, 0.0, 0.0], &[0.5, 0.5, 0.5], &[0.5, -0.5, 0.5], &[0.0, 0.0, 1.0]]),
            at: rows(&[&[1.0, 1.0, 1.0, 0.0], &[0.0, 1.0, -1.0, -1.0]]),
        }),
        4 => Some(Matrices {
            bt: rows(&[
                &[4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
                &[0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
                &[0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
                &[0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
                &[0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
                &[0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
            ]),
            g: rows(&[
                &[1.0 / 4.0, 0.0, 0.0],
                &[-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
                &[-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
                &[1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
                &[1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
                &[0.0, 0.0, 1.0],
            ]),
            at: rows(&[
                &[1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
                &[0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
                &[0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
                &[0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
            ]),
        }),
        _ => None,
    }
}

/// Whether `geo` is a convolution this template computes.
fn eligible(geo: &Geometry) -> bool {
    geo.kh == 3
        && geo.kw == 3
        && geo.sh == 1
        && geo.sw == 1
        && geo.dh == 1
        && geo.dw == 1
        && geo.groups == 1
        && geo.ph >= 0
        && geo.pw >= 0
        && geo.oh > 0
        && geo.ow > 0
}

/// The Winograd points of a conv's schedule space (empty when the conv is
/// not eligible): per tile size, tile blocks sized so V and M
/// (alpha^2 x (C + MC) x tiles floats) fill about a third or two thirds of
/// a 1 MiB L2, for the default register tile and the narrowest one (few
/// tiles fill narrow tiles better), at two KC — the first of them is what
/// the tuner measures first for the form — and the default's knobs with
/// Winograd weights (one knob from the default).
pub(crate) fn schedule_points(
    group: &crate::KernelGroup,
    default: &Schedule,
    target: &Target,
    micro_tiles: &[(usize, usize)],
) -> Vec<Schedule> {
    let Some(t0) = default.microkernel else {
        return Vec::new();
    };
    let Some(out) = group
        .outputs
        .first()
        .and_then(|o| o.ty.concrete_shape())
        .filter(|s| s.len() == 4)
    else {
        return Vec::new();
    };
    let (k_out, oh, ow) = (out[1], out[2], out[3]);
    let c_in = group
        .nodes
        .first()
        .and_then(|a| a.inputs.get(1))
        .and_then(|w| group.inputs.iter().find(|v| &v.name == w))
        .and_then(|v| v.ty.concrete_shape())
        .map_or(256, |s| s.get(1).copied().unwrap_or(256));
    let narrowest = micro_tiles
        .iter()
        .copied()
        .min_by_key(|&(mr, nr)| (nr, usize::MAX - mr));
    let tiles_to_try: Vec<(usize, usize)> = std::iter::once((t0.mr, t0.nr)).chain(narrowest).collect();
    let mut points = Vec::new();
    for m in TILE_SIZES {
        let mut s = default.clone();
        s.weight_layout = WeightLayout::Winograd { m };
        // Eligibility: the template accepts or rejects the conv itself.
        if m == TILE_SIZES[0] && crate::lower(group, target, Some(&s)).is_err() {
            return Vec::new();
        }
        let (th, tw) = tile_grid(oh, ow, m);
        let tiles = th * tw;
        let a2 = (m + 2) * (m + 2);
        if tiles < t0.nr.min(narrowest.map_or(t0.nr, |t| t.1)) {
            continue;
        }
        let default_knobs = s;
        for &(mr, nr) in &tiles_to_try {
            let mc = (96 / mr).max(1) * mr;
            for l2_share in [3usize, 3 * 2] {
                let budget = (1usize << 20) * l2_share / 9;
                let tblk = (budget / (a2 * 4 * (c_in + mc)) / nr).max(1) * nr;
                for kc in [256usize, 128] {
                    let mut s = default.clone();
                    s.microkernel = Some(MicroTile { mr, nr });
                    s.weight_layout = WeightLayout::Winograd { m };
                    s.unroll = Default::default();
                    s.tiles = [
                        ("m".to_string(), mc.min(k_out.div_ceil(mr) * mr)),
                        ("n".to_string(), tblk.min(tiles.div_ceil(nr) * nr) * m * m),
                        ("k".to_string(), kc),
                    ]
                    .into_iter()
                    .collect();
                    if !points.contains(&s) {
                        points.push(s);
                    }
                }
            }
        }
        if !points.contains(&default_knobs) {
            points.push(default_knobs);
        }
    }
    points
}

/// Tiles per image for output tile size `m`: (tile rows, tile columns).
pub(crate) fn tile_grid(oh: usize, ow: usize, m: usize) -> (usize, usize) {
    (oh.div_ceil(m), ow.div_ceil(m))
}

/// U = G g G^T for every (output, input) channel pair, packed per
/// alpha^2 position as GEMM A panels of `mr` output channels, k-major:
/// `[xi][panel][c][mr]`, zero rows past the last channel.
fn transform_weights(w: &Tensor, k_out: usize, c_in: usize, mats: &Matrices, mr: usize) -> Option<Vec<u8>> {
    let Tensor::F32(arr) = w else { return None };
    let data: Vec<f32> = arr.iter().copied().collect();
    if data.len() != k_out * c_in * 9 {
        return None;
    }
    let alpha = mats.g.len();
    let a2 = alpha * alpha;
    let panels = k_out.div_ceil(mr);
    let mut u = vec![0f32; a2 * panels * c_in * mr];
    for k in 0..k_out {
        for c in 0..c_in {
            let g = &data[(k * c_in + c) * 9..][..9];
            // t = G g (alpha x 3), then t G^T (alpha x alpha).
            let mut t = vec![[0f64; 3]; alpha];
            for (a, row) in t.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (0..3).map(|i| mats.g[a][i] * f64::from(g[i * 3 + j])).sum();
                }
            }
            for (a, ta) in t.iter().enumerate() {
                for (b, gb) in mats.g.iter().enumerate() {
                    let v: f64 = (0..3).map(|j| ta[j] * gb[j]).sum();
                    let xi = a * alpha + b;
                    u[((xi * panels + k / mr) * c_in + c) * mr + k % mr] = v as f32;
                }
            }
        }
    }
    Some(u.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// C for the vector sum of `coeffs[k] * term(k)`, with adds and subtracts
/// for the ±1 coefficients and FMAs for the others.
fn linear(coeffs: &[f64], term: &dyn Fn(usize) -> String) -> String {
    let mut nz: Vec<(usize, f64)> = coeffs.iter().copied().enumerate().filter(|(_, c)| *c != 0.0).collect();
    // Start from a +1 term when there is one (no negation or multiply).
    if let Some(p) = nz.iter().position(|(_, c)| *c == 1.0) {
        let first = nz.remove(p);
        nz.insert(0, first);
    }
    let Some(&(k0, c0)) = nz.first() else {
        return "VZERO()".into();
    };
    let mut e = match c0 {
        1.0 => term(k0),
        _ => format!("VMUL(VSET1({}), {})", flit(c0 as f32), term(k0)),
    };
    for &(k, c) in &nz[1..] {
        e = match c {
            1.0 => format!("VADD({e}, {})", term(k)),
            -1.0 => format!("VSUB({e}, {})", term(k)),
            _ => format!("VFMA(VSET1({}), {}, {e})", flit(c as f32), term(k)),
        };
    }
    e
}

/// Emits `out{r}_{c} = (L X L^T)[r][c]` for an alpha x alpha input `x(k, j)`
/// (named vectors), through temporaries `tmp{r}_{j} = (L X)[r][j]`.
fn emit_sandwich(
    s: &mut String,
    l: &[Vec<f64>],
    x: &dyn Fn(usize, usize) -> String,
    tmp: &str,
    out: &str,
    indent: &str,
) {
    let alpha = l[0].len();
    for (r, lr) in l.iter().enumerate() {
        for j in 0..alpha {
            let _ = writeln!(s, "{indent}const vf {tmp}{r}_{j} = {};", linear(lr, &|k| x(k, j)));
        }
    }
    for r in 0..l.len() {
        for (c, lc) in l.iter().enumerate() {
            let _ = writeln!(
                s,
                "{indent}const vf {out}{r}_{c} = {};",
                linear(lc, &|k| format!("{tmp}{r}_{k}"))
            );
        }
    }
}

pub(crate) fn lower(
    conv: &WinogradConv,
    name: &str,
    target: &Target,
    sched: Schedule,
    workload: WorkloadKey,
    entry: String,
) -> Result<LoweredKernel, CodegenError> {
    let bad = |why: String| CodegenError::BadSchedule {
        kernel: name.to_string(),
        why,
    };
    let g = conv.geo;
    if !eligible(g) {
        return Err(bad(format!(
            "Winograd weights need a 3x3 stride-1 dilation-1 ungrouped conv, not {}x{} strides {}x{} dilations {}x{} group {}",
            g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.groups
        )));
    }
    let m = conv.tile;
    let Some(mats) = matrices(m) else {
        return Err(bad(format!(
            "Winograd tile m={m} is not generated (only {TILE_SIZES:?})"
        )));
    };
    let knobs = check_schedule(&sched, target, name, WeightRole::ConvA)?;
    let GemmKnobs { mr, nr, kc, mc, nc, .. } = knobs;
    let vw = target.vector_width();
    let (k_out, c_in, oh, ow) = (g.m, g.c, g.oh, g.ow);
    let Some(packed) = transform_weights(conv.weights, k_out, c_in, &mats, mr) else {
        return Err(CodegenError::BadGroup(format!(
            "{name}: Winograd needs constant f32 OIHW weights"
        )));
    };
    let alpha = m + 2;
    let a2 = alpha * alpha;
    let (th, tw) = tile_grid(oh, ow, m);
    let tiles = th * tw;
    // Tile block: the `n` tile counts output pixels (as for the direct
    // conv), i.e. n / m^2 tiles in whole `nr` panels, never more than the
    // image's tiles need.
    let tblk = (nc / (m * m)).div_ceil(nr).max(1) * nr;
    let tblk = tblk.min(tiles.div_ceil(nr) * nr);
    let mc = mc.min(k_out.div_ceil(mr) * mr);
    let kc = kc.min(c_in);
    let (ph, pw) = (g.ph as usize, g.pw as usize);
    // Every tile's alpha x alpha input lies in the zero-bordered copy.
    let hp = (ph + g.h).max(th * m + 2);
    let wp = (pw + g.w).max(tw * m + 2);
    // Per-position strides a cache line longer than the blocks, so the
    // alpha^2 streams do not all map to the same L1 sets.
    let v_stride = c_in * tblk + 16;
    let m_stride = mc * tblk + 16;
    let bytes = |floats: usize| (floats * 4).div_ceil(64) * 64;
    let v_bytes = bytes(a2 * v_stride);
    let m_bytes = bytes(a2 * m_stride);
    let pad_bytes = bytes(c_in * hp * wp + pw + vw);
    let scratch_bytes = v_bytes + m_bytes + pad_bytes;
    let panels = k_out.div_ceil(mr);
    let u_stride = panels * mr * c_in;

    let (buffers, slots) = conv_slots(conv.x, BufferArg::Packed(0), scratch_bytes, &conv.chain.operands);
    let ConvSlots {
        scratch: s_slot,
        epilogue: ref e_slots,
        ..
    } = slots;
    let mut p = Params::default();
    let batch = batch_param(conv.batch, conv.x);
    let tblocks = tiles.div_ceil(tblk);
    let mblocks = k_out.div_ceil(mc);
    let mchunks = if tblocks >= MIN_TILE_TASKS { 1 } else { mblocks };
    let hw = g.h * g.w;
    let pix = oh * ow;

    let mut s = String::new();
    s.push_str(
        &microkernel(mr, nr, knobs.unroll_k, vw, &Expr::Acc, &[]).replace("void ukr(", &format!("void ukr_{entry}(")),
    );
    slots.emit_entry(&mut s, &entry, "U");
    let _ = writeln!(
        s,
        "    char *S = (char *)bufs[{s_slot}] + part * (int64_t){scratch_bytes};"
    );
    let _ = writeln!(
        s,
        "    float *V = (float *)S, *Mb = (float *)(S + {v_bytes}), *Xpad = (float *)(S + {});",
        v_bytes + m_bytes
    );
    let _ = writeln!(s, "    int64_t padded_ng = -1;");
    let _ = writeln!(s, "    const int64_t NB = {};", p.c(batch.clone()));
    for (i, sl) in e_slots.iter().enumerate() {
        let _ = writeln!(s, "    const float *E{i} = (const float *)bufs[{sl}];");
        let _ = writeln!(
            s,
            "    const int64_t esb{i} = {}, esm{i} = {};",
            p.c(conv.eop_strides[i].0.clone()),
            p.c(conv.eop_strides[i].1.clone())
        );
    }
    let _ = writeln!(
        s,
        "    const int64_t tblocks = {tblocks}, mblocks = {mblocks}, mchunks = {mchunks};"
    );
    let _ = writeln!(s, "    const int64_t ntasks = NB * tblocks * mchunks;");
    emit_task_range(&mut s, knobs.parallel);
    let _ = writeln!(s, "    int32_t toff[{tblk}], ooff[{tblk}], rr[{tblk}], cr[{tblk}];");
    let _ = writeln!(s, "    for (int64_t t = t0, te; t < t1; t = te) {{");
    let _ = writeln!(s, "        const int64_t run = t / mchunks;");
    let _ = writeln!(s, "        te = min_i64(t1, (run + 1) * mchunks);");
    let _ = writeln!(s, "        const int64_t tb = run % tblocks, n = run / tblocks, g = 0;");
    let _ = writeln!(
        s,
        "        const int64_t mb0 = mblocks * (t % mchunks) / mchunks, mb1 = mblocks * ((te - 1) % mchunks + 1) / mchunks;"
    );
    let _ = writeln!(s, "        const float *Xg = X + n * {};", c_in * hw);
    emit_pad_copy(&mut s, g, hp, wp);
    // The block's tiles: input and output offsets, and how many of their
    // rows and columns are in the output (0 for lanes past the last tile).
    let _ = writeln!(
        s,
        "        const int64_t tile0 = tb * {tblk}, ncols = min_i64({tblk}, {tiles} - tile0);"
    );
    let _ = writeln!(s, "        const int64_t ngroups = (ncols + VW - 1) / VW;");
    let _ = writeln!(s, "        for (int64_t l = 0; l < ngroups * VW; l++) {{");
    let _ = writeln!(
        s,
        "            const int64_t tile = tile0 + l, ty = tile / {tw}, tx = tile % {tw};"
    );
    let _ = writeln!(s, "            const int live = l < ncols;");
    let _ = writeln!(
        s,
        "            toff[l] = live ? (int32_t)(ty * {} + tx * {m}) : 0;",
        m * wp
    );
    let _ = writeln!(
        s,
        "            ooff[l] = live ? (int32_t)(ty * {} + tx * {m}) : 0;",
        m * ow
    );
    let _ = writeln!(s, "            rr[l] = live ? (int32_t)({oh} - ty * {m}) : 0;");
    let _ = writeln!(s, "            cr[l] = live ? (int32_t)({ow} - tx * {m}) : 0;");
    let _ = writeln!(s, "        }}");
    // Input transform, VW tiles per vector, into V[xi][tile panel][c][nr].
    let _ = writeln!(s, "        for (int64_t lg = 0; lg < ngroups; lg++) {{");
    let _ = writeln!(s, "            const vi idx = VI_LOAD(toff + lg * VW);");
    let _ = writeln!(
        s,
        "            float *v0 = V + (lg * VW / {nr}) * {} + (lg * VW) % {nr};",
        c_in * nr
    );
    let _ = writeln!(s, "            for (int64_t c = 0; c < {c_in}; c++) {{");
    let _ = writeln!(s, "                const float *b = Xpad + c * {};", hp * wp);
    for i in 0..alpha {
        for j in 0..alpha {
            let _ = writeln!(
                s,
                "                const vf d{i}_{j} = VGATHER(b + {}, idx);",
                i * wp + j
            );
        }
    }
    emit_sandwich(
        &mut s,
        &mats.bt,
        &|k, j| format!("d{k}_{j}"),
        "t",
        "v",
        "                ",
    );
    for i in 0..alpha {
        for j in 0..alpha {
            let _ = writeln!(
                s,
                "                VSTORE(v0 + {} + c * {nr}, v{i}_{j});",
                (i * alpha + j) * v_stride
            );
        }
    }
    let _ = writeln!(s, "            }}\n        }}");
    // Per output-channel block: alpha^2 GEMMs, then the output transform.
    let _ = writeln!(s, "        for (int64_t mb = mb0; mb < mb1; mb++) {{");
    let _ = writeln!(
        s,
        "            const int64_t i0 = mb * {mc}, mcur = min_i64({mc}, {k_out} - i0);"
    );
    let _ = writeln!(s, "            for (int64_t xi = 0; xi < {a2}; xi++) {{");
    let _ = writeln!(
        s,
        "                const float *Ux = U + xi * {u_stride} + (i0 / {mr}) * {}; const float *Vx = V + xi * {v_stride}; float *Mx = Mb + xi * {m_stride};",
        c_in * mr
    );
    let _ = writeln!(s, "                for (int64_t pc = 0; pc < {c_in}; pc += {kc}) {{");
    let _ = writeln!(
        s,
        "                    const int64_t kcur = min_i64({kc}, {c_in} - pc);"
    );
    let _ = writeln!(s, "                    for (int64_t jp = 0; jp < ncols; jp += {nr}) {{");
    let _ = writeln!(
        s,
        "                        for (int64_t ip = 0; ip < mcur; ip += {mr}) {{"
    );
    let _ = writeln!(s, "                            ukr_{entry}(kcur, Ux + (ip / {mr}) * {} + pc * {mr}, Vx + jp * {c_in} + pc * {nr}, Mx + ip * {tblk} + jp, {tblk}, min_i64({mr}, mcur - ip), min_i64({nr}, ncols - jp), pc > 0, 0, 0, 0);", c_in * mr);
    let _ = writeln!(
        s,
        "                        }}\n                    }}\n                }}\n            }}"
    );
    let _ = writeln!(s, "            for (int64_t lg = 0; lg < ngroups; lg++) {{");
    let _ = writeln!(s, "                const vi oidx = VI_LOAD(ooff + lg * VW);");
    let _ = writeln!(s, "                unsigned msk[{}] = {{0}};", m * m);
    let _ = writeln!(s, "                for (int l = 0; l < VW; l++) {{");
    let _ = writeln!(
        s,
        "                    const int32_t r = rr[lg * VW + l], c = cr[lg * VW + l];"
    );
    let _ = writeln!(
        s,
        "                    for (int i = 0; i < {m}; i++) for (int j = 0; j < {m}; j++) if (i < r && j < c) msk[i * {m} + j] |= 1u << l;"
    );
    let _ = writeln!(s, "                }}");
    let _ = writeln!(s, "                for (int64_t k = 0; k < mcur; k++) {{");
    let _ = writeln!(s, "                    const int64_t ch = i0 + k;");
    let _ = writeln!(s, "                    float *y = Y + (n * {k_out} + ch) * {pix};");
    for i in 0..e_slots.len() {
        let _ = writeln!(
            s,
            "                    const float *e{i} = E{i} + n * esb{i} + ch * esm{i};"
        );
    }
    let _ = writeln!(s, "                    const float *mk = Mb + k * {tblk} + lg * VW;");
    for i in 0..alpha {
        for j in 0..alpha {
            let _ = writeln!(
                s,
                "                    const vf q{i}_{j} = VLOAD(mk + {});",
                (i * alpha + j) * m_stride
            );
        }
    }
    emit_sandwich(
        &mut s,
        &mats.at,
        &|k, j| format!("q{k}_{j}"),
        "u",
        "o",
        "                    ",
    );
    for i in 0..m {
        for j in 0..m {
            let off = i * ow + j;
            let q = i * m + j;
            let load = |e: usize| {
                if conv.eop_strides[e].2 == 1 {
                    format!("VGATHER_MASK(e{e} + {off}, oidx, msk[{q}])")
                } else {
                    format!("VSET1(e{e}[0])")
                }
            };
            let value = emit(&conv.chain.expr, Mode::Vector, &format!("o{i}_{j}"), &load);
            let _ = writeln!(
                s,
                "                    VSCATTER_MASK(y + {off}, oidx, {value}, msk[{q}]);"
            );
        }
    }
    let _ = writeln!(s, "                }}\n            }}\n        }}\n    }}\n}}");

    let tasks = if knobs.parallel {
        ParamExpr::Mul(Box::new(batch), Box::new(ParamExpr::Const((tblocks * mchunks) as i64)))
    } else {
        ParamExpr::Const(1)
    };
    Ok(LoweredKernel {
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
    })
}

#[cfg(test)]
mod tests {
    use super::{matrices, TILE_SIZES};
    use crate::testutil::{check_neon_with, check_with, node, rand_tensor, tt};
    use crate::{CodegenError, GroupValue, KernelGroup, Target};
    use carbide_ir::kernel::{Schedule, WeightLayout};
    use carbide_ir::ops::elementwise::{Binary, ElementwiseOp, Unary};
    use carbide_ir::ops::nn::{ConvAttrs, NnOp};
    use carbide_ir::{Op, Tensor};

    /// The matrices compute a 1-D correlation exactly:
    /// A^T [(G g) .* (B^T d)] = sum_i g[i] d[x + i].
    #[test]
    fn transform_matrices_compute_correlation() {
        for m in TILE_SIZES {
            let mats = matrices(m).unwrap();
            let alpha = m + 2;
            let g = [0.3, -1.7, 0.9];
            let d: Vec<f64> = (0..alpha).map(|i| (i as f64 * 0.37).sin() + 0.1).collect();
            let gg: Vec<f64> = (0..alpha).map(|a| (0..3).map(|i| mats.g[a][i] * g[i]).sum()).collect();
            let bd: Vec<f64> = (0..alpha)
                .map(|a| (0..alpha).map(|i| mats.bt[a][i] * d[i]).sum())
                .collect();
            for x in 0..m {
                let y: f64 = (0..alpha).map(|a| mats.at[x][a] * gg[a] * bd[a]).sum();
                let want: f64 = (0..3).map(|i| g[i] * d[x + i]).sum();
                assert!((y - want).abs() < 1e-12, "m={m} x={x}: {y} vs {want}");
            }
        }
    }

    /// Conv 3x3 stride 1 over `x` with `k` output channels and `pads`
    /// (top, left, bottom, right), bias, optional residual Add, then Relu.
    fn conv(x: [usize; 4], k: usize, pads: [i64; 4], residual: bool) -> (KernelGroup, Vec<Tensor>) {
        let oh = (x[2] as i64 + pads[0] + pads[2] - 2) as usize;
        let ow = (x[3] as i64 + pads[1] + pads[3] - 2) as usize;
        let out = [x[0], k, oh, ow];
        let wshape = [k, x[1], 3, 3];
        let value = |name: &str, shape: &[usize], c: Option<&Tensor>| GroupValue {
            name: name.into(),
            ty: tt(shape),
            constant: c.cloned(),
        };
        let (xt, w, b, r) = (
            rand_tensor(&x, 11),
            rand_tensor(&wshape, 12),
            rand_tensor(&[k], 13),
            rand_tensor(&out, 14),
        );
        let attrs = ConvAttrs {
            pads: Some(pads.to_vec()),
            ..Default::default()
        };
        let mut nodes = vec![node("conv", Op::Nn(NnOp::Conv(attrs)), &["x", "w", "b"], &["y0"])];
        let mut inputs = vec![
            value("x", &x, None),
            value("w", &wshape, Some(&w)),
            value("b", &[k], Some(&b)),
        ];
        let mut feeds = vec![xt, w, b];
        let mut last = "y0";
        if residual {
            let add = Op::Elementwise(ElementwiseOp::Binary {
                op: Binary::Add,
                legacy_axis: None,
            });
            nodes.push(node("res", add, &["y0", "r"], &["y1"]));
            inputs.push(value("r", &out, None));
            feeds.push(r);
            last = "y1";
        }
        nodes.push(node(
            "relu",
            Op::Elementwise(ElementwiseOp::Unary(Unary::Relu)),
            &[last],
            &["out"],
        ));
        let g = KernelGroup {
            nodes,
            inputs,
            outputs: vec![value("out", &out, None)],
        };
        (g, feeds)
    }

    fn cases() -> Vec<(KernelGroup, Vec<Tensor>)> {
        vec![
            conv([1, 5, 13, 11], 7, [1, 1, 1, 1], false),
            conv([2, 6, 7, 7], 9, [0, 0, 0, 0], true),
            conv([1, 3, 9, 12], 20, [1, 0, 0, 1], true),
            conv([2, 40, 56, 56], 16, [1, 1, 1, 1], true),
        ]
    }

    /// The conv's default schedule turned Winograd, with small blocks so
    /// tasks span several tile blocks, channel blocks and K blocks.
    fn winograd(g: &KernelGroup, t: &Target, m: usize) -> Schedule {
        let mut s = crate::default_schedule(g, t).unwrap().unwrap();
        let t = s.microkernel.unwrap();
        s.weight_layout = WeightLayout::Winograd { m };
        s.tiles = [
            ("m".to_string(), t.mr),
            ("n".to_string(), t.nr * m * m),
            ("k".to_string(), 16),
        ]
        .into_iter()
        .collect();
        s
    }

    /// Winograd's rounding error grows with m (F(4,3) ~10x direct).
    fn tolerance(m: usize) -> f32 {
        if m == 2 {
            1e-4
        } else {
            5e-4
        }
    }

    #[test]
    fn winograd_matches_reference() {
        for t in ["x86-64-avx2", "x86-64-avx512"].map(|t| Target::parse(t).unwrap()) {
            if !t.runs_on_host() {
                continue;
            }
            for (g, feeds) in cases() {
                for m in TILE_SIZES {
                    let s = winograd(&g, &t, m);
                    let k = check_with(&g, &t, Some(&s), &feeds, tolerance(m));
                    assert_eq!(k.schedule, s);
                    // Whole-image blocks and one output-channel block too.
                    let mut s = s.clone();
                    s.tiles.clear();
                    check_with(&g, &t, Some(&s), &feeds, tolerance(m));
                }
            }
        }
    }

    #[test]
    fn neon_winograd_under_qemu() {
        let t = Target::parse("aarch64-neon").unwrap();
        for (g, feeds) in cases().into_iter().take(3) {
            for m in TILE_SIZES {
                check_neon_with(&g, Some(&winograd(&g, &t, m)), &feeds, tolerance(m));
            }
        }
    }

    #[test]
    fn eligible_convs_get_winograd_points_in_their_space() {
        let t = Target::parse("x86-64-avx512").unwrap();
        let (g, feeds) = conv([1, 64, 28, 28], 64, [1, 1, 1, 1], false);
        let space = crate::schedule_space(&g, &t).unwrap();
        let wino: Vec<&Schedule> = space
            .iter()
            .filter(|s| matches!(s.weight_layout, WeightLayout::Winograd { .. }))
            .collect();
        for m in TILE_SIZES {
            assert!(
                wino.iter().any(|s| s.weight_layout == WeightLayout::Winograd { m }),
                "m={m}"
            );
        }
        assert!(
            !matches!(space[0].weight_layout, WeightLayout::Winograd { .. }),
            "never the default"
        );
        for s in &wino {
            crate::lower(&g, &t, Some(s)).unwrap().unwrap();
        }
        if t.runs_on_host() {
            let s = wino.last().unwrap();
            let m = match s.weight_layout {
                WeightLayout::Winograd { m } => m,
                _ => unreachable!(),
            };
            check_with(&g, &t, Some(s), &feeds, tolerance(m));
        }
        // A strided conv has none.
        let (mut g, _) = conv([1, 8, 9, 9], 8, [1, 1, 1, 1], false);
        if let Op::Nn(NnOp::Conv(a)) = &mut g.nodes[0].op {
            a.strides = Some(vec![2, 2]);
        }
        g.outputs[0].ty = tt(&[1, 8, 5, 5]);
        let space = crate::schedule_space(&g, &t).unwrap();
        assert!(space.len() > 1);
        assert!(space
            .iter()
            .all(|s| !matches!(s.weight_layout, WeightLayout::Winograd { .. })));
    }

    #[test]
    fn ineligible_convs_and_tiles_are_rejected() {
        let t = Target::parse("x86-64-avx512").unwrap();
        let (g, _) = conv([1, 4, 9, 9], 8, [1, 1, 1, 1], false);
        let mut s = winograd(&g, &t, 2);
        s.weight_layout = WeightLayout::Winograd { m: 3 };
        match crate::lower(&g, &t, Some(&s)) {
            Err(CodegenError::BadSchedule { why, .. }) => assert!(why.contains("m=3"), "{why}"),
            other => panic!("expected a rejection, got ok={}", other.is_ok()),
        }
        // Stride 2 is not a Winograd conv.
        let mut strided = g.clone();
        if let Op::Nn(NnOp::Conv(a)) = &mut strided.nodes[0].op {
            a.strides = Some(vec![2, 2]);
        }
        strided.outputs[0].ty = tt(&[1, 8, 5, 5]);
        let s = winograd(&g, &t, 2);
        match crate::lower(&strided, &t, Some(&s)) {
            Err(CodegenError::BadSchedule { why, .. }) => assert!(why.contains("stride-1"), "{why}"),
            other => panic!("expected a rejection, got ok={}", other.is_ok()),
        }
    }
}
