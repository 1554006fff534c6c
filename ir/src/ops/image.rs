//! (family stub: filled in by its owner)

use super::{InferCtx, OpKind, ParseCtx};
use crate::error::IrResult;
use crate::types::ValueType;

#[derive(Clone, Debug, PartialEq)]
pub enum ImageOp {}

impl ImageOp {
    pub fn parse(_cx: &mut ParseCtx) -> IrResult<Option<Self>> {
        Ok(None)
    }
}

impl OpKind for ImageOp {
    fn op_type(&self) -> &'static str {
        match *self {}
    }

    fn infer(&self, _cx: &InferCtx) -> IrResult<Vec<ValueType>> {
        match *self {}
    }
}
