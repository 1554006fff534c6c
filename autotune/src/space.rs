//! The schedule space of a tunable kernel and its features for the cost
//! model. Today the CPU templates that read schedules are the GEMM-like
//! ones (MatMul/Gemm and im2col convolution): they read the register tile
//! (`microkernel` mr x nr, with the weight panels packed to nr) and the
//! cache tiles (`m` = MC, `n` = NC, `k` = KC). Other kernels have a single
//! point in their space and are not tuned.

use carbide_backend_cpu::{Isa, KernelGroup, Target};
use carbide_ir::kernel::{MicroTile, Schedule, WeightLayout};
use carbide_ir::{Dim, Op};
use rand::seq::SliceRandom;
use rand::Rng;

/// Whether kernels of this workload op read the knobs searched here.
pub fn is_tunable(op: &str) -> bool {
    matches!(op, "gemm" | "conv2d")
}

/// KC candidates (depth of one packed panel).
const KC: [usize; 9] = [64, 96, 128, 192, 256, 320, 384, 512, 768];
/// MC = mr * factor.
const MC_FACTOR: [usize; 9] = [1, 2, 4, 6, 8, 12, 16, 24, 32];
/// NC = nr * factor.
const NC_FACTOR: [usize; 10] = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64];

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
    match &anchor.op {
        Op::Nn(carbide_ir::ops::NnOp::Conv(_)) => {
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
        Op::Linalg(l) => {
            let a: Vec<f64> = ty(anchor.inputs.first()?)?.iter().map(known).collect();
            let trans_a = matches!(l, carbide_ir::ops::LinalgOp::Gemm(g) if g.trans_a);
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
        _ => None,
    }
}

/// The knobs of a GEMM-like schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Knobs {
    pub mr: usize,
    pub nr: usize,
    pub kc: usize,
    pub mc: usize,
    pub nc: usize,
}

impl Knobs {
    pub fn of(s: &Schedule) -> Option<Knobs> {
        let t = s.microkernel?;
        Some(Knobs {
            mr: t.mr,
            nr: t.nr,
            kc: s.tile("k", 256),
            mc: s.tile("m", t.mr * 8),
            nc: s.tile("n", t.nr * 16),
        })
    }

    /// The schedule: `base` (the default) with these knobs.
    pub fn apply(&self, base: &Schedule) -> Schedule {
        let mut s = base.clone();
        s.tiles.insert("m".into(), self.mc);
        s.tiles.insert("n".into(), self.nc);
        s.tiles.insert("k".into(), self.kc);
        s.microkernel = Some(MicroTile {
            mr: self.mr,
            nr: self.nr,
        });
        match s.weight_layout {
            WeightLayout::PackedPanels { .. } => s.weight_layout = WeightLayout::PackedPanels { nr: self.nr },
            // Conv weights are packed as the A operand in blocks of mr output channels.
            WeightLayout::Nchwc { .. } => s.weight_layout = WeightLayout::Nchwc { block: self.mr },
            WeightLayout::RowMajor => {}
        }
        s
    }
}

/// Register tiles that fit the target's vector register file.
pub fn micro_tiles(target: &Target) -> Vec<(usize, usize)> {
    let vw = target.vector_width();
    let regs = match target.isa() {
        Isa::Avx2 => 16,
        _ => 32,
    };
    let mut out = Vec::new();
    for nv in 1..=4 {
        for mr in 2..=16 {
            // Accumulators, the B vectors and one broadcast A register.
            if mr * nv + nv < regs {
                out.push((mr, nv * vw));
            }
        }
    }
    out
}

/// Draws a random point of the space.
pub fn random_knobs(target: &Target, rng: &mut impl Rng) -> Knobs {
    let tiles = micro_tiles(target);
    let &(mr, nr) = tiles.choose(rng).unwrap_or(&(4, target.vector_width()));
    Knobs {
        mr,
        nr,
        kc: *KC.choose(rng).unwrap_or(&256),
        mc: mr * MC_FACTOR.choose(rng).unwrap_or(&8),
        nc: nr * NC_FACTOR.choose(rng).unwrap_or(&16),
    }
}

/// Changes one knob to a neighbouring or random value.
pub fn mutate(k: Knobs, target: &Target, rng: &mut impl Rng) -> Knobs {
    let mut out = k;
    match rng.gen_range(0..4) {
        0 => {
            let tiles = micro_tiles(target);
            // Prefer a tile close to the current one.
            let near: Vec<_> = tiles
                .iter()
                .filter(|(mr, nr)| mr.abs_diff(k.mr) <= 2 && nr.abs_diff(k.nr) <= target.vector_width())
                .collect();
            let &&(mr, nr) = near.choose(rng).unwrap_or(&&(k.mr, k.nr));
            // Keep the cache tiles' multiples of the register tile.
            out.mr = mr;
            out.nr = nr;
            out.mc = (k.mc / k.mr).max(1) * mr;
            out.nc = (k.nc / k.nr).max(1) * nr;
        }
        1 => out.kc = neighbour(&KC, k.kc, rng),
        2 => out.mc = k.mr * neighbour(&MC_FACTOR, k.mc / k.mr.max(1), rng),
        _ => out.nc = k.nr * neighbour(&NC_FACTOR, k.nc / k.nr.max(1), rng),
    }
    out
}

/// A value next to `cur` in `options` (or a random one a quarter of the time).
fn neighbour(options: &[usize], cur: usize, rng: &mut impl Rng) -> usize {
    if rng.gen_bool(0.25) {
        return *options.choose(rng).unwrap_or(&cur);
    }
    let pos = options
        .iter()
        .enumerate()
        .min_by_key(|(_, &o)| o.abs_diff(cur))
        .map_or(0, |(i, _)| i);
    let step: isize = if rng.gen_bool(0.5) { 1 } else { -1 };
    let i = (pos as isize + step).clamp(0, options.len() as isize - 1) as usize;
    options[i]
}

/// Takes each knob group (register tile, KC, MC factor, NC factor) from either parent.
pub fn crossover(a: Knobs, b: Knobs, rng: &mut impl Rng) -> Knobs {
    let (mr, nr, mcf_src, ncf_src) = if rng.gen_bool(0.5) {
        (a.mr, a.nr, a, b)
    } else {
        (b.mr, b.nr, b, a)
    };
    let mcf = if rng.gen_bool(0.5) { mcf_src } else { ncf_src };
    let ncf = if rng.gen_bool(0.5) { mcf_src } else { ncf_src };
    Knobs {
        mr,
        nr,
        kc: if rng.gen_bool(0.5) { a.kc } else { b.kc },
        mc: (mcf.mc / mcf.mr.max(1)).max(1) * mr,
        nc: (ncf.nc / ncf.nr.max(1)).max(1) * nr,
    }
}

/// Cost-model features of a schedule on a workload. The model predicts
/// log(time / FLOPs), so one model serves every task.
pub fn features(k: &Knobs, d: &GemmDims, vw: usize) -> Vec<f64> {
    let ln = |x: f64| x.max(1.0).ln();
    let waste = |dim: f64, tile: f64| {
        let tiles = (dim / tile).ceil().max(1.0);
        (tiles * tile - dim) / (tiles * tile)
    };
    let (mr, nr, kc, mc, nc) = (k.mr as f64, k.nr as f64, k.kc as f64, k.mc as f64, k.nc as f64);
    let parts = (d.m / mc).ceil().max(1.0) * (d.n / nc).ceil().max(1.0) * d.batch.max(1.0);
    vec![
        mr,
        nr / vw as f64,
        mr * nr / vw as f64,
        ln(kc),
        ln(mc),
        ln(nc),
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
    use rand::SeedableRng;

    #[test]
    fn moves_stay_in_the_register_file() {
        let t = Target::parse("x86-64-avx2").unwrap();
        let tiles = micro_tiles(&t);
        assert!(tiles.contains(&(6, 16)));
        assert!(!tiles.contains(&(8, 16)), "8x16 needs 8*2+2+1 > 16 registers");
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut k = random_knobs(&t, &mut rng);
        for _ in 0..500 {
            let other = random_knobs(&t, &mut rng);
            k = if rng.gen_bool(0.5) {
                mutate(k, &t, &mut rng)
            } else {
                crossover(k, other, &mut rng)
            };
            assert!(tiles.contains(&(k.mr, k.nr)), "{k:?}");
            assert_eq!(k.mc % k.mr, 0);
            assert_eq!(k.nc % k.nr, 0);
        }
    }
}
