//! GEMM kernels (MatMul incl. batched/broadcast and 1-D operands, Gemm with
//! transA/transB/alpha/beta/C): a register-blocked microkernel whose
//! accumulator tile lives in named vector variables, over operands packed
//! into panels (constant B at compile time, A per part into scratch), with
//! MC/KC/NC cache blocking and the fused elementwise epilogue applied before
//! the store. Parts split the (batch, M block, N block) tasks.

use crate::cexpr::{emit, pmul, slot, Mode, Params};
use crate::group::{broadcast_strides, chain, dim_param, is_f32, shape_text, Chain};
use crate::target::{Isa, Target};
use crate::{CodegenError, KernelGroup, LoweredKernel};
use carbide_ir::kernel::{
    BinaryFn, BufferArg, Expr, KernelCall, MicroTile, ParamExpr, Schedule, WeightLayout, WorkloadKey,
};
use carbide_ir::ops::linalg::LinalgOp;
use carbide_ir::{Dim, Node, Op, Tensor};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The heuristic default schedule of a target.
pub fn default_schedule(target: &Target) -> Schedule {
    let (mr, nr, kc, mc, nc) = match target.isa() {
        Isa::Avx512 => (12, 32, 256, 144, 512),
        Isa::Avx2 => (6, 16, 256, 96, 512),
        Isa::Neon => (8, 12, 256, 96, 480),
    };
    Schedule {
        tiles: [("m".to_string(), mc), ("n".to_string(), nc), ("k".to_string(), kc)]
            .into_iter()
            .collect(),
        loop_order: vec!["n".into(), "k".into(), "m".into()],
        vector_axis: Some("n".into()),
        vector_width: target.vector_width(),
        unroll: BTreeMap::new(),
        parallel_axis: Some("mn".into()),
        weight_layout: WeightLayout::PackedPanels { nr },
        microkernel: Some(MicroTile { mr, nr }),
    }
}

/// The default schedule fitted to known extents: a register tile no taller
/// than M (a matrix-vector product would otherwise compute 11 zero rows per
/// real one), and when M fits one M block, N blocks made an even count so
/// two parts share the weight stream.
fn heuristic_schedule(target: &Target, m: &ParamExpr, n: &ParamExpr) -> Schedule {
    let mut s = default_schedule(target);
    let (Some(t), ParamExpr::Const(m)) = (s.microkernel, m) else {
        return s;
    };
    let m = *m as usize;
    if m > 0 && m < t.mr {
        s.microkernel = Some(MicroTile { mr: m, nr: t.nr });
    }
    if let ParamExpr::Const(n) = n {
        if m <= s.tile("m", t.mr) {
            let nc = balanced_tile(*n as usize, s.tile("n", t.nr), t.nr, true);
            s.tiles.insert("n".into(), nc);
        }
    }
    s
}

/// `tile` adjusted so `extent` splits into blocks of whole `align` units.
/// With `even`, the block count (from `extent / tile` up to twice that) is
/// the one whose blocks split best into two contiguous halves, as the parts
/// take their tasks (98 panels in 8 blocks of 13 leave the parts 52 and 46
/// panels; 14 blocks of 7 give 49 each); fewest blocks on ties.
pub(crate) fn balanced_tile(extent: usize, tile: usize, align: usize, even: bool) -> usize {
    let align = align.max(1);
    let units = extent.div_ceil(align).max(1);
    let n0 = extent.div_ceil(tile.max(1)).clamp(1, units);
    if !even {
        return units.div_ceil(n0) * align;
    }
    let larger_half = |n: usize| {
        let per = units.div_ceil(n);
        let blocks = units.div_ceil(per);
        let first = (blocks / 2) * per;
        (first.max(units - first), blocks)
    };
    let n = (n0..=(2 * n0).min(units)).min_by_key(|&n| larger_half(n)).unwrap_or(n0);
    units.div_ceil(n) * align
}

/// A conservative single-core GEMM rate for deciding how many parts a step
/// is worth: matrix-vector products run near memory speed, well below peak.
const GEMM_MACS_PER_NS: i64 = 16;

/// What a GEMM kernel computes, resolved from the group.
pub struct GemmSpec {
    pub a: usize,
    pub b: usize,
    /// Extents.
    pub m: ParamExpr,
    pub n: ParamExpr,
    pub k: ParamExpr,
    /// Element strides of A along (m, k) and B along (k, n).
    pub sa: (ParamExpr, ParamExpr),
    pub sb: (ParamExpr, ParamExpr),
    /// Output batch extents and, per batch dim, A's and B's matrix-index strides.
    pub batch: Vec<(ParamExpr, ParamExpr, ParamExpr)>,
    /// Constant B to pack at compile time: (matrices, k, n, strides).
    pub b_const: Option<Tensor>,
    pub epilogue: Chain,
    /// Per epilogue operand: (strides along batch dims, m stride, n stride in {0,1}).
    pub eop_strides: Vec<(Vec<ParamExpr>, ParamExpr, i64)>,
    pub attrs: Vec<String>,
}

/// Resolves a MatMul/Gemm-anchored group; `None` if it is not one this kernel handles.
fn spec(group: &KernelGroup, anchor: &Node) -> Option<GemmSpec> {
    let Op::Linalg(op) = &anchor.op else { return None };
    let (gemm, c_input) = match op {
        LinalgOp::MatMul => (None, None),
        LinalgOp::Gemm(g) => (Some(g.clone()), anchor.inputs.get(2).filter(|s| !s.is_empty()).cloned()),
        _ => return None,
    };
    let find = |name: &str| group.inputs.iter().position(|v| v.name == name);
    let a = find(anchor.inputs.first()?)?;
    let b = find(anchor.inputs.get(1)?)?;
    let (ta, tb) = (&group.inputs[a].ty, &group.inputs[b].ty);
    if !is_f32(ta) || !is_f32(tb) || anchor.outputs.len() != 1 {
        return None;
    }
    let (ash, bsh) = (ta.shape.as_ref()?, tb.shape.as_ref()?);
    let out_ty = &group.outputs.first()?.ty;
    let out = out_ty.shape.as_ref()?.clone();
    let (ra, rb) = (ash.len(), bsh.len());
    let (m_dim, k_dim, n_dim, sa, sb, a_vec, b_vec);
    let mut batch = Vec::new();
    let mut attrs = Vec::new();
    match &gemm {
        Some(g) => {
            if ra != 2 || rb != 2 || out.len() != 2 {
                return None;
            }
            attrs.push(format!(
                "transA={},transB={},alpha={},beta={}",
                g.trans_a, g.trans_b, g.alpha, g.beta
            ));
            let (mi, ki) = if g.trans_a { (1, 0) } else { (0, 1) };
            let (ki2, ni) = if g.trans_b { (1, 0) } else { (0, 1) };
            m_dim = ash[mi].clone();
            k_dim = ash[ki].clone();
            n_dim = bsh[ni].clone();
            if bsh[ki2] != k_dim
                && !matches!(
                    (&bsh[ki2], &k_dim),
                    (Dim::Known(_), Dim::Sym(_)) | (Dim::Sym(_), Dim::Known(_))
                )
            {
                return None;
            }
            // Row length of A as stored: K when A is [M, K], M when it is [K, M].
            let a_row = dim_param(&ash[1], a, 1)?;
            let bn = dim_param(&bsh[1], b, 1)?;
            sa = if g.trans_a {
                (ParamExpr::Const(1), a_row)
            } else {
                (a_row, ParamExpr::Const(1))
            };
            sb = if g.trans_b {
                (ParamExpr::Const(1), bn)
            } else {
                (bn, ParamExpr::Const(1))
            };
            a_vec = false;
            b_vec = false;
        }
        None => {
            if ra == 0 || rb == 0 {
                return None;
            }
            a_vec = ra == 1;
            b_vec = rb == 1;
            m_dim = if a_vec { Dim::Known(1) } else { ash[ra - 2].clone() };
            k_dim = ash[ra - 1].clone();
            n_dim = if b_vec { Dim::Known(1) } else { bsh[rb - 1].clone() };
            let bk = if b_vec { &bsh[0] } else { &bsh[rb - 2] };
            if *bk != k_dim
                && !matches!(
                    (bk, &k_dim),
                    (Dim::Known(_), Dim::Sym(_)) | (Dim::Sym(_), Dim::Known(_))
                )
            {
                return None;
            }
            let ak = dim_param(&ash[ra - 1], a, ra - 1)?;
            sa = (ak, ParamExpr::Const(1));
            sb = if b_vec {
                (ParamExpr::Const(1), ParamExpr::Const(0))
            } else {
                (dim_param(&bsh[rb - 1], b, rb - 1)?, ParamExpr::Const(1))
            };
            // Output batch dims broadcast A's and B's batch dims.
            let (na, nbt) = (ra.saturating_sub(2), rb.saturating_sub(2));
            let nb = na.max(nbt);
            let expect_rank = nb + usize::from(!a_vec) + usize::from(!b_vec);
            if out.len() != expect_rank {
                return None;
            }
            let mat_strides = |sh: &[Dim], nmat: usize, input: usize| -> Option<Vec<ParamExpr>> {
                // Matrix-index strides of an operand's batch dims, right-aligned to nb.
                let mut v = vec![ParamExpr::Const(0); nb];
                let mut running = ParamExpr::Const(1);
                for d in (0..nmat).rev() {
                    let od = &out[nb - nmat + d];
                    let is_one = sh[d] == Dim::Known(1);
                    if !is_one && sh[d] != *od && !matches!((&sh[d], od), (Dim::Known(_), Dim::Sym(_))) {
                        return None;
                    }
                    if !is_one {
                        v[nb - nmat + d] = running.clone();
                    }
                    running = pmul(running, dim_param(&sh[d], input, d)?);
                }
                Some(v)
            };
            let asb = mat_strides(ash, na, a)?;
            let bsb = mat_strides(bsh, nbt, b)?;
            for d in 0..nb {
                batch.push((
                    ParamExpr::OutputDim { output: 0, axis: d },
                    asb[d].clone(),
                    bsb[d].clone(),
                ));
            }
        }
    }
    // The output's matrix dims must be the product's.
    let nb = batch.len();
    let mut pos = nb;
    if !a_vec {
        if out[pos] != m_dim {
            return None;
        }
        pos += 1;
    }
    if !b_vec && out[pos] != n_dim {
        return None;
    }
    let m = if a_vec {
        ParamExpr::Const(1)
    } else {
        ParamExpr::OutputDim { output: 0, axis: nb }
    };
    let n = if b_vec {
        ParamExpr::Const(1)
    } else {
        ParamExpr::OutputDim {
            output: 0,
            axis: out.len() - 1,
        }
    };
    let m = match &m_dim {
        Dim::Known(x) => ParamExpr::Const(*x as i64),
        _ => m,
    };
    let n = match &n_dim {
        Dim::Known(x) => ParamExpr::Const(*x as i64),
        _ => n,
    };
    let k = match &k_dim {
        Dim::Known(x) => ParamExpr::Const(*x as i64),
        Dim::Sym(_) => ParamExpr::InputDim {
            input: a,
            axis: if gemm.as_ref().is_some_and(|g| g.trans_a) {
                0
            } else {
                ra - 1
            },
        },
        Dim::Unknown => return None,
    };

    // Epilogue: Gemm's alpha/beta/C, then the fused chain.
    let mut ch = chain(group, &group.nodes[1..], Some(&anchor.outputs[0]))?;
    if let Some(g) = &gemm {
        let mut pre = Expr::Acc;
        if g.alpha != 1.0 {
            pre = Expr::binary(BinaryFn::Mul, pre, Expr::Const(g.alpha));
        }
        if let Some(cname) = &c_input {
            let ci = find(cname)?;
            if !is_f32(&group.inputs[ci].ty) {
                return None;
            }
            let slot = ch.operands.len();
            ch.operands.push(ci);
            let mut c = Expr::Load(slot);
            if g.beta != 1.0 {
                c = Expr::binary(BinaryFn::Mul, c, Expr::Const(g.beta));
            }
            if g.beta != 0.0 {
                pre = Expr::binary(BinaryFn::Add, pre, c);
            }
        }
        ch.expr = substitute_acc(&ch.expr, &pre);
    }
    let mut eop_strides = Vec::new();
    for &op in &ch.operands {
        let st = broadcast_strides(&group.inputs[op].ty, op, &out)?;
        // Canonical [batch.., m, n] strides.
        let mut it = st.into_iter();
        let bs: Vec<ParamExpr> = (0..nb).map(|_| it.next()).collect::<Option<_>>()?;
        let ms = if a_vec { ParamExpr::Const(0) } else { it.next()? };
        let ns = if b_vec { ParamExpr::Const(0) } else { it.next()? };
        let ns = match ns {
            ParamExpr::Const(0) => 0,
            ParamExpr::Const(1) => 1,
            _ => return None,
        };
        eop_strides.push((bs, ms, ns));
    }
    let b_const = group.inputs[b].constant.clone().filter(|t| matches!(t, Tensor::F32(_)));
    let mut shapes = vec![shape_text(ta), shape_text(tb), shape_text(out_ty)];
    for &op in &ch.operands {
        shapes.push(shape_text(&group.inputs[op].ty));
    }
    attrs.push(format!("shapes={}", shapes.join(",")));
    Some(GemmSpec {
        a,
        b,
        m,
        n,
        k,
        sa,
        sb,
        batch,
        b_const,
        epilogue: ch,
        eop_strides,
        attrs,
    })
}

pub(crate) fn substitute_acc(e: &Expr, with: &Expr) -> Expr {
    match e {
        Expr::Acc => with.clone(),
        Expr::Unary(f, a) => Expr::unary(*f, substitute_acc(a, with)),
        Expr::Binary(f, a, b) => Expr::binary(*f, substitute_acc(a, with), substitute_acc(b, with)),
        other => other.clone(),
    }
}

/// Packs a constant B (`[batch.., K, N]`, or `[N, K]` when `trans`, or `[K]`)
/// into column panels of `nr`: per matrix, panel `jp` holds `K x nr` floats
/// row-major, zero-padded past N.
pub fn pack_b(b: &Tensor, trans: bool, nr: usize) -> Option<(Vec<u8>, usize, usize, usize)> {
    let Tensor::F32(arr) = b else { return None };
    let sh = arr.shape();
    let data: Vec<f32> = arr.iter().copied().collect();
    let (nmat, k, n, sk, sn) = match sh.len() {
        1 => (1, sh[0], 1, 1, 0),
        _ if trans => (1, sh[1], sh[0], 1, sh[1]),
        r => (sh[..r - 2].iter().product(), sh[r - 2], sh[r - 1], sh[r - 1], 1),
    };
    let np = n.div_ceil(nr);
    let mut out = Vec::with_capacity(nmat * np * k * nr * 4);
    for mat in 0..nmat {
        let base = mat * k * n;
        for jp in 0..np {
            for kk in 0..k {
                for c in 0..nr {
                    let j = jp * nr + c;
                    let v = if j < n { data[base + kk * sk + j * sn] } else { 0.0 };
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    Some((out, nmat, k, n))
}

/// The GEMM knobs a schedule resolves to, after [`check_schedule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GemmKnobs {
    pub mr: usize,
    pub nr: usize,
    pub kc: usize,
    pub mc: usize,
    pub nc: usize,
    /// How many k steps one iteration of the microkernel's inner loop does.
    pub unroll_k: usize,
    /// Split the (batch, M block, N block) tasks across parts (`"mn"`), or
    /// run the whole kernel as one part (`None`).
    pub parallel: bool,
    /// [`LOOP_ORDER_M_OUTER`]: within a K block, the register-tile rows
    /// outside the columns.
    pub m_outer: bool,
}

/// The loop order the GEMM template generates: N blocks, then K blocks, then
/// M blocks (BLIS's jc/pc/ic), the register tile innermost.
pub(crate) const LOOP_ORDER: [&str; 3] = ["n", "k", "m"];
/// The other order MatMul/Gemm generate: within a K block the `mr`-row
/// panels of A outside the `nr`-column panels of B, so an A micro-panel stays
/// in L1 while the B block streams from L2 (the default keeps a B
/// micro-panel in L1 and streams the A block) — which wins depends on the
/// block shapes, so the tuner measures both.
pub(crate) const LOOP_ORDER_M_OUTER: [&str; 3] = ["m", "k", "n"];
/// The k-unroll factors the microkernel generator supports.
pub(crate) const UNROLLS: [usize; 4] = [1, 2, 4, 8];

/// Which operand a GEMM-like template pre-packs, deciding the weight
/// layouts it can honour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WeightRole {
    /// A constant B of a MatMul/Gemm: column panels of `nr` (or row-major,
    /// then B is packed per part at run time).
    GemmB,
    /// Convolution weights: the A operand in blocks of `mr` output channels.
    ConvA,
}

/// Validates every field of `s` against what the GEMM/conv template can
/// generate, so a schedule is either honoured exactly or rejected with the
/// field it cannot honour (the autotuner discards it); nothing is silently
/// ignored.
pub(crate) fn check_schedule(
    s: &Schedule,
    target: &Target,
    name: &str,
    role: WeightRole,
) -> Result<GemmKnobs, CodegenError> {
    let bad = |why: String| CodegenError::BadSchedule {
        kernel: name.to_string(),
        why,
    };
    let t = s
        .microkernel
        .ok_or_else(|| bad("GEMM needs a microkernel tile".into()))?;
    let vw = target.vector_width();
    if s.vector_width != vw {
        return Err(bad(format!("vector width {} but target has {vw}", s.vector_width)));
    }
    if t.nr == 0 || t.nr % vw != 0 {
        return Err(bad(format!(
            "nr={} is not a positive multiple of the vector width {vw}",
            t.nr
        )));
    }
    let regs = match target.isa() {
        Isa::Avx2 => 16,
        _ => 32,
    };
    if t.mr == 0 || t.mr * (t.nr / vw) + t.nr / vw + 1 > regs {
        return Err(bad(format!(
            "{}x{} tile needs more than {regs} vector registers",
            t.mr, t.nr
        )));
    }
    if let Some(other) = s.tiles.keys().find(|k| !matches!(k.as_str(), "m" | "n" | "k")) {
        return Err(bad(format!("no loop '{other}' to tile (GEMM tiles m, n, k)")));
    }
    let order = |o: [&str; 3]| s.loop_order.iter().map(String::as_str).eq(o);
    let m_outer = role == WeightRole::GemmB && order(LOOP_ORDER_M_OUTER);
    if !m_outer && !order(LOOP_ORDER) {
        let also = if role == WeightRole::GemmB {
            format!(" or {LOOP_ORDER_M_OUTER:?}")
        } else {
            String::new()
        };
        return Err(bad(format!(
            "loop order {:?} is not generated (only {LOOP_ORDER:?}{also})",
            s.loop_order
        )));
    }
    if s.vector_axis.as_deref() != Some("n") {
        return Err(bad(format!(
            "vector axis {:?} is not generated (only n)",
            s.vector_axis
        )));
    }
    if let Some(other) = s.unroll.keys().find(|k| k.as_str() != "k") {
        return Err(bad(format!("cannot unroll loop '{other}' (only k)")));
    }
    let unroll_k = s.unroll_of("k");
    if !UNROLLS.contains(&unroll_k) {
        return Err(bad(format!("k unroll {unroll_k} is not one of {UNROLLS:?}")));
    }
    let parallel = match s.parallel_axis.as_deref() {
        Some("mn") => true,
        None => false,
        Some(other) => return Err(bad(format!("parallel axis '{other}' is not generated (mn or none)"))),
    };
    let kc = s.tile("k", 256);
    let mc = s.tile("m", t.mr * 8).div_ceil(t.mr) * t.mr;
    let nc = s.tile("n", t.nr * 16).div_ceil(t.nr) * t.nr;
    let layout_ok = match (role, s.weight_layout) {
        (WeightRole::GemmB, WeightLayout::PackedPanels { nr }) => nr == t.nr,
        (WeightRole::GemmB, WeightLayout::RowMajor) => true,
        (WeightRole::ConvA, WeightLayout::Nchwc { block }) => block == t.mr,
        // The channel-vector conv: weights as B panels, pixels broadcast.
        (WeightRole::ConvA, WeightLayout::PackedPanels { nr }) => nr == t.nr,
        // Winograd: transformed weights as A panels of mr (`winograd` checks m).
        (WeightRole::ConvA, WeightLayout::Winograd { .. }) => true,
        _ => false,
    };
    if !layout_ok {
        let want = match role {
            WeightRole::GemmB => format!("PackedPanels {{ nr: {} }} or RowMajor", t.nr),
            WeightRole::ConvA => format!("Nchwc {{ block: {} }} or PackedPanels {{ nr: {} }}", t.mr, t.nr),
        };
        return Err(bad(format!(
            "weight layout {:?} does not fit the {}x{} microkernel (expected {want})",
            s.weight_layout, t.mr, t.nr
        )));
    }
    Ok(GemmKnobs {
        mr: t.mr,
        nr: t.nr,
        kc,
        mc,
        nc,
        unroll_k,
        parallel,
        m_outer,
    })
}

/// The microkernel: `mr x nr` accumulators in named variables, B read from
/// packed `nr`-wide panels (k-major, `nr` floats per k step).
pub(crate) fn microkernel(
    mr: usize,
    nr: usize,
    unroll_k: usize,
    vw: usize,
    epi: &Expr,
    eops: &[(Vec<ParamExpr>, ParamExpr, i64)],
) -> String {
    microkernel_b(mr, nr, unroll_k, vw, epi, eops, false)
}

/// [`microkernel`], or with `b_in_place` reading B in place: k step `k`
/// loads `nr` floats at `b + k * ldb` (an extra `int64_t ldb` argument after
/// `b`), so a pointwise conv's image rows feed it without being packed. All
/// `nr` columns are loaded whatever `nr` the call passes: only full panels
/// may be in place.
pub(crate) fn microkernel_b(
    mr: usize,
    nr: usize,
    unroll_k: usize,
    vw: usize,
    epi: &Expr,
    eops: &[(Vec<ParamExpr>, ParamExpr, i64)],
    b_in_place: bool,
) -> String {
    let nv = nr / vw;
    let mut s = String::new();
    let acc = |r: usize, v: usize| format!("c{r}_{v}");
    let (ldb_arg, ldb) = if b_in_place {
        (" int64_t ldb,", "ldb".to_string())
    } else {
        ("", nr.to_string())
    };
    let _ = writeln!(s, "static inline __attribute__((always_inline)) void ukr(int64_t kc, const float *restrict a, const float *restrict b,{ldb_arg} float *restrict c, int64_t ldc, int64_t mr, int64_t nr, int accumulate, int last, const float *const *eb, const int64_t *esm) {{");
    let _ = writeln!(s, "    (void)eb; (void)esm;");
    for r in 0..mr {
        let vars: Vec<String> = (0..nv).map(|v| format!("{} = VZERO()", acc(r, v))).collect();
        let _ = writeln!(s, "    vf {};", vars.join(", "));
    }
    // One k step at offset `j` of the (unrolled) loop body.
    let step = |s: &mut String, j: usize| {
        let _ = writeln!(s, "        {{");
        for v in 0..nv {
            let at = if b_in_place {
                format!("{j} * ldb + {}", v * vw)
            } else {
                (j * nr + v * vw).to_string()
            };
            let _ = writeln!(s, "        vf b{v} = VLOAD(b + {at});");
        }
        for r in 0..mr {
            let _ = writeln!(s, "        {{ vf av = VSET1(a[{}]);", j * mr + r);
            for v in 0..nv {
                let _ = writeln!(s, "          {0} = VFMA(av, b{v}, {0});", acc(r, v));
            }
            let _ = writeln!(s, "        }}");
        }
        let _ = writeln!(s, "        }}");
    };
    let _ = writeln!(s, "    int64_t k = 0;");
    if unroll_k > 1 {
        let _ = writeln!(s, "    for (; k + {unroll_k} <= kc; k += {unroll_k}) {{");
        for j in 0..unroll_k {
            step(&mut s, j);
        }
        let b_step = if b_in_place {
            format!("{unroll_k} * ldb")
        } else {
            (unroll_k * nr).to_string()
        };
        let _ = writeln!(s, "        a += {}; b += {b_step};\n    }}", unroll_k * mr);
    }
    let _ = writeln!(s, "    for (; k < kc; k++) {{");
    step(&mut s, 0);
    let _ = writeln!(s, "        a += {mr}; b += {ldb};\n    }}");
    let identity = *epi == Expr::Acc;
    // Full tile: vector epilogue, direct stores.
    let _ = writeln!(s, "    if (mr == {mr} && nr == {nr}) {{");
    let _ = writeln!(s, "        if (accumulate) {{");
    for r in 0..mr {
        for v in 0..nv {
            let _ = writeln!(
                s,
                "            {0} = VADD({0}, VLOAD(c + {r} * ldc + {1}));",
                acc(r, v),
                v * vw
            );
        }
    }
    let _ = writeln!(s, "        }}");
    if !identity {
        let _ = writeln!(s, "        if (last) {{");
        for r in 0..mr {
            for v in 0..nv {
                let load = |i: usize| {
                    if eops[i].2 == 1 {
                        format!("VLOAD(eb[{i}] + {r} * esm[{i}] + {})", v * vw)
                    } else {
                        format!("VSET1(eb[{i}][{r} * esm[{i}]])")
                    }
                };
                let _ = writeln!(
                    s,
                    "            {} = {};",
                    acc(r, v),
                    emit(epi, Mode::Vector, &acc(r, v), &load)
                );
            }
        }
        let _ = writeln!(s, "        }}");
    }
    for r in 0..mr {
        for v in 0..nv {
            let _ = writeln!(s, "        VSTORE(c + {r} * ldc + {}, {});", v * vw, acc(r, v));
        }
    }
    // Edge tile: spill to a local tile, scalar epilogue on the valid part.
    let _ = writeln!(
        s,
        "    }} else {{\n        float tmp[{}] __attribute__((aligned(64)));",
        mr * nr
    );
    for r in 0..mr {
        for v in 0..nv {
            let _ = writeln!(s, "        VSTORE(tmp + {}, {});", r * nr + v * vw, acc(r, v));
        }
    }
    let _ = writeln!(
        s,
        "        for (int64_t r = 0; r < mr; r++) for (int64_t j = 0; j < nr; j++) {{"
    );
    let _ = writeln!(s, "            float x = tmp[r * {nr} + j];");
    let _ = writeln!(s, "            if (accumulate) x += c[r * ldc + j];");
    if !identity {
        let load = |i: usize| format!("eb[{i}][r * esm[{i}] + j * {}]", eops[i].2);
        let _ = writeln!(s, "            if (last) x = {};", emit(epi, Mode::Scalar, "x", &load));
    }
    let _ = writeln!(s, "            c[r * ldc + j] = x;\n        }}\n    }}\n}}");
    s
}

pub fn lower(
    group: &KernelGroup,
    anchor: &Node,
    target: &Target,
    schedule: Option<&Schedule>,
) -> Result<Option<LoweredKernel>, CodegenError> {
    let Some(sp) = spec(group, anchor) else { return Ok(None) };
    let sched = schedule
        .cloned()
        .unwrap_or_else(|| heuristic_schedule(target, &sp.m, &sp.n));
    let workload = WorkloadKey {
        op: "gemm".into(),
        shapes: sp.attrs.iter().filter(|a| a.starts_with("shapes=")).cloned().collect(),
        dtypes: vec!["f32".into()],
        epilogue: sp.epilogue.expr.describe(),
        attrs: sp.attrs.iter().filter(|a| !a.starts_with("shapes=")).cloned().collect(),
        target: target.name().to_string(),
    };
    let entry = format!(
        "carbide_gemm_{}_{}",
        workload.hex(),
        anchor
            .name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(24)
            .collect::<String>()
    );
    let knobs = check_schedule(&sched, target, &anchor.name, WeightRole::GemmB)?;
    let GemmKnobs { mr, nr, kc, mc, nc, .. } = knobs;
    let vw = target.vector_width();
    let trans_b = matches!(&anchor.op, Op::Linalg(LinalgOp::Gemm(g)) if g.trans_b);
    let packed = match (&sp.b_const, sched.weight_layout) {
        (Some(t), WeightLayout::PackedPanels { .. }) => pack_b(t, trans_b, nr),
        _ => None,
    };

    let mut buffers: Vec<BufferArg> = Vec::new();
    let mut p = Params::default();
    let a_slot = slot(BufferArg::Input(sp.a), &mut buffers);
    let b_slot = if packed.is_some() {
        slot(BufferArg::Packed(0), &mut buffers)
    } else {
        slot(BufferArg::Input(sp.b), &mut buffers)
    };
    let c_slot = slot(BufferArg::Output(0), &mut buffers);
    let scratch_floats = mc * kc + if packed.is_some() { 0 } else { nc * kc };
    let scratch_bytes = (scratch_floats * 4).div_ceil(64) * 64;
    let s_slot = slot(
        BufferArg::Scratch {
            bytes: ParamExpr::Const(scratch_bytes as i64),
            per_part: true,
        },
        &mut buffers,
    );
    let e_slots: Vec<usize> = sp
        .epilogue
        .operands
        .iter()
        .map(|&i| slot(BufferArg::Input(i), &mut buffers))
        .collect();

    let mut c = String::new();
    c.push_str(
        &microkernel(mr, nr, knobs.unroll_k, vw, &sp.epilogue.expr, &sp.eop_strides)
            .replace("void ukr(", &format!("void ukr_{entry}(")),
    );
    let _ = writeln!(
        c,
        "void {entry}(void *const *bufs, const int64_t *p, int64_t part, int64_t num_parts) {{"
    );
    let _ = writeln!(c, "    (void)p;");
    let _ = writeln!(c, "    const float *A = (const float *)bufs[{a_slot}];");
    let _ = writeln!(c, "    const float *B = (const float *)bufs[{b_slot}];");
    let _ = writeln!(c, "    float *C = (float *)bufs[{c_slot}];");
    let _ = writeln!(
        c,
        "    float *ws = (float *)((char *)bufs[{s_slot}] + part * (int64_t){scratch_bytes});"
    );
    let _ = writeln!(
        c,
        "    const int64_t M = {}, N = {}, K = {};",
        p.c(sp.m.clone()),
        p.c(sp.n.clone()),
        p.c(sp.k.clone())
    );
    let _ = writeln!(
        c,
        "    const int64_t sam = {}, sak = {}, sbk = {}, sbn = {};",
        p.c(sp.sa.0.clone()),
        p.c(sp.sa.1.clone()),
        p.c(sp.sb.0.clone()),
        p.c(sp.sb.1.clone())
    );
    let _ = writeln!(c, "    (void)sbk; (void)sbn;");
    let ne = e_slots.len();
    for (i, s) in e_slots.iter().enumerate() {
        let _ = writeln!(c, "    const float *E{i} = (const float *)bufs[{s}];");
        let _ = writeln!(c, "    const int64_t esm{i} = {};", p.c(sp.eop_strides[i].1.clone()));
    }
    let nb = sp.batch.len();
    let mut nbatch = "(int64_t)1".to_string();
    for (d, (ext, _, _)) in sp.batch.iter().enumerate() {
        let _ = writeln!(c, "    const int64_t bd{d} = {};", p.c(ext.clone()));
        nbatch = format!("{nbatch} * bd{d}");
    }
    let _ = writeln!(c, "    if (M <= 0 || N <= 0) return;");
    let _ = writeln!(
        c,
        "    const int64_t mblocks = (M + {mc} - 1) / {mc}, nblocks = (N + {nc} - 1) / {nc};"
    );
    let _ = writeln!(c, "    const int64_t ntasks = {nbatch} * mblocks * nblocks;");
    emit_task_range(&mut c, knobs.parallel);
    let b_mat_size = if packed.is_some() {
        format!("((N + {nr} - 1) / {nr}) * K * {nr}")
    } else {
        "K * N".to_string()
    };
    let _ = writeln!(c, "    for (int64_t t = t0; t < t1; t++) {{");
    let _ = writeln!(
        c,
        "        int64_t bi = t / (mblocks * nblocks), rem = t % (mblocks * nblocks);"
    );
    let _ = writeln!(c, "        const int64_t jb = rem / mblocks, ib = rem % mblocks;");
    let _ = writeln!(c, "        int64_t a_mat = 0, b_mat = 0;");
    for i in 0..ne {
        let _ = writeln!(c, "        int64_t eo{i} = 0;");
    }
    let _ = writeln!(c, "        const int64_t c_off = bi * M * N;");
    for d in (0..nb).rev() {
        let (_, sa, sb) = &sp.batch[d];
        let _ = writeln!(c, "        {{ int64_t idx = bi % bd{d}; bi /= bd{d};");
        let _ = writeln!(
            c,
            "          a_mat += idx * {}; b_mat += idx * {};",
            p.c(sa.clone()),
            p.c(sb.clone())
        );
        for i in 0..ne {
            let _ = writeln!(c, "          eo{i} += idx * {};", p.c(sp.eop_strides[i].0[d].clone()));
        }
        let _ = writeln!(c, "        }}");
    }
    let _ = writeln!(c, "        const float *Ab = A + a_mat * M * K;");
    let _ = writeln!(c, "        const float *Bb = B + b_mat * {b_mat_size};");
    let _ = writeln!(c, "        const int64_t i0 = ib * {mc}, mcur = min_i64({mc}, M - i0);");
    let _ = writeln!(c, "        const int64_t j0 = jb * {nc}, ncur = min_i64({nc}, N - j0);");
    let _ = writeln!(c, "        for (int64_t pc = 0; pc < K || pc == 0; pc += {kc}) {{");
    let _ = writeln!(c, "            const int64_t kcur = min_i64({kc}, K - pc);");
    // Pack A: MR-row panels, k-major.
    let _ = writeln!(c, "            float *Ap = ws;");
    let _ = writeln!(c, "            for (int64_t ip = 0; ip < mcur; ip += {mr}) {{");
    let _ = writeln!(c, "                float *dst = Ap + ip * kcur;");
    let _ = writeln!(c, "                for (int64_t r = 0; r < {mr}; r++) {{");
    let _ = writeln!(c, "                    if (ip + r < mcur) {{ const float *src = Ab + (i0 + ip + r) * sam + pc * sak; for (int64_t k = 0; k < kcur; k++) dst[k * {mr} + r] = src[k * sak]; }}");
    let _ = writeln!(
        c,
        "                    else {{ for (int64_t k = 0; k < kcur; k++) dst[k * {mr} + r] = 0.0f; }}"
    );
    let _ = writeln!(c, "                }}\n            }}");
    if packed.is_none() {
        let _ = writeln!(c, "            float *Bp = ws + {};", mc * kc);
        let _ = writeln!(c, "            for (int64_t jp = 0; jp < ncur; jp += {nr}) {{");
        let _ = writeln!(c, "                float *dst = Bp + jp * kcur;");
        let _ = writeln!(c, "                const int64_t w = min_i64({nr}, ncur - jp);");
        let _ = writeln!(c, "                for (int64_t k = 0; k < kcur; k++) {{");
        let _ = writeln!(
            c,
            "                    const float *src = Bb + (pc + k) * sbk + (j0 + jp) * sbn;"
        );
        let _ = writeln!(c, "                    int64_t j = 0; for (; j < w; j++) dst[k * {nr} + j] = src[j * sbn]; for (; j < {nr}; j++) dst[k * {nr} + j] = 0.0f;");
        let _ = writeln!(c, "                }}\n            }}");
    }
    let b_panel = if packed.is_some() {
        format!("Bb + ((j0 + jp) / {nr}) * K * {nr} + pc * {nr}")
    } else {
        "Bp + jp * kcur".to_string()
    };
    let (outer, inner) = if knobs.m_outer {
        (
            format!("ip = 0; ip < mcur; ip += {mr}"),
            format!("jp = 0; jp < ncur; jp += {nr}"),
        )
    } else {
        (
            format!("jp = 0; jp < ncur; jp += {nr}"),
            format!("ip = 0; ip < mcur; ip += {mr}"),
        )
    };
    let _ = writeln!(c, "            for (int64_t {outer}) {{");
    let _ = writeln!(c, "                for (int64_t {inner}) {{");
    let _ = writeln!(c, "                    const float *bp = {b_panel};");
    let _ = writeln!(c, "                    const int64_t i = i0 + ip, j = j0 + jp;");
    let bases: Vec<String> = (0..ne)
        .map(|k| format!("E{k} + eo{k} + i * esm{k} + j * {}", sp.eop_strides[k].2))
        .collect();
    emit_epilogue_operands(&mut c, &bases);
    let _ = writeln!(c, "                    ukr_{entry}(kcur, Ap + ip * kcur, bp, C + c_off + i * N + j, N, min_i64({mr}, mcur - ip), min_i64({nr}, ncur - jp), pc > 0, pc + kcur >= K, eb, es);");
    let _ = writeln!(c, "                }}\n            }}");
    let _ = writeln!(c, "            if (K == 0) break;\n        }}\n    }}\n}}");

    let mut tasks = ParamExpr::Mul(
        Box::new(ParamExpr::CeilDiv(
            Box::new(sp.m.clone()),
            Box::new(ParamExpr::Const(mc as i64)),
        )),
        Box::new(ParamExpr::CeilDiv(
            Box::new(sp.n.clone()),
            Box::new(ParamExpr::Const(nc as i64)),
        )),
    );
    let mut macs = crate::cexpr::pmul(crate::cexpr::pmul(sp.m.clone(), sp.n.clone()), sp.k.clone());
    for (ext, _, _) in &sp.batch {
        tasks = ParamExpr::Mul(Box::new(tasks), Box::new(ext.clone()));
        macs = crate::cexpr::pmul(macs, ext.clone());
    }
    // Small products (e.g. a few rows through a dense layer) run whole on one thread.
    tasks = crate::cexpr::parts_for_work(tasks, macs, GEMM_MACS_PER_NS);
    if !knobs.parallel {
        tasks = ParamExpr::Const(1);
    }
    Ok(Some(LoweredKernel {
        call: KernelCall {
            entry,
            buffers,
            params: p.exprs,
            packed: packed.map(|x| vec![x.0]).unwrap_or_default(),
            max_parts: Some(tasks),
        },
        source: c,
        schedule: sched,
        workload,
    }))
}

/// Emits this part's task range `[t0, t1)` of `ntasks`: an even share when
/// the schedule parallelizes, else all of them (the kernel then reports
/// `max_parts` 1, and a caller that still splits gets every task once).
pub(crate) fn emit_task_range(s: &mut String, parallel: bool) {
    if parallel {
        let _ = writeln!(
            s,
            "    const int64_t t0 = ntasks * part / num_parts, t1 = ntasks * (part + 1) / num_parts;"
        );
    } else {
        let _ = writeln!(
            s,
            "    const int64_t t0 = part == 0 ? 0 : ntasks, t1 = ntasks; (void)num_parts;"
        );
    }
}

/// Emits the `eb`/`es` arrays the microkernel reads its epilogue operands
/// from: one base pointer per operand (given) and its row stride `esm{k}`.
pub(crate) fn emit_epilogue_operands(s: &mut String, bases: &[String]) {
    if bases.is_empty() {
        let _ = writeln!(
            s,
            "                    const float *const *eb = 0; const int64_t *es = 0;"
        );
        return;
    }
    let ne = bases.len();
    let strides: Vec<String> = (0..ne).map(|k| format!("esm{k}")).collect();
    let _ = writeln!(
        s,
        "                    const float *const eb[{ne}] = {{{}}};",
        bases.join(", ")
    );
    let _ = writeln!(
        s,
        "                    const int64_t es[{ne}] = {{{}}};",
        strides.join(", ")
    );
}

#[cfg(test)]
mod tests {
    use crate::testutil::{check, node, rand_tensor, tt};
    use crate::{GroupValue, KernelGroup, Target};
    use carbide_ir::ops::elementwise::{Binary, ElementwiseOp, Unary};
    use carbide_ir::ops::linalg::{GemmAttrs, LinalgOp};
    use carbide_ir::{Op, Tensor};

    fn input(name: &str, shape: &[usize], seed: u64, constant: bool) -> (GroupValue, Tensor) {
        let t = rand_tensor(shape, seed);
        (
            GroupValue {
                name: name.into(),
                ty: tt(shape),
                constant: constant.then(|| t.clone()),
            },
            t,
        )
    }

    fn targets() -> Vec<Target> {
        let mut v = vec![];
        for t in ["x86-64-avx2", "x86-64-avx512"] {
            let t = Target::parse(t).unwrap();
            if t.runs_on_host() {
                v.push(t);
            }
        }
        v
    }

    fn group(
        nodes: Vec<carbide_ir::Node>,
        ins: Vec<(GroupValue, Tensor)>,
        out: &str,
        out_shape: &[usize],
    ) -> (KernelGroup, Vec<Tensor>) {
        let feeds = ins.iter().map(|x| x.1.clone()).collect();
        (
            KernelGroup {
                nodes,
                inputs: ins.into_iter().map(|x| x.0).collect(),
                outputs: vec![GroupValue {
                    name: out.into(),
                    ty: tt(out_shape),
                    constant: None,
                }],
            },
            feeds,
        )
    }

    fn ew(u: Unary) -> Op {
        Op::Elementwise(ElementwiseOp::Unary(u))
    }
    fn bin(b: Binary) -> Op {
        Op::Elementwise(ElementwiseOp::Binary {
            op: b,
            legacy_axis: None,
        })
    }

    #[test]
    fn matmul_constant_b_with_bias_and_relu_odd_sizes() {
        for t in targets() {
            for (m, k, n) in [(37, 53, 71), (1, 7, 3), (13, 300, 33), (150, 20, 530)] {
                let (g, feeds) = group(
                    vec![
                        node("mm", Op::Linalg(LinalgOp::MatMul), &["a", "w"], &["y"]),
                        node("add", bin(Binary::Add), &["y", "bias"], &["z"]),
                        node("relu", ew(Unary::Relu), &["z"], &["out"]),
                    ],
                    vec![
                        input("a", &[m, k], 1, false),
                        input("w", &[k, n], 2, true),
                        input("bias", &[n], 3, true),
                    ],
                    "out",
                    &[m, n],
                );
                let lk = check(&g, &t, &feeds, 1e-4);
                assert_eq!(lk.call.packed.len(), 1, "constant B is pre-packed");
            }
        }
    }

    #[test]
    fn batched_broadcast_matmul_dynamic_b_with_residual() {
        for t in targets() {
            let (g, feeds) = group(
                vec![
                    node("mm", Op::Linalg(LinalgOp::MatMul), &["a", "b"], &["y"]),
                    node("res", bin(Binary::Add), &["r", "y"], &["out"]),
                ],
                vec![
                    input("a", &[2, 3, 17, 29], 1, false),
                    input("b", &[3, 29, 45], 2, false),
                    input("r", &[2, 1, 17, 45], 3, false),
                ],
                "out",
                &[2, 3, 17, 45],
            );
            let lk = check(&g, &t, &feeds, 1e-4);
            assert!(lk.call.packed.is_empty());
        }
    }

    #[test]
    fn matmul_vector_operands() {
        for t in targets() {
            let (g, feeds) = group(
                vec![node("mm", Op::Linalg(LinalgOp::MatMul), &["a", "b"], &["out"])],
                vec![input("a", &[29], 1, false), input("b", &[2, 29, 40], 2, true)],
                "out",
                &[2, 40],
            );
            check(&g, &t, &feeds, 1e-4);
            let (g, feeds) = group(
                vec![node("mm", Op::Linalg(LinalgOp::MatMul), &["a", "b"], &["out"])],
                vec![input("a", &[5, 29], 1, false), input("b", &[29], 2, false)],
                "out",
                &[5],
            );
            check(&g, &t, &feeds, 1e-4);
        }
    }

    #[test]
    fn gemm_transposes_alpha_beta_bias_and_activations() {
        let acts = [
            Unary::Sigmoid,
            Unary::Tanh,
            Unary::Gelu { tanh: false },
            Unary::Gelu { tanh: true },
            Unary::HardSwish,
            Unary::LeakyRelu { alpha: 0.1 },
            Unary::Exp,
        ];
        for t in targets() {
            for (i, act) in acts.iter().enumerate() {
                let (ta, tb) = (i % 2 == 1, i % 3 != 0);
                let (m, k, n) = (19, 41, 35);
                let a_shape = if ta { [k, m] } else { [m, k] };
                let b_shape = if tb { [n, k] } else { [k, n] };
                let c_shape: &[usize] = if i % 2 == 0 { &[n] } else { &[m, 1] };
                let (g, feeds) = group(
                    vec![
                        node(
                            "gemm",
                            Op::Linalg(LinalgOp::Gemm(GemmAttrs {
                                alpha: 0.7,
                                beta: 1.3,
                                trans_a: ta,
                                trans_b: tb,
                            })),
                            &["a", "b", "c"],
                            &["y"],
                        ),
                        node("act", ew(*act), &["y"], &["out"]),
                    ],
                    vec![
                        input("a", &a_shape, 1, false),
                        input("b", &b_shape, 2, i % 4 != 1),
                        input("c", c_shape, 3, true),
                    ],
                    "out",
                    &[m, n],
                );
                eprintln!("gemm case {i}: transA={ta} transB={tb} act={act:?}");
                check(&g, &t, &feeds, 2e-5 * 10.0);
            }
        }
    }

    #[test]
    fn clip_and_scalar_mul_epilogue() {
        for t in targets() {
            let scalar = Tensor::from_f32s(vec![0.5]).reshaped(&[]).unwrap();
            let lo = Tensor::from_f32s(vec![0.0]).reshaped(&[]).unwrap();
            let hi = Tensor::from_f32s(vec![0.6]).reshaped(&[]).unwrap();
            let (mut g, mut feeds) = group(
                vec![
                    node("mm", Op::Linalg(LinalgOp::MatMul), &["a", "b"], &["y"]),
                    node("mul", bin(Binary::Mul), &["y", "s"], &["z"]),
                    node(
                        "clip",
                        Op::Elementwise(ElementwiseOp::Clip { min: None, max: None }),
                        &["z", "lo", "hi"],
                        &["out"],
                    ),
                ],
                vec![input("a", &[33, 64], 1, false), input("b", &[64, 48], 2, true)],
                "out",
                &[33, 48],
            );
            for (name, v) in [("s", scalar.clone()), ("lo", lo.clone()), ("hi", hi.clone())] {
                g.inputs.push(GroupValue {
                    name: name.into(),
                    ty: tt(&[]),
                    constant: Some(v.clone()),
                });
                feeds.push(v);
            }
            check(&g, &t, &feeds, 1e-4);
        }
    }
}

#[cfg(test)]
mod neon_tests {
    use crate::testutil::{check_neon, node, rand_tensor, tt};
    use crate::{GroupValue, KernelGroup};
    use carbide_ir::ops::elementwise::{ElementwiseOp, Unary};
    use carbide_ir::ops::linalg::LinalgOp;
    use carbide_ir::Op;

    #[test]
    fn neon_gemm_with_epilogue_under_qemu() {
        for (m, k, n, constant) in [(37, 53, 29, true), (9, 300, 13, false)] {
            let a = rand_tensor(&[m, k], 1);
            let b = rand_tensor(&[k, n], 2);
            let g = KernelGroup {
                nodes: vec![
                    node("mm", Op::Linalg(LinalgOp::MatMul), &["a", "b"], &["y"]),
                    node(
                        "act",
                        Op::Elementwise(ElementwiseOp::Unary(Unary::Gelu { tanh: false })),
                        &["y"],
                        &["out"],
                    ),
                ],
                inputs: vec![
                    GroupValue {
                        name: "a".into(),
                        ty: tt(&[m, k]),
                        constant: None,
                    },
                    GroupValue {
                        name: "b".into(),
                        ty: tt(&[k, n]),
                        constant: constant.then(|| b.clone()),
                    },
                ],
                outputs: vec![GroupValue {
                    name: "out".into(),
                    ty: tt(&[m, n]),
                    constant: None,
                }],
            };
            check_neon(&g, &[a, b], 1e-4);
        }
    }
}
