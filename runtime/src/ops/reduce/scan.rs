//! Ops that walk one axis: ArgMax/ArgMin, CumSum/CumProd and TopK.

use super::axes::fold_groups;
use super::{array_from, check_elems, norm_axis, num_apply, num_map, scalar_axis, split_at_axis, Num, PAR_MIN};
use crate::error::{invalid, unsupported, OpResult};
use crate::ops::elementwise::for_chunks;
use carbide_ir::ndarray::ArrayD;
use carbide_ir::ops::reduce::{ArgAttrs, CumAttrs, TopKAttrs};
use carbide_ir::Tensor;
use rayon::prelude::*;
use std::borrow::Cow;
use std::cmp::Ordering;

/// Row-major data of `a` (borrowed when already contiguous).
fn contiguous<T: Copy>(a: &ArrayD<T>) -> Cow<'_, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

/// A total order with NaN above everything (and equal to itself).
fn total_cmp<T: Num>(a: T, b: T) -> Ordering {
    match a.partial_cmp(&b) {
        Some(o) => o,
        None => a.is_nan().cmp(&b.is_nan()),
    }
}

fn arg_num<T: Num>(a: &ArrayD<T>, axis: usize, max: bool, last: bool) -> OpResult<Vec<i64>> {
    let (outer, r, inner) = split_at_axis(a.shape(), axis);
    if r == 0 && outer * inner > 0 {
        return Err(invalid(format!("cannot take the arg extreme of empty axis {axis}")));
    }
    let data = contiguous(a);
    // NaN wins (numpy's argmax/argmin pick it), then ties by first/last index.
    let better = |x: T, best: T| -> bool {
        let o = total_cmp(x, best);
        let o = if max || x.is_nan() || best.is_nan() {
            o
        } else {
            o.reverse()
        };
        o == Ordering::Greater || (last && o == Ordering::Equal)
    };
    Ok(fold_groups(
        &data,
        outer,
        r,
        inner,
        (T::default(), -1i64),
        |(b, bi), x, i| {
            if bi < 0 || better(x, b) {
                (x, i as i64)
            } else {
                (b, bi)
            }
        },
        |(_, bi), _| bi,
    ))
}

pub(crate) fn arg_extreme(at: &ArgAttrs, x: &Tensor, max: bool) -> OpResult<Tensor> {
    let shape = x.shape().to_vec();
    let axis = norm_axis(at.axis, shape.len().max(1))?;
    if shape.is_empty() {
        return Ok(Tensor::scalar_i64(0));
    }
    let last = at.select_last_index;
    let v = num_apply!(x, a => arg_num(a, axis, max, last)).unwrap_or_else(|| {
        let name = if max { "ArgMax" } else { "ArgMin" };
        Err(unsupported(format!("{name} on {} tensors", x.dtype())))
    })?;
    let mut out_shape = shape;
    if at.keepdims {
        out_shape[axis] = 1;
    } else {
        out_shape.remove(axis);
    }
    Ok(Tensor::I64(array_from(&out_shape, v)?))
}

/// Running sums/products along an axis, in `(outer, len, inner)` layout.
fn scan_num<T: Num>(a: &ArrayD<T>, axis: usize, c: &CumAttrs, prod: bool) -> OpResult<ArrayD<T>> {
    let shape = a.shape().to_vec();
    let (outer, len, inner) = split_at_axis(&shape, axis);
    let data = contiguous(a);
    let mut out = vec![T::default(); data.len()];
    if out.is_empty() {
        return array_from(&shape, out);
    }
    let block = len * inner;
    let run = |o: usize, dst: &mut [T]| {
        let src = &data[o * block..(o + 1) * block];
        let order: Box<dyn Iterator<Item = usize>> = if c.reverse {
            Box::new((0..len).rev())
        } else {
            Box::new(0..len)
        };
        if T::FLOAT {
            let mut acc = vec![if prod { 1.0 } else { 0.0 }; inner];
            for l in order {
                let (s, d) = (&src[l * inner..(l + 1) * inner], &mut dst[l * inner..(l + 1) * inner]);
                for ((a, &x), y) in acc.iter_mut().zip(s).zip(d.iter_mut()) {
                    if c.exclusive {
                        *y = T::from_f64(*a);
                    }
                    if prod {
                        *a *= x.to_f64();
                    } else {
                        *a += x.to_f64();
                    }
                    if !c.exclusive {
                        *y = T::from_f64(*a);
                    }
                }
            }
        } else {
            let mut acc = vec![if prod { 1i128 } else { 0 }; inner];
            for l in order {
                let (s, d) = (&src[l * inner..(l + 1) * inner], &mut dst[l * inner..(l + 1) * inner]);
                for ((a, &x), y) in acc.iter_mut().zip(s).zip(d.iter_mut()) {
                    if c.exclusive {
                        *y = T::from_i128(*a);
                    }
                    // Truncating after each step keeps the wrapping of the native type.
                    let v = if prod {
                        a.wrapping_mul(x.to_i128())
                    } else {
                        a.wrapping_add(x.to_i128())
                    };
                    *a = T::from_i128(v).to_i128();
                    if !c.exclusive {
                        *y = T::from_i128(*a);
                    }
                }
            }
        }
    };
    for_chunks(&mut out, block, data.len() >= PAR_MIN && outer > 1, &run);
    array_from(&shape, out)
}

pub(crate) fn cumulative(c: &CumAttrs, x: &Tensor, axis: &Tensor, prod: bool) -> OpResult<Tensor> {
    let rank = x.rank();
    if rank == 0 {
        return Err(invalid("input must have rank >= 1"));
    }
    let axis = scalar_axis(axis, rank, "axis")?;
    num_map!(x, a => scan_num(a, axis, c, prod)).unwrap_or_else(|| {
        let name = if prod { "CumProd" } else { "CumSum" };
        Err(unsupported(format!("{name} on {} tensors", x.dtype())))
    })
}

fn topk_num<T: Num>(a: &ArrayD<T>, axis: usize, k: usize, largest: bool) -> OpResult<(ArrayD<T>, ArrayD<i64>)> {
    let mut shape = a.shape().to_vec();
    let (outer, len, inner) = split_at_axis(&shape, axis);
    shape[axis] = k;
    let n = check_elems(&shape)?;
    let data = contiguous(a);
    let mut vals = vec![T::default(); n];
    let mut idxs = vec![0i64; n];
    if n > 0 {
        let cmp = |x: &(T, usize), y: &(T, usize)| {
            let o = total_cmp(x.0, y.0);
            let o = if largest { o.reverse() } else { o };
            o.then(x.1.cmp(&y.1))
        };
        let run = |o: usize, vs: &mut [T], is: &mut [i64]| {
            let mut lane: Vec<(T, usize)> = Vec::with_capacity(len);
            for i in 0..inner {
                lane.clear();
                lane.extend((0..len).map(|l| (data[(o * len + l) * inner + i], l)));
                if k < len {
                    lane.select_nth_unstable_by(k, cmp);
                    lane.truncate(k);
                }
                lane.sort_unstable_by(cmp);
                for (j, &(v, l)) in lane.iter().enumerate() {
                    vs[j * inner + i] = v;
                    is[j * inner + i] = l as i64;
                }
            }
        };
        let block = k * inner;
        if data.len() >= PAR_MIN && outer > 1 {
            vals.par_chunks_mut(block)
                .zip(idxs.par_chunks_mut(block))
                .enumerate()
                .for_each(|(o, (vs, is))| run(o, vs, is));
        } else {
            vals.chunks_mut(block)
                .zip(idxs.chunks_mut(block))
                .enumerate()
                .for_each(|(o, (vs, is))| run(o, vs, is));
        }
    }
    Ok((array_from(&shape, vals)?, array_from(&shape, idxs)?))
}

pub(crate) fn top_k(at: &TopKAttrs, x: &Tensor, k_in: Option<&Tensor>) -> OpResult<Vec<Tensor>> {
    let rank = x.rank();
    if rank == 0 {
        return Err(invalid("input must have rank >= 1"));
    }
    let axis = norm_axis(at.axis, rank)?;
    let k = match (k_in, at.k) {
        (Some(t), _) => {
            let v = t
                .to_i64_vec()
                .ok_or_else(|| invalid(format!("K must be an integer tensor, got {}", t.dtype())))?;
            if v.len() != 1 {
                return Err(invalid(format!("K must hold one value, got {}", v.len())));
            }
            v[0]
        }
        (None, Some(k)) => k,
        (None, None) => return Err(invalid("input 1 (K) is required")),
    };
    let len = x.shape()[axis];
    if k < 0 || k as u64 > len as u64 {
        return Err(invalid(format!("k = {k} out of range for axis {axis} of size {len}")));
    }
    let k = k as usize;
    let largest = at.largest;
    let (v, i) = {
        use carbide_ir::Tensor as T;
        match x {
            T::F32(a) => topk_num(a, axis, k, largest).map(|(v, i)| (T::F32(v), i))?,
            T::F64(a) => topk_num(a, axis, k, largest).map(|(v, i)| (T::F64(v), i))?,
            T::F16(a) => topk_num(a, axis, k, largest).map(|(v, i)| (T::F16(v), i))?,
            T::BF16(a) => topk_num(a, axis, k, largest).map(|(v, i)| (T::BF16(v), i))?,
            T::I8(a) => topk_num(a, axis, k, largest).map(|(v, i)| (T::I8(v), i))?,
            T::I16(a) => topk_num(a, axis, k, largest).map(|(v, i)| (T::I16(v), i))?,
            T::I32(a) => topk_num(a, axis, k, largest).map(|(v, i)| (T::I32(v), i))?,
            T::I64(a) => topk_num(a, axis, k, largest).map(|(v, i)| (T::I64(v), i))?,
            T::U8(a) => topk_num(a, axis, k, largest).map(|(v, i)| (T::U8(v), i))?,
            T::U16(a) => topk_num(a, axis, k, largest).map(|(v, i)| (T::U16(v), i))?,
            T::U32(a) => topk_num(a, axis, k, largest).map(|(v, i)| (T::U32(v), i))?,
            T::U64(a) => topk_num(a, axis, k, largest).map(|(v, i)| (T::U64(v), i))?,
            other => return Err(unsupported(format!("TopK on {} tensors", other.dtype()))),
        }
    };
    Ok(vec![v, Tensor::I64(i)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbide_ir::ndarray::{ArrayD, IxDyn};

    fn f32t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), v).unwrap())
    }

    #[test]
    fn argmax_ties_and_last_index() {
        let x = f32t(&[2, 3], vec![2.0, 1.0, 2.0, 0.0, 5.0, 5.0]);
        let a = ArgAttrs {
            axis: 1,
            keepdims: false,
            select_last_index: false,
        };
        assert_eq!(arg_extreme(&a, &x, true).unwrap().to_i64_vec().unwrap(), vec![0, 1]);
        let a = ArgAttrs {
            axis: -1,
            keepdims: true,
            select_last_index: true,
        };
        let t = arg_extreme(&a, &x, true).unwrap();
        assert_eq!(t.shape(), &[2, 1]);
        assert_eq!(t.to_i64_vec().unwrap(), vec![2, 2]);
        let a = ArgAttrs {
            axis: 0,
            keepdims: false,
            select_last_index: false,
        };
        assert_eq!(arg_extreme(&a, &x, false).unwrap().to_i64_vec().unwrap(), vec![1, 0, 0]);
    }

    #[test]
    fn cumsum_variants() {
        let x = Tensor::F64(ArrayD::from_shape_vec(IxDyn(&[5]), vec![1., 2., 3., 4., 5.]).unwrap());
        let ax = Tensor::scalar_i64(0);
        let run = |exclusive, reverse, prod| {
            cumulative(&CumAttrs { exclusive, reverse }, &x, &ax, prod)
                .unwrap()
                .to_f64_vec()
                .unwrap()
        };
        assert_eq!(run(false, false, false), vec![1., 3., 6., 10., 15.]);
        assert_eq!(run(true, false, false), vec![0., 1., 3., 6., 10.]);
        assert_eq!(run(false, true, false), vec![15., 14., 12., 9., 5.]);
        assert_eq!(run(true, true, false), vec![14., 12., 9., 5., 0.]);
        assert_eq!(run(false, false, true), vec![1., 2., 6., 24., 120.]);
        let m = Tensor::I32(ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1, 2, 3, 4, 5, 6]).unwrap());
        let t = cumulative(
            &CumAttrs {
                exclusive: false,
                reverse: false,
            },
            &m,
            &Tensor::scalar_i64(0),
            false,
        )
        .unwrap();
        assert_eq!(t.to_i64_vec().unwrap(), vec![1, 2, 3, 5, 7, 9]);
        assert!(cumulative(
            &CumAttrs {
                exclusive: false,
                reverse: false
            },
            &m,
            &Tensor::scalar_i64(2),
            false
        )
        .is_err());
    }

    #[test]
    fn topk_smallest_and_ties() {
        let x = f32t(&[2, 4], vec![0., 1., 2., 3., 3., 1., 3., 0.]);
        let at = TopKAttrs {
            axis: 1,
            k: None,
            largest: true,
            sorted: true,
        };
        let out = top_k(&at, &x, Some(&Tensor::from_i64s(vec![2]))).unwrap();
        assert_eq!(out[0].to_f64_vec().unwrap(), vec![3., 2., 3., 3.]);
        assert_eq!(out[1].to_i64_vec().unwrap(), vec![3, 2, 0, 2]);
        let at = TopKAttrs {
            axis: 0,
            k: Some(1),
            largest: false,
            sorted: true,
        };
        let out = top_k(&at, &x, None).unwrap();
        assert_eq!(out[0].to_f64_vec().unwrap(), vec![0., 1., 2., 0.]);
        assert_eq!(out[1].to_i64_vec().unwrap(), vec![0, 0, 0, 1]);
        assert!(top_k(&at, &x, Some(&Tensor::from_i64s(vec![5]))).is_err());
    }
}
