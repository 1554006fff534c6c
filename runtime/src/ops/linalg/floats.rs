//! Float helpers shared by the attention-style kernels: they compute in f64
//! and round to the I/O dtype at the points where the ONNX reference
//! rounds, so f16/bf16 results match it to the last bit in most cases.

use crate::error::{invalid, unsupported, OpResult};
use carbide_ir::ndarray::{ArrayD, IxDyn};
use carbide_ir::{bf16, f16, DType, Tensor};

/// Rounds an f64 to the precision of a float dtype (identity for f64).
pub type Round = fn(f64) -> f64;

pub fn rounder(d: DType) -> OpResult<Round> {
    Ok(match d {
        DType::F64 => |v| v,
        DType::F32 => |v| v as f32 as f64,
        DType::F16 => |v| f16::from_f64(v).to_f64(),
        DType::BF16 => |v| bf16::from_f64(v).to_f64(),
        d => return Err(unsupported(format!("{d} is not a float dtype this op computes in"))),
    })
}

/// A float tensor widened to f64.
pub fn to_f64(t: &Tensor, what: &str) -> OpResult<ArrayD<f64>> {
    Ok(match t {
        Tensor::F64(a) => a.clone(),
        Tensor::F32(a) => a.mapv(f64::from),
        Tensor::F16(a) => a.mapv(|v| v.to_f64()),
        Tensor::BF16(a) => a.mapv(|v| v.to_f64()),
        _ => return Err(unsupported(format!("{what} of dtype {}", t.dtype()))),
    })
}

/// Narrows f64 values to a float tensor of `d`.
pub fn from_f64(d: DType, a: ArrayD<f64>) -> OpResult<Tensor> {
    Ok(match d {
        DType::F64 => Tensor::F64(a),
        DType::F32 => Tensor::F32(a.mapv(|v| v as f32)),
        DType::F16 => Tensor::F16(a.mapv(f16::from_f64)),
        DType::BF16 => Tensor::BF16(a.mapv(bf16::from_f64)),
        d => return Err(unsupported(format!("output dtype {d}"))),
    })
}

/// A contiguous f64 array of `shape` from a vec.
pub fn array(shape: &[usize], v: Vec<f64>) -> OpResult<ArrayD<f64>> {
    ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| invalid(e.to_string()))
}

/// Reinterprets a row-major [b, s, h*d] buffer as [b, h, s, d].
pub fn split_heads(x: &ArrayD<f64>, heads: usize, what: &str) -> OpResult<ArrayD<f64>> {
    let s = x.shape();
    if s.len() != 3 || heads == 0 || !s[2].is_multiple_of(heads) {
        return Err(invalid(format!(
            "{what} of shape {s:?} cannot be split into {heads} heads"
        )));
    }
    let (b, n, d) = (s[0], s[1], s[2] / heads);
    let v = x
        .view()
        .into_shape_with_order(IxDyn(&[b, n, heads, d]))
        .map_err(|e| invalid(e.to_string()))?
        .permuted_axes(IxDyn(&[0, 2, 1, 3]))
        .as_standard_layout()
        .into_owned();
    Ok(v)
}

/// Inverse of [`split_heads`]: [b, h, s, d] -> [b, s, h*d].
pub fn merge_heads(x: &ArrayD<f64>) -> OpResult<ArrayD<f64>> {
    let s = x.shape().to_vec();
    if s.len() != 4 {
        return Err(invalid("merge_heads needs rank 4"));
    }
    x.view()
        .permuted_axes(IxDyn(&[0, 2, 1, 3]))
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order(IxDyn(&[s[0], s[2], s[1] * s[3]]))
        .map_err(|e| invalid(e.to_string()))
}
