//! Shape and type inference for the tensor family.

use super::{normalize_axes, slice_range, tensor_type, TensorOp};
use crate::dtype::DType;
use crate::error::IrResult;
use crate::ops::{broadcast_shapes, normalize_axis, InferCtx};
use crate::types::{Dim, Shape, TensorType, ValueType};

fn one(t: TensorType) -> IrResult<Vec<ValueType>> {
    Ok(vec![ValueType::Tensor(t)])
}

/// Product of dims: known when all are known; a single non-1 symbolic dim
/// passes through.
fn dims_product(dims: &[Dim]) -> Dim {
    let mut known = 1usize;
    let mut other: Option<&Dim> = None;
    for d in dims {
        match d {
            Dim::Known(n) => known = known.saturating_mul(*n),
            d => {
                if other.is_some() {
                    return Dim::Unknown;
                }
                other = Some(d);
            }
        }
    }
    match other {
        None => Dim::Known(known),
        Some(_) if known == 0 => Dim::Known(0),
        Some(d) if known == 1 => d.clone(),
        Some(_) => Dim::Unknown,
    }
}

fn mul_dim(a: &Dim, b: &Dim) -> Dim {
    dims_product(&[a.clone(), b.clone()])
}

/// The output shape of Reshape for a known target.
fn reshape_shape(cx: &InferCtx, x: &TensorType, target: &[i64], allowzero: bool) -> IrResult<Shape> {
    let in_shape = x.shape.as_ref();
    let mut out = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &v) in target.iter().enumerate() {
        match v {
            0 if !allowzero => match in_shape {
                Some(s) => match s.get(i) {
                    Some(d) => out.push(d.clone()),
                    None => return Err(cx.err(format!("shape[{i}] is 0 but the input has rank {}", s.len()))),
                },
                None => out.push(Dim::Unknown),
            },
            -1 => {
                if infer_at.is_some() {
                    return Err(cx.err("more than one -1 in the target shape"));
                }
                infer_at = Some(i);
                out.push(Dim::Unknown);
            }
            v if v < 0 => return Err(cx.err(format!("invalid target dim {v}"))),
            v => out.push(Dim::Known(v as usize)),
        }
    }
    let Some(in_shape) = in_shape else {
        return Ok(out);
    };
    match infer_at {
        Some(k) => {
            // Cancel equal symbolic dims, then divide the known rest.
            let mut rest_in: Vec<Dim> = in_shape.clone();
            let mut out_known = 1usize;
            let mut ok = true;
            for (i, d) in out.iter().enumerate() {
                if i == k {
                    continue;
                }
                match d {
                    Dim::Known(n) => out_known = out_known.saturating_mul(*n),
                    Dim::Sym(_) => match rest_in.iter().position(|e| e == d) {
                        Some(p) => {
                            rest_in.remove(p);
                        }
                        None => ok = false,
                    },
                    Dim::Unknown => ok = false,
                }
            }
            if ok {
                let syms: Vec<&Dim> = rest_in.iter().filter(|d| d.known().is_none()).collect();
                let in_known: usize = rest_in.iter().filter_map(Dim::known).product();
                if syms.is_empty() {
                    if out_known != 0 && in_known.is_multiple_of(out_known) {
                        out[k] = Dim::Known(in_known / out_known);
                    } else if out_known != 0 {
                        return Err(cx.err(format!("cannot reshape {in_known} elements into blocks of {out_known}")));
                    }
                } else if syms.len() == 1 && in_known == out_known && !matches!(syms[0], Dim::Unknown) {
                    out[k] = syms[0].clone();
                }
            }
        }
        None => {
            if let (Some(a), Some(b)) = (dims_product(in_shape).known(), dims_product(&out).known()) {
                if a != b {
                    return Err(cx.err(format!("cannot reshape {a} elements into {b}")));
                }
            }
        }
    }
    Ok(out)
}

pub(super) fn infer(op: &TensorOp, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
    match op {
        TensorOp::Identity => Ok(vec![cx.inputs.first().cloned().flatten().unwrap_or(ValueType::Unknown)]),
        TensorOp::Reshape { allowzero, shape } => {
            let x = cx.tensor(0)?;
            let target = match shape {
                Some(s) => Some(s.clone()),
                None => cx.const_i64s(1),
            };
            let out = match target {
                Some(t) => Some(reshape_shape(cx, &x, &t, *allowzero)?),
                None => cx
                    .opt_tensor(1)?
                    .and_then(|s| s.concrete_shape())
                    .filter(|s| s.len() == 1)
                    .map(|s| vec![Dim::Unknown; s[0]]),
            };
            one(TensorType {
                dtype: x.dtype,
                shape: out,
            })
        }
        TensorOp::Flatten { axis } => {
            let x = cx.tensor(0)?;
            let shape = match &x.shape {
                Some(s) => {
                    let r = s.len() as i64;
                    let a = if *axis < 0 { axis + r } else { *axis };
                    if a < 0 || a > r {
                        return Err(cx.err(format!("axis {axis} is out of range for rank {r}")));
                    }
                    let a = a as usize;
                    Some(vec![dims_product(&s[..a]), dims_product(&s[a..])])
                }
                None => Some(vec![Dim::Unknown, Dim::Unknown]),
            };
            one(TensorType { dtype: x.dtype, shape })
        }
        TensorOp::Squeeze { axes } => {
            let x = cx.tensor(0)?;
            let axes = match axes {
                Some(a) => Some(a.clone()),
                None if cx.has_input(1) => match cx.const_i64s(1) {
                    Some(a) => Some(a),
                    None => {
                        return one(TensorType {
                            dtype: x.dtype,
                            shape: None,
                        })
                    }
                },
                None => None,
            };
            let Some(s) = &x.shape else {
                return one(TensorType {
                    dtype: x.dtype,
                    shape: None,
                });
            };
            let shape = match axes {
                Some(axes) => {
                    let axes = normalize_axes(cx.op, &axes, s.len())?;
                    for &a in &axes {
                        if let Dim::Known(n) = s[a] {
                            if n != 1 {
                                return Err(cx.err(format!("cannot squeeze axis {a} of extent {n}")));
                            }
                        }
                    }
                    Some(
                        s.iter()
                            .enumerate()
                            .filter(|(i, _)| !axes.contains(i))
                            .map(|(_, d)| d.clone())
                            .collect(),
                    )
                }
                None if s.iter().all(|d| d.known().is_some()) => {
                    Some(s.iter().filter(|d| **d != Dim::Known(1)).cloned().collect())
                }
                None => None,
            };
            one(TensorType { dtype: x.dtype, shape })
        }
        TensorOp::Unsqueeze { axes } => {
            let x = cx.tensor(0)?;
            let axes = match axes {
                Some(a) => Some(a.clone()),
                None => cx.const_i64s(1),
            };
            let shape = match (&x.shape, axes) {
                (Some(s), Some(axes)) => {
                    let r = s.len() + axes.len();
                    let axes = normalize_axes(cx.op, &axes, r)?;
                    let mut it = s.iter();
                    let mut out = Vec::with_capacity(r);
                    for i in 0..r {
                        if axes.contains(&i) {
                            out.push(Dim::Known(1));
                        } else {
                            out.push(it.next().cloned().unwrap_or(Dim::Unknown));
                        }
                    }
                    Some(out)
                }
                (Some(s), None) => cx
                    .opt_tensor(1)?
                    .and_then(|t| t.concrete_shape())
                    .filter(|t| t.len() == 1)
                    .map(|t| vec![Dim::Unknown; s.len() + t[0]]),
                _ => None,
            };
            one(TensorType { dtype: x.dtype, shape })
        }
        TensorOp::Transpose { perm } => {
            let x = cx.tensor(0)?;
            let shape = match &x.shape {
                Some(s) => {
                    let perm: Vec<i64> = perm.clone().unwrap_or_else(|| (0..s.len() as i64).rev().collect());
                    if perm.len() != s.len() {
                        return Err(cx.err(format!("perm has {} entries for rank {}", perm.len(), s.len())));
                    }
                    let p = normalize_axes(cx.op, &perm, s.len())?;
                    Some(p.iter().map(|&i| s[i].clone()).collect())
                }
                None => perm.as_ref().map(|p| vec![Dim::Unknown; p.len()]),
            };
            one(TensorType { dtype: x.dtype, shape })
        }
        TensorOp::Concat { axis } => {
            let ts: Vec<TensorType> = (0..cx.inputs.len()).map(|i| cx.tensor(i)).collect::<IrResult<_>>()?;
            if ts.is_empty() {
                return Err(cx.err("needs at least one input"));
            }
            let dtype = ts.iter().find_map(|t| t.dtype);
            if ts.iter().any(|t| t.dtype.is_some_and(|d| Some(d) != dtype)) {
                return Err(cx.err("inputs have different dtypes"));
            }
            let Some(rank) = ts.iter().find_map(|t| t.rank()) else {
                return one(TensorType { dtype, shape: None });
            };
            if ts.iter().any(|t| t.rank().is_some_and(|r| r != rank)) {
                return Err(cx.err("inputs have different ranks"));
            }
            let a = normalize_axis(cx.op, *axis, rank)?;
            let mut out = vec![Dim::Unknown; rank];
            let mut total = Some(0usize);
            for t in &ts {
                match &t.shape {
                    Some(s) => {
                        for (i, d) in s.iter().enumerate() {
                            if i == a {
                                total = total.and_then(|n| d.known().map(|k| n + k));
                            } else if out[i] == Dim::Unknown || matches!(d, Dim::Known(_)) {
                                if let (Dim::Known(p), Dim::Known(q)) = (&out[i], d) {
                                    if p != q {
                                        return Err(cx.err(format!("dim {i} differs between inputs: {p} vs {q}")));
                                    }
                                }
                                if *d != Dim::Unknown {
                                    out[i] = d.clone();
                                }
                            }
                        }
                    }
                    None => total = None,
                }
            }
            out[a] = match total {
                Some(n) => Dim::Known(n),
                None if ts.len() == 1 => ts[0].shape.as_ref().map(|s| s[a].clone()).unwrap_or(Dim::Unknown),
                None => Dim::Unknown,
            };
            one(TensorType {
                dtype,
                shape: Some(out),
            })
        }
        TensorOp::Split {
            axis,
            split,
            num_outputs,
        } => {
            let x = cx.tensor(0)?;
            let n = cx.num_outputs;
            if num_outputs.is_some_and(|k| k as usize != n) {
                return Err(cx.err(format!("num_outputs {num_outputs:?} but the node has {n} outputs")));
            }
            let Some(s) = &x.shape else {
                return Ok(vec![tensor_type(x.dtype, None); n]);
            };
            let a = normalize_axis(cx.op, *axis, s.len())?;
            let sizes: Option<Vec<i64>> = match split {
                Some(sp) => Some(sp.clone()),
                None if cx.has_input(1) => cx.const_i64s(1),
                None => s[a].known().map(|d| {
                    let parts = n.max(1);
                    let chunk = d.div_ceil(parts);
                    (0..parts)
                        .map(|i| (d.saturating_sub(chunk * i)).min(chunk) as i64)
                        .collect()
                }),
            };
            if let (Some(sz), Some(d)) = (&sizes, s[a].known()) {
                if sz.iter().try_fold(0i64, |a, &b| a.checked_add(b)) != Some(d as i64) || sz.len() != n {
                    return Err(cx.err(format!("split sizes {sz:?} do not cover dim {d} in {n} outputs")));
                }
            }
            Ok((0..n)
                .map(|i| {
                    let mut o = s.clone();
                    o[a] = sizes
                        .as_ref()
                        .and_then(|z| z.get(i))
                        .map(|&v| Dim::Known(v as usize))
                        .unwrap_or(Dim::Unknown);
                    tensor_type(x.dtype, Some(o))
                })
                .collect())
        }
        TensorOp::Slice { starts, ends, axes } => {
            let x = cx.tensor(0)?;
            let Some(s) = &x.shape else { return one(x) };
            let (starts, ends, axes, steps) = if starts.is_some() {
                (starts.clone(), ends.clone(), axes.clone(), None)
            } else {
                (
                    cx.const_i64s(1),
                    cx.const_i64s(2),
                    if cx.has_input(3) { cx.const_i64s(3) } else { None },
                    if cx.has_input(4) { cx.const_i64s(4) } else { None },
                )
            };
            let axes_known = axes.is_some() || !cx.has_input(3);
            let steps_known = steps.is_some() || !cx.has_input(4);
            let mut out = s.clone();
            match (starts, ends) {
                (Some(st), Some(en)) if axes_known && steps_known => {
                    let axes: Vec<i64> = axes.unwrap_or_else(|| (0..st.len() as i64).collect());
                    let steps: Vec<i64> = steps.unwrap_or_else(|| vec![1; st.len()]);
                    if en.len() != st.len() || axes.len() != st.len() || steps.len() != st.len() {
                        return Err(cx.err("starts, ends, axes and steps lengths differ"));
                    }
                    let axes = normalize_axes(cx.op, &axes, s.len())?;
                    for (i, &a) in axes.iter().enumerate() {
                        if steps[i] == 0 {
                            return Err(cx.err("step 0"));
                        }
                        out[a] = match &s[a] {
                            Dim::Known(d) => Dim::Known(slice_range(st[i], en[i], steps[i], *d).1),
                            d if st[i] == 0 && steps[i] == 1 && en[i] >= i32::MAX as i64 => d.clone(),
                            _ => Dim::Unknown,
                        };
                    }
                }
                _ => out = vec![Dim::Unknown; s.len()],
            }
            one(TensorType {
                dtype: x.dtype,
                shape: Some(out),
            })
        }
        TensorOp::Gather { axis } => {
            let x = cx.tensor(0)?;
            let idx = cx.tensor(1)?;
            let shape = match (&x.shape, &idx.shape) {
                (Some(s), Some(q)) => {
                    let a = normalize_axis(cx.op, *axis, s.len())?;
                    let mut o: Shape = s[..a].to_vec();
                    o.extend(q.iter().cloned());
                    o.extend(s[a + 1..].iter().cloned());
                    Some(o)
                }
                _ => None,
            };
            one(TensorType { dtype: x.dtype, shape })
        }
        TensorOp::GatherElements { axis } => {
            let x = cx.tensor(0)?;
            let idx = cx.tensor(1)?;
            if let (Some(r), Some(q)) = (x.rank(), idx.rank()) {
                if r != q {
                    return Err(cx.err(format!("data rank {r} differs from indices rank {q}")));
                }
                normalize_axis(cx.op, *axis, r)?;
            }
            one(TensorType {
                dtype: x.dtype,
                shape: idx.shape,
            })
        }
        TensorOp::GatherND { batch_dims } => {
            let x = cx.tensor(0)?;
            let idx = cx.tensor(1)?;
            let b = (*batch_dims).max(0) as usize;
            let shape = match (&x.shape, &idx.shape) {
                (Some(s), Some(q)) if !q.is_empty() => match q[q.len() - 1].known() {
                    Some(k) if b + k <= s.len() => {
                        let mut o: Shape = q[..q.len() - 1].to_vec();
                        o.extend(s[b + k..].iter().cloned());
                        Some(o)
                    }
                    Some(k) => return Err(cx.err(format!("index depth {k} too large for data rank {}", s.len()))),
                    None => None,
                },
                _ => None,
            };
            one(TensorType { dtype: x.dtype, shape })
        }
        TensorOp::ScatterElements { .. } | TensorOp::ScatterND { .. } | TensorOp::TensorScatter { .. } => {
            one(cx.tensor(0)?)
        }
        TensorOp::Trilu { .. } | TensorOp::ReverseSequence { .. } => one(cx.tensor(0)?),
        TensorOp::Expand => {
            let x = cx.tensor(0)?;
            let shape = match (&x.shape, cx.const_i64s(1)) {
                (Some(s), Some(t)) => {
                    if t.iter().any(|&v| v < 0) {
                        return Err(cx.err(format!("negative dim in shape {t:?}")));
                    }
                    let t: Shape = t.iter().map(|&v| Dim::Known(v as usize)).collect();
                    Some(broadcast_shapes(cx.op, &[s, &t])?)
                }
                (s, None) => {
                    match cx
                        .opt_tensor(1)?
                        .and_then(|t| t.concrete_shape())
                        .filter(|t| t.len() == 1)
                    {
                        Some(n) => {
                            let r = s.as_ref().map_or(0, |s| s.len()).max(n[0]);
                            let mut o = vec![Dim::Unknown; r];
                            if let Some(s) = s {
                                if s.len() <= r {
                                    for (i, d) in s.iter().enumerate() {
                                        if matches!(d, Dim::Known(k) if *k != 1) {
                                            o[r - s.len() + i] = d.clone();
                                        }
                                    }
                                }
                            }
                            Some(o)
                        }
                        None => None,
                    }
                }
                (None, Some(_)) => None,
            };
            one(TensorType { dtype: x.dtype, shape })
        }
        TensorOp::Tile { legacy } => {
            let x = cx.tensor(0)?;
            let shape = match &x.shape {
                Some(s) if !*legacy => match cx.const_i64s(1) {
                    Some(r) => {
                        if r.len() != s.len() || r.iter().any(|&v| v < 0) {
                            return Err(cx.err(format!("repeats {r:?} do not fit rank {}", s.len())));
                        }
                        Some(
                            s.iter()
                                .zip(&r)
                                .map(|(d, &k)| mul_dim(d, &Dim::Known(k as usize)))
                                .collect(),
                        )
                    }
                    None => Some(vec![Dim::Unknown; s.len()]),
                },
                Some(s) => Some(vec![Dim::Unknown; s.len()]),
                None => None,
            };
            one(TensorType { dtype: x.dtype, shape })
        }
        TensorOp::Pad { pads, .. } => {
            let x = cx.tensor(0)?;
            let Some(s) = &x.shape else { return one(x) };
            let r = s.len();
            let pads = match pads {
                Some(p) => Some(p.clone()),
                None => cx.const_i64s(1),
            };
            let axes: Option<Vec<usize>> = if cx.has_input(3) {
                match cx.const_i64s(3) {
                    Some(a) => Some(normalize_axes(cx.op, &a, r)?),
                    None => None,
                }
            } else {
                Some((0..r).collect())
            };
            let mut out = vec![Dim::Unknown; r];
            if let (Some(p), Some(axes)) = (pads, axes) {
                if p.len() != 2 * axes.len() {
                    return Err(cx.err(format!("pads has {} entries for {} axes", p.len(), axes.len())));
                }
                out = s.clone();
                let n = axes.len();
                for (i, &a) in axes.iter().enumerate() {
                    if p[i] == 0 && p[i + n] == 0 {
                        continue;
                    }
                    out[a] = match s[a].known() {
                        Some(d) => {
                            let v = (d as i64)
                                .checked_add(p[i])
                                .and_then(|v| v.checked_add(p[i + n]))
                                .unwrap_or(-1);
                            if v < 0 {
                                return Err(cx.err(format!("pads {p:?} crop axis {a} below zero")));
                            }
                            Dim::Known(v as usize)
                        }
                        None => Dim::Unknown,
                    };
                }
            }
            one(TensorType {
                dtype: x.dtype,
                shape: Some(out),
            })
        }
        TensorOp::Shape { start, end } => {
            let x = cx.tensor(0)?;
            let n = x.rank().map(|r| {
                let (s, e) = shape_bounds(*start, *end, r);
                e.saturating_sub(s)
            });
            one(TensorType {
                dtype: Some(DType::I64),
                shape: Some(vec![n.map_or(Dim::Unknown, Dim::Known)]),
            })
        }
        TensorOp::Size => {
            cx.tensor(0)?;
            one(TensorType::new(DType::I64, vec![]))
        }
        TensorOp::Constant { value } => one(TensorType::new(
            value.dtype(),
            value.shape().iter().map(|&d| Dim::Known(d)).collect(),
        )),
        TensorOp::ConstantOfShape { value } => {
            let dtype = value.as_ref().map_or(DType::F32, |v| v.dtype());
            let shape = match cx.const_i64s(0) {
                Some(v) => {
                    if v.iter().any(|&d| d < 0) {
                        return Err(cx.err(format!("negative dim in shape {v:?}")));
                    }
                    Some(v.iter().map(|&d| Dim::Known(d as usize)).collect())
                }
                None => cx
                    .tensor(0)?
                    .concrete_shape()
                    .filter(|t| t.len() == 1)
                    .map(|t| vec![Dim::Unknown; t[0]]),
            };
            one(TensorType {
                dtype: Some(dtype),
                shape,
            })
        }
        TensorOp::Range => {
            let t = cx.tensor(0)?;
            let n = match (cx.const_value(0), cx.const_value(1), cx.const_value(2)) {
                (Some(a), Some(b), Some(c)) => match (a.to_f64_vec(), b.to_f64_vec(), c.to_f64_vec()) {
                    (Some(a), Some(b), Some(c)) if a.len() == 1 && b.len() == 1 && c.len() == 1 && c[0] != 0.0 => {
                        Dim::Known(((b[0] - a[0]) / c[0]).ceil().max(0.0) as usize)
                    }
                    _ => Dim::Unknown,
                },
                _ => Dim::Unknown,
            };
            one(TensorType {
                dtype: t.dtype,
                shape: Some(vec![n]),
            })
        }
        TensorOp::OneHot { axis } => {
            let idx = cx.tensor(0)?;
            let vals = cx.tensor(2)?;
            let depth = cx
                .const_value(1)
                .and_then(|t| t.to_f64_vec())
                .filter(|v| v.len() == 1)
                .map(|v| v[0]);
            let shape = match &idx.shape {
                Some(s) => {
                    let r = s.len() + 1;
                    let a = normalize_axis(cx.op, *axis, r)?;
                    let mut o = s.clone();
                    o.insert(
                        a,
                        depth
                            .filter(|&d| d >= 0.0)
                            .map_or(Dim::Unknown, |d| Dim::Known(d as usize)),
                    );
                    Some(o)
                }
                None => None,
            };
            one(TensorType {
                dtype: vals.dtype,
                shape,
            })
        }
        TensorOp::NonZero => {
            let x = cx.tensor(0)?;
            one(TensorType::new(
                DType::I64,
                vec![x.rank().map_or(Dim::Unknown, Dim::Known), Dim::Unknown],
            ))
        }
        TensorOp::Compress { axis } => {
            let x = cx.tensor(0)?;
            let count = cx
                .const_i64s(1)
                .map(|c| Dim::Known(c.iter().filter(|&&v| v != 0).count()));
            let shape = match (axis, &x.shape) {
                (None, _) => Some(vec![count.unwrap_or(Dim::Unknown)]),
                (Some(a), Some(s)) => {
                    let a = normalize_axis(cx.op, *a, s.len())?;
                    let mut o = s.clone();
                    o[a] = count.unwrap_or(Dim::Unknown);
                    Some(o)
                }
                (Some(_), None) => None,
            };
            one(TensorType { dtype: x.dtype, shape })
        }
        TensorOp::Unique { axis, .. } => {
            let x = cx.tensor(0)?;
            let (y, inv) = match (axis, &x.shape) {
                (None, s) => (
                    Some(vec![Dim::Unknown]),
                    vec![s.as_ref().map_or(Dim::Unknown, |s| dims_product(s))],
                ),
                (Some(a), Some(s)) => {
                    let a = normalize_axis(cx.op, *a, s.len())?;
                    let mut o = s.clone();
                    o[a] = Dim::Unknown;
                    (Some(o), vec![s[a].clone()])
                }
                (Some(_), None) => (None, vec![Dim::Unknown]),
            };
            let i64s = |s: Shape| ValueType::tensor(DType::I64, s);
            Ok(vec![
                tensor_type(x.dtype, y),
                i64s(vec![Dim::Unknown]),
                i64s(inv),
                i64s(vec![Dim::Unknown]),
            ])
        }
        TensorOp::DepthToSpace { blocksize, .. } | TensorOp::SpaceToDepth { blocksize, .. } => {
            let x = cx.tensor(0)?;
            let b = *blocksize as usize;
            let shape = match &x.shape {
                Some(s) if s.len() == 4 => {
                    let bb = Dim::Known(b);
                    Some(if matches!(op, TensorOp::DepthToSpace { .. }) {
                        let c = match s[1].known() {
                            Some(c) if c % (b * b) == 0 => Dim::Known(c / (b * b)),
                            Some(c) => return Err(cx.err(format!("channels {c} not divisible by blocksize^2"))),
                            None => Dim::Unknown,
                        };
                        vec![s[0].clone(), c, mul_dim(&s[2], &bb), mul_dim(&s[3], &bb)]
                    } else {
                        let div = |d: &Dim| d.known().map_or(Dim::Unknown, |v| Dim::Known(v / b));
                        vec![s[0].clone(), mul_dim(&s[1], &Dim::Known(b * b)), div(&s[2]), div(&s[3])]
                    })
                }
                Some(s) => return Err(cx.err(format!("input must have rank 4, got {}", s.len()))),
                None => Some(vec![Dim::Unknown; 4]),
            };
            one(TensorType { dtype: x.dtype, shape })
        }
        TensorOp::EyeLike { dtype, .. } => {
            let x = cx.tensor(0)?;
            if let Some(r) = x.rank() {
                if r != 2 {
                    return Err(cx.err(format!("input must have rank 2, got {r}")));
                }
            }
            one(TensorType {
                dtype: dtype.or(x.dtype),
                shape: x.shape,
            })
        }
        TensorOp::CenterCropPad { axes } => {
            let x = cx.tensor(0)?;
            let Some(s) = &x.shape else { return one(x) };
            let mut out = s.clone();
            let axes: Vec<i64> = axes.clone().unwrap_or_else(|| (0..s.len() as i64).collect());
            let axes = normalize_axes(cx.op, &axes, s.len())?;
            match cx.const_i64s(1) {
                Some(v) if v.len() == axes.len() => {
                    for (i, &a) in axes.iter().enumerate() {
                        out[a] = Dim::Known(v[i].max(0) as usize);
                    }
                }
                Some(v) => return Err(cx.err(format!("shape has {} entries for {} axes", v.len(), axes.len()))),
                None => {
                    for &a in &axes {
                        out[a] = Dim::Unknown;
                    }
                }
            }
            one(TensorType {
                dtype: x.dtype,
                shape: Some(out),
            })
        }
    }
}

/// Shape's start/end clamped to [0, rank].
pub fn shape_bounds(start: i64, end: Option<i64>, rank: usize) -> (usize, usize) {
    let r = rank as i64;
    let fix = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    (fix(start), fix(end.unwrap_or(r)))
}
