//! Kernels of the tensor family (shape manipulation and data movement).
//! They are dtype-generic: data is moved with ndarray views or with flat
//! index maps, never converted. Sizes computed from input values are checked
//! against [`util::MAX_ELEMS`] before anything is allocated.

use super::EvalCtx;
use crate::error::OpResult;
use carbide_ir::ops::TensorOp;
use carbide_ir::Value;

mod gather;
mod movement;
mod shape;
mod util;

#[cfg(test)]
mod tests;

pub fn eval(op: &TensorOp, inputs: &[Option<&Value>], cx: &EvalCtx) -> OpResult<Vec<Value>> {
    use TensorOp as T;
    match op {
        T::Identity => shape::identity(inputs),
        T::Reshape { allowzero, shape } => shape::reshape(inputs, *allowzero, shape.as_deref()),
        T::Flatten { axis } => shape::flatten(inputs, *axis),
        T::Squeeze { axes } => shape::squeeze(inputs, axes.as_deref()),
        T::Unsqueeze { axes } => shape::unsqueeze(inputs, axes.as_deref()),
        T::Shape { start, end } => shape::shape(inputs, *start, *end),
        T::Size => shape::size(inputs),
        T::Constant { value } => Ok(vec![Value::Tensor(value.clone())]),
        T::ConstantOfShape { value } => shape::constant_of_shape(inputs, value.as_ref()),
        T::Range => shape::range(inputs),
        T::EyeLike { dtype, k } => shape::eye_like(inputs, *dtype, *k),
        T::Expand => shape::expand(inputs),
        T::Tile { legacy } => shape::tile(inputs, *legacy),
        T::Transpose { perm } => movement::transpose(inputs, perm.as_deref()),
        T::Concat { axis } => movement::concat(inputs, *axis),
        T::Split {
            axis,
            split,
            num_outputs,
        } => movement::split(inputs, *axis, split.as_deref(), *num_outputs, cx.num_outputs),
        T::Slice { starts, ends, axes } => movement::slice(inputs, starts.as_deref(), ends.as_deref(), axes.as_deref()),
        T::Pad { mode, pads, value } => movement::pad(inputs, *mode, pads.as_deref(), *value),
        T::CenterCropPad { axes } => movement::center_crop_pad(inputs, axes.as_deref()),
        T::DepthToSpace { blocksize, crd } => movement::depth_to_space(inputs, *blocksize, *crd),
        T::SpaceToDepth { blocksize, crd } => movement::space_to_depth(inputs, *blocksize, *crd),
        T::Trilu { upper } => movement::trilu(inputs, *upper),
        T::ReverseSequence { batch_axis, time_axis } => movement::reverse_sequence(inputs, *batch_axis, *time_axis),
        T::Gather { axis } => gather::gather(inputs, *axis),
        T::GatherElements { axis } => gather::gather_elements(inputs, *axis),
        T::GatherND { batch_dims } => gather::gather_nd(inputs, *batch_dims),
        T::ScatterElements { axis, reduction } => gather::scatter_elements(inputs, *axis, *reduction),
        T::ScatterND { reduction } => gather::scatter_nd(inputs, *reduction),
        T::TensorScatter { axis, circular } => gather::tensor_scatter(inputs, *axis, *circular),
        T::OneHot { axis } => gather::one_hot(inputs, *axis),
        T::NonZero => gather::non_zero(inputs),
        T::Compress { axis } => gather::compress(inputs, *axis),
        T::Unique { axis, sorted } => gather::unique(inputs, *axis, *sorted),
    }
}
