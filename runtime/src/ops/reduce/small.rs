//! float8 / float4 element conversions used by the quantization kernels
//! (thin checked wrappers over `carbide_ir::small_float`).

use crate::error::{unsupported, OpResult};
use carbide_ir::small_float;
use carbide_ir::DType;

/// The value of one float8/float4 element given its bit pattern.
pub(crate) fn to_f32(d: DType, bits: u8) -> OpResult<f32> {
    if !small_float::is_supported(d) {
        return Err(unsupported(format!("{d} elements")));
    }
    Ok(small_float::to_f32(d, bits))
}

/// The bit pattern nearest to `v` (round half to even); with `saturate`,
/// out-of-range values clamp to the largest finite value.
pub(crate) fn from_f32(d: DType, v: f32, saturate: bool) -> OpResult<u8> {
    if !small_float::is_supported(d) {
        return Err(unsupported(format!("{d} elements")));
    }
    Ok(small_float::from_f32(d, v, saturate))
}
