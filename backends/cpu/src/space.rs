//! The schedule space of each kernel template: which [`Schedule`] fields it
//! can vary and the candidate values the autotuner searches.
//!
//! The contract: a template either generates exactly what a schedule says or
//! rejects it with [`CodegenError::BadSchedule`] naming the field — never
//! ignores a field. Per template:
//!
//! - **gemm** (MatMul/Gemm) and **conv2d** (non-depthwise Conv): `microkernel`
//!   (mr x nr register tile, limited by the vector register count),
//!   `tiles` m/n/k (MC/NC/KC cache blocks), `unroll` k (1, 2, 4, 8: k steps
//!   per microkernel loop iteration), `parallel_axis` `"mn"` (tasks over
//!   batch x M blocks x N blocks split across parts) or none (one part),
//!   `weight_layout` (gemm: `PackedPanels { nr }` = constant B pre-packed in
//!   the artifact, or `RowMajor` = B packed per part at run time; conv:
//!   `Nchwc { block: mr }`, the weights pre-packed as the A operand with
//!   pixels as the vector axis, or `PackedPanels { nr }`, the channel-vector
//!   form: weights as B panels, output channels the vector axis, pixels the
//!   broadcast rows, so `m` tiles pixels and `n` channels). Conv only:
//!   `tiles` `b_pack` = 0 reads the B operand in place instead of packing
//!   it (1x1 stride-1 unpadded convs in the pixel-vector form: the image's
//!   channel rows are B's k rows, `P` floats apart; only the last, partial
//!   pixel panel is still packed); absent, B panels are packed per part.
//!   `loop_order` n, k, m (the default: B micro-panel outside, A rows
//!   inside) or, gemm only, m, k, n (A micro-panel outside). Fixed:
//!   `vector_axis` n; `vector_width` the target's (the register width: a
//!   narrower vector only idles lanes; AVX2 vs AVX-512 is `--target`).
//!   3x3 stride-1 ungrouped convs also get `Winograd { m }` points (m = 2,
//!   4; see `winograd`): the same knobs over the transformed GEMMs (`n`
//!   counts output pixels per tile block, `m` output channels per block,
//!   `k` input channels per K block). Never the default: it changes the
//!   rounding, so the tuner must measure and verify it.
//! - **depthwise2d** (vector rows, column stride 1 or 2): register blocking
//!   of the row loop. `tiles` `oh` (1, 2, 4: output rows per block; their
//!   windows share plane rows, each input vector is loaded once for all of
//!   them) and `unroll` `ow` (1, 2, 4: vectors per row step, independent
//!   accumulator chains); the default blocks 2 rows. Fixed: `loop_order`
//!   plane, oh, ow; `vector_axis` ow; `parallel_axis` plane;
//!   `weight_layout` RowMajor (the OIHW weights as given). Wider column strides run scalar and have no knobs.
//! - **maxpool2d/avgpool2d** (vector rows, column stride 1 or 2): `unroll`
//!   `ow` (1, 2, 4: vectors per row step, independent accumulator chains).
//!   Fixed as depthwise's, `weight_layout` RowMajor (no weights).
//! - **softmax/layernorm/reduce** rows, **elementwise**: no knobs yet; only
//!   their default schedule is accepted (any other is rejected by
//!   [`require_default`]).

use crate::conv::B_PACK;
use crate::depthwise::{ROW_BLOCKS, ROW_VECTORS};
use crate::gemm::{LOOP_ORDER, LOOP_ORDER_M_OUTER, UNROLLS};
use crate::pool::POOL_VECTORS;
use crate::target::{Isa, Target};
use crate::{lower, CodegenError, KernelGroup};
use carbide_ir::kernel::{MicroTile, Schedule, WeightLayout};

/// Rejects any schedule other than `default` for a template without knobs,
/// naming the first field that differs.
pub(crate) fn require_default(s: &Schedule, default: &Schedule, kernel: &str) -> Result<(), CodegenError> {
    let field = if s.tiles != default.tiles {
        "tiles"
    } else if s.loop_order != default.loop_order {
        "loop_order"
    } else if s.vector_axis != default.vector_axis {
        "vector_axis"
    } else if s.vector_width != default.vector_width {
        "vector_width"
    } else if s.unroll != default.unroll {
        "unroll"
    } else if s.parallel_axis != default.parallel_axis {
        "parallel_axis"
    } else if s.weight_layout != default.weight_layout {
        "weight_layout"
    } else if s.microkernel != default.microkernel {
        "microkernel"
    } else {
        return Ok(());
    };
    Err(CodegenError::BadSchedule {
        kernel: kernel.to_string(),
        why: format!("this kernel has no '{field}' knob; only its default schedule is generated"),
    })
}

/// Register tiles worth trying per ISA (all fit the register file, see
/// `gemm::check_schedule`); the first is the default.
fn micro_tiles(isa: Isa) -> &'static [(usize, usize)] {
    match isa {
        // Zen 4 executes a 512-bit FMA as 2x256: wide-N tiles halve the
        // broadcasts per FMA, tall ones halve the B loads.
        Isa::Avx512 => &[(12, 32), (14, 32), (8, 32), (8, 48), (6, 64), (28, 16)],
        Isa::Avx2 => &[(6, 16), (4, 24), (12, 8), (4, 16)],
        Isa::Neon => &[(8, 12), (4, 16), (12, 8), (6, 16)],
    }
}

/// Whether kernels of this workload op (`WorkloadKey::op`) have schedule
/// knobs, i.e. a space of more than their default (see the module doc).
pub fn has_knobs(op: &str) -> bool {
    matches!(op, "gemm" | "conv2d" | "depthwise2d" | "maxpool2d" | "avgpool2d")
}

/// The unrolled schedules of a pooling kernel: `default` with each
/// `unroll["ow"]` above 1 that `lower` accepts.
fn pool_space(group: &KernelGroup, target: &Target, default: &Schedule) -> Vec<Schedule> {
    let mut out = vec![default.clone()];
    for vectors in POOL_VECTORS.into_iter().filter(|&v| v > 1) {
        let mut s = default.clone();
        s.unroll.insert("ow".into(), vectors);
        if matches!(lower(group, target, Some(&s)), Ok(Some(_))) {
            out.push(s);
        }
    }
    out
}

/// The register-blocking schedules of a depthwise kernel: `default`, then
/// every other (rows, vectors) pair that `lower` accepts.
fn depthwise_space(group: &KernelGroup, target: &Target, default: &Schedule) -> Vec<Schedule> {
    let mut out = vec![default.clone()];
    for rows in ROW_BLOCKS {
        for vectors in ROW_VECTORS {
            let mut s = default.clone();
            s.tiles.remove("oh");
            s.unroll.remove("ow");
            if rows > 1 {
                s.tiles.insert("oh".into(), rows);
            }
            if vectors > 1 {
                s.unroll.insert("ow".into(), vectors);
            }
            if s != *default && matches!(lower(group, target, Some(&s)), Ok(Some(_))) {
                out.push(s);
            }
        }
    }
    out
}

/// Every schedule worth trying for `group` on `target`, the template's
/// default first; each one is accepted by [`lower`]. Empty when the backend
/// generates no kernel for the group (it runs on the host). Kernels without
/// knobs return just their default.
pub fn schedule_space(group: &KernelGroup, target: &Target) -> Result<Vec<Schedule>, CodegenError> {
    let Some(k) = lower(group, target, None)? else {
        return Ok(Vec::new());
    };
    let default = k.schedule;
    if !has_knobs(&k.workload.op) {
        return Ok(vec![default]);
    }
    match k.workload.op.as_str() {
        "depthwise2d" => return Ok(depthwise_space(group, target, &default)),
        "maxpool2d" | "avgpool2d" => return Ok(pool_space(group, target, &default)),
        _ => {}
    }
    let role_conv = k.workload.op == "conv2d";
    // Pointwise convs may also read B in place (pixel-vector form only).
    let in_place_ok = role_conv && {
        let mut probe = crate::conv::default_schedule(target);
        probe.tiles.insert(B_PACK.into(), 0);
        matches!(lower(group, target, Some(&probe)), Ok(Some(_)))
    };
    let mut out = vec![default.clone()];
    for &(mr, nr) in micro_tiles(target.isa()) {
        for kc in [128usize, 256, 384] {
            // MC: the packed A block (mc x kc) at ~1/4 or ~1/2 of a 1 MiB L2.
            for a_bytes in [256usize << 10, 512 << 10] {
                let mc = ((a_bytes / (kc * 4)) / mr).max(1) * mr;
                for nc in [256usize, 1024] {
                    let nc = nc.div_ceil(nr) * nr;
                    for unroll in [1usize, 4] {
                        debug_assert!(UNROLLS.contains(&unroll));
                        let mut s = default.clone();
                        s.microkernel = Some(MicroTile { mr, nr });
                        s.tiles = [("m".to_string(), mc), ("n".to_string(), nc), ("k".to_string(), kc)]
                            .into_iter()
                            .collect();
                        s.loop_order = LOOP_ORDER.iter().map(|x| x.to_string()).collect();
                        s.unroll = if unroll > 1 {
                            [("k".to_string(), unroll)].into_iter().collect()
                        } else {
                            Default::default()
                        };
                        s.weight_layout = if role_conv {
                            WeightLayout::Nchwc { block: mr }
                        } else {
                            WeightLayout::PackedPanels { nr }
                        };
                        // Convs also in the channel-vector form (weights as B panels).
                        let channel_vector = role_conv.then(|| {
                            let mut cv = s.clone();
                            cv.weight_layout = WeightLayout::PackedPanels { nr };
                            cv
                        });
                        let in_place = in_place_ok.then(|| {
                            let mut ip = s.clone();
                            ip.tiles.insert(B_PACK.into(), 0);
                            ip
                        });
                        // MatMul/Gemm also with A micro-panels outside B's.
                        let m_outer = (!role_conv).then(|| {
                            let mut mo = s.clone();
                            mo.loop_order = LOOP_ORDER_M_OUTER.iter().map(|x| x.to_string()).collect();
                            mo
                        });
                        for s in std::iter::once(s).chain(channel_vector).chain(in_place).chain(m_outer) {
                            if !out.contains(&s) {
                                out.push(s);
                            }
                        }
                    }
                }
            }
        }
    }
    if role_conv {
        for s in crate::winograd::schedule_points(group, &default, target, micro_tiles(target.isa())) {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::schedule_space;
    use crate::testutil::{node, rand_tensor, tt};
    use crate::{lower, CodegenError, GroupValue, KernelGroup, Target};
    use carbide_ir::kernel::{ParamExpr, Schedule, WeightLayout};
    use carbide_ir::ops::elementwise::{ElementwiseOp, Unary};
    use carbide_ir::ops::linalg::LinalgOp;
    use carbide_ir::ops::nn::{ConvAttrs, NnOp};
    use carbide_ir::{Op, Tensor};

    fn value(name: &str, shape: &[usize], constant: Option<&Tensor>) -> GroupValue {
        GroupValue {
            name: name.into(),
            ty: tt(shape),
            constant: constant.cloned(),
        }
    }

    fn relu() -> Op {
        Op::Elementwise(ElementwiseOp::Unary(Unary::Relu))
    }

    /// MatMul [m,k]x[k,n] with a constant B and a fused Relu.
    fn matmul(m: usize, k: usize, n: usize) -> (KernelGroup, Vec<Tensor>) {
        let (a, b) = (rand_tensor(&[m, k], 1), rand_tensor(&[k, n], 2));
        let g = KernelGroup {
            nodes: vec![
                node("mm", Op::Linalg(LinalgOp::MatMul), &["a", "b"], &["y"]),
                node("relu", relu(), &["y"], &["out"]),
            ],
            inputs: vec![value("a", &[m, k], None), value("b", &[k, n], Some(&b))],
            outputs: vec![value("out", &[m, n], None)],
        };
        (g, vec![a, b])
    }

    /// A 3x3 pad-1 convolution with bias and Relu.
    fn conv() -> (KernelGroup, Vec<Tensor>) {
        let (x, w, bias) = (
            rand_tensor(&[1, 5, 9, 11], 1),
            rand_tensor(&[19, 5, 3, 3], 2),
            rand_tensor(&[19], 3),
        );
        let attrs = ConvAttrs {
            pads: Some(vec![1, 1, 1, 1]),
            ..Default::default()
        };
        let g = KernelGroup {
            nodes: vec![
                node("conv", Op::Nn(NnOp::Conv(attrs)), &["x", "w", "bias"], &["y"]),
                node("relu", relu(), &["y"], &["out"]),
            ],
            inputs: vec![
                value("x", &[1, 5, 9, 11], None),
                value("w", &[19, 5, 3, 3], Some(&w)),
                value("bias", &[19], Some(&bias)),
            ],
            outputs: vec![value("out", &[1, 19, 9, 11], None)],
        };
        (g, vec![x, w, bias])
    }

    fn host() -> Option<Target> {
        Target::host().ok().filter(|t| t.isa() != crate::Isa::Neon)
    }

    /// Lowers `g` under `s` and compares it to the reference on 1 and 3 parts.
    fn check_with(g: &KernelGroup, t: &Target, feeds: &[Tensor], s: &Schedule) {
        let k = crate::testutil::check_with(g, t, Some(s), feeds, 1e-4);
        assert_eq!(&k.schedule, s, "the kernel records the schedule it was generated for");
    }

    #[test]
    fn gemm_and_conv_spaces_lower_and_compute_correctly() {
        let Some(t) = host() else { return };
        for (g, feeds) in [matmul(45, 300, 70), conv()] {
            let space = schedule_space(&g, &t).unwrap();
            assert!(space.len() > 20, "GEMM-like kernels have a real space: {}", space.len());
            assert_eq!(Some(&space[0]), crate::default_schedule(&g, &t).unwrap().as_ref());
            // Every schedule is accepted; a spread of them is run.
            for (i, s) in space.iter().enumerate() {
                if i % 29 == 0 {
                    check_with(&g, &t, &feeds, s);
                } else {
                    lower(&g, &t, Some(s)).unwrap().unwrap();
                }
            }
        }
    }

    #[test]
    fn every_gemm_knob_changes_the_generated_code() {
        let Some(t) = host() else { return };
        let (g, feeds) = matmul(45, 300, 70);
        let base = crate::default_schedule(&g, &t).unwrap().unwrap();
        let src = |s: &Schedule| lower(&g, &t, Some(s)).unwrap().unwrap();
        let k0 = src(&base);
        let mut variants = Vec::new();
        let mut s = base.clone();
        s.unroll.insert("k".into(), 4);
        variants.push(s);
        let mut s = base.clone();
        s.tiles.insert("k".into(), 64);
        variants.push(s);
        let mut s = base.clone();
        s.tiles.insert("m".into(), 24);
        variants.push(s);
        let mut s = base.clone();
        s.tiles.insert("n".into(), 128);
        variants.push(s);
        let mut s = base.clone();
        s.weight_layout = WeightLayout::RowMajor;
        variants.push(s);
        let mut s = base.clone();
        s.parallel_axis = None;
        variants.push(s);
        let mut s = base.clone();
        s.loop_order = vec!["m".into(), "k".into(), "n".into()];
        variants.push(s.clone());
        // Also over B packed at run time (its panel pointer differs).
        s.weight_layout = WeightLayout::RowMajor;
        variants.push(s);
        for s in &variants {
            let k = src(s);
            assert_ne!(k.source, k0.source, "{s:?} must change the code");
            check_with(&g, &t, &feeds, s);
        }
        // Row-major weights are packed at run time, not in the artifact.
        assert!(src(&variants[4]).call.packed.is_empty());
        assert_eq!(src(&variants[5]).call.max_parts, Some(ParamExpr::Const(1)));
    }

    #[test]
    fn unsupported_schedules_are_rejected_with_the_field() {
        let Some(t) = host() else { return };
        let (g, _) = matmul(16, 16, 16);
        let base = crate::default_schedule(&g, &t).unwrap().unwrap();
        let reject = |s: Schedule, field: &str| match lower(&g, &t, Some(&s)) {
            Err(CodegenError::BadSchedule { why, .. }) => assert!(why.contains(field), "{why}"),
            other => panic!(
                "{s:?} should be rejected, got {:?}",
                other.map(|k| k.map(|k| k.schedule))
            ),
        };
        let mut s = base.clone();
        s.loop_order = vec!["m".into(), "n".into(), "k".into()];
        reject(s, "loop order");
        let mut s = base.clone();
        s.vector_axis = Some("k".into());
        reject(s, "vector axis");
        let mut s = base.clone();
        s.unroll.insert("m".into(), 2);
        reject(s, "unroll loop 'm'");
        let mut s = base.clone();
        s.unroll.insert("k".into(), 3);
        reject(s, "k unroll 3");
        let mut s = base.clone();
        s.tiles.insert("x".into(), 3);
        reject(s, "'x'");
        let mut s = base.clone();
        s.parallel_axis = Some("k".into());
        reject(s, "parallel axis");
        let mut s = base.clone();
        s.weight_layout = WeightLayout::Nchwc { block: 8 };
        reject(s, "weight layout");
        let mut s = base.clone();
        s.microkernel = Some(carbide_ir::kernel::MicroTile { mr: 30, nr: 64 });
        reject(s, "registers");

        // Conv weights are A panels of mr channels or B panels of nr
        // channels (the channel-vector form): other blocks are refused.
        let (g, _) = conv();
        let mut s = crate::default_schedule(&g, &t).unwrap().unwrap();
        let nr = s.microkernel.unwrap().nr;
        s.weight_layout = WeightLayout::PackedPanels {
            nr: nr + t.vector_width(),
        };
        assert!(matches!(lower(&g, &t, Some(&s)), Err(CodegenError::BadSchedule { .. })));
        // The m-outer loop order is generated for MatMul/Gemm only.
        let mut s = crate::default_schedule(&g, &t).unwrap().unwrap();
        s.loop_order = vec!["m".into(), "k".into(), "n".into()];
        match lower(&g, &t, Some(&s)) {
            Err(CodegenError::BadSchedule { why, .. }) => assert!(why.contains("loop order"), "{why}"),
            other => panic!(
                "conv must refuse the m-outer order, got {:?}",
                other.map(|k| k.is_some())
            ),
        }
    }

    #[test]
    fn kernels_without_knobs_offer_and_accept_only_their_default() {
        let Some(t) = host() else { return };
        let g = KernelGroup {
            nodes: vec![node("relu", relu(), &["x"], &["out"])],
            inputs: vec![value("x", &[3, 40], None)],
            outputs: vec![value("out", &[3, 40], None)],
        };
        let space = schedule_space(&g, &t).unwrap();
        assert_eq!(space.len(), 1);
        lower(&g, &t, Some(&space[0])).unwrap().unwrap();
        let mut s = space[0].clone();
        s.unroll.insert("inner".into(), 2);
        match lower(&g, &t, Some(&s)) {
            Err(CodegenError::BadSchedule { why, .. }) => assert!(why.contains("unroll"), "{why}"),
            other => panic!("expected a rejection, got {:?}", other.is_ok()),
        }
    }
}
