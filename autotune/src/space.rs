//! Moving through a kernel's schedule space and the cost model's features.
//! The space itself is the backend's ([`carbide_backend_cpu::schedule_space`]:
//! exactly the schedules its templates honour, the default first); the
//! search here only walks it — mutation to a near schedule, crossover of two
//! parents' knob values, a random draw — by index into that list.

use carbide_backend_cpu::KernelGroup;
use carbide_ir::kernel::{Schedule, WeightLayout};
use carbide_ir::{Dim, Op};
use rand::seq::SliceRandom;
use rand::Rng;

/// Whether kernels of this workload op have a space to search (the
/// backend's answer; other kernels only have their default).
pub fn is_tunable(op: &str) -> bool {
    carbide_backend_cpu::has_knobs(op)
}

/// The GEMM view of a workload: C[m x n] += A[m x k] B[k x n], `batch` times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GemmDims {
    pub m: f64,
    pub n: f64,
    pub k: f64,
    pub batch: f64,
}

impl GemmDims {
    pub fn flops(&self) -> f64 {
        2.0 * self.m * self.n * self.k * self.batch
    }
}

fn known(d: &Dim) -> f64 {
    match d {
        Dim::Known(n) => *n as f64,
        // Measured (and tuned) with symbolic dims bound to 1.
        _ => 1.0,
    }
}

/// The GEMM dimensions of a GEMM-like group (anchor MatMul, Gemm or Conv).
pub fn gemm_dims(group: &KernelGroup) -> Option<GemmDims> {
    let anchor = group.nodes.first()?;
    let ty = |name: &str| {
        group
            .inputs
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.ty.shape.clone())
    };
    let out = group.outputs.first()?.ty.shape.clone()?;
    let outv: Vec<f64> = out.iter().map(known).collect();
    use carbide_ir::ops::{FusedOp, LinalgOp, NnOp};
    // Pooling as m = channels, n = output pixels, k = window taps.
    if let Op::Nn(NnOp::MaxPool(a) | NnOp::AveragePool(a)) = &anchor.op {
        if outv.len() != 4 {
            return None;
        }
        return Some(GemmDims {
            m: outv[1],
            n: outv[2] * outv[3],
            k: a.kernel_shape.iter().product::<i64>().max(1) as f64,
            batch: outv[0],
        });
    }
    // Conv and the optimizer's fused conv are convolutions; everything else
    // GEMM-like is a (batched) matrix product, transposed A for Gemm's transA.
    let trans_a = match &anchor.op {
        Op::Nn(NnOp::Conv(_)) | Op::Fused(FusedOp::FusedConv { .. }) => None,
        Op::Linalg(LinalgOp::Gemm(g)) | Op::Fused(FusedOp::FusedGemm { gemm: g, .. }) => Some(g.trans_a),
        Op::Linalg(LinalgOp::MatMul) | Op::Fused(FusedOp::FusedMatMul { .. }) => Some(false),
        _ => return None,
    };
    match trans_a {
        None => {
            let w: Vec<f64> = ty(anchor.inputs.get(1)?)?.iter().map(known).collect();
            if outv.len() < 3 || w.len() < 2 {
                return None;
            }
            Some(GemmDims {
                m: outv[1],
                n: outv[2..].iter().product(),
                k: w[1..].iter().product(),
                batch: outv[0],
            })
        }
        Some(trans_a) => {
            let a: Vec<f64> = ty(anchor.inputs.first()?)?.iter().map(known).collect();
            if outv.len() < 2 || a.is_empty() {
                return None;
            }
            let k = if trans_a && a.len() >= 2 {
                a[a.len() - 2]
            } else {
                a[a.len() - 1]
            };
            Some(GemmDims {
                m: outv[outv.len() - 2],
                n: outv[outv.len() - 1],
                k,
                batch: outv[..outv.len() - 2].iter().product(),
            })
        }
    }
}

/// How many knob values [`knob_values`] gives a schedule.
const KNOBS: usize = 12;

/// The knob values of a schedule, one number per field the templates may
/// vary; two schedules differ in the fields whose numbers differ.
fn knob_values(s: &Schedule) -> [i64; KNOBS] {
    let tile = |name: &str| s.tiles.get(name).map_or(0, |&v| v as i64);
    let (mr, nr) = s.microkernel.map_or((0, 0), |t| (t.mr as i64, t.nr as i64));
    let layout = match s.weight_layout {
        WeightLayout::RowMajor => 0,
        WeightLayout::PackedPanels { .. } => 1,
        WeightLayout::Nchwc { .. } => 2,
        WeightLayout::Winograd { m } => 2 + m as i64,
    };
    let parallel = match s.parallel_axis.as_deref() {
        None => 0,
        Some(axis) => 1 + axis.len() as i64,
    };
    [
        mr,
        nr,
        tile("m"),
        tile("n"),
        tile("k"),
        s.unroll.get("k").map_or(1, |&u| u as i64),
        parallel,
        layout,
        // Depthwise row blocking; conv B read in place (b_pack 0).
        s.tiles.get("oh").map_or(1, |&v| v as i64),
        s.unroll.get("ow").map_or(1, |&u| u as i64),
        s.tiles.get("b_pack").map_or(1, |&v| v as i64),
        // GEMM loop order: 1 when the m panels are outside the n panels.
        i64::from(s.loop_order.first().map(String::as_str) == Some("m")),
    ]
}

/// Index of the weight-layout knob in [`knob_values`].
const LAYOUT: usize = 7;

fn distance(a: &[i64; KNOBS], b: &[i64; KNOBS]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

/// Index moves over one task's schedule space (the backend's list).
#[derive(Debug, Clone)]
pub struct SpaceWalk {
    knobs: Vec<[i64; KNOBS]>,
}

impl SpaceWalk {
    pub fn new(space: &[Schedule]) -> SpaceWalk {
        SpaceWalk {
            knobs: space.iter().map(knob_values).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.knobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.knobs.is_empty()
    }

    /// The first schedule of each form (weight layout: the kernel's
    /// algorithm and operand arrangement) other than the default's, in space
    /// order. A task's first batch measures them all: forms differ by tens
    /// of percent where knobs within a form differ by a few, and a random
    /// draw from a space dominated by one form's tile variants could miss a
    /// rare one entirely.
    pub fn form_representatives(&self) -> Vec<usize> {
        let mut seen: Vec<i64> = self.knobs.first().map(|k| k[LAYOUT]).into_iter().collect();
        let mut out = Vec::new();
        for (i, k) in self.knobs.iter().enumerate() {
            if !seen.contains(&k[LAYOUT]) {
                seen.push(k[LAYOUT]);
                out.push(i);
            }
        }
        out
    }

    pub fn random(&self, rng: &mut impl Rng) -> usize {
        rng.gen_range(0..self.knobs.len().max(1))
    }

    /// A schedule among the few nearest to `parent` (fewest differing
    /// knobs; the register tile drags MC/NC along, so "one knob" is rare).
    pub fn mutate(&self, parent: usize, rng: &mut impl Rng) -> usize {
        let p = &self.knobs[parent];
        let mut near: Vec<(usize, usize)> = (0..self.knobs.len())
            .filter(|&i| i != parent)
            .map(|i| (distance(p, &self.knobs[i]), i))
            .collect();
        if near.is_empty() {
            return parent;
        }
        near.sort_unstable();
        let closest = near[0].0;
        // Everything at the closest distance, and at least 4 choices.
        let n = near.iter().take_while(|(d, _)| *d == closest).count().max(4);
        near.truncate(n);
        near.choose(rng).map_or(parent, |&(_, i)| i)
    }

    /// A schedule whose every knob comes from `a` or `b` (neither parent
    /// itself when another exists), else a mutation of `a`.
    pub fn crossover(&self, a: usize, b: usize, rng: &mut impl Rng) -> usize {
        let (ka, kb) = (&self.knobs[a], &self.knobs[b]);
        let children: Vec<usize> = (0..self.knobs.len())
            .filter(|&i| i != a && i != b)
            .filter(|&i| (0..KNOBS).all(|f| self.knobs[i][f] == ka[f] || self.knobs[i][f] == kb[f]))
            .collect();
        match children.choose(rng) {
            Some(&c) => c,
            None => self.mutate(a, rng),
        }
    }
}

/// Cost-model features of a schedule on a workload, from the schedule's
/// fields. The model predicts log(time / FLOPs), so one model serves every task.
pub fn features(s: &Schedule, d: &GemmDims, vw: usize) -> Vec<f64> {
    let ln = |x: f64| x.max(1.0).ln();
    let waste = |dim: f64, tile: f64| {
        let tiles = (dim / tile).ceil().max(1.0);
        (tiles * tile - dim) / (tiles * tile)
    };
    let k = knob_values(s);
    let (mr, nr) = (k[0].max(1) as f64, k[1].max(1) as f64);
    let tile_or = |v: i64, whole: f64| if v > 0 { v as f64 } else { whole };
    let (mc, nc, kc) = (tile_or(k[2], d.m), tile_or(k[3], d.n), tile_or(k[4], d.k));
    let parallel = f64::from(u8::from(k[6] != 0));
    let parts = if parallel > 0.0 {
        (d.m / mc).ceil().max(1.0) * (d.n / nc).ceil().max(1.0) * d.batch.max(1.0)
    } else {
        1.0
    };
    vec![
        mr,
        nr / vw as f64,
        mr * nr / vw as f64,
        ln(kc),
        ln(mc),
        ln(nc),
        k[5] as f64,
        parallel,
        k[7] as f64,
        k[8] as f64,
        k[9] as f64,
        k[10] as f64,
        k[11] as f64,
        (kc / d.k).min(4.0),
        (mc / d.m).min(4.0),
        (nc / d.n).min(4.0),
        waste(d.m, mr),
        waste(d.n, nr),
        waste(d.k, kc),
        waste(d.m, mc),
        waste(d.n, nc),
        ln(d.m),
        ln(d.n),
        ln(d.k),
        ln(d.flops()),
        ln(parts),
        // Working sets: A block (L2), B panel (L3/L2), B micro-panel (L1).
        ln(mc * kc * 4.0),
        ln(kc * nc * 4.0),
        ln(kc * nr * 4.0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuner::tests::{host_target, matmul_group};
    use rand::SeedableRng;

    #[test]
    fn every_other_form_has_one_representative_in_space_order() {
        let s = |layout: WeightLayout, mr: usize| Schedule {
            tiles: Default::default(),
            loop_order: vec!["n".into(), "k".into(), "m".into()],
            vector_axis: Some("n".into()),
            vector_width: 16,
            unroll: Default::default(),
            parallel_axis: Some("mn".into()),
            weight_layout: layout,
            microkernel: Some(carbide_ir::kernel::MicroTile { mr, nr: 32 }),
        };
        let space = [
            s(WeightLayout::Nchwc { block: 12 }, 12),
            s(WeightLayout::Nchwc { block: 8 }, 8),
            s(WeightLayout::PackedPanels { nr: 32 }, 12),
            s(WeightLayout::PackedPanels { nr: 32 }, 8),
            s(WeightLayout::RowMajor, 8),
        ];
        assert_eq!(SpaceWalk::new(&space).form_representatives(), vec![2, 4]);
        assert!(SpaceWalk::new(&space[..2]).form_representatives().is_empty());
    }

    #[test]
    fn moves_stay_in_the_backend_space() {
        let Some(t) = host_target() else { return };
        let g = matmul_group(96, 256, 128);
        let space = carbide_backend_cpu::schedule_space(&g, &t).unwrap();
        assert!(space.len() > 20, "{}", space.len());
        let walk = SpaceWalk::new(&space);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut seen = std::collections::HashSet::new();
        let mut i = 0;
        for _ in 0..500 {
            let other = walk.random(&mut rng);
            let next = if rng.gen_bool(0.5) {
                walk.mutate(i, &mut rng)
            } else {
                walk.crossover(i, other, &mut rng)
            };
            assert!(next < space.len());
            assert_ne!(next, i, "a move goes somewhere");
            seen.insert(next);
            i = next;
        }
        assert!(
            seen.len() > space.len() / 3,
            "the walk reaches much of the space: {}",
            seen.len()
        );
        // The cost model tells every schedule of the space apart.
        let dims = gemm_dims(&g).unwrap();
        let f0 = features(&space[0], &dims, t.vector_width());
        assert!(space
            .iter()
            .all(|s| features(s, &dims, t.vector_width()).len() == f0.len()));
        let differing: std::collections::HashSet<Vec<u64>> = space
            .iter()
            .map(|s| {
                features(s, &dims, t.vector_width())
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            })
            .collect();
        assert_eq!(differing.len(), space.len(), "every schedule has its own features");
    }
}
