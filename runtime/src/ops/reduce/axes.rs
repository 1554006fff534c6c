//! Reduce*: reductions over a set of axes.
//!
//! The reduced axes are brought to a `(outer, r, inner)` layout: when they
//! form one contiguous block (ignoring size-1 dims) the data is used as is,
//! otherwise it is transposed once so they come last. With `inner == 1` each
//! output folds one contiguous slice; otherwise whole rows are accumulated,
//! which vectorizes.

use super::{array_from, num_map, Num, PAR_MIN};
use crate::error::{invalid, unsupported, OpResult};
use crate::ops::elementwise::for_chunks;
use carbide_ir::ndarray::{ArrayD, IxDyn};
use carbide_ir::ops::reduce::{ReduceAttrs, ReduceKind};
use carbide_ir::Tensor;
use std::borrow::Cow;

/// How the data is laid out for the fold.
struct Plan {
    outer: usize,
    r: usize,
    inner: usize,
    /// Axis order that brings the reduced axes last, when they are not contiguous.
    permute: Option<Vec<usize>>,
}

fn plan(shape: &[usize], axes: &[usize]) -> Plan {
    let rank = shape.len();
    let red: Vec<bool> = (0..rank).map(|i| axes.contains(&i)).collect();
    let total: usize = shape.iter().product();
    let r: usize = axes.iter().map(|&a| shape[a]).product();
    // Size-1 dims never break contiguity.
    let flagged: Vec<usize> = (0..rank).filter(|&i| red[i] && shape[i] != 1).collect();
    let (Some(&lo), Some(&hi)) = (flagged.first(), flagged.last()) else {
        return Plan {
            outer: total,
            r: 1,
            inner: 1,
            permute: None,
        };
    };
    let contiguous = (lo..=hi).all(|i| red[i] || shape[i] == 1);
    if contiguous {
        let outer = shape[..lo].iter().product();
        let inner = shape[hi + 1..].iter().product();
        Plan {
            outer,
            r,
            inner,
            permute: None,
        }
    } else {
        let mut perm: Vec<usize> = (0..rank).filter(|&i| !red[i]).collect();
        perm.extend((0..rank).filter(|&i| red[i]));
        Plan {
            outer: (0..rank).filter(|&i| !red[i]).map(|i| shape[i]).product(),
            r,
            inner: 1,
            permute: Some(perm),
        }
    }
}

/// Folds every group of `r` elements of `data` (laid out `(outer, r,
/// inner)`) into one output. `fold` gets the accumulator, the element and
/// its position within the group; `finish` gets the accumulator and `r`.
pub(crate) fn fold_groups<T, A, O, F, G>(
    data: &[T],
    outer: usize,
    r: usize,
    inner: usize,
    init: A,
    fold: F,
    finish: G,
) -> Vec<O>
where
    T: Copy + Send + Sync,
    A: Copy + Send + Sync,
    O: Copy + Send + Sync + Default,
    F: Fn(A, T, usize) -> A + Sync,
    G: Fn(A, usize) -> O + Sync,
{
    let mut out = vec![O::default(); outer * inner];
    if out.is_empty() {
        return out;
    }
    if r == 0 {
        out.iter_mut().for_each(|o| *o = finish(init, 0));
        return out;
    }
    let par = data.len() >= PAR_MIN;
    if inner == 1 {
        // Each task folds `per_task` consecutive groups.
        let per_task = if par && outer > 1 { (PAR_MIN / r).max(1) } else { outer };
        for_chunks(&mut out, per_task, par && outer > 1, &|t, slots| {
            for (j, slot) in slots.iter_mut().enumerate() {
                let o = t * per_task + j;
                let g = &data[o * r..(o + 1) * r];
                let acc = g.iter().enumerate().fold(init, |a, (i, &x)| fold(a, x, i));
                *slot = finish(acc, r);
            }
        });
        return out;
    }
    // Accumulate rows of `inner` elements; `i0` is the first inner index of `chunk`.
    let rows = |o: usize, i0: usize, chunk: &mut [O]| {
        let n = chunk.len();
        let mut acc = vec![init; n];
        for ri in 0..r {
            let start = (o * r + ri) * inner + i0;
            let row = &data[start..start + n];
            for (a, &x) in acc.iter_mut().zip(row) {
                *a = fold(*a, x, ri);
            }
        }
        for (slot, a) in chunk.iter_mut().zip(acc) {
            *slot = finish(a, r);
        }
    };
    const CHUNK: usize = 4096;
    let split_rows = par && outer < 8 && inner > CHUNK;
    for_chunks(&mut out, inner, par, &|o, row| {
        if split_rows {
            for_chunks(row, CHUNK, true, &|c, ch| rows(o, c * CHUNK, ch));
        } else {
            rows(o, 0, row);
        }
    });
    out
}

/// Runs the fold over `a` with the reduced `axes` (normalized, distinct);
/// returns values in the row-major order of the kept dims.
fn reduce_with<T, A, O, F, G>(a: &ArrayD<T>, axes: &[usize], init: A, fold: F, finish: G) -> OpResult<Vec<O>>
where
    T: Copy + Send + Sync,
    A: Copy + Send + Sync,
    O: Copy + Send + Sync + Default,
    F: Fn(A, T, usize) -> A + Sync,
    G: Fn(A, usize) -> O + Sync,
{
    let p = plan(a.shape(), axes);
    let data: Cow<[T]> = match &p.permute {
        None => match a.as_slice() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(a.iter().copied().collect()),
        },
        Some(perm) => Cow::Owned(a.view().permuted_axes(IxDyn(perm)).iter().copied().collect()),
    };
    if data.len() != p.outer * p.r * p.inner {
        return Err(invalid("internal error: reduction layout does not match the data"));
    }
    Ok(fold_groups(&data, p.outer, p.r, p.inner, init, fold, finish))
}

fn max_f(a: f64, x: f64) -> f64 {
    if x > a || x.is_nan() {
        x
    } else {
        a
    }
}

fn min_f(a: f64, x: f64) -> f64 {
    if x < a || x.is_nan() {
        x
    } else {
        a
    }
}

/// One step of a running log-sum-exp `(max, sum of exp(x - max))`.
fn lse_step((m, s): (f64, f64), x: f64) -> (f64, f64) {
    if x.is_nan() || m.is_nan() {
        (f64::NAN, f64::NAN)
    } else if x == f64::NEG_INFINITY {
        (m, s)
    } else if x > m {
        if x == f64::INFINITY {
            (x, 1.0)
        } else {
            (x, s * (m - x).exp() + 1.0)
        }
    } else if m == f64::INFINITY {
        (m, s)
    } else {
        (m, s + (x - m).exp())
    }
}

fn lse_finish((m, s): (f64, f64)) -> f64 {
    if m.is_infinite() {
        m
    } else {
        s.ln() + m
    }
}

/// The reduction of one numeric array; output in kept-dims order.
fn reduce_num<T: Num>(kind: ReduceKind, a: &ArrayD<T>, axes: &[usize]) -> OpResult<Vec<T>> {
    use ReduceKind::*;
    // Integers: exact wrapping arithmetic for the kinds that stay integral.
    if !T::FLOAT {
        let w = |v: i128| T::from_i128(v);
        let r = match kind {
            Sum => reduce_with(a, axes, 0i128, |s, x: T, _| s.wrapping_add(x.to_i128()), |s, _| w(s))?,
            Mean => reduce_with(
                a,
                axes,
                0i128,
                |s, x: T, _| s.wrapping_add(x.to_i128()),
                |s, n| w(if n == 0 { 0 } else { s / n as i128 }),
            )?,
            Prod => reduce_with(a, axes, 1i128, |s, x: T, _| s.wrapping_mul(x.to_i128()), |s, _| w(s))?,
            L1 => reduce_with(
                a,
                axes,
                0i128,
                |s, x: T, _| s.wrapping_add(x.to_i128().abs()),
                |s, _| w(s),
            )?,
            SumSquare => {
                let sq = |x: i128| x.wrapping_mul(x);
                reduce_with(
                    a,
                    axes,
                    0i128,
                    |s, x: T, _| s.wrapping_add(sq(x.to_i128())),
                    |s, _| w(s),
                )?
            }
            Max => reduce_with(
                a,
                axes,
                i128::MIN,
                |s, x: T, _| s.max(x.to_i128()),
                |s, n| {
                    if n == 0 {
                        T::from_f64(f64::NEG_INFINITY)
                    } else {
                        w(s)
                    }
                },
            )?,
            Min => reduce_with(
                a,
                axes,
                i128::MAX,
                |s, x: T, _| s.min(x.to_i128()),
                |s, n| {
                    if n == 0 {
                        T::from_f64(f64::INFINITY)
                    } else {
                        w(s)
                    }
                },
            )?,
            L2 | LogSum | LogSumExp => return reduce_float(kind, a, axes),
        };
        return Ok(r);
    }
    reduce_float(kind, a, axes)
}

/// Float reductions, accumulated in f64.
fn reduce_float<T: Num>(kind: ReduceKind, a: &ArrayD<T>, axes: &[usize]) -> OpResult<Vec<T>> {
    use ReduceKind::*;
    let b = |v: f64| T::from_f64(v);
    Ok(match kind {
        Sum => reduce_with(a, axes, 0.0, |s, x: T, _| s + x.to_f64(), |s, _| b(s))?,
        Mean => reduce_with(a, axes, 0.0, |s, x: T, _| s + x.to_f64(), |s, n| b(s / n as f64))?,
        Prod => reduce_with(a, axes, 1.0, |s, x: T, _| s * x.to_f64(), |s, _| b(s))?,
        L1 => reduce_with(a, axes, 0.0, |s, x: T, _| s + x.to_f64().abs(), |s, _| b(s))?,
        L2 => reduce_with(
            a,
            axes,
            0.0,
            |s, x: T, _| {
                let v = x.to_f64();
                s + v * v
            },
            |s, _| b(s.sqrt()),
        )?,
        SumSquare => reduce_with(
            a,
            axes,
            0.0,
            |s, x: T, _| {
                let v = x.to_f64();
                s + v * v
            },
            |s, _| b(s),
        )?,
        LogSum => reduce_with(a, axes, 0.0, |s, x: T, _| s + x.to_f64(), |s, _| b(s.ln()))?,
        LogSumExp => reduce_with(
            a,
            axes,
            (f64::NEG_INFINITY, 0.0),
            |s, x: T, _| lse_step(s, x.to_f64()),
            |s, _| b(lse_finish(s)),
        )?,
        Max => reduce_with(
            a,
            axes,
            f64::NEG_INFINITY,
            |s, x: T, _| max_f(s, x.to_f64()),
            |s, _| b(s),
        )?,
        Min => reduce_with(a, axes, f64::INFINITY, |s, x: T, _| min_f(s, x.to_f64()), |s, _| b(s))?,
    })
}

/// The axes to reduce: from the attribute or input, else all (or none with
/// `noop_with_empty_axes`).
fn resolve_axes(r: &ReduceAttrs, rank: usize, axes_in: Option<&Tensor>) -> OpResult<Vec<usize>> {
    let given: Vec<i64> = match (&r.axes, axes_in) {
        (_, Some(t)) => t
            .to_i64_vec()
            .ok_or_else(|| invalid(format!("axes must be integers, got {}", t.dtype())))?,
        (Some(a), None) => a.clone(),
        (None, None) => Vec::new(),
    };
    if given.is_empty() {
        return Ok(if r.noop_with_empty_axes {
            Vec::new()
        } else {
            (0..rank).collect()
        });
    }
    let mut out = Vec::with_capacity(given.len());
    for a in given {
        let n = super::norm_axis(a, rank)?;
        if out.contains(&n) {
            return Err(invalid(format!("axis {a} is repeated")));
        }
        out.push(n);
    }
    Ok(out)
}

pub(crate) fn eval_reduce(r: &ReduceAttrs, x: &Tensor, axes_in: Option<&Tensor>) -> OpResult<Tensor> {
    let shape = x.shape().to_vec();
    let axes = resolve_axes(r, shape.len(), axes_in)?;
    let out_shape: Vec<usize> = if r.keepdims {
        shape
            .iter()
            .enumerate()
            .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
            .collect()
    } else {
        shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect()
    };
    let kind = r.kind;
    if let Tensor::Bool(a) = x {
        let v = match kind {
            ReduceKind::Max => reduce_with(a, &axes, false, |s, x: bool, _| s | x, |s, _| s)?,
            ReduceKind::Min => reduce_with(a, &axes, true, |s, x: bool, _| s & x, |s, _| s)?,
            _ => return Err(unsupported(format!("{} on bool tensors", kind.op_type()))),
        };
        return Ok(Tensor::Bool(array_from(&out_shape, v)?));
    }
    num_map!(x, a => reduce_num(kind, a, &axes).and_then(|v| array_from(&out_shape, v)))
        .unwrap_or_else(|| Err(unsupported(format!("{} on {} tensors", kind.op_type(), x.dtype()))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbide_ir::ndarray::ArrayD;

    fn attrs(kind: ReduceKind, keepdims: bool) -> ReduceAttrs {
        ReduceAttrs {
            kind,
            axes: None,
            keepdims,
            noop_with_empty_axes: false,
        }
    }

    fn f32t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), v).unwrap())
    }

    fn vals(t: &Tensor) -> Vec<f64> {
        t.to_f64_vec().unwrap()
    }

    #[test]
    fn sums_over_each_layout() {
        // x = arange(24).reshape(2,3,4)
        let x = f32t(&[2, 3, 4], (0..24).map(|v| v as f32).collect());
        let axes = |v: Vec<i64>| Tensor::from_i64s(v);
        let r = attrs(ReduceKind::Sum, false);
        // np.sum(x, axis=2) / axis=1 / axis=(0,2)
        let t = eval_reduce(&r, &x, Some(&axes(vec![2]))).unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(vals(&t), vec![6., 22., 38., 54., 70., 86.]);
        let t = eval_reduce(&r, &x, Some(&axes(vec![1]))).unwrap();
        assert_eq!(vals(&t), vec![12., 15., 18., 21., 48., 51., 54., 57.]);
        let t = eval_reduce(&r, &x, Some(&axes(vec![0, -1]))).unwrap();
        assert_eq!(vals(&t), vec![60., 92., 124.]);
        let t = eval_reduce(&attrs(ReduceKind::Mean, true), &x, None).unwrap();
        assert_eq!(t.shape(), &[1, 1, 1]);
        assert_eq!(vals(&t), vec![11.5]);
    }

    #[test]
    fn empty_sets_give_identities() {
        let x = f32t(&[2, 0, 4], vec![]);
        let ax = Tensor::from_i64s(vec![1]);
        let mx = eval_reduce(&attrs(ReduceKind::Max, true), &x, Some(&ax)).unwrap();
        assert_eq!(mx.shape(), &[2, 1, 4]);
        assert!(vals(&mx).iter().all(|v| *v == f64::NEG_INFINITY));
        let p = eval_reduce(&attrs(ReduceKind::Prod, false), &x, Some(&ax)).unwrap();
        assert!(vals(&p).iter().all(|v| *v == 1.0));
        let l = eval_reduce(&attrs(ReduceKind::LogSumExp, false), &x, Some(&ax)).unwrap();
        assert!(vals(&l).iter().all(|v| *v == f64::NEG_INFINITY));
        let i = Tensor::I32(ArrayD::from_shape_vec(IxDyn(&[0]), vec![]).unwrap());
        let m = eval_reduce(&attrs(ReduceKind::Max, false), &i, None).unwrap();
        assert_eq!(m.to_i64_vec().unwrap(), vec![i32::MIN as i64]);
    }

    #[test]
    fn log_sum_exp_and_noop() {
        let x = f32t(&[2, 2], vec![1.0, 2.0, 1000.0, f32::NEG_INFINITY]);
        let ax = Tensor::from_i64s(vec![1]);
        let t = eval_reduce(&attrs(ReduceKind::LogSumExp, false), &x, Some(&ax)).unwrap();
        // log(e^1 + e^2) = 2.3132617
        let v = vals(&t);
        assert!((v[0] - 2.313_261_7).abs() < 1e-5 && v[1] == 1000.0);
        let mut r = attrs(ReduceKind::SumSquare, true);
        r.noop_with_empty_axes = true;
        let t = eval_reduce(&r, &x, Some(&Tensor::from_i64s(vec![]))).unwrap();
        assert_eq!(t.shape(), &[2, 2]);
        assert_eq!(vals(&t)[1], 4.0);
    }

    #[test]
    fn non_contiguous_axes_and_ints() {
        let x = Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[2, 3, 2]), (0..12).collect()).unwrap());
        let mut r = attrs(ReduceKind::Max, false);
        r.axes = Some(vec![0, 2]);
        let t = eval_reduce(&r, &x, None).unwrap();
        assert_eq!(t.to_i64_vec().unwrap(), vec![7, 9, 11]);
        r.kind = ReduceKind::Mean;
        let t = eval_reduce(&r, &x, None).unwrap();
        // (0+1+6+7)/4 = 3.5 -> 3
        assert_eq!(t.to_i64_vec().unwrap(), vec![3, 5, 7]);
        // Non-contiguous axes over an empty dim still give one value per kept index.
        let e = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[2, 0, 3, 2]), vec![]).unwrap());
        let mut s = attrs(ReduceKind::Sum, false);
        s.axes = Some(vec![1, 3]);
        let t = eval_reduce(&s, &e, None).unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(vals(&t), vec![0.0; 6]);
        assert!(eval_reduce(&r, &x, Some(&Tensor::from_i64s(vec![0, 0]))).is_err());
        assert!(eval_reduce(&r, &x, Some(&Tensor::from_i64s(vec![3]))).is_err());
    }

    #[test]
    fn large_parallel_row_reduction() {
        let n = 70_000;
        let x = f32t(&[2, n], vec![1.0; 2 * n]);
        let mut r = attrs(ReduceKind::Sum, false);
        r.axes = Some(vec![0]);
        let t = eval_reduce(&r, &x, None).unwrap();
        assert!(vals(&t).iter().all(|v| *v == 2.0));
    }
}
