//! Index-driven kernels: Gather, GatherElements, GatherND, ScatterElements,
//! ScatterND, TensorScatter, OneHot, NonZero, Compress, Unique.

use super::util::{
    arith_zip_map, check_elems, for_each_index, ints_in, norm_axis, norm_index, opt_ints_in, strides, take_map, Arith,
    Elem,
};
use crate::error::{invalid, unsupported, OpResult};
use crate::ops::tensor_in;
use carbide_ir::ndarray::{ArrayD, Axis, IxDyn};
use carbide_ir::ops::tensor::ScatterReduction;
use carbide_ir::{tensor_map, tensor_zip_map, Tensor, Value};
use std::cmp::Ordering;

fn out(t: Tensor) -> OpResult<Vec<Value>> {
    Ok(vec![Value::Tensor(t)])
}

fn index_vec(t: &Tensor, what: &str) -> OpResult<Vec<i64>> {
    t.to_i64_vec()
        .ok_or_else(|| invalid(format!("{what} must be an integer tensor, got {}", t.dtype())))
}

fn to_owned_shape<T: Clone>(a: ArrayD<T>, shape: &[usize]) -> OpResult<ArrayD<T>> {
    let a = if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    };
    a.into_shape_with_order(IxDyn(shape))
        .map_err(|e| invalid(format!("internal: {e}")))
}

pub fn gather(inputs: &[Option<&Value>], axis: i64) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let it = tensor_in(inputs, 1)?;
    let s = x.shape();
    let ax = norm_axis(axis, s.len())?;
    let d = s[ax];
    let idx: Vec<usize> = index_vec(it, "indices")?
        .iter()
        .map(|&i| norm_index(i, d, "index"))
        .collect::<OpResult<_>>()?;
    let mut os: Vec<usize> = s[..ax].to_vec();
    os.extend_from_slice(it.shape());
    os.extend_from_slice(&s[ax + 1..]);
    check_elems(&os)?;
    out(tensor_map!(x, a => to_owned_shape(a.select(Axis(ax), &idx), &os)?))
}

/// For GatherElements / ScatterElements: the flat offset into data (shape
/// `s`) that each element of `it` addresses along `axis`, checking that the
/// ranks agree and the other dims of the indices fit the data.
fn element_offsets(s: &[usize], it: &Tensor, axis: i64) -> OpResult<Vec<usize>> {
    let q = it.shape();
    if s.len() != q.len() {
        return Err(invalid(format!(
            "data shape {s:?} and indices shape {q:?} differ in rank"
        )));
    }
    let ax = norm_axis(axis, s.len())?;
    if q.iter().zip(s).enumerate().any(|(i, (a, b))| i != ax && a > b) {
        return Err(invalid(format!("indices shape {q:?} exceeds data shape {s:?}")));
    }
    let idx = index_vec(it, "indices")?;
    let st = strides(s);
    let mut offsets = Vec::with_capacity(idx.len());
    for_each_index(q, |flat, c| {
        let j = norm_index(idx[flat], s[ax], "index")?;
        offsets.push(
            c.iter()
                .zip(&st)
                .enumerate()
                .map(|(i, (&ci, &si))| if i == ax { j * si } else { ci * si })
                .sum(),
        );
        Ok(())
    })?;
    Ok(offsets)
}

pub fn gather_elements(inputs: &[Option<&Value>], axis: i64) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let it = tensor_in(inputs, 1)?;
    let (s, q) = (x.shape(), it.shape());
    let map = element_offsets(s, it, axis)?;
    out(tensor_map!(x, a => take_map(a, &map, &Default::default(), q)?))
}

/// Flat offsets (row-major in `s`) of the blocks addressed by the index
/// tuples of `idx` (last dim `k`), with `b` leading batch dims.
fn nd_offsets(s: &[usize], q: &[usize], idx: &[i64], b: usize) -> OpResult<(Vec<usize>, usize)> {
    let k = *q.last().ok_or_else(|| invalid("indices must have rank >= 1"))?;
    if b + k > s.len() || b >= q.len() {
        return Err(invalid(format!(
            "index depth {k} with {b} batch dims does not fit data shape {s:?}"
        )));
    }
    if s[..b] != q[..b] {
        return Err(invalid(format!("batch dims of data {s:?} and indices {q:?} differ")));
    }
    let st = strides(s);
    let inner: usize = s[b + k..].iter().product();
    let tuples: usize = q[..q.len() - 1].iter().product();
    let per_batch: usize = q[b..q.len() - 1].iter().product();
    let batch_stride: usize = s[b..].iter().product();
    let mut offs = Vec::with_capacity(tuples);
    for t in 0..tuples {
        let batch = t.checked_div(per_batch).unwrap_or(0);
        let mut o = batch * batch_stride;
        for j in 0..k {
            o += norm_index(idx[t * k + j], s[b + j], "index")? * st[b + j];
        }
        offs.push(o);
    }
    Ok((offs, inner))
}

fn expand_blocks(offs: &[usize], inner: usize) -> OpResult<Vec<usize>> {
    check_elems(&[offs.len(), inner])?;
    Ok(offs.iter().flat_map(|&o| o..o + inner).collect())
}

pub fn gather_nd(inputs: &[Option<&Value>], batch_dims: i64) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let it = tensor_in(inputs, 1)?;
    let b = usize::try_from(batch_dims).map_err(|_| invalid("batch_dims must be >= 0"))?;
    let (s, q) = (x.shape(), it.shape());
    let (offs, inner) = nd_offsets(s, q, &index_vec(it, "indices")?, b)?;
    let k = q[q.len() - 1];
    let mut os: Vec<usize> = q[..q.len() - 1].to_vec();
    os.extend_from_slice(&s[b + k..]);
    let map = expand_blocks(&offs, inner)?;
    out(tensor_map!(x, a => take_map(a, &map, &Default::default(), &os)?))
}

/// Copies `data` and combines each element of `upd` into position `dst[i]`.
fn scatter_apply<T: Clone>(
    data: &ArrayD<T>,
    upd: &ArrayD<T>,
    dst: &[usize],
    f: impl Fn(&mut T, &T),
) -> OpResult<ArrayD<T>> {
    let mut o = data.as_standard_layout().into_owned();
    let u = upd.as_standard_layout();
    let us = u
        .as_slice()
        .ok_or_else(|| invalid("internal: non-contiguous updates"))?;
    let os = o
        .as_slice_mut()
        .ok_or_else(|| invalid("internal: non-contiguous output"))?;
    if us.len() != dst.len() {
        return Err(invalid("internal: update count mismatch"));
    }
    for (v, &d) in us.iter().zip(dst) {
        let slot = os
            .get_mut(d)
            .ok_or_else(|| invalid("internal: scatter index out of range"))?;
        f(slot, v);
    }
    Ok(o)
}

fn reducer<T: Arith>(r: ScatterReduction) -> impl Fn(&mut T, &T) {
    move |d: &mut T, v: &T| {
        *d = match r {
            ScatterReduction::None => *v,
            ScatterReduction::Add => T::add(*d, *v),
            ScatterReduction::Mul => T::mul(*d, *v),
            ScatterReduction::Max => T::max(*d, *v),
            ScatterReduction::Min => T::min(*d, *v),
        }
    }
}

fn scatter_dispatch(x: &Tensor, u: &Tensor, dst: &[usize], r: ScatterReduction) -> OpResult<Tensor> {
    if x.dtype() != u.dtype() {
        return Err(invalid(format!("updates are {} but data is {}", u.dtype(), x.dtype())));
    }
    match r {
        ScatterReduction::None => tensor_zip_map!(x, u, (a, b) => scatter_apply(a, b, dst, |d, v| d.clone_from(v))?)
            .ok_or_else(|| invalid("dtype mismatch")),
        r => arith_zip_map!(x, u, (a, b) => scatter_apply(a, b, dst, reducer(r))?)
            .ok_or_else(|| unsupported(format!("scatter reduction {r:?} on {}", x.dtype()))),
    }
}

pub fn scatter_elements(inputs: &[Option<&Value>], axis: i64, r: ScatterReduction) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let it = tensor_in(inputs, 1)?;
    let u = tensor_in(inputs, 2)?;
    let (s, q) = (x.shape(), it.shape());
    if q != u.shape() {
        return Err(invalid(format!(
            "indices shape {q:?} differs from updates shape {:?}",
            u.shape()
        )));
    }
    let dst = element_offsets(s, it, axis)?;
    out(scatter_dispatch(x, u, &dst, r)?)
}

pub fn scatter_nd(inputs: &[Option<&Value>], r: ScatterReduction) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let it = tensor_in(inputs, 1)?;
    let u = tensor_in(inputs, 2)?;
    let (s, q) = (x.shape(), it.shape());
    let (offs, inner) = nd_offsets(s, q, &index_vec(it, "indices")?, 0)?;
    let k = q[q.len() - 1];
    let mut us: Vec<usize> = q[..q.len() - 1].to_vec();
    us.extend_from_slice(&s[k..]);
    if u.shape() != us.as_slice() {
        return Err(invalid(format!("updates shape {:?} should be {us:?}", u.shape())));
    }
    let dst = expand_blocks(&offs, inner)?;
    out(scatter_dispatch(x, u, &dst, r)?)
}

pub fn tensor_scatter(inputs: &[Option<&Value>], axis: i64, circular: bool) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let u = tensor_in(inputs, 1)?;
    let s = x.shape();
    let us = u.shape();
    let ax = norm_axis(axis, s.len())?;
    if ax == 0 {
        return Err(invalid("the sequence axis must not be the batch axis 0"));
    }
    if us.len() != s.len()
        || us
            .iter()
            .zip(s)
            .enumerate()
            .any(|(i, (a, b))| if i == ax { a > b } else { a != b })
    {
        return Err(invalid(format!(
            "update shape {us:?} does not fit cache shape {s:?} on axis {ax}"
        )));
    }
    let wi = match opt_ints_in(inputs, 2, "write_indices")? {
        Some(w) if w.len() == s[0] => w,
        Some(w) => {
            return Err(invalid(format!(
                "write_indices has {} entries for batch {}",
                w.len(),
                s[0]
            )))
        }
        None => vec![0; s[0]],
    };
    let prefix: usize = s[..ax].iter().product();
    let per_batch: usize = s[1..ax].iter().product();
    let (maxs, seq) = (s[ax], us[ax]);
    let inner: usize = s[ax + 1..].iter().product();
    let mut dst = Vec::with_capacity(u.len());
    for p in 0..prefix {
        let b = p / per_batch.max(1);
        for q in 0..seq {
            let mut cs = wi[b].saturating_add(q as i64);
            if circular && maxs > 0 {
                cs = cs.rem_euclid(maxs as i64);
            }
            if cs < 0 || cs >= maxs as i64 {
                return Err(invalid(format!(
                    "write index {cs} out of range for sequence length {maxs}"
                )));
            }
            let base = (p * maxs + cs as usize) * inner;
            dst.extend(base..base + inner);
        }
    }
    out(scatter_dispatch(x, u, &dst, ScatterReduction::None)?)
}

pub fn one_hot(inputs: &[Option<&Value>], axis: i64) -> OpResult<Vec<Value>> {
    let it = tensor_in(inputs, 0)?;
    let dt = tensor_in(inputs, 1)?;
    let vals = tensor_in(inputs, 2)?;
    let idx = it
        .to_f64_vec()
        .ok_or_else(|| invalid(format!("indices must be numeric, got {}", it.dtype())))?;
    let depth = match dt.to_f64_vec() {
        Some(v) if v.len() == 1 => v[0],
        _ => return Err(invalid("depth must be a numeric scalar")),
    };
    if depth.is_nan() || depth < 1.0 || depth > super::util::MAX_ELEMS as f64 {
        return Err(invalid(format!("depth {depth} out of range")));
    }
    let d = depth as i64;
    let q = it.shape();
    let ax = norm_axis(axis, q.len() + 1)?;
    let mut os = q.to_vec();
    os.insert(ax, d as usize);
    let n = check_elems(&os)?;
    let outer: usize = q[..ax].iter().product();
    let inner: usize = q[ax..].iter().product();
    out(tensor_map!(vals, v => one_hot_fill(v, &idx, d, outer, inner, &os, n)?))
}

/// Fills OneHot's output: `values[0]` everywhere, `values[1]` at each hit.
fn one_hot_fill<T: Clone>(
    v: &ArrayD<T>,
    idx: &[f64],
    d: i64,
    outer: usize,
    inner: usize,
    os: &[usize],
    n: usize,
) -> OpResult<ArrayD<T>> {
    let vs: Vec<T> = v.iter().cloned().collect();
    if vs.len() != 2 {
        return Err(invalid(format!("values must hold 2 elements, got {}", vs.len())));
    }
    let mut data = vec![vs[0].clone(); n];
    for o in 0..outer {
        for i in 0..inner {
            let mut id = idx[o * inner + i] as i64;
            if id < 0 {
                id += d;
            }
            if (0..d).contains(&id) {
                data[(o * d as usize + id as usize) * inner + i] = vs[1].clone();
            }
        }
    }
    ArrayD::from_shape_vec(IxDyn(os), data).map_err(|e| invalid(format!("internal: {e}")))
}

pub fn non_zero(inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let flags: Vec<bool> = match x {
        Tensor::String(a) => a.iter().map(|s| !s.is_empty()).collect(),
        Tensor::Small(_, a) => a.iter().map(|&b| b != 0).collect(),
        t => t
            .to_f64_vec()
            .ok_or_else(|| unsupported(format!("NonZero on {}", t.dtype())))?
            .iter()
            .map(|&v| v != 0.0)
            .collect(),
    };
    let s = x.shape();
    let pos: Vec<usize> = flags.iter().enumerate().filter(|(_, &f)| f).map(|(i, _)| i).collect();
    let r = s.len();
    let nnz = pos.len();
    let st = strides(s);
    let mut data = vec![0i64; r * nnz];
    for (j, &p) in pos.iter().enumerate() {
        for ax in 0..r {
            data[ax * nnz + j] = ((p / st[ax]) % s[ax].max(1)) as i64;
        }
    }
    let a = ArrayD::from_shape_vec(IxDyn(&[r, nnz]), data).map_err(|e| invalid(format!("internal: {e}")))?;
    out(Tensor::I64(a))
}

pub fn compress(inputs: &[Option<&Value>], axis: Option<i64>) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let cond = ints_in(inputs, 1, "condition")?;
    let flat;
    let (src, ax) = match axis {
        Some(a) => (x, norm_axis(a, x.rank())?),
        None => {
            flat = super::util::reshape(x, &[x.len()])?;
            (&flat, 0)
        }
    };
    let d = src.shape()[ax];
    if cond.iter().skip(d).any(|&c| c != 0) {
        return Err(invalid(format!("condition selects beyond dim {d}")));
    }
    let sel: Vec<usize> = cond
        .iter()
        .take(d)
        .enumerate()
        .filter(|(_, &c)| c != 0)
        .map(|(i, _)| i)
        .collect();
    out(tensor_map!(src, a => a.select(Axis(ax), &sel)))
}

/// Lexicographic comparison of two keys under [`Elem::tcmp`].
fn key_cmp<T: Elem>(x: &[T], y: &[T]) -> Ordering {
    x.iter()
        .zip(y)
        .map(|(p, q)| p.tcmp(q))
        .find(|o| *o != Ordering::Equal)
        .unwrap_or(Ordering::Equal)
}

type UniqueParts<T> = (ArrayD<T>, Vec<i64>, Vec<i64>, Vec<i64>);

fn unique_impl<T: Elem>(a: &ArrayD<T>, axis: Option<usize>, sorted: bool) -> OpResult<UniqueParts<T>> {
    // Keys are contiguous runs of `data`: single elements, or the slices
    // along `axis` (that axis moved to the front).
    let (data, n, len): (Vec<T>, usize, usize) = match axis {
        None => (a.iter().cloned().collect(), a.len(), 1),
        Some(ax) => {
            let n = a.shape()[ax];
            let mut perm: Vec<usize> = (0..a.ndim()).collect();
            perm.remove(ax);
            perm.insert(0, ax);
            let moved = a.view().permuted_axes(IxDyn(&perm));
            let len = a.len().checked_div(n).unwrap_or(0);
            (moved.iter().cloned().collect(), n, len)
        }
    };
    let key = |i: usize| &data[i * len..(i + 1) * len];
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| key_cmp(key(i), key(j)));
    let mut groups: Vec<(usize, usize)> = Vec::new(); // (first occurrence, count)
    let mut inverse = vec![0i64; n];
    let mut group_of = vec![0usize; n];
    for (pos, &i) in order.iter().enumerate() {
        if pos == 0 || key_cmp(key(order[pos - 1]), key(i)) != Ordering::Equal {
            groups.push((i, 0));
        }
        let g = groups.len() - 1;
        groups[g].1 += 1;
        group_of[i] = g;
    }
    let mut rank: Vec<usize> = (0..groups.len()).collect();
    if !sorted {
        let mut by_first: Vec<usize> = (0..groups.len()).collect();
        by_first.sort_by_key(|&g| groups[g].0);
        for (r, &g) in by_first.iter().enumerate() {
            rank[g] = r;
        }
    }
    let mut ordered = vec![(0usize, 0usize); groups.len()];
    for (g, &grp) in groups.iter().enumerate() {
        ordered[rank[g]] = grp;
    }
    for i in 0..n {
        inverse[i] = rank[group_of[i]] as i64;
    }
    let firsts: Vec<usize> = ordered.iter().map(|g| g.0).collect();
    let y = match axis {
        None => ArrayD::from_shape_vec(
            IxDyn(&[firsts.len()]),
            firsts.iter().map(|&i| data[i].clone()).collect(),
        )
        .map_err(|e| invalid(format!("internal: {e}")))?,
        Some(ax) => a.select(Axis(ax), &firsts),
    };
    let idx = firsts.iter().map(|&i| i as i64).collect();
    let counts = ordered.iter().map(|g| g.1 as i64).collect();
    Ok((y, idx, inverse, counts))
}

pub fn unique(inputs: &[Option<&Value>], axis: Option<i64>, sorted: bool) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let ax = axis.map(|a| norm_axis(a, x.rank())).transpose()?;
    let parts: (Vec<i64>, Vec<i64>, Vec<i64>);
    let y = tensor_map!(x, a => {
        let (y, i, inv, c) = unique_impl(a, ax, sorted)?;
        parts = (i, inv, c);
        y
    });
    Ok(vec![
        Value::Tensor(y),
        Value::Tensor(Tensor::from_i64s(parts.0)),
        Value::Tensor(Tensor::from_i64s(parts.1)),
        Value::Tensor(Tensor::from_i64s(parts.2)),
    ])
}
