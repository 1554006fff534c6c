//! (family stub: filled in by its owner)

use super::EvalCtx;
use crate::error::OpResult;
use carbide_ir::ops::ElementwiseOp;
use carbide_ir::Value;

pub fn eval(op: &ElementwiseOp, _inputs: &[Option<&Value>], _cx: &EvalCtx) -> OpResult<Vec<Value>> {
    match *op {}
}
