//! Kernels of the image family. Numeric work is done in f64 on contiguous
//! buffers and rounded back to the input dtype, which matches the ONNX
//! reference (numpy, f64 coefficients) closely for every float width.

pub(crate) use super::{check_elems, MAX_ELEMS};
use super::{opt_tensor_in, tensor_in, tensors_out, EvalCtx};
use crate::error::{invalid, unsupported, OpResult};
use carbide_ir::ops::image::ImageOp;
use carbide_ir::{DType, Tensor, Value};
use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};

mod decode;
mod grid;
mod nms;
mod resize;
mod roi;

pub fn eval(op: &ImageOp, inputs: &[Option<&Value>], cx: &EvalCtx) -> OpResult<Vec<Value>> {
    let out = match op {
        ImageOp::Resize(r) => resize::resize(r, inputs)?,
        ImageOp::GridSample(g) => grid::grid_sample(g, tensor_in(inputs, 0)?, tensor_in(inputs, 1)?)?,
        ImageOp::AffineGrid { align_corners } => {
            grid::affine_grid(*align_corners, tensor_in(inputs, 0)?, tensor_in(inputs, 1)?)?
        }
        ImageOp::RoiAlign(r) => roi::roi_align(r, tensor_in(inputs, 0)?, tensor_in(inputs, 1)?, tensor_in(inputs, 2)?)?,
        ImageOp::MaxRoiPool {
            pooled_shape,
            spatial_scale,
        } => roi::max_roi_pool(
            *pooled_shape,
            *spatial_scale,
            tensor_in(inputs, 0)?,
            tensor_in(inputs, 1)?,
        )?,
        ImageOp::NonMaxSuppression { center_point_box } => nms::nms(
            *center_point_box,
            tensor_in(inputs, 0)?,
            tensor_in(inputs, 1)?,
            opt_tensor_in(inputs, 2)?,
            opt_tensor_in(inputs, 3)?,
            opt_tensor_in(inputs, 4)?,
        )?,
        ImageOp::ImageDecoder { pixel_format } => decode::decode(*pixel_format, tensor_in(inputs, 0)?)?,
    };
    if cx.num_outputs > 1 {
        return Err(invalid(format!("node names {} outputs, op has 1", cx.num_outputs)));
    }
    Ok(tensors_out(vec![out]))
}

/// A numeric tensor's values as f64, row-major.
pub(crate) fn to_f64(op: &str, t: &Tensor) -> OpResult<Vec<f64>> {
    match t {
        Tensor::String(_) | Tensor::Small(..) | Tensor::Bool(_) => {
            Err(unsupported(format!("{op} on {} tensors", t.dtype())))
        }
        _ => t
            .to_f64_vec()
            .ok_or_else(|| unsupported(format!("{op} on {} tensors", t.dtype()))),
    }
}

/// Builds a tensor of `dtype` from f64 values (integers round half away
/// from zero and saturate).
pub(crate) fn from_f64(op: &str, dtype: DType, shape: &[usize], v: Vec<f64>) -> OpResult<Tensor> {
    fn arr<T>(shape: &[usize], v: Vec<T>) -> OpResult<ArrayD<T>> {
        ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| invalid(format!("output shape {shape:?}: {e}")))
    }
    Ok(match dtype {
        DType::F32 => Tensor::F32(arr(shape, v.into_iter().map(|x| x as f32).collect())?),
        DType::F64 => Tensor::F64(arr(shape, v)?),
        DType::F16 => Tensor::F16(arr(shape, v.into_iter().map(f16::from_f64).collect())?),
        DType::BF16 => Tensor::BF16(arr(shape, v.into_iter().map(bf16::from_f64).collect())?),
        DType::I8 => Tensor::I8(arr(shape, v.into_iter().map(|x| x.round() as i8).collect())?),
        DType::I16 => Tensor::I16(arr(shape, v.into_iter().map(|x| x.round() as i16).collect())?),
        DType::I32 => Tensor::I32(arr(shape, v.into_iter().map(|x| x.round() as i32).collect())?),
        DType::I64 => Tensor::I64(arr(shape, v.into_iter().map(|x| x.round() as i64).collect())?),
        DType::U8 => Tensor::U8(arr(shape, v.into_iter().map(|x| x.round() as u8).collect())?),
        DType::U16 => Tensor::U16(arr(shape, v.into_iter().map(|x| x.round() as u16).collect())?),
        DType::U32 => Tensor::U32(arr(shape, v.into_iter().map(|x| x.round() as u32).collect())?),
        DType::U64 => Tensor::U64(arr(shape, v.into_iter().map(|x| x.round() as u64).collect())?),
        d => return Err(unsupported(format!("{op} producing {d} tensors"))),
    })
}
