//! Helpers shared by the tensor-family kernels: checked shape arithmetic,
//! integer inputs, a generic element trait, and index-map based copies.

use super::super::{opt_tensor_in, tensor_in};
use crate::error::{invalid, unsupported, OpResult};
use carbide_ir::ndarray::{ArrayD, IxDyn};
use carbide_ir::{bf16, f16, DType, Tensor, Value};
use std::cmp::Ordering;

/// Marks "no source element" (use the fill value) in an index map.
pub const NONE: usize = usize::MAX;

/// Converts a shape read from a tensor, rejecting negative dims and huge counts.
pub fn to_shape(v: &[i64], what: &str) -> OpResult<Vec<usize>> {
    let s = v
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| invalid(format!("{what} {v:?} has a negative dim"))))
        .collect::<OpResult<Vec<usize>>>()?;
    check_elems(&s)?;
    Ok(s)
}

/// An integer input read as i64s.
pub fn ints_in(inputs: &[Option<&Value>], i: usize, what: &str) -> OpResult<Vec<i64>> {
    tensor_in(inputs, i)?
        .to_i64_vec()
        .ok_or_else(|| invalid(format!("{what} (input {i}) must be an integer tensor")))
}

/// An optional integer input read as i64s.
pub fn opt_ints_in(inputs: &[Option<&Value>], i: usize, what: &str) -> OpResult<Option<Vec<i64>>> {
    match opt_tensor_in(inputs, i)? {
        None => Ok(None),
        Some(t) => t
            .to_i64_vec()
            .map(Some)
            .ok_or_else(|| invalid(format!("{what} (input {i}) must be an integer tensor"))),
    }
}

/// Normalizes a possibly negative axis against `rank`.
pub fn norm_axis(axis: i64, rank: usize) -> OpResult<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(invalid(format!("axis {axis} out of range for rank {rank}")));
    }
    Ok(a as usize)
}

/// Normalizes axes, rejecting repeats.
pub fn norm_axes(axes: &[i64], rank: usize) -> OpResult<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = norm_axis(a, rank)?;
        if out.contains(&n) {
            return Err(invalid(format!("axis {a} is repeated in {axes:?}")));
        }
        out.push(n);
    }
    Ok(out)
}

/// Normalizes an index into a dim of extent `d` (negative counts from the end).
pub fn norm_index(i: i64, d: usize, what: &str) -> OpResult<usize> {
    let n = d as i64;
    let j = if i < 0 { i + n } else { i };
    if j < 0 || j >= n {
        return Err(invalid(format!("{what} {i} out of range for dim {d}")));
    }
    Ok(j as usize)
}

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Element types held in [`Tensor`]s, for kernels that need several inputs
/// of one dtype or a total order.
pub trait Elem: Clone + Default + PartialEq + Send + Sync + 'static {
    /// The array inside `t` if `t` holds this element type (u8 covers
    /// both U8 and Small; callers compare dtypes first).
    fn arr(t: &Tensor) -> Option<&ArrayD<Self>>;
    /// A total order (floats: -0 equals +0, NaNs after numbers) for sorting.
    fn tcmp(&self, other: &Self) -> Ordering;
}

macro_rules! elem_int {
    ($($t:ty => $v:ident),*) => {$(
        impl Elem for $t {
            fn arr(t: &Tensor) -> Option<&ArrayD<Self>> {
                match t { Tensor::$v(a) => Some(a), _ => None }
            }
            fn tcmp(&self, other: &Self) -> Ordering { self.cmp(other) }
        }
    )*};
}
elem_int!(i8 => I8, i16 => I16, i32 => I32, i64 => I64, u16 => U16, u32 => U32, u64 => U64, bool => Bool, String => String);

impl Elem for u8 {
    fn arr(t: &Tensor) -> Option<&ArrayD<Self>> {
        match t {
            Tensor::U8(a) | Tensor::Small(_, a) => Some(a),
            _ => None,
        }
    }
    fn tcmp(&self, other: &Self) -> Ordering {
        self.cmp(other)
    }
}

macro_rules! elem_float {
    ($($t:ty => $v:ident, $f:expr),*) => {$(
        impl Elem for $t {
            fn arr(t: &Tensor) -> Option<&ArrayD<Self>> {
                match t { Tensor::$v(a) => Some(a), _ => None }
            }
            fn tcmp(&self, other: &Self) -> Ordering {
                let f = $f;
                let (a, b): (f64, f64) = (f(*self), f(*other));
                if a == b { Ordering::Equal } else { a.total_cmp(&b) }
            }
        }
    )*};
}
elem_float!(f32 => F32, |v: f32| v as f64, f64 => F64, |v: f64| v, f16 => F16, |v: f16| v.to_f64(),
    bf16 => BF16, |v: bf16| v.to_f64());

/// The array of `t` with the element type of `like` (dtypes must match).
pub fn same<'a, T: Elem>(_like: &ArrayD<T>, t: &'a Tensor) -> OpResult<&'a ArrayD<T>> {
    T::arr(t).ok_or_else(|| invalid(format!("expected a tensor of the same dtype, got {}", t.dtype())))
}

/// Copies `src` (any layout) through a flat index map into a new array of
/// `shape`; indices equal to [`NONE`] take `fill`. Indices must be in range.
pub fn take_map<T: Clone>(src: &ArrayD<T>, idx: &[usize], fill: &T, shape: &[usize]) -> OpResult<ArrayD<T>> {
    let std = src.as_standard_layout();
    let s = std
        .as_slice()
        .ok_or_else(|| invalid("internal: non-contiguous array"))?;
    let v: Vec<T> = idx
        .iter()
        .map(|&i| {
            if i == NONE {
                fill.clone()
            } else {
                s.get(i).cloned().unwrap_or_else(|| fill.clone())
            }
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| invalid(format!("internal: {e}")))
}

/// Builds the flat source index of every output element from one map per
/// axis (output coordinate -> input coordinate or [`NONE`]).
pub fn compose_maps(maps: &[Vec<usize>], in_shape: &[usize]) -> OpResult<Vec<usize>> {
    let out_shape: Vec<usize> = maps.iter().map(|m| m.len()).collect();
    let n = check_elems(&out_shape)?;
    let st = strides(in_shape);
    let mut idx = Vec::with_capacity(n);
    idx.push(0usize);
    for (ax, m) in maps.iter().enumerate() {
        let mut next = Vec::with_capacity(idx.len() * m.len());
        for &p in &idx {
            for &c in m {
                next.push(if p == NONE || c == NONE { NONE } else { p + c * st[ax] });
            }
        }
        idx = next;
    }
    Ok(idx)
}

/// Same data in a new row-major shape (element counts must match).
pub fn reshape(t: &Tensor, shape: &[usize]) -> OpResult<Tensor> {
    let n = check_elems(shape)?;
    if n != t.len() {
        return Err(invalid(format!(
            "cannot reshape {:?} ({} elements) to {shape:?}",
            t.shape(),
            t.len()
        )));
    }
    Ok(carbide_ir::tensor_map!(t, a => {
        let owned = a.as_standard_layout().into_owned();
        owned.into_shape_with_order(IxDyn(shape)).map_err(|e| invalid(format!("internal: {e}")))?
    }))
}

/// A rank-0 tensor of `dtype` holding `v` (numeric and bool dtypes; zero
/// for every dtype).
pub fn scalar_of(dtype: DType, v: f64) -> OpResult<Tensor> {
    let s = IxDyn(&[]);
    Ok(match dtype {
        DType::F32 => Tensor::F32(ArrayD::from_elem(s, v as f32)),
        DType::F64 => Tensor::F64(ArrayD::from_elem(s, v)),
        DType::F16 => Tensor::F16(ArrayD::from_elem(s, f16::from_f64(v))),
        DType::BF16 => Tensor::BF16(ArrayD::from_elem(s, bf16::from_f64(v))),
        DType::I8 => Tensor::I8(ArrayD::from_elem(s, v as i8)),
        DType::I16 => Tensor::I16(ArrayD::from_elem(s, v as i16)),
        DType::I32 => Tensor::I32(ArrayD::from_elem(s, v as i32)),
        DType::I64 => Tensor::I64(ArrayD::from_elem(s, v as i64)),
        DType::U8 => Tensor::U8(ArrayD::from_elem(s, v as u8)),
        DType::U16 => Tensor::U16(ArrayD::from_elem(s, v as u16)),
        DType::U32 => Tensor::U32(ArrayD::from_elem(s, v as u32)),
        DType::U64 => Tensor::U64(ArrayD::from_elem(s, v as u64)),
        DType::Bool => Tensor::Bool(ArrayD::from_elem(s, v != 0.0)),
        d if v == 0.0 => Tensor::zeros(d, &[]).ok_or_else(|| unsupported(format!("{d} tensors")))?,
        d => return Err(unsupported(format!("the value {v} as {d}"))),
    })
}

/// Calls `f(flat_index, coords)` for every position of `shape` in row-major order.
pub fn for_each_index(shape: &[usize], mut f: impl FnMut(usize, &[usize]) -> OpResult<()>) -> OpResult<()> {
    let n: usize = shape.iter().product();
    if n == 0 {
        return Ok(());
    }
    let mut c = vec![0usize; shape.len()];
    for flat in 0..n {
        f(flat, &c)?;
        for ax in (0..shape.len()).rev() {
            c[ax] += 1;
            if c[ax] < shape[ax] {
                break;
            }
            c[ax] = 0;
        }
    }
    Ok(())
}

/// Arithmetic for Scatter reductions.
pub trait Arith: Elem + Copy {
    fn add(a: Self, b: Self) -> Self;
    fn mul(a: Self, b: Self) -> Self;
    fn max(a: Self, b: Self) -> Self;
    fn min(a: Self, b: Self) -> Self;
}

macro_rules! arith_int {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            fn add(a: Self, b: Self) -> Self { a.wrapping_add(b) }
            fn mul(a: Self, b: Self) -> Self { a.wrapping_mul(b) }
            fn max(a: Self, b: Self) -> Self { Ord::max(a, b) }
            fn min(a: Self, b: Self) -> Self { Ord::min(a, b) }
        }
    )*};
}
arith_int!(i8, i16, i32, i64, u8, u16, u32, u64);

macro_rules! arith_float {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            fn add(a: Self, b: Self) -> Self { a + b }
            fn mul(a: Self, b: Self) -> Self { a * b }
            fn max(a: Self, b: Self) -> Self { if b > a || a.is_nan() { b } else { a } }
            fn min(a: Self, b: Self) -> Self { if b < a || a.is_nan() { b } else { a } }
        }
    )*};
}
arith_float!(f32, f64, f16, bf16);

impl Arith for bool {
    fn add(a: Self, b: Self) -> Self {
        a || b
    }
    fn mul(a: Self, b: Self) -> Self {
        a && b
    }
    fn max(a: Self, b: Self) -> Self {
        a || b
    }
    fn min(a: Self, b: Self) -> Self {
        a && b
    }
}

/// Like `tensor_zip_map!` but only over dtypes with [`Arith`] (no strings,
/// no small formats): evaluates to `Option<Tensor>`.
macro_rules! arith_zip_map {
    ($x:expr, $y:expr, ($a:ident, $b:ident) => $body:expr) => {{
        use carbide_ir::Tensor as __T;
        match ($x, $y) {
            (__T::F32($a), __T::F32($b)) => Some(__T::F32($body)),
            (__T::F64($a), __T::F64($b)) => Some(__T::F64($body)),
            (__T::F16($a), __T::F16($b)) => Some(__T::F16($body)),
            (__T::BF16($a), __T::BF16($b)) => Some(__T::BF16($body)),
            (__T::I8($a), __T::I8($b)) => Some(__T::I8($body)),
            (__T::I16($a), __T::I16($b)) => Some(__T::I16($body)),
            (__T::I32($a), __T::I32($b)) => Some(__T::I32($body)),
            (__T::I64($a), __T::I64($b)) => Some(__T::I64($body)),
            (__T::U8($a), __T::U8($b)) => Some(__T::U8($body)),
            (__T::U16($a), __T::U16($b)) => Some(__T::U16($body)),
            (__T::U32($a), __T::U32($b)) => Some(__T::U32($body)),
            (__T::U64($a), __T::U64($b)) => Some(__T::U64($body)),
            (__T::Bool($a), __T::Bool($b)) => Some(__T::Bool($body)),
            _ => None,
        }
    }};
}
pub use crate::ops::{check_elems, MAX_ELEMS};
pub(crate) use arith_zip_map;
