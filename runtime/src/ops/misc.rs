//! Kernels of the misc op family (see `carbide_ir::ops::misc`): recurrent
//! nets, signal processing, strings, random generators, training optimizers
//! and the `ai.onnx.ml` ops. Shared numeric helpers live here.

pub(crate) use super::check_elems;
use super::EvalCtx;
use crate::error::{invalid, unsupported, OpResult};
use carbide_ir::ops::MiscOp;
use carbide_ir::{DType, Tensor, Value};
use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};
use num_traits::Float;

mod ml;
mod random;
mod rnn;
mod signal;
mod text;
mod training;

pub fn eval(op: &MiscOp, inputs: &[Option<&Value>], cx: &EvalCtx) -> OpResult<Vec<Value>> {
    match op {
        MiscOp::Rnn(a) => rnn::eval(a, inputs, cx),
        MiscOp::Dft(_) | MiscOp::Stft { .. } | MiscOp::Window(_) | MiscOp::MelWeightMatrix { .. } => {
            signal::eval(op, inputs)
        }
        MiscOp::StringNormalizer(_)
        | MiscOp::StringConcat
        | MiscOp::StringSplit { .. }
        | MiscOp::RegexFullMatch { .. }
        | MiscOp::TfIdfVectorizer(_) => text::eval(op, inputs),
        MiscOp::Random(_) | MiscOp::Multinomial { .. } | MiscOp::Bernoulli { .. } => random::eval(op, inputs, cx),
        MiscOp::Adagrad(_) | MiscOp::Adam(_) | MiscOp::Momentum(_) => training::eval(op, inputs, cx),
        MiscOp::ArrayFeatureExtractor
        | MiscOp::Binarizer { .. }
        | MiscOp::LabelEncoder(_)
        | MiscOp::TreeEnsemble(_) => ml::eval(op, inputs),
    }
}

/// Float element types the numeric kernels compute in (f32 for f32/f16/bf16,
/// f64 for f64), with the matrix product they need.
pub(crate) trait Real: Float + Send + Sync + std::fmt::Debug + 'static {
    /// `c = a · bᵀ + beta · c` with a: m×k, b: n×k, c: m×n, all row-major.
    fn gemm_abt(m: usize, k: usize, n: usize, a: &[Self], b: &[Self], beta: Self, c: &mut [Self]) -> OpResult<()>;
    fn from_f64c(v: f64) -> Self;
}

fn gemm_check(m: usize, k: usize, n: usize, a: usize, b: usize, c: usize) -> OpResult<()> {
    let fits = |rows: usize, cols: usize, len: usize| rows.checked_mul(cols).is_some_and(|need| need <= len);
    if !fits(m, k, a) || !fits(n, k, b) || !fits(m, n, c) {
        return Err(invalid(format!("matrix product {m}x{k} by {k}x{n}: operand too small")));
    }
    Ok(())
}

/// `Real` for a float type whose product is `matrixmultiply::$gemm`.
macro_rules! real_impl {
    ($t:ty, $gemm:ident) => {
        impl Real for $t {
            fn gemm_abt(m: usize, k: usize, n: usize, a: &[$t], b: &[$t], beta: $t, c: &mut [$t]) -> OpResult<()> {
                gemm_check(m, k, n, a.len(), b.len(), c.len())?;
                if m == 0 || n == 0 {
                    return Ok(());
                }
                // SAFETY: the operand lengths were checked against m, k, n above.
                unsafe {
                    matrixmultiply::$gemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        k as isize,
                        1,
                        b.as_ptr(),
                        1,
                        k as isize,
                        beta,
                        c.as_mut_ptr(),
                        n as isize,
                        1,
                    );
                }
                Ok(())
            }
            fn from_f64c(v: f64) -> $t {
                v as $t
            }
        }
    };
}
real_impl!(f32, sgemm);
real_impl!(f64, dgemm);

/// A float tensor's values as f32 (row-major); `None` for other dtypes.
pub(crate) fn f32s(t: &Tensor) -> Option<Vec<f32>> {
    Some(match t {
        Tensor::F32(a) => a.iter().copied().collect(),
        Tensor::F16(a) => a.iter().map(|v| v.to_f32()).collect(),
        Tensor::BF16(a) => a.iter().map(|v| v.to_f32()).collect(),
        Tensor::F64(a) => a.iter().map(|&v| v as f32).collect(),
        _ => return None,
    })
}

/// A float tensor's values as f64 (row-major); `None` for other dtypes.
pub(crate) fn f64s(t: &Tensor) -> Option<Vec<f64>> {
    match t {
        Tensor::F32(_) | Tensor::F64(_) | Tensor::F16(_) | Tensor::BF16(_) => t.to_f64_vec(),
        _ => None,
    }
}

/// Builds a float tensor of `dtype` from f32 values (rounding for f16/bf16).
pub(crate) fn from_f32s(dtype: DType, shape: &[usize], v: Vec<f32>) -> OpResult<Tensor> {
    let s = IxDyn(shape);
    let bad = |_| invalid("internal: element count does not match shape");
    Ok(match dtype {
        DType::F32 => Tensor::F32(ArrayD::from_shape_vec(s, v).map_err(bad)?),
        DType::F64 => Tensor::F64(ArrayD::from_shape_vec(s, v.into_iter().map(f64::from).collect()).map_err(bad)?),
        DType::F16 => Tensor::F16(ArrayD::from_shape_vec(s, v.into_iter().map(f16::from_f32).collect()).map_err(bad)?),
        DType::BF16 => {
            Tensor::BF16(ArrayD::from_shape_vec(s, v.into_iter().map(bf16::from_f32).collect()).map_err(bad)?)
        }
        d => return Err(unsupported(format!("{d} output"))),
    })
}

/// Builds a tensor of any numeric `dtype` from f64 values (cast like numpy's
/// astype: floats round, ints truncate).
pub(crate) fn from_f64s(dtype: DType, shape: &[usize], v: Vec<f64>) -> OpResult<Tensor> {
    let s = IxDyn(shape);
    let bad = |_| invalid("internal: element count does not match shape");
    macro_rules! mk {
        ($var:ident, $f:expr) => {
            Tensor::$var(ArrayD::from_shape_vec(s, v.into_iter().map($f).collect()).map_err(bad)?)
        };
    }
    Ok(match dtype {
        DType::F32 => mk!(F32, |x| x as f32),
        DType::F64 => mk!(F64, |x| x),
        DType::F16 => mk!(F16, f16::from_f64),
        DType::BF16 => mk!(BF16, bf16::from_f64),
        DType::I8 => mk!(I8, |x| x as i8),
        DType::I16 => mk!(I16, |x| x as i16),
        DType::I32 => mk!(I32, |x| x as i32),
        DType::I64 => mk!(I64, |x| x as i64),
        DType::U8 => mk!(U8, |x| x as u8),
        DType::U16 => mk!(U16, |x| x as u16),
        DType::U32 => mk!(U32, |x| x as u32),
        DType::U64 => mk!(U64, |x| x as u64),
        DType::Bool => mk!(Bool, |x| x != 0.0),
        d => return Err(unsupported(format!("{d} output"))),
    })
}

/// A scalar (or one-element) integer input.
pub(crate) fn scalar_i64(t: &Tensor, what: &str) -> OpResult<i64> {
    match t.to_i64_vec().as_deref() {
        Some([v]) => Ok(*v),
        Some(v) => Err(invalid(format!("{what} must be a scalar, got {} elements", v.len()))),
        None => Err(invalid(format!("{what} must be an integer, got {}", t.dtype()))),
    }
}

/// A scalar (or one-element) numeric input as f64.
pub(crate) fn scalar_f64(t: &Tensor, what: &str) -> OpResult<f64> {
    match t.to_f64_vec().as_deref() {
        Some([v]) => Ok(*v),
        Some(v) => Err(invalid(format!("{what} must be a scalar, got {} elements", v.len()))),
        None => Err(invalid(format!("{what} must be numeric, got {}", t.dtype()))),
    }
}

#[cfg(test)]
mod tests;
