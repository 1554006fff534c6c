//! Kernels of the linalg family: matrix products, Einsum, softmax, the
//! attention ops, RotaryEmbedding, SwiGLU and Det.

use super::{opt_tensor_in, tensor_in, tensors_out, EvalCtx};
use crate::error::{invalid, OpResult};
use carbide_ir::ops::LinalgOp;
use carbide_ir::{Tensor, Value};

pub mod attention;
pub mod einsum;
pub mod floats;
pub mod matmul;
pub mod misc;
pub mod softmax;

pub fn eval(op: &LinalgOp, inputs: &[Option<&Value>], cx: &EvalCtx) -> OpResult<Vec<Value>> {
    let t = |i| tensor_in(inputs, i);
    let o = |i| opt_tensor_in(inputs, i);
    let one = |x: Tensor| Ok(tensors_out(vec![x]));
    match op {
        LinalgOp::MatMul => one(matmul::matmul(t(0)?, t(1)?)?),
        LinalgOp::Gemm(g) => one(matmul::gemm_op(g, t(0)?, t(1)?, o(2)?)?),
        LinalgOp::MatMulInteger => one(matmul::matmul_integer(t(0)?, t(1)?, o(2)?, o(3)?)?),
        LinalgOp::QLinearMatMul => one(matmul::qlinear_matmul(
            t(0)?,
            t(1)?,
            o(2)?,
            t(3)?,
            t(4)?,
            o(5)?,
            t(6)?,
            o(7)?,
        )?),
        LinalgOp::Einsum(eq) => {
            let xs = (0..inputs.len()).map(t).collect::<OpResult<Vec<_>>>()?;
            one(einsum::einsum(eq, &xs)?)
        }
        LinalgOp::Softmax(s) => one(softmax::softmax(s, t(0)?)?),
        LinalgOp::Attention(a) => {
            let ins = (0..7).map(o).collect::<OpResult<Vec<_>>>()?;
            attention::attention(a, &ins, cx)
        }
        LinalgOp::FlexAttention(f) => {
            let ins = (0..3).map(o).collect::<OpResult<Vec<_>>>()?;
            attention::flex_attention(f, &ins, cx)
        }
        LinalgOp::LinearAttention(l) => {
            let ins = (0..6).map(o).collect::<OpResult<Vec<_>>>()?;
            attention::linear_attention(l, &ins)
        }
        LinalgOp::RotaryEmbedding(r) => one(misc::rotary(r, t(0)?, t(1)?, t(2)?, o(3)?)?),
        LinalgOp::SwiGLU { alpha } => one(misc::swiglu(*alpha, t(0)?, t(1)?)?),
        LinalgOp::Det => one(misc::det_op(t(0)?)?),
    }
    .and_then(|v: Vec<Value>| {
        if v.is_empty() {
            Err(invalid("no outputs"))
        } else {
            Ok(v)
        }
    })
}
