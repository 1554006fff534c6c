//! Kernels of the nn family: convolutions (im2col + sgemm/dgemm), pooling,
//! normalizations, dropout and Col2Im.
//!
//! Float kernels are generic over [`Real`] (f32 or f64); f16/bf16 inputs are
//! computed in f32 and rounded back.

pub(crate) use super::check_elems;
use super::{dtype_unsupported, tensor_in, tensors_out, EvalCtx};
use crate::error::{invalid, OpResult};
use carbide_ir::ops::NnOp;
use carbide_ir::{DType, Tensor, Value};
use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};
use std::borrow::Cow;

mod conv;
mod norm;
mod pool;

/// The float types kernels compute in.
pub(crate) trait Real:
    num_traits::Float + num_traits::FromPrimitive + Default + Send + Sync + std::iter::Sum + std::fmt::Debug + 'static
{
    /// A float tensor's elements in row-major order, converted to `Self`.
    fn data(t: &Tensor) -> Option<Cow<'_, [Self]>>;
    fn f64v(self) -> f64;
    fn c(v: f64) -> Self;
    /// C = A * B (+ C when `accumulate`), with arbitrary strides.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: &[Self],
        rsa: usize,
        csa: usize,
        b: &[Self],
        rsb: usize,
        csb: usize,
        c: &mut [Self],
        rsc: usize,
        accumulate: bool,
    ) -> OpResult<()>;
}

fn slice_or_owned<T: Clone>(a: &ArrayD<T>) -> Cow<'_, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().cloned().collect()),
    }
}

/// Largest index touched by a strided matrix (for the gemm bounds check).
fn span(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        // Saturates so absurd strides fail the bounds check instead of wrapping.
        ((rows - 1).saturating_mul(rs))
            .saturating_add((cols - 1).saturating_mul(cs))
            .saturating_add(1)
    }
}

macro_rules! impl_real {
    ($t:ty, $gemm:ident, $own:ident, $other:ident) => {
        impl Real for $t {
            fn data(t: &Tensor) -> Option<Cow<'_, [Self]>> {
                Some(match t {
                    Tensor::$own(a) => slice_or_owned(a),
                    Tensor::$other(a) => Cow::Owned(a.iter().map(|&v| v as $t).collect()),
                    Tensor::F16(a) => Cow::Owned(a.iter().map(|v| v.to_f32() as $t).collect()),
                    Tensor::BF16(a) => Cow::Owned(a.iter().map(|v| v.to_f32() as $t).collect()),
                    _ => return None,
                })
            }
            fn f64v(self) -> f64 {
                self as f64
            }
            fn c(v: f64) -> Self {
                v as $t
            }
            fn gemm(
                m: usize,
                k: usize,
                n: usize,
                a: &[Self],
                rsa: usize,
                csa: usize,
                b: &[Self],
                rsb: usize,
                csb: usize,
                c: &mut [Self],
                rsc: usize,
                accumulate: bool,
            ) -> OpResult<()> {
                if m == 0 || n == 0 {
                    return Ok(());
                }
                if span(m, k, rsa, csa) > a.len() || span(k, n, rsb, csb) > b.len() || span(m, n, rsc, 1) > c.len() {
                    return Err(invalid(format!(
                        "internal error: {m}x{k} by {k}x{n} product out of operand bounds"
                    )));
                }
                if k == 0 {
                    if !accumulate {
                        for i in 0..m {
                            c[i * rsc..i * rsc + n].fill(0.0);
                        }
                    }
                    return Ok(());
                }
                // SAFETY: the check above bounds every index the kernel touches.
                unsafe {
                    matrixmultiply::$gemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        rsa as isize,
                        csa as isize,
                        b.as_ptr(),
                        rsb as isize,
                        csb as isize,
                        if accumulate { 1.0 } else { 0.0 },
                        c.as_mut_ptr(),
                        rsc as isize,
                        1,
                    )
                }
                Ok(())
            }
        }
    };
}
impl_real!(f32, sgemm, F32, F64);
impl_real!(f64, dgemm, F64, F32);

/// A float input's data as `T`, or an error naming the input.
pub(crate) fn fdata<'a, T: Real>(t: &'a Tensor, what: &str) -> OpResult<Cow<'a, [T]>> {
    T::data(t).ok_or_else(|| invalid(format!("{what} must be a float tensor, got {}", t.dtype())))
}

/// Builds a float tensor of dtype `dt` from computed values.
pub(crate) fn build<T: Real>(v: Vec<T>, shape: &[usize], dt: DType) -> OpResult<Tensor> {
    let s = IxDyn(shape);
    let bad = |_| invalid("internal: result length does not match its shape");
    Ok(match dt {
        DType::F16 => {
            Tensor::F16(ArrayD::from_shape_vec(s, v.iter().map(|x| f16::from_f64(x.f64v())).collect()).map_err(bad)?)
        }
        DType::BF16 => {
            Tensor::BF16(ArrayD::from_shape_vec(s, v.iter().map(|x| bf16::from_f64(x.f64v())).collect()).map_err(bad)?)
        }
        DType::F64 => Tensor::F64(ArrayD::from_shape_vec(s, v.iter().map(|x| x.f64v()).collect()).map_err(bad)?),
        _ => Tensor::F32(ArrayD::from_shape_vec(s, v.iter().map(|x| x.f64v() as f32).collect()).map_err(bad)?),
    })
}

/// Calls `$f::<T>(args)` with T = f64 for double inputs and f32 for the other floats.
macro_rules! by_float {
    ($t:expr, $name:expr, $f:ident ( $($arg:expr),* )) => {
        match $t.dtype() {
            DType::F64 => $f::<f64>($($arg),*),
            DType::F32 | DType::F16 | DType::BF16 => $f::<f32>($($arg),*),
            _ => Err(dtype_unsupported($name, $t)),
        }
    };
}

pub fn eval(op: &NnOp, inputs: &[Option<&Value>], cx: &EvalCtx) -> OpResult<Vec<Value>> {
    let name = carbide_ir::ops::OpKind::op_type(op);
    let x = tensor_in(inputs, 0)?;
    let outs = match op {
        NnOp::Conv(a) => vec![by_float!(x, name, conv_dispatch(inputs, a))?],
        NnOp::ConvTranspose(a) => vec![by_float!(x, name, conv_transpose_dispatch(inputs, a))?],
        NnOp::ConvInteger(a) => vec![conv::conv_integer(inputs, a)?],
        NnOp::QLinearConv(a) => vec![conv::qlinear_conv(inputs, a)?],
        NnOp::DeformConv { conv, offset_group } => {
            vec![by_float!(x, name, deform_dispatch(inputs, conv, *offset_group))?]
        }
        NnOp::CausalConvWithState { silu } => by_float!(x, name, causal_dispatch(inputs, *silu))?,
        NnOp::Col2Im {
            dilations,
            pads,
            strides,
        } => {
            vec![by_float!(x, name, col2im_dispatch(inputs, dilations, pads, strides))?]
        }
        NnOp::MaxPool(a) => pool::max_pool(x, a, cx.num_outputs)?,
        NnOp::AveragePool(a) => vec![by_float!(x, name, avg_dispatch(x, a, false))?],
        NnOp::LpPool(a) => vec![by_float!(x, name, avg_dispatch(x, a, true))?],
        NnOp::GlobalAveragePool => vec![by_float!(x, name, global_dispatch(x, pool::Global::Avg))?],
        NnOp::GlobalMaxPool => vec![by_float!(x, name, global_dispatch(x, pool::Global::Max))?],
        NnOp::GlobalLpPool { p } => vec![by_float!(x, name, global_dispatch(x, pool::Global::Lp(*p as f64)))?],
        NnOp::MaxUnpool {
            kernel_shape,
            pads,
            strides,
        } => vec![pool::max_unpool(inputs, kernel_shape, pads, strides)?],
        NnOp::BatchNormalization { .. }
        | NnOp::InstanceNormalization { .. }
        | NnOp::LayerNormalization { .. }
        | NnOp::GroupNormalization { .. }
        | NnOp::RMSNormalization { .. }
        | NnOp::Lrn { .. }
        | NnOp::MeanVarianceNormalization { .. }
        | NnOp::LpNormalization { .. } => by_float!(x, name, norm_dispatch(op, inputs, cx))?,
        NnOp::Dropout {
            ratio,
            seed,
            is_test,
            legacy_mask,
        } => norm::dropout(inputs, *ratio, *seed, *is_test, *legacy_mask, cx)?,
    };
    Ok(tensors_out(outs))
}

fn conv_dispatch<T: Real>(inputs: &[Option<&Value>], a: &carbide_ir::ops::nn::ConvAttrs) -> OpResult<Tensor> {
    conv::conv::<T>(inputs, a)
}

fn conv_transpose_dispatch<T: Real>(
    inputs: &[Option<&Value>],
    a: &carbide_ir::ops::nn::ConvTransposeAttrs,
) -> OpResult<Tensor> {
    conv::conv_transpose::<T>(inputs, a)
}

fn deform_dispatch<T: Real>(
    inputs: &[Option<&Value>],
    a: &carbide_ir::ops::nn::ConvAttrs,
    offset_group: i64,
) -> OpResult<Tensor> {
    conv::deform_conv::<T>(inputs, a, offset_group)
}

fn causal_dispatch<T: Real>(inputs: &[Option<&Value>], silu: bool) -> OpResult<Vec<Tensor>> {
    conv::causal_conv::<T>(inputs, silu)
}

fn col2im_dispatch<T: Real>(
    inputs: &[Option<&Value>],
    dilations: &Option<Vec<i64>>,
    pads: &Option<Vec<i64>>,
    strides: &Option<Vec<i64>>,
) -> OpResult<Tensor> {
    conv::col2im_op::<T>(inputs, dilations, pads, strides)
}

fn avg_dispatch<T: Real>(x: &Tensor, a: &carbide_ir::ops::nn::PoolAttrs, lp: bool) -> OpResult<Tensor> {
    pool::avg_lp_pool::<T>(x, a, lp)
}

fn global_dispatch<T: Real>(x: &Tensor, kind: pool::Global) -> OpResult<Tensor> {
    pool::global_pool::<T>(x, kind)
}

fn norm_dispatch<T: Real>(op: &NnOp, inputs: &[Option<&Value>], cx: &EvalCtx) -> OpResult<Vec<Tensor>> {
    norm::eval::<T>(op, inputs, cx)
}
