//! GridSample (N-D, nearest/linear/cubic, zeros/border/reflection padding)
//! and AffineGrid (2-D and 3-D), following the ONNX reference semantics.

use super::{check_elems, from_f64, to_f64};
use crate::error::{invalid, OpResult};
use carbide_ir::ops::image::{GridSampleAttrs, InterpMode, PaddingMode};
use carbide_ir::Tensor;
use rayon::prelude::*;

fn reflect(x: f64, lo: f64, hi: f64) -> f64 {
    let rng = hi - lo;
    if rng <= 0.0 {
        return lo;
    }
    if x < lo {
        let dx = lo - x;
        let n = (dx / rng).trunc();
        let r = dx - n * rng;
        if n % 2.0 == 0.0 {
            lo + r
        } else {
            hi - r
        }
    } else if x > hi {
        let dx = x - hi;
        let n = (dx / rng).trunc();
        let r = dx - n * rng;
        if n % 2.0 == 0.0 {
            hi - r
        } else {
            lo + r
        }
    } else {
        x
    }
}

/// Maps an integer tap index to a data index (`None`: reads as zero).
fn pixel_index(i: i64, len: usize, pm: PaddingMode, lo: f64, hi: f64) -> Option<usize> {
    let l = len as i64;
    match pm {
        PaddingMode::Zeros => (0..l).contains(&i).then_some(i as usize),
        PaddingMode::Border => Some(i.clamp(0, l - 1) as usize),
        PaddingMode::Reflection => Some((reflect(i as f64, lo, hi).trunc() as i64).clamp(0, l - 1) as usize),
    }
}

fn cubic(x: f64) -> [f64; 4] {
    let a = -0.75;
    let x = x.abs();
    [
        ((a * (x + 1.0) - 5.0 * a) * (x + 1.0) + 8.0 * a) * (x + 1.0) - 4.0 * a,
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
        ((a + 2.0) * (1.0 - x) - (a + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0,
        ((a * (2.0 - x) - 5.0 * a) * (2.0 - x) + 8.0 * a) * (2.0 - x) - 4.0 * a,
    ]
}

/// Taps (data index or zero, weight) along one spatial dim for normalized
/// coordinate `nx`.
fn dim_taps(g: &GridSampleAttrs, nx: f64, len: usize) -> Vec<(Option<usize>, f64)> {
    let l = len as f64;
    let mut x = if g.align_corners {
        (nx + 1.0) / 2.0 * (l - 1.0)
    } else {
        ((nx + 1.0) * l - 1.0) / 2.0
    };
    if g.mode == InterpMode::Nearest {
        x = x.round_ties_even();
    }
    let (lo, hi) = if g.align_corners {
        (0.0, l - 1.0)
    } else {
        (-0.5, l - 0.5)
    };
    if x < lo || x > hi {
        match g.padding_mode {
            PaddingMode::Border => x = x.clamp(0.0, l - 1.0),
            PaddingMode::Reflection => x = reflect(x, lo, hi),
            PaddingMode::Zeros => {}
        }
    }
    if !x.is_finite() {
        return vec![(None, 0.0)];
    }
    // Far-out coordinates read zeros / the border anyway; keep i64 sane.
    let x = x.clamp(-4.0 * l - 8.0, 4.0 * l + 8.0);
    let pix = |i: i64| pixel_index(i, len, g.padding_mode, lo, hi);
    match g.mode {
        InterpMode::Nearest => vec![(pix(x.trunc() as i64), 1.0)],
        InterpMode::Linear => {
            let x0 = x.floor();
            vec![(pix(x0 as i64), x0 + 1.0 - x), (pix(x0 as i64 + 1), x - x0)]
        }
        InterpMode::Cubic => {
            let x0 = x.floor();
            let c = cubic(x - x0);
            (0..4).map(|k| (pix(x0 as i64 - 1 + k as i64), c[k])).collect()
        }
    }
}

pub(super) fn grid_sample(g: &GridSampleAttrs, x: &Tensor, grid: &Tensor) -> OpResult<Tensor> {
    let xs = x.shape().to_vec();
    let gs = grid.shape().to_vec();
    if xs.len() < 3 || gs.len() != xs.len() {
        return Err(invalid(format!(
            "GridSample: X rank {} and grid rank {} must match and be >= 3",
            xs.len(),
            gs.len()
        )));
    }
    let k = xs.len() - 2;
    if gs[0] != xs[0] || gs[gs.len() - 1] != k {
        return Err(invalid(format!(
            "GridSample: grid shape {gs:?} does not fit X shape {xs:?}"
        )));
    }
    let (n, c) = (xs[0], xs[1]);
    let in_sp = &xs[2..];
    let out_sp = &gs[1..gs.len() - 1];
    let mut out_shape = vec![n, c];
    out_shape.extend_from_slice(out_sp);
    check_elems(&out_shape)?;
    let xd = to_f64("GridSample", x)?;
    let gd = to_f64("GridSample", grid)?;
    let in_sz: usize = in_sp.iter().product();
    let out_sz: usize = out_sp.iter().product();
    // Row-major strides of the input spatial dims.
    let mut strides = vec![1usize; k];
    for d in (0..k.saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * in_sp[d + 1];
    }
    let mut out = vec![0.0f64; n * c * out_sz];
    if out.is_empty() {
        return from_f64("GridSample", x.dtype(), &out_shape, out);
    }
    out.par_chunks_mut(c * out_sz).enumerate().for_each(|(b, ob)| {
        let xb = &xd[b * c * in_sz..(b + 1) * c * in_sz];
        for p in 0..out_sz {
            let gp = &gd[(b * out_sz + p) * k..(b * out_sz + p + 1) * k];
            // grid's last dim lists (x, y, z): the innermost spatial dim first.
            let taps: Vec<Vec<(Option<usize>, f64)>> = (0..k).map(|d| dim_taps(g, gp[k - 1 - d], in_sp[d])).collect();
            // Flatten the tap product into (offset, weight) pairs.
            let mut comb: Vec<(Option<usize>, f64)> = vec![(Some(0), 1.0)];
            for (d, t) in taps.iter().enumerate() {
                let mut next = Vec::with_capacity(comb.len() * t.len());
                for &(off, w) in &comb {
                    for &(i, tw) in t {
                        next.push((off.zip(i).map(|(o, i)| o + i * strides[d]), w * tw));
                    }
                }
                comb = next;
            }
            for ch in 0..c {
                let xc = &xb[ch * in_sz..(ch + 1) * in_sz];
                let mut acc = 0.0;
                for &(off, w) in &comb {
                    if let Some(o) = off {
                        acc += w * xc[o];
                    }
                }
                ob[ch * out_sz + p] = acc;
            }
        }
    });
    from_f64("GridSample", x.dtype(), &out_shape, out)
}

pub(super) fn affine_grid(align_corners: bool, theta: &Tensor, size: &Tensor) -> OpResult<Tensor> {
    let size = size
        .to_i64_vec()
        .ok_or_else(|| invalid("AffineGrid: size must be int64"))?;
    if size.len() != 4 && size.len() != 5 {
        return Err(invalid(format!(
            "AffineGrid: size has {} values, expected 4 or 5",
            size.len()
        )));
    }
    if size.iter().any(|&v| v < 0) {
        return Err(invalid(format!("AffineGrid: negative size {size:?}")));
    }
    let k = size.len() - 2;
    let ts = theta.shape();
    if ts != [size[0] as usize, k, k + 1] {
        return Err(invalid(format!(
            "AffineGrid: theta shape {ts:?} does not match size {size:?}"
        )));
    }
    let n = size[0] as usize;
    let sp: Vec<usize> = size[2..].iter().map(|&v| v as usize).collect();
    let mut out_shape = vec![n];
    out_shape.extend_from_slice(&sp);
    out_shape.push(k);
    check_elems(&out_shape)?;
    let th = to_f64("AffineGrid", theta)?;
    let base = |len: usize| -> Vec<f64> {
        let l = len as f64;
        if align_corners {
            let step = 2.0 / (l - 1.0);
            (0..len)
                .map(|i| if len == 1 { -1.0 } else { -1.0 + i as f64 * step })
                .collect()
        } else {
            let step = 2.0 / l;
            (0..len).map(|i| -1.0 + step / 2.0 + i as f64 * step).collect()
        }
    };
    // Coordinates in (x, y, z) order: x runs along the last spatial dim.
    let coords: Vec<Vec<f64>> = (0..k).map(|j| base(sp[k - 1 - j])).collect();
    let sp_sz: usize = sp.iter().product();
    let mut out = Vec::with_capacity(n * sp_sz * k);
    for b in 0..n {
        let t = &th[b * k * (k + 1)..(b + 1) * k * (k + 1)];
        for p in 0..sp_sz {
            // Unravel p into spatial indices.
            let mut rem = p;
            let mut idx = vec![0usize; k];
            for d in (0..k).rev() {
                idx[d] = rem % sp[d];
                rem /= sp[d];
            }
            let v: Vec<f64> = (0..k).map(|j| coords[j][idx[k - 1 - j]]).collect();
            for row in 0..k {
                let r = &t[row * (k + 1)..(row + 1) * (k + 1)];
                let mut acc = r[k];
                for j in 0..k {
                    acc += r[j] * v[j];
                }
                out.push(acc);
            }
        }
    }
    from_f64("AffineGrid", theta.dtype(), &out_shape, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    #[test]
    fn affine_identity_2d() {
        let th = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[1, 2, 3]), vec![1., 0., 0., 0., 1., 0.]).unwrap());
        let out = affine_grid(true, &th, &Tensor::from_i64s(vec![1, 1, 2, 3])).unwrap();
        assert_eq!(out.shape(), &[1, 2, 3, 2]);
        let v = out.to_f64_vec().unwrap();
        assert_eq!(v, vec![-1., -1., 0., -1., 1., -1., -1., 1., 0., 1., 1., 1.]);
    }

    #[test]
    fn grid_sample_identity_bilinear() {
        let g = GridSampleAttrs {
            mode: InterpMode::Linear,
            padding_mode: PaddingMode::Zeros,
            align_corners: true,
        };
        let x = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[1, 1, 2, 2]), vec![1., 2., 3., 4.]).unwrap());
        let grid = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[1, 1, 2, 2]), vec![-1., -1., 0., 0.]).unwrap());
        let out = grid_sample(&g, &x, &grid).unwrap();
        assert_eq!(out.to_f64_vec().unwrap(), vec![1.0, 2.5]);
    }
}
