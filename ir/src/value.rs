//! Runtime values: what flows along graph edges when a model runs.

use crate::tensor::Tensor;
use crate::types::{shape_of, TensorType, ValueType};

/// A tensor, a sequence of values, or an optional value (ONNX's three kinds
/// of graph values that Carbide runs; maps are not supported).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Tensor(Tensor),
    Sequence(Vec<Value>),
    Optional(Option<Box<Value>>),
}

impl Value {
    pub fn as_tensor(&self) -> Option<&Tensor> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    pub fn into_tensor(self) -> Option<Tensor> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The concrete type of this value (sequence element types come from the
    /// first element, if any).
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Tensor(t) => ValueType::Tensor(TensorType::new(t.dtype(), shape_of(t.shape()))),
            Value::Sequence(items) => ValueType::Sequence(Box::new(
                items.first().map(|v| v.value_type()).unwrap_or(ValueType::Unknown),
            )),
            Value::Optional(v) => ValueType::Optional(Box::new(
                v.as_ref().map(|v| v.value_type()).unwrap_or(ValueType::Unknown),
            )),
        }
    }
}

impl From<Tensor> for Value {
    fn from(t: Tensor) -> Value {
        Value::Tensor(t)
    }
}
