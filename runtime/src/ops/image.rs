//! (family stub: filled in by its owner)

use super::EvalCtx;
use crate::error::OpResult;
use carbide_ir::ops::ImageOp;
use carbide_ir::Value;

pub fn eval(op: &ImageOp, _inputs: &[Option<&Value>], _cx: &EvalCtx) -> OpResult<Vec<Value>> {
    match *op {}
}
