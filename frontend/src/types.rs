//! `TypeProto` -> [`ValueType`].

use crate::proto::{TypeProto, TypeTensor, TypeValue};
use crate::FrontendError;
use carbide_ir::{DType, Dim, TensorType, ValueType};

fn tensor_type(what: &str, t: &TypeTensor) -> Result<TensorType, FrontendError> {
    let dtype = match t.elem_type.unwrap_or(0) {
        0 => None,
        code => Some(
            DType::from_onnx_code(code)
                .ok_or_else(|| FrontendError::Unsupported(format!("{what}: unsupported element type code {code}")))?,
        ),
    };
    let shape = t.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match &d.value {
                Some(crate::proto::DimValue::DimValue(v)) if *v >= 0 => Dim::Known(*v as usize),
                Some(crate::proto::DimValue::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
                // Negative dim_value is what some exporters write for "unknown".
                _ => Dim::Unknown,
            })
            .collect()
    });
    Ok(TensorType { dtype, shape })
}

/// Converts a type; `what` names the value for error messages. A missing
/// type, or an opaque one, is [`ValueType::Unknown`].
pub fn value_type(what: &str, tp: Option<&TypeProto>) -> Result<ValueType, FrontendError> {
    let Some(tp) = tp else {
        return Ok(ValueType::Unknown);
    };
    Ok(match &tp.value {
        None | Some(TypeValue::OpaqueType(_)) => ValueType::Unknown,
        Some(TypeValue::TensorType(t)) | Some(TypeValue::SparseTensorType(t)) => {
            ValueType::Tensor(tensor_type(what, t)?)
        }
        Some(TypeValue::SequenceType(s)) => ValueType::Sequence(Box::new(value_type(what, s.elem_type.as_deref())?)),
        Some(TypeValue::OptionalType(s)) => ValueType::Optional(Box::new(value_type(what, s.elem_type.as_deref())?)),
        Some(TypeValue::MapType(m)) => {
            let code = m.key_type.unwrap_or(0);
            let key = DType::from_onnx_code(code)
                .ok_or_else(|| FrontendError::Unsupported(format!("{what}: unsupported map key type code {code}")))?;
            ValueType::Map(key, Box::new(value_type(what, m.value_type.as_deref())?))
        }
    })
}
