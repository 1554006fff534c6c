//! Normalizations (batch, instance, layer, group, RMS, LRN, MVN, Lp) and
//! Dropout. Statistics are computed per contiguous row in the compute type.

use super::{build, check_elems, fdata, Real};
use crate::error::{invalid, OpResult};
use crate::ops::{opt_tensor_in, tensor_in, EvalCtx};
use carbide_ir::ops::{normalize_axis, NnOp};
use carbide_ir::{DType, Tensor, Value};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

/// `t` broadcast (numpy rules) to `to`, as `T` values in row-major order.
fn bcast<T: Real>(t: &Tensor, to: &[usize], what: &str) -> OpResult<Vec<T>> {
    let d = fdata::<T>(t, what)?;
    if t.shape() == to {
        return Ok(d.into_owned());
    }
    let a = ArrayD::from_shape_vec(IxDyn(t.shape()), d.into_owned()).map_err(|e| invalid(e.to_string()))?;
    let b = a
        .broadcast(IxDyn(to))
        .ok_or_else(|| invalid(format!("{what} of shape {:?} does not broadcast to {to:?}", t.shape())))?;
    Ok(b.iter().copied().collect())
}

/// A per-channel parameter with exactly `n` elements.
fn param<T: Real>(t: &Tensor, n: usize, what: &str) -> OpResult<Vec<T>> {
    if t.len() != n {
        return Err(invalid(format!("{what} has {} elements, expected {n}", t.len())));
    }
    Ok(fdata::<T>(t, what)?.into_owned())
}

/// Mean and population variance of a slice.
fn mean_var<T: Real>(v: &[T]) -> (T, T) {
    let n = T::c(v.len().max(1) as f64);
    let mean = v.iter().copied().sum::<T>() / n;
    let var = v.iter().map(|&x| (x - mean) * (x - mean)).sum::<T>() / n;
    (mean, var)
}

fn stash_dtype(stash_type: i64, x: DType) -> DType {
    match DType::from_onnx_code(stash_type as i32) {
        Some(d @ (DType::F32 | DType::F64 | DType::F16 | DType::BF16)) => d,
        _ => x,
    }
}

pub(super) fn eval<T: Real>(op: &NnOp, inputs: &[Option<&Value>], _cx: &EvalCtx) -> OpResult<Vec<Tensor>> {
    let x = tensor_in(inputs, 0)?;
    let xs = x.shape();
    let dt = x.dtype();
    let xd = fdata::<T>(x, "X")?;
    let chan = |what: &str| -> OpResult<(usize, usize, usize)> {
        if xs.len() < 2 {
            return Err(invalid(format!("{what} needs an input of rank >= 2, got {xs:?}")));
        }
        Ok((xs[0], xs[1], xs[2..].iter().product()))
    };
    match op {
        NnOp::BatchNormalization {
            epsilon,
            momentum,
            training,
            spatial,
            legacy_outputs,
        } => {
            let (n, c, sp) = chan("BatchNormalization")?;
            let eps = T::c(*epsilon as f64);
            let pn = if *spatial { c } else { c * sp };
            let scale = param::<T>(tensor_in(inputs, 1)?, pn, "scale")?;
            let bias = param::<T>(tensor_in(inputs, 2)?, pn, "B")?;
            let mean = param::<T>(tensor_in(inputs, 3)?, pn, "mean")?;
            let var = param::<T>(tensor_in(inputs, 4)?, pn, "var")?;
            let (bm, bv) = if *training {
                // Batch statistics per parameter slot over N (and spatial dims when spatial).
                let mut s = vec![T::zero(); pn];
                let mut q = vec![T::zero(); pn];
                let per = if *spatial { sp } else { 1 };
                for (i, &v) in xd.iter().enumerate() {
                    let k = if *spatial { (i / sp) % c } else { i % (c * sp) };
                    s[k] = s[k] + v;
                    q[k] = q[k] + v * v;
                }
                let cnt = T::c((n * per) as f64);
                let m: Vec<T> = s.iter().map(|&v| v / cnt).collect();
                let vv: Vec<T> = q
                    .iter()
                    .zip(&m)
                    .map(|(&q, &m)| (q / cnt - m * m).max(T::zero()))
                    .collect();
                (m, vv)
            } else {
                (mean.clone(), var.clone())
            };
            let a: Vec<T> = (0..pn).map(|k| scale[k] / (bv[k] + eps).sqrt()).collect();
            let b: Vec<T> = (0..pn).map(|k| bias[k] - bm[k] * a[k]).collect();
            let mut y = xd.into_owned();
            if sp > 0 {
                y.par_chunks_mut(sp).enumerate().for_each(|(i, p)| {
                    let ch = i % c;
                    for (j, v) in p.iter_mut().enumerate() {
                        let k = if *spatial { ch } else { ch * sp + j };
                        *v = *v * a[k] + b[k];
                    }
                });
            }
            let mut out = vec![build(y, xs, dt)?];
            let pshape = if *spatial { vec![c] } else { xs[1..].to_vec() };
            let mom = T::c(*momentum as f64);
            let one = T::one();
            let (rm, rv): (Vec<T>, Vec<T>) = if *training {
                (
                    mean.iter().zip(&bm).map(|(&r, &b)| r * mom + b * (one - mom)).collect(),
                    var.iter().zip(&bv).map(|(&r, &b)| r * mom + b * (one - mom)).collect(),
                )
            } else {
                (mean.clone(), var.clone())
            };
            out.push(build(rm, &pshape, dt)?);
            out.push(build(rv, &pshape, dt)?);
            if *legacy_outputs {
                out.push(build(bm, &pshape, dt)?);
                out.push(build(bv, &pshape, dt)?);
            }
            Ok(out)
        }
        NnOp::InstanceNormalization { epsilon } => {
            let (_, c, sp) = chan("InstanceNormalization")?;
            let scale = param::<T>(tensor_in(inputs, 1)?, c, "scale")?;
            let bias = param::<T>(tensor_in(inputs, 2)?, c, "B")?;
            let eps = T::c(*epsilon as f64);
            let mut y = xd.into_owned();
            if sp > 0 {
                y.par_chunks_mut(sp).enumerate().for_each(|(i, p)| {
                    let ch = i % c;
                    let (m, v) = mean_var(p);
                    let a = scale[ch] / (v + eps).sqrt();
                    for x in p.iter_mut() {
                        *x = (*x - m) * a + bias[ch];
                    }
                });
            }
            Ok(vec![build(y, xs, dt)?])
        }
        NnOp::LayerNormalization {
            axis,
            epsilon,
            stash_type,
        }
        | NnOp::RMSNormalization {
            axis,
            epsilon,
            stash_type,
        } => {
            let rms = matches!(op, NnOp::RMSNormalization { .. });
            let a = normalize_axis("", *axis, xs.len())
                .map_err(|_| invalid(format!("axis {axis} out of range for rank {}", xs.len())))?;
            let cols: usize = xs[a..].iter().product();
            let rows: usize = xs[..a].iter().product();
            let scale = bcast::<T>(tensor_in(inputs, 1)?, &xs[a..], "scale")?;
            let bias = if rms {
                None
            } else {
                opt_tensor_in(inputs, 2)?
                    .map(|b| bcast::<T>(b, &xs[a..], "B"))
                    .transpose()?
            };
            let eps = T::c(*epsilon as f64);
            let mut y = xd.into_owned();
            let mut means = vec![T::zero(); rows];
            let mut invs = vec![T::zero(); rows];
            if cols > 0 {
                y.par_chunks_mut(cols)
                    .zip(means.par_iter_mut().zip(invs.par_iter_mut()))
                    .for_each(|(r, (mo, io))| {
                        let (m, v) = if rms {
                            (T::zero(), r.iter().map(|&x| x * x).sum::<T>() / T::c(cols as f64))
                        } else {
                            mean_var(r)
                        };
                        let inv = T::one() / (v + eps).sqrt();
                        for (j, x) in r.iter_mut().enumerate() {
                            let mut o = (*x - m) * inv * scale[j];
                            if let Some(b) = &bias {
                                o = o + b[j];
                            }
                            *x = o;
                        }
                        *mo = m;
                        *io = inv;
                    });
            }
            let mut out = vec![build(y, xs, dt)?];
            if !rms {
                let mut sshape = xs[..a].to_vec();
                sshape.extend(std::iter::repeat_n(1, xs.len() - a));
                let sd = stash_dtype(*stash_type, dt);
                out.push(build(means, &sshape, sd)?);
                out.push(build(invs, &sshape, sd)?);
            }
            Ok(out)
        }
        NnOp::GroupNormalization {
            epsilon,
            num_groups,
            per_channel_affine,
            ..
        } => {
            let (_, c, sp) = chan("GroupNormalization")?;
            let g = *num_groups as usize;
            if c % g != 0 {
                return Err(invalid(format!("{c} channels are not divisible by num_groups {g}")));
            }
            let pn = if *per_channel_affine { c } else { g };
            let scale = param::<T>(tensor_in(inputs, 1)?, pn, "scale")?;
            let bias = param::<T>(tensor_in(inputs, 2)?, pn, "bias")?;
            let cg = c / g;
            let eps = T::c(*epsilon as f64);
            let mut y = xd.into_owned();
            if cg * sp > 0 {
                y.par_chunks_mut(cg * sp).enumerate().for_each(|(i, blk)| {
                    let gi = i % g;
                    let (m, v) = mean_var(blk);
                    let inv = T::one() / (v + eps).sqrt();
                    for (j, x) in blk.iter_mut().enumerate() {
                        let k = if *per_channel_affine { gi * cg + j / sp } else { gi };
                        *x = (*x - m) * inv * scale[k] + bias[k];
                    }
                });
            }
            Ok(vec![build(y, xs, dt)?])
        }
        NnOp::Lrn {
            alpha,
            beta,
            bias,
            size,
        } => {
            let (n, c, sp) = chan("LRN")?;
            let size = *size as usize;
            let (lo, hi) = ((size - 1) / 2, (size - 1).div_ceil(2));
            let (al, be, bi) = (
                T::c(*alpha as f64 / size as f64),
                T::c(*beta as f64),
                T::c(*bias as f64),
            );
            let mut y = vec![T::zero(); xd.len()];
            if c * sp > 0 {
                y.par_chunks_mut(c * sp).enumerate().for_each(|(b, yb)| {
                    let xb = &xd[b * c * sp..][..c * sp];
                    for ch in 0..c {
                        let (c0, c1) = (ch.saturating_sub(lo), (ch + hi).min(c - 1));
                        for s in 0..sp {
                            let sq: T = (c0..=c1).map(|k| xb[k * sp + s] * xb[k * sp + s]).sum();
                            yb[ch * sp + s] = xb[ch * sp + s] / (bi + al * sq).powf(be);
                        }
                    }
                });
            }
            let _ = n;
            Ok(vec![build(y, xs, dt)?])
        }
        NnOp::MeanVarianceNormalization { axes } => {
            let r = xs.len();
            let mut red = Vec::new();
            for &ax in axes {
                let a =
                    normalize_axis("", ax, r).map_err(|_| invalid(format!("axis {ax} out of range for rank {r}")))?;
                if !red.contains(&a) {
                    red.push(a);
                }
            }
            red.sort_unstable();
            let kept: Vec<usize> = (0..r).filter(|a| !red.contains(a)).collect();
            let perm: Vec<usize> = kept.iter().chain(&red).copied().collect();
            let cols: usize = red.iter().map(|&a| xs[a]).product();
            let arr = ArrayD::from_shape_vec(IxDyn(xs), xd.into_owned()).map_err(|e| invalid(e.to_string()))?;
            let pa = arr.permuted_axes(IxDyn(&perm));
            let pshape = pa.shape().to_vec();
            let mut v: Vec<T> = pa.as_standard_layout().iter().copied().collect();
            if cols > 0 {
                v.par_chunks_mut(cols).for_each(|row| {
                    let (m, var) = mean_var(row);
                    let d = var.sqrt() + T::c(1e-9);
                    for x in row.iter_mut() {
                        *x = (*x - m) / d;
                    }
                });
            }
            let mut inv = vec![0; r];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            let back = ArrayD::from_shape_vec(IxDyn(&pshape), v)
                .map_err(|e| invalid(e.to_string()))?
                .permuted_axes(IxDyn(&inv));
            let y: Vec<T> = back.as_standard_layout().iter().copied().collect();
            Ok(vec![build(y, xs, dt)?])
        }
        NnOp::LpNormalization { axis, p } => {
            let a = normalize_axis("", *axis, xs.len())
                .map_err(|_| invalid(format!("axis {axis} out of range for rank {}", xs.len())))?;
            let len = xs.get(a).copied().unwrap_or(1);
            let inner: usize = xs[a + 1..].iter().product();
            let mut y = xd.into_owned();
            if len * inner > 0 {
                y.par_chunks_mut(len * inner).for_each(|blk| {
                    for i in 0..inner {
                        let norm = if *p == 1 {
                            (0..len).map(|k| blk[k * inner + i].abs()).sum::<T>()
                        } else {
                            (0..len)
                                .map(|k| blk[k * inner + i] * blk[k * inner + i])
                                .sum::<T>()
                                .sqrt()
                        };
                        // A zero vector stays zero (the reference's convention).
                        for k in 0..len {
                            let v = blk[k * inner + i];
                            blk[k * inner + i] = if norm == T::zero() { T::zero() } else { v / norm };
                        }
                    }
                });
            }
            Ok(vec![build(y, xs, dt)?])
        }
        _ => Err(invalid("internal: not a normalization op")),
    }
}

/// numpy's legacy MT19937 (`np.random.seed` + `np.random.uniform`), so a
/// seeded training-mode Dropout reproduces the ONNX reference masks.
struct Mt19937 {
    mt: Vec<u32>,
    idx: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Self {
        let mut mt = vec![0u32; 624];
        mt[0] = seed;
        for i in 1..624 {
            mt[i] = 1812433253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { mt, idx: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        if self.idx >= 624 {
            for i in 0..624 {
                let y = (self.mt[i] & 0x8000_0000) | (self.mt[(i + 1) % 624] & 0x7fff_ffff);
                let mut v = self.mt[(i + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                self.mt[i] = v;
            }
            self.idx = 0;
        }
        let mut y = self.mt[self.idx];
        self.idx += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn next_f64(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67108864.0 + b) / 9007199254740992.0
    }
}

pub(super) fn dropout(
    inputs: &[Option<&Value>],
    ratio_attr: f32,
    seed: Option<i64>,
    _is_test: bool,
    legacy_mask: bool,
    cx: &EvalCtx,
) -> OpResult<Vec<Tensor>> {
    let x = tensor_in(inputs, 0)?;
    let ratio = match opt_tensor_in(inputs, 1)? {
        Some(r) => {
            let v = r.to_f64_vec().ok_or_else(|| invalid("ratio must be numeric"))?;
            match v.as_slice() {
                [r] => *r,
                _ => return Err(invalid("ratio must be a scalar")),
            }
        }
        None => ratio_attr as f64,
    };
    let training = match opt_tensor_in(inputs, 2)? {
        Some(t) => {
            t.to_i64_vec()
                .and_then(|v| v.first().copied())
                .ok_or_else(|| invalid("training_mode must be a bool scalar"))?
                != 0
        }
        None => false,
    };
    let shape = x.shape().to_vec();
    let n = check_elems(&shape)?;
    if !training || ratio == 0.0 {
        let mut out = vec![x.clone()];
        if cx.num_outputs > 1 {
            // Before opset 10 the mask has the data's dtype; every element is kept.
            let mask = if legacy_mask && x.dtype().is_float() && !x.dtype().is_small() {
                build(vec![1.0f64; n], &shape, x.dtype())?
            } else {
                Tensor::Bool(ArrayD::from_elem(IxDyn(&shape), true))
            };
            out.push(mask);
        }
        return Ok(out);
    }
    if !(0.0..1.0).contains(&ratio) {
        return Err(invalid(format!("ratio must be in [0, 1), got {ratio}")));
    }
    let xd = fdata::<f64>(x, "data")?;
    let mut rng = Mt19937::new(seed.unwrap_or(cx.seed as i64) as u32);
    let keep: Vec<bool> = (0..n).map(|_| rng.next_f64() >= ratio).collect();
    let scale = 1.0 / (1.0 - ratio);
    let y: Vec<f64> = xd
        .iter()
        .zip(&keep)
        .map(|(&v, &k)| if k { v * scale } else { 0.0 })
        .collect();
    let mut out = vec![build(y, &shape, x.dtype())?];
    if cx.num_outputs > 1 {
        out.push(Tensor::Bool(
            ArrayD::from_shape_vec(IxDyn(&shape), keep).map_err(|e| invalid(e.to_string()))?,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_numpy() {
        // np.random.seed(0); np.random.uniform(0, 1, 3)
        let mut r = Mt19937::new(0);
        let v: Vec<f64> = (0..3).map(|_| r.next_f64()).collect();
        let want = [0.5488135039273248, 0.7151893663724195, 0.6027633760716439];
        for (a, b) in v.iter().zip(want) {
            assert!((a - b).abs() < 1e-15, "{a} vs {b}");
        }
    }

    #[test]
    fn mean_var_population() {
        let (m, v) = mean_var(&[1.0f64, 2.0, 3.0, 4.0]);
        assert_eq!((m, v), (2.5, 1.25));
    }
}
