//! Kernels that change shapes or make tensors from shapes: Identity,
//! Reshape, Flatten, Squeeze, Unsqueeze, Shape, Size, ConstantOfShape,
//! Range, EyeLike, Expand, Tile.

use super::util::{check_elems, ints_in, norm_axes, opt_ints_in, reshape as reshape_t, same, scalar_of, to_shape};
use crate::error::{invalid, unsupported, OpResult};
use crate::ops::tensor_in;
use carbide_ir::ndarray::{concatenate, ArrayD, Axis, IxDyn};
use carbide_ir::ops::tensor::shape_bounds;
use carbide_ir::{bf16, f16, tensor_map, DType, Tensor, Value};

fn out(t: Tensor) -> OpResult<Vec<Value>> {
    Ok(vec![Value::Tensor(t)])
}

pub fn identity(inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
    match inputs.first().copied().flatten() {
        Some(v) => Ok(vec![v.clone()]),
        None => Err(invalid("input 0 is required")),
    }
}

/// Resolves a Reshape target (0 = copy, -1 = infer) against `in_shape`.
pub fn reshape_target(in_shape: &[usize], target: &[i64], allowzero: bool) -> OpResult<Vec<usize>> {
    let mut out = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &v) in target.iter().enumerate() {
        match v {
            0 if !allowzero => out.push(
                *in_shape
                    .get(i)
                    .ok_or_else(|| invalid(format!("shape[{i}] is 0 but the input has rank {}", in_shape.len())))?,
            ),
            -1 => {
                if infer_at.replace(i).is_some() {
                    return Err(invalid(format!("more than one -1 in shape {target:?}")));
                }
                out.push(1);
            }
            v if v < 0 => return Err(invalid(format!("invalid dim {v} in shape {target:?}"))),
            v => out.push(usize::try_from(v).map_err(|_| invalid("dim too large"))?),
        }
    }
    let total: usize = in_shape.iter().product();
    if let Some(k) = infer_at {
        let rest = check_elems(&out)?;
        if rest == 0 || !total.is_multiple_of(rest) {
            return Err(invalid(format!("cannot reshape {in_shape:?} to {target:?}")));
        }
        out[k] = total / rest;
    }
    if check_elems(&out)? != total {
        return Err(invalid(format!(
            "cannot reshape {in_shape:?} ({total} elements) to {target:?}"
        )));
    }
    Ok(out)
}

pub fn reshape(inputs: &[Option<&Value>], allowzero: bool, attr: Option<&[i64]>) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let target = match attr {
        Some(s) => s.to_vec(),
        None => ints_in(inputs, 1, "shape")?,
    };
    let s = reshape_target(x.shape(), &target, allowzero)?;
    out(reshape_t(x, &s)?)
}

pub fn flatten(inputs: &[Option<&Value>], axis: i64) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let r = x.rank() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a > r {
        return Err(invalid(format!("axis {axis} out of range for rank {r}")));
    }
    let s = x.shape();
    let a = a as usize;
    out(reshape_t(x, &[s[..a].iter().product(), s[a..].iter().product()])?)
}

pub fn squeeze(inputs: &[Option<&Value>], attr: Option<&[i64]>) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let axes = match attr {
        Some(a) => Some(a.to_vec()),
        None => opt_ints_in(inputs, 1, "axes")?,
    };
    let s = x.shape();
    let keep: Vec<usize> = match axes {
        Some(axes) => {
            let axes = norm_axes(&axes, s.len())?;
            for &a in &axes {
                if s[a] != 1 {
                    return Err(invalid(format!("cannot squeeze axis {a} of extent {}", s[a])));
                }
            }
            s.iter()
                .enumerate()
                .filter(|(i, _)| !axes.contains(i))
                .map(|(_, &d)| d)
                .collect()
        }
        None => s.iter().copied().filter(|&d| d != 1).collect(),
    };
    out(reshape_t(x, &keep)?)
}

pub fn unsqueeze(inputs: &[Option<&Value>], attr: Option<&[i64]>) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let axes = match attr {
        Some(a) => a.to_vec(),
        None => ints_in(inputs, 1, "axes")?,
    };
    let r = x.rank() + axes.len();
    let axes = norm_axes(&axes, r)?;
    let mut it = x.shape().iter();
    let s: Vec<usize> = (0..r)
        .map(|i| {
            if axes.contains(&i) {
                1
            } else {
                it.next().copied().unwrap_or(1)
            }
        })
        .collect();
    out(reshape_t(x, &s)?)
}

pub fn shape(inputs: &[Option<&Value>], start: i64, end: Option<i64>) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let (s, e) = shape_bounds(start, end, x.rank());
    let dims: Vec<i64> = if s < e {
        x.shape()[s..e].iter().map(|&d| d as i64).collect()
    } else {
        vec![]
    };
    out(Tensor::from_i64s(dims))
}

pub fn size(inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
    out(Tensor::scalar_i64(tensor_in(inputs, 0)?.len() as i64))
}

pub fn constant_of_shape(inputs: &[Option<&Value>], value: Option<&Tensor>) -> OpResult<Vec<Value>> {
    let s = to_shape(&ints_in(inputs, 0, "shape")?, "shape")?;
    let zero = Tensor::scalar_f32(0.0);
    let v = value.unwrap_or(&zero);
    out(tensor_map!(v, a => {
        let e = a.iter().next().cloned().ok_or_else(|| invalid("value must hold one element"))?;
        ArrayD::from_elem(IxDyn(&s), e)
    }))
}

/// One scalar input read as f64 (Range's start/limit/delta).
fn scalar_f64(t: &Tensor, what: &str) -> OpResult<f64> {
    match t.to_f64_vec() {
        Some(v) if v.len() == 1 => Ok(v[0]),
        _ => Err(invalid(format!("{what} must be a numeric scalar"))),
    }
}

pub fn range(inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
    let (a, b, c) = (tensor_in(inputs, 0)?, tensor_in(inputs, 1)?, tensor_in(inputs, 2)?);
    if a.dtype() != b.dtype() || a.dtype() != c.dtype() {
        return Err(invalid("start, limit and delta must have the same dtype"));
    }
    let d = a.dtype();
    if d.is_int() {
        let get = |t: &Tensor, w: &str| -> OpResult<i128> {
            match t.to_i64_vec() {
                Some(v) if v.len() == 1 => Ok(v[0] as i128),
                _ => Err(invalid(format!("{w} must be a scalar"))),
            }
        };
        let (s, l, dl) = (get(a, "start")?, get(b, "limit")?, get(c, "delta")?);
        if dl == 0 {
            return Err(invalid("delta must not be 0"));
        }
        let span = l - s;
        let n = if (span > 0) == (dl > 0) && span != 0 {
            (span.abs() + dl.abs() - 1) / dl.abs()
        } else {
            0
        };
        let n = usize::try_from(n).map_err(|_| invalid("range too long"))?;
        check_elems(&[n])?;
        let iv: Vec<i64> = (0..n as i128).map(|i| (s + i * dl) as i64).collect();
        let t = Tensor::from_i64s(iv);
        return out(cast_int(&t, d)?);
    }
    let (s, l, dl) = (
        scalar_f64(a, "start")?,
        scalar_f64(b, "limit")?,
        scalar_f64(c, "delta")?,
    );
    if dl == 0.0 || !dl.is_finite() || !s.is_finite() || !l.is_finite() {
        return Err(invalid("range needs finite start/limit and a finite non-zero delta"));
    }
    let nf = ((l - s) / dl).ceil().max(0.0);
    if nf > super::util::MAX_ELEMS as f64 {
        return Err(invalid(format!("range of {nf} elements is too long")));
    }
    let n = nf as usize;
    let shape = IxDyn(&[n]);
    let err = |e| invalid(format!("internal: {e}"));
    out(match d {
        DType::F32 => {
            let (s, dl) = (s as f32, dl as f32);
            Tensor::F32(ArrayD::from_shape_vec(shape, (0..n).map(|i| s + i as f32 * dl).collect()).map_err(err)?)
        }
        DType::F64 => {
            Tensor::F64(ArrayD::from_shape_vec(shape, (0..n).map(|i| s + i as f64 * dl).collect()).map_err(err)?)
        }
        DType::F16 => Tensor::F16(
            ArrayD::from_shape_vec(
                shape,
                (0..n).map(|i| f16::from_f32(s as f32 + i as f32 * dl as f32)).collect(),
            )
            .map_err(err)?,
        ),
        DType::BF16 => Tensor::BF16(
            ArrayD::from_shape_vec(
                shape,
                (0..n)
                    .map(|i| bf16::from_f32(s as f32 + i as f32 * dl as f32))
                    .collect(),
            )
            .map_err(err)?,
        ),
        d => return Err(unsupported(format!("Range on {d}"))),
    })
}

/// Converts an i64 tensor to another integer dtype (values known to fit).
fn cast_int(t: &Tensor, d: DType) -> OpResult<Tensor> {
    let v = t.to_i64_vec().ok_or_else(|| invalid("internal: not an int tensor"))?;
    let shape = IxDyn(t.shape());
    let err = |e| invalid(format!("internal: {e}"));
    Ok(match d {
        DType::I64 => t.clone(),
        DType::I32 => Tensor::I32(ArrayD::from_shape_vec(shape, v.iter().map(|&x| x as i32).collect()).map_err(err)?),
        DType::I16 => Tensor::I16(ArrayD::from_shape_vec(shape, v.iter().map(|&x| x as i16).collect()).map_err(err)?),
        DType::I8 => Tensor::I8(ArrayD::from_shape_vec(shape, v.iter().map(|&x| x as i8).collect()).map_err(err)?),
        DType::U8 => Tensor::U8(ArrayD::from_shape_vec(shape, v.iter().map(|&x| x as u8).collect()).map_err(err)?),
        DType::U16 => Tensor::U16(ArrayD::from_shape_vec(shape, v.iter().map(|&x| x as u16).collect()).map_err(err)?),
        DType::U32 => Tensor::U32(ArrayD::from_shape_vec(shape, v.iter().map(|&x| x as u32).collect()).map_err(err)?),
        DType::U64 => Tensor::U64(ArrayD::from_shape_vec(shape, v.iter().map(|&x| x as u64).collect()).map_err(err)?),
        d => return Err(unsupported(format!("Range on {d}"))),
    })
}

pub fn eye_like(inputs: &[Option<&Value>], dtype: Option<DType>, k: i64) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    if x.rank() != 2 {
        return Err(invalid(format!("input must have rank 2, got shape {:?}", x.shape())));
    }
    let d = dtype.unwrap_or(x.dtype());
    let (rows, cols) = (x.shape()[0], x.shape()[1]);
    let zeros = Tensor::zeros(d, &[rows, cols]).ok_or_else(|| unsupported(format!("EyeLike to {d}")))?;
    let one = scalar_of(d, 1.0)?;
    out(tensor_map!(&zeros, a => {
        let v = same(a, &one)?.iter().next().cloned().unwrap_or_default();
        set_diagonal(a.clone(), v, k)
    }))
}

/// Writes `v` on the k-th diagonal of a matrix.
fn set_diagonal<T: Clone>(mut a: ArrayD<T>, v: T, k: i64) -> ArrayD<T> {
    let (rows, cols) = (a.shape()[0], a.shape()[1]);
    for i in 0..rows {
        let Some(j) = (i as i64).checked_add(k) else {
            continue;
        };
        if j >= 0 && (j as usize) < cols {
            a[[i, j as usize]] = v.clone();
        }
    }
    a
}

/// Bidirectional broadcast of two concrete shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> OpResult<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut o = vec![1; r];
    for (i, o) in o.iter_mut().enumerate() {
        let x = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let y = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        *o = match (x, y) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(invalid(format!("cannot broadcast {a:?} with {b:?}"))),
        };
    }
    Ok(o)
}

pub fn expand(inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let target = ints_in(inputs, 1, "shape")?;
    let target: Vec<usize> = target
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| invalid(format!("negative dim in shape {target:?}"))))
        .collect::<OpResult<_>>()?;
    let s = broadcast(x.shape(), &target)?;
    check_elems(&s)?;
    out(tensor_map!(x, a => a
        .broadcast(IxDyn(&s))
        .ok_or_else(|| invalid(format!("cannot expand {:?} to {s:?}", x.shape())))?
        .to_owned()))
}

pub fn tile(inputs: &[Option<&Value>], legacy: bool) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let r = x.rank();
    let reps: Vec<usize> = if legacy {
        let tiles = ints_in(inputs, 1, "tiles")?;
        let axis = ints_in(inputs, 2, "axis")?;
        let (&[t], &[a]) = (tiles.as_slice(), axis.as_slice()) else {
            return Err(invalid("tiles and axis must be scalars"));
        };
        let a = super::util::norm_axis(a, r)?;
        let t = usize::try_from(t).map_err(|_| invalid("negative tiles"))?;
        (0..r).map(|i| if i == a { t } else { 1 }).collect()
    } else {
        let reps = ints_in(inputs, 1, "repeats")?;
        if reps.len() != r {
            return Err(invalid(format!("repeats has {} entries for rank {r}", reps.len())));
        }
        reps.iter()
            .map(|&v| usize::try_from(v).map_err(|_| invalid(format!("negative repeat in {reps:?}"))))
            .collect::<OpResult<_>>()?
    };
    let s: Vec<usize> = x
        .shape()
        .iter()
        .zip(&reps)
        .map(|(&d, &k)| d.checked_mul(k).ok_or_else(|| invalid("tiled shape overflows")))
        .collect::<OpResult<_>>()?;
    check_elems(&s)?;
    if s.contains(&0) {
        return out(Tensor::zeros(x.dtype(), &s).ok_or_else(|| unsupported(format!("Tile on {}", x.dtype())))?);
    }
    out(tensor_map!(x, a => {
        let mut cur: ArrayD<_> = a.as_standard_layout().into_owned();
        for (ax, &k) in reps.iter().enumerate() {
            if k != 1 {
                let views = vec![cur.view(); k];
                cur = concatenate(Axis(ax), &views).map_err(|e| invalid(format!("internal: {e}")))?;
            }
        }
        cur
    }))
}
