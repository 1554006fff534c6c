//! float8 / float4 element conversions used by the quantization kernels.

use crate::error::{unsupported, OpResult};
use carbide_ir::DType;

/// The value of one float8/float4 element given its bit pattern.
pub(crate) fn to_f32(d: DType, _bits: u8) -> OpResult<f32> {
    Err(unsupported(format!("{d} elements")))
}

/// The bit pattern nearest to `v` (round half to even); with `saturate`,
/// out-of-range values clamp to the largest finite value.
pub(crate) fn from_f32(d: DType, _v: f32, _saturate: bool) -> OpResult<u8> {
    Err(unsupported(format!("{d} elements")))
}
