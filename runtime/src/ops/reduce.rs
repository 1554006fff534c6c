//! Kernels of the reduce family: Reduce*, ArgMax/ArgMin, CumSum/CumProd,
//! TopK, the quantization ops and the classification losses.
//!
//! Everything that walks an axis splits the tensor into `(outer, len, inner)`
//! around it, so inner loops run over contiguous slices.

use super::{opt_tensor_in, tensor_in, tensors_out, EvalCtx};
use crate::error::{invalid, unsupported, OpResult};
use carbide_ir::ndarray::{ArrayD, IxDyn};
use carbide_ir::ops::reduce::ReduceOp;
use carbide_ir::{bf16, f16, DType, Tensor, Value};

mod axes;
mod loss;
mod quant;
mod scan;
mod small;

/// Below this many input elements kernels stay on one thread.
pub(crate) const PAR_MIN: usize = 1 << 15;

/// The numeric element types the kernels are generic over. Floats compute
/// in f64; integers in wrapping i128 (exact for every ONNX integer type).
pub(crate) trait Num: Copy + Send + Sync + PartialOrd + Default + 'static {
    const FLOAT: bool;
    fn to_f64(self) -> f64;
    /// Saturating for integers (so -inf gives the type's minimum).
    fn from_f64(v: f64) -> Self;
    fn to_i128(self) -> i128;
    /// Wrapping (truncating) for integers.
    fn from_i128(v: i128) -> Self;
    fn is_nan(self) -> bool {
        self.partial_cmp(&self).is_none()
    }
}

macro_rules! impl_num_int {
    ($($t:ty),*) => {$(
        impl Num for $t {
            const FLOAT: bool = false;
            fn to_f64(self) -> f64 { self as f64 }
            fn from_f64(v: f64) -> Self { v as $t }
            fn to_i128(self) -> i128 { self as i128 }
            fn from_i128(v: i128) -> Self { v as $t }
        }
    )*};
}
impl_num_int!(i8, i16, i32, i64, u8, u16, u32, u64);

impl Num for f32 {
    const FLOAT: bool = true;
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_i128(self) -> i128 {
        self as i128
    }
    fn from_i128(v: i128) -> Self {
        v as f32
    }
}

impl Num for f64 {
    const FLOAT: bool = true;
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_i128(self) -> i128 {
        self as i128
    }
    fn from_i128(v: i128) -> Self {
        v as f64
    }
}

impl Num for f16 {
    const FLOAT: bool = true;
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
    fn to_i128(self) -> i128 {
        f16::to_f64(self) as i128
    }
    fn from_i128(v: i128) -> Self {
        f16::from_f64(v as f64)
    }
}

impl Num for bf16 {
    const FLOAT: bool = true;
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
    fn from_f64(v: f64) -> Self {
        bf16::from_f64(v)
    }
    fn to_i128(self) -> i128 {
        bf16::to_f64(self) as i128
    }
    fn from_i128(v: i128) -> Self {
        bf16::from_f64(v as f64)
    }
}

/// Runs `$body` with `$a` bound to the array of any numeric tensor (floats
/// and integers, not bool/string/small); the body yields
/// `OpResult<ArrayD<T>>` of the same element type, rebuilt into a tensor.
/// Evaluates to `Option<OpResult<Tensor>>` (`None` for other dtypes).
macro_rules! num_map {
    ($t:expr, $a:ident => $body:expr) => {{
        use carbide_ir::Tensor as __T;
        match $t {
            __T::F32($a) => Some($body.map(__T::F32)),
            __T::F64($a) => Some($body.map(__T::F64)),
            __T::F16($a) => Some($body.map(__T::F16)),
            __T::BF16($a) => Some($body.map(__T::BF16)),
            __T::I8($a) => Some($body.map(__T::I8)),
            __T::I16($a) => Some($body.map(__T::I16)),
            __T::I32($a) => Some($body.map(__T::I32)),
            __T::I64($a) => Some($body.map(__T::I64)),
            __T::U8($a) => Some($body.map(__T::U8)),
            __T::U16($a) => Some($body.map(__T::U16)),
            __T::U32($a) => Some($body.map(__T::U32)),
            __T::U64($a) => Some($body.map(__T::U64)),
            _ => None,
        }
    }};
}

/// Like [`num_map!`] but the body's `OpResult<R>` is returned as is.
macro_rules! num_apply {
    ($t:expr, $a:ident => $body:expr) => {{
        use carbide_ir::Tensor as __T;
        match $t {
            __T::F32($a) => Some($body),
            __T::F64($a) => Some($body),
            __T::F16($a) => Some($body),
            __T::BF16($a) => Some($body),
            __T::I8($a) => Some($body),
            __T::I16($a) => Some($body),
            __T::I32($a) => Some($body),
            __T::I64($a) => Some($body),
            __T::U8($a) => Some($body),
            __T::U16($a) => Some($body),
            __T::U32($a) => Some($body),
            __T::U64($a) => Some($body),
            _ => None,
        }
    }};
}
pub(crate) use super::check_elems;
pub(crate) use {num_apply, num_map};

/// Builds an array from a row-major vector whose length matches `shape`.
pub(crate) fn array_from<T>(shape: &[usize], v: Vec<T>) -> OpResult<ArrayD<T>> {
    ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| invalid(format!("internal shape error: {e}")))
}

/// `(outer, len, inner)` of `shape` around `axis`.
pub(crate) fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

/// A float tensor of dtype `d` from f64 values.
pub(crate) fn float_tensor(d: DType, shape: &[usize], v: Vec<f64>) -> OpResult<Tensor> {
    Ok(match d {
        DType::F32 => Tensor::F32(array_from(shape, v.into_iter().map(|x| x as f32).collect())?),
        DType::F64 => Tensor::F64(array_from(shape, v)?),
        DType::F16 => Tensor::F16(array_from(shape, v.into_iter().map(f16::from_f64).collect())?),
        DType::BF16 => Tensor::BF16(array_from(shape, v.into_iter().map(bf16::from_f64).collect())?),
        d => return Err(unsupported(format!("output dtype {d} (expected a float type)"))),
    })
}

/// Reads a normalized axis from a scalar (or one-element) integer tensor.
pub(crate) fn scalar_axis(t: &Tensor, rank: usize, what: &str) -> OpResult<usize> {
    let v = t
        .to_i64_vec()
        .ok_or_else(|| invalid(format!("{what} must be an integer tensor, got {}", t.dtype())))?;
    if v.len() != 1 {
        return Err(invalid(format!("{what} must hold one value, got {}", v.len())));
    }
    norm_axis(v[0], rank)
}

/// Normalizes a possibly negative axis.
pub(crate) fn norm_axis(axis: i64, rank: usize) -> OpResult<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(invalid(format!("axis {axis} out of range for rank {rank}")));
    }
    Ok(a as usize)
}

pub fn eval(op: &ReduceOp, inputs: &[Option<&Value>], cx: &EvalCtx) -> OpResult<Vec<Value>> {
    let out = match op {
        ReduceOp::Reduce(r) => {
            let x = tensor_in(inputs, 0)?;
            let axes_in = opt_tensor_in(inputs, 1)?;
            vec![axes::eval_reduce(r, x, axes_in)?]
        }
        ReduceOp::ArgMax(a) => vec![scan::arg_extreme(a, tensor_in(inputs, 0)?, true)?],
        ReduceOp::ArgMin(a) => vec![scan::arg_extreme(a, tensor_in(inputs, 0)?, false)?],
        ReduceOp::CumSum(c) => vec![scan::cumulative(
            c,
            tensor_in(inputs, 0)?,
            tensor_in(inputs, 1)?,
            false,
        )?],
        ReduceOp::CumProd(c) => vec![scan::cumulative(c, tensor_in(inputs, 0)?, tensor_in(inputs, 1)?, true)?],
        ReduceOp::TopK(t) => scan::top_k(t, tensor_in(inputs, 0)?, opt_tensor_in(inputs, 1)?)?,
        ReduceOp::QuantizeLinear(q) => {
            vec![quant::quantize(
                q,
                tensor_in(inputs, 0)?,
                tensor_in(inputs, 1)?,
                opt_tensor_in(inputs, 2)?,
            )?]
        }
        ReduceOp::DequantizeLinear(d) => {
            vec![quant::dequantize(
                d,
                tensor_in(inputs, 0)?,
                tensor_in(inputs, 1)?,
                opt_tensor_in(inputs, 2)?,
            )?]
        }
        ReduceOp::DynamicQuantizeLinear => quant::dynamic_quantize(tensor_in(inputs, 0)?)?,
        ReduceOp::SoftmaxCrossEntropyLoss(l) => loss::loss(
            l,
            true,
            tensor_in(inputs, 0)?,
            tensor_in(inputs, 1)?,
            opt_tensor_in(inputs, 2)?,
            cx.num_outputs > 1,
        )?,
        ReduceOp::NegativeLogLikelihoodLoss(l) => loss::loss(
            l,
            false,
            tensor_in(inputs, 0)?,
            tensor_in(inputs, 1)?,
            opt_tensor_in(inputs, 2)?,
            false,
        )?,
    };
    Ok(tensors_out(out))
}
