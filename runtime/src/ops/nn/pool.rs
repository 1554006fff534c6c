//! Pooling: windowed max / average / Lp, their global forms, and MaxUnpool.
//! Windows are walked per output through per-dim tap tables, so padding,
//! dilation and ceil_mode never need bounds checks in the inner loop.

use super::conv::decompose;
use super::{build, check_elems, fdata, Real};
use crate::error::{invalid, OpResult};
use crate::ops::{dtype_unsupported, opt_tensor_in, tensor_in};
use carbide_ir::ops::nn::geom::{unpool_dim, DimGeom};
use carbide_ir::ops::nn::{PoolAttrs, Window};
use carbide_ir::{DType, Tensor, Value};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

/// For one spatial dim: per output index, the input positions its window
/// covers, and how many taps fall inside the padded extent.
struct Taps {
    valid: Vec<Vec<usize>>,
    padded: Vec<usize>,
}

/// The taps `k` in `0..kernel` with `start + k * d` inside `lo..hi`, found
/// arithmetically so a huge kernel attribute costs nothing.
fn tap_range(start: i64, d: i64, kernel: i64, lo: i64, hi: i64) -> (i64, i64) {
    let k0 = if start >= lo { 0 } else { (lo - start + d - 1) / d };
    let k1 = if hi - 1 < start {
        0
    } else {
        ((hi - 1 - start) / d + 1).min(kernel)
    };
    (k0, k1.max(k0))
}

fn taps(g: &DimGeom) -> Taps {
    let mut valid = Vec::with_capacity(g.out);
    let mut padded = Vec::with_capacity(g.out);
    let (d, k) = (g.dilation as i64, g.kernel as i64);
    for o in 0..g.out {
        let start = (o * g.stride) as i64 - g.pad_begin;
        let (v0, v1) = tap_range(start, d, k, 0, g.input as i64);
        valid.push((v0..v1).map(|t| (start + t * d) as usize).collect());
        let (p0, p1) = tap_range(start, d, k, -g.pad_begin, g.input as i64 + g.pad_end);
        padded.push((p1 - p0) as usize);
    }
    Taps { valid, padded }
}

struct PoolGeom {
    geo: Vec<DimGeom>,
    taps: Vec<Taps>,
    planes: usize,
    in_sp: usize,
    out_sp: usize,
    out_shape: Vec<usize>,
}

fn pool_geom(xs: &[usize], a: &PoolAttrs) -> OpResult<PoolGeom> {
    let nsp = a.kernel_shape.len();
    if xs.len() != nsp + 2 {
        return Err(invalid(format!(
            "input shape {xs:?} does not match kernel_shape {:?}",
            a.kernel_shape
        )));
    }
    let kernel: Vec<usize> = a.kernel_shape.iter().map(|&k| k.max(1) as usize).collect();
    let win = Window::new(nsp, a.auto_pad, &a.pads, &a.strides, &a.dilations, a.ceil_mode).map_err(invalid)?;
    let geo = win.resolve(&xs[2..], &kernel).map_err(invalid)?;
    let mut out_shape = xs[..2].to_vec();
    out_shape.extend(geo.iter().map(|g| g.out));
    check_elems(&out_shape)?;
    let taps = geo.iter().map(taps).collect();
    Ok(PoolGeom {
        planes: xs[0] * xs[1],
        in_sp: xs[2..].iter().product(),
        out_sp: geo.iter().map(|g| g.out).product(),
        geo,
        taps,
        out_shape,
    })
}

/// Visits every output of one plane: `f(out_index, taps)` where taps are
/// the row-major input offsets (with their per-dim positions) of the
/// window, plus the count of taps inside the padded extent.
fn for_each_window(pg: &PoolGeom, mut f: impl FnMut(usize, &mut dyn FnMut(&mut dyn FnMut(usize, &[usize])), usize)) {
    let nsp = pg.geo.len();
    let odims: Vec<usize> = pg.geo.iter().map(|g| g.out).collect();
    let mut in_strides = vec![1usize; nsp];
    for d in (0..nsp.saturating_sub(1)).rev() {
        in_strides[d] = in_strides[d + 1] * pg.geo[d + 1].input;
    }
    let mut oc = vec![0usize; nsp];
    let mut idx = vec![0usize; nsp];
    let mut pos = vec![0usize; nsp];
    for o in 0..pg.out_sp {
        decompose(o, &odims, &mut oc);
        let lists: Vec<&[usize]> = (0..nsp).map(|d| pg.taps[d].valid[oc[d]].as_slice()).collect();
        let padded: usize = (0..nsp).map(|d| pg.taps[d].padded[oc[d]]).product();
        let mut walk = |visit: &mut dyn FnMut(usize, &[usize])| {
            if lists.iter().any(|l| l.is_empty()) {
                return;
            }
            idx.fill(0);
            'outer: loop {
                let mut off = 0;
                for d in 0..nsp {
                    pos[d] = lists[d][idx[d]];
                    off += pos[d] * in_strides[d];
                }
                visit(off, &pos);
                let mut d = nsp;
                loop {
                    if d == 0 {
                        break 'outer;
                    }
                    d -= 1;
                    idx[d] += 1;
                    if idx[d] < lists[d].len() {
                        break;
                    }
                    idx[d] = 0;
                }
            }
        };
        f(o, &mut walk, padded);
    }
}

fn max_pool_t<T: Real>(x: &[T], pg: &PoolGeom, col_major: bool) -> (Vec<T>, Vec<i64>) {
    let nsp = pg.geo.len();
    let mut cstr = vec![1usize; nsp];
    for d in 1..nsp {
        cstr[d] = cstr[d - 1] * pg.geo[d - 1].input;
    }
    let mut y = vec![T::zero(); pg.planes * pg.out_sp];
    let mut ind = vec![0i64; pg.planes * pg.out_sp];
    if pg.out_sp == 0 {
        return (y, ind);
    }
    y.par_chunks_mut(pg.out_sp)
        .zip(ind.par_chunks_mut(pg.out_sp))
        .enumerate()
        .for_each(|(p, (yp, ip))| {
            let xp = &x[p * pg.in_sp..][..pg.in_sp];
            for_each_window(pg, |o, walk, _| {
                let mut best = T::neg_infinity();
                let mut at = 0usize;
                let mut first = true;
                walk(&mut |off, pos| {
                    let v = xp[off];
                    if first || v > best {
                        best = v;
                        at = if col_major {
                            pos.iter().zip(&cstr).map(|(a, b)| a * b).sum()
                        } else {
                            off
                        };
                        first = false;
                    }
                });
                yp[o] = best;
                ip[o] = (p * pg.in_sp + at) as i64;
            });
        });
    (y, ind)
}

pub(super) fn max_pool(x: &Tensor, a: &PoolAttrs, num_outputs: usize) -> OpResult<Vec<Tensor>> {
    let pg = pool_geom(x.shape(), a)?;
    let col_major = a.storage_order == 1;
    let (y, ind) = match x.dtype() {
        DType::F32 | DType::F16 | DType::BF16 => {
            let (y, i) = max_pool_t::<f32>(&fdata::<f32>(x, "X")?, &pg, col_major);
            (build(y, &pg.out_shape, x.dtype())?, i)
        }
        DType::F64 => {
            let (y, i) = max_pool_t::<f64>(&fdata::<f64>(x, "X")?, &pg, col_major);
            (build(y, &pg.out_shape, x.dtype())?, i)
        }
        DType::I8 | DType::U8 | DType::I16 | DType::U16 | DType::I32 | DType::U32 => {
            let xd: Vec<f64> = x.to_f64_vec().unwrap_or_default();
            let (y, i) = max_pool_t::<f64>(&xd, &pg, col_major);
            let yt = Tensor::from(ArrayD::from_shape_vec(IxDyn(&pg.out_shape), y).map_err(|e| invalid(e.to_string()))?);
            (cast_back(yt, x.dtype())?, i)
        }
        _ => return Err(dtype_unsupported("MaxPool", x)),
    };
    let mut out = vec![y];
    if num_outputs > 1 {
        out.push(Tensor::I64(
            ArrayD::from_shape_vec(IxDyn(&pg.out_shape), ind).map_err(|e| invalid(e.to_string()))?,
        ));
    }
    Ok(out)
}

/// Converts an exact-integer f64 tensor back to the integer dtype `dt`.
fn cast_back(t: Tensor, dt: DType) -> OpResult<Tensor> {
    let Tensor::F64(a) = t else { return Ok(t) };
    Ok(match dt {
        DType::I8 => Tensor::I8(a.mapv(|v| v as i8)),
        DType::U8 => Tensor::U8(a.mapv(|v| v as u8)),
        DType::I16 => Tensor::I16(a.mapv(|v| v as i16)),
        DType::U16 => Tensor::U16(a.mapv(|v| v as u16)),
        DType::I32 => Tensor::I32(a.mapv(|v| v as i32)),
        DType::U32 => Tensor::U32(a.mapv(|v| v as u32)),
        _ => Tensor::F64(a),
    })
}

/// AveragePool (`lp` = false) or LpPool (`lp` = true).
pub(super) fn avg_lp_pool<T: Real>(x: &Tensor, a: &PoolAttrs, lp: bool) -> OpResult<Tensor> {
    let pg = pool_geom(x.shape(), a)?;
    let xd = fdata::<T>(x, "X")?;
    let p = T::c(a.p as f64);
    let mut y = vec![T::zero(); pg.planes * pg.out_sp];
    if pg.out_sp > 0 {
        y.par_chunks_mut(pg.out_sp).enumerate().for_each(|(pi, yp)| {
            let xp = &xd[pi * pg.in_sp..][..pg.in_sp];
            for_each_window(&pg, |o, walk, padded| {
                let (mut s, mut n) = (T::zero(), 0usize);
                if lp {
                    walk(&mut |off, _| s = s + xp[off].abs().powf(p));
                    yp[o] = s.powf(T::one() / p);
                } else {
                    walk(&mut |off, _| {
                        s = s + xp[off];
                        n += 1;
                    });
                    let cnt = if a.count_include_pad { padded } else { n };
                    yp[o] = s / T::c(cnt as f64);
                }
            });
        });
    }
    build(y, &pg.out_shape, x.dtype())
}

#[derive(Clone, Copy)]
pub(super) enum Global {
    Avg,
    Max,
    Lp(f64),
}

pub(super) fn global_pool<T: Real>(x: &Tensor, kind: Global) -> OpResult<Tensor> {
    let xs = x.shape();
    if xs.len() < 2 {
        return Err(invalid(format!("input must have rank >= 2, got {xs:?}")));
    }
    let planes = xs[0] * xs[1];
    let sp: usize = xs[2..].iter().product();
    let xd = fdata::<T>(x, "X")?;
    let y: Vec<T> = (0..planes)
        .into_par_iter()
        .map(|p| {
            let v = &xd[p * sp..][..sp];
            match kind {
                Global::Avg => v.iter().copied().sum::<T>() / T::c(sp as f64),
                Global::Max => v
                    .iter()
                    .copied()
                    .fold(T::neg_infinity(), |a, b| if b > a { b } else { a }),
                Global::Lp(pp) => {
                    let pt = T::c(pp);
                    v.iter().map(|x| x.abs().powf(pt)).sum::<T>().powf(T::one() / pt)
                }
            }
        })
        .collect();
    let mut shape = xs[..2].to_vec();
    shape.extend(std::iter::repeat_n(1, xs.len() - 2));
    build(y, &shape, x.dtype())
}

/// Strings and small dtypes scatter too, hence `clone` for every element type.
#[allow(clippy::clone_on_copy)]
pub(super) fn max_unpool(
    inputs: &[Option<&Value>],
    kernel: &[i64],
    pads: &Option<Vec<i64>>,
    strides: &Option<Vec<i64>>,
) -> OpResult<Tensor> {
    let (x, ind) = (tensor_in(inputs, 0)?, tensor_in(inputs, 1)?);
    let xs = x.shape();
    let nsp = kernel.len();
    if xs.len() != nsp + 2 {
        return Err(invalid(format!(
            "input shape {xs:?} does not match kernel_shape {kernel:?}"
        )));
    }
    if ind.shape() != xs {
        return Err(invalid(format!(
            "indices shape {:?} differs from input shape {xs:?}",
            ind.shape()
        )));
    }
    // Indices address the default (inferred) output; like the ONNX reference,
    // an explicit output_shape receives that result in its leading corner.
    let mut inferred = xs[..2].to_vec();
    for i in 0..nsp {
        inferred.push(unpool_dim(kernel, pads, strides, i, xs[2 + i]).map_err(invalid)?);
    }
    let shape: Vec<usize> = match opt_tensor_in(inputs, 2)? {
        Some(t) => {
            let v = t
                .to_i64_vec()
                .ok_or_else(|| invalid("output_shape must be an integer tensor"))?;
            if v.len() != xs.len() || v.iter().any(|&d| d < 0) {
                return Err(invalid(format!(
                    "output_shape {v:?} must be {} non-negative dims",
                    xs.len()
                )));
            }
            v.iter().map(|&d| d as usize).collect()
        }
        None => inferred.clone(),
    };
    check_elems(&shape)?;
    let total = check_elems(&inferred)?;
    let idx: Vec<usize> = ind
        .to_i64_vec()
        .ok_or_else(|| invalid("indices must be an integer tensor"))?
        .into_iter()
        .map(|i| {
            if i >= 0 && (i as usize) < total {
                Ok(i as usize)
            } else {
                Err(invalid(format!(
                    "index {i} out of range for unpooled shape {inferred:?}"
                )))
            }
        })
        .collect::<OpResult<_>>()?;
    let corner =
        |ax: ndarray::AxisDescription| ndarray::Slice::from(0..inferred[ax.axis.index()].min(shape[ax.axis.index()]));
    Ok(carbide_ir::tensor_map!(x, a => {
        let mut y = vec![Default::default(); total];
        for (v, &i) in a.iter().zip(&idx) {
            y[i] = v.clone();
        }
        let y = ArrayD::from_shape_vec(IxDyn(&inferred), y).unwrap_or_default();
        if shape == inferred {
            y
        } else {
            let mut out = ArrayD::from_elem(IxDyn(&shape), Default::default());
            out.slice_each_axis_mut(corner).assign(&y.slice_each_axis(corner));
            out
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbide_ir::ops::nn::AutoPad;

    fn pool(k: Vec<i64>, s: Option<Vec<i64>>, pads: Option<Vec<i64>>, ceil: bool, cip: bool) -> PoolAttrs {
        PoolAttrs {
            auto_pad: AutoPad::NotSet,
            ceil_mode: ceil,
            dilations: None,
            kernel_shape: k,
            pads,
            strides: s,
            storage_order: 0,
            count_include_pad: cip,
            p: 2.0,
        }
    }

    fn x44() -> Tensor {
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[1, 1, 4, 4]), (1..=16).map(|v| v as f32).collect()).unwrap())
    }

    #[test]
    fn maxpool_ceil_and_indices() {
        let out = max_pool(&x44(), &pool(vec![3, 3], Some(vec![2, 2]), None, true, false), 2).unwrap();
        assert_eq!(out[0].to_f64_vec().unwrap(), [11., 12., 15., 16.]);
        assert_eq!(out[1].to_i64_vec().unwrap(), [10, 11, 14, 15]);
    }

    #[test]
    fn avgpool_pads_with_and_without_count() {
        let a = pool(vec![2, 2], Some(vec![2, 2]), Some(vec![1, 1, 1, 1]), false, false);
        let y = avg_lp_pool::<f32>(&x44(), &a, false).unwrap();
        assert_eq!(y.to_f64_vec().unwrap(), [1., 2.5, 4., 7., 8.5, 10., 13., 14.5, 16.]);
        let a = pool(vec![2, 2], Some(vec![2, 2]), Some(vec![1, 1, 1, 1]), false, true);
        let y = avg_lp_pool::<f32>(&x44(), &a, false).unwrap();
        assert_eq!(y.to_f64_vec().unwrap(), [0.25, 1.25, 1., 3.5, 8.5, 5., 3.25, 7.25, 4.]);
    }

    #[test]
    fn unpool_rejects_bad_index() {
        let x = Value::Tensor(Tensor::F32(
            ArrayD::from_shape_vec(IxDyn(&[1, 1, 1, 1]), vec![1.]).unwrap(),
        ));
        let i = Value::Tensor(Tensor::I64(
            ArrayD::from_shape_vec(IxDyn(&[1, 1, 1, 1]), vec![9]).unwrap(),
        ));
        assert!(max_unpool(&[Some(&x), Some(&i)], &[2, 2], &None, &Some(vec![2, 2])).is_err());
        let i = Value::Tensor(Tensor::I64(
            ArrayD::from_shape_vec(IxDyn(&[1, 1, 1, 1]), vec![3]).unwrap(),
        ));
        let y = max_unpool(&[Some(&x), Some(&i)], &[2, 2], &None, &Some(vec![2, 2])).unwrap();
        assert_eq!(y.to_f64_vec().unwrap(), [0., 0., 0., 1.]);
    }
}
