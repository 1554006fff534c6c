//! ImageDecoder: not implemented yet (needs image codecs).

use crate::error::{unsupported, OpResult};
use carbide_ir::ops::image::PixelFormat;
use carbide_ir::Tensor;

pub(super) fn decode(_p: PixelFormat, _data: &Tensor) -> OpResult<Tensor> {
    Err(unsupported("ImageDecoder: no image codecs are built in"))
}
