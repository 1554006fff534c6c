//! ONNX import: protobuf bytes -> Graph IR.
//!
//! The protobuf messages are hand-written prost structs ([`proto`]); tensor
//! data is decoded by our own code ([`tensor`]) so every dtype and encoding
//! is checked against the declared shape, and nothing hostile input controls
//! can make the importer panic or allocate without bound.

pub mod import;
pub mod proto;
pub mod tensor;
pub mod types;

use carbide_ir::{Model, Tensor, Value, ValueType};
use prost::Message;
use proto::{elem_kind, ModelProto, OptionalProto, SequenceProto, TensorProto};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum FrontendError {
    /// The I/O error is part of the message, so it is not chained as a `source()`.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{context}: malformed protobuf: {reason}")]
    Decode { context: String, reason: String },
    #[error("{0}")]
    Unsupported(String),
    /// Well-formed protobuf whose contents are wrong (data length vs shape,
    /// negative dims, external data outside the model's folder, ...).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Ir(#[from] carbide_ir::IrError),
}

/// Loads an ONNX model file; external data is read relative to its folder.
pub fn load_model(path: &Path) -> Result<Model, FrontendError> {
    let bytes = std::fs::read(path).map_err(|e| FrontendError::Io {
        path: path.to_path_buf(),
        error: e,
    })?;
    let dir = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => Path::new("."),
    };
    load_model_bytes(&bytes, Some(dir))
}

/// Decodes an ONNX model from bytes. `base_dir` is where external data
/// files live (`None`: external data is an error).
pub fn load_model_bytes(bytes: &[u8], base_dir: Option<&Path>) -> Result<Model, FrontendError> {
    let mp = decode_model_proto(bytes)?;
    import::import_model(&mp, base_dir)
}

/// Decodes the raw `ModelProto` message (no conversion).
pub fn decode_model_proto(bytes: &[u8]) -> Result<ModelProto, FrontendError> {
    ModelProto::decode(bytes).map_err(|e| FrontendError::Decode {
        context: "ModelProto".into(),
        reason: e.to_string(),
    })
}

/// Decodes every tensor and type of a model without parsing its ops (so it
/// works for ops no family implements yet). Returns the number of tensors.
pub fn check_model_bytes(bytes: &[u8], base_dir: Option<&Path>) -> Result<usize, FrontendError> {
    import::check_model_data(&decode_model_proto(bytes)?, base_dir)
}

/// Decodes a serialized `TensorProto` (e.g. a test's `input_0.pb`).
pub fn decode_tensor(bytes: &[u8]) -> Result<Tensor, FrontendError> {
    let tp = TensorProto::decode(bytes).map_err(|e| FrontendError::Decode {
        context: "TensorProto".into(),
        reason: e.to_string(),
    })?;
    tensor::decode(&tp, None)
}

/// Decodes a test-data file holding a value of type `ty`: a `TensorProto`
/// for tensors, a `SequenceProto` or `OptionalProto` otherwise.
pub fn decode_value(bytes: &[u8], ty: &ValueType) -> Result<Value, FrontendError> {
    match ty {
        ValueType::Tensor(_) | ValueType::Unknown => decode_tensor(bytes).map(Value::Tensor),
        ValueType::Sequence(_) => {
            let sp = SequenceProto::decode(bytes).map_err(|e| FrontendError::Decode {
                context: "SequenceProto".into(),
                reason: e.to_string(),
            })?;
            sequence_value(&sp)
        }
        ValueType::Optional(_) => {
            let op = OptionalProto::decode(bytes).map_err(|e| FrontendError::Decode {
                context: "OptionalProto".into(),
                reason: e.to_string(),
            })?;
            optional_value(&op)
        }
        ValueType::Map(..) => Err(FrontendError::Unsupported("map values are not supported".into())),
    }
}

fn sequence_value(sp: &SequenceProto) -> Result<Value, FrontendError> {
    let items = match sp.elem_type.unwrap_or(0) {
        elem_kind::TENSOR => sp
            .tensor_values
            .iter()
            .map(|t| tensor::decode(t, None).map(Value::Tensor))
            .collect::<Result<_, _>>()?,
        elem_kind::SPARSE_TENSOR => sp
            .sparse_tensor_values
            .iter()
            .map(|t| tensor::decode_sparse(t, None).map(Value::Tensor))
            .collect::<Result<_, _>>()?,
        elem_kind::SEQUENCE => sp
            .sequence_values
            .iter()
            .map(sequence_value)
            .collect::<Result<_, _>>()?,
        elem_kind::OPTIONAL => sp
            .optional_values
            .iter()
            .map(optional_value)
            .collect::<Result<_, _>>()?,
        elem_kind::MAP => return Err(FrontendError::Unsupported("sequences of maps are not supported".into())),
        elem_kind::UNDEFINED
            if sp.tensor_values.is_empty()
                && sp.sequence_values.is_empty()
                && sp.optional_values.is_empty()
                && sp.sparse_tensor_values.is_empty()
                && sp.map_values.is_empty() =>
        {
            Vec::new()
        }
        k => {
            return Err(FrontendError::Invalid(format!(
                "SequenceProto: unknown or missing elem_type {k}"
            )))
        }
    };
    Ok(Value::Sequence(items))
}

fn optional_value(op: &OptionalProto) -> Result<Value, FrontendError> {
    let inner = match op.elem_type.unwrap_or(0) {
        elem_kind::TENSOR => op
            .tensor_value
            .as_ref()
            .map(|t| tensor::decode(t, None).map(Value::Tensor)),
        elem_kind::SPARSE_TENSOR => op
            .sparse_tensor_value
            .as_ref()
            .map(|t| tensor::decode_sparse(t, None).map(Value::Tensor)),
        elem_kind::SEQUENCE => op.sequence_value.as_ref().map(sequence_value),
        elem_kind::OPTIONAL => op.optional_value.as_deref().map(optional_value),
        elem_kind::MAP => return Err(FrontendError::Unsupported("optional maps are not supported".into())),
        _ => None,
    };
    Ok(Value::Optional(inner.transpose()?.map(Box::new)))
}

/// Serializes a tensor as a `TensorProto` (raw_data encoding).
pub fn encode_tensor(name: &str, t: &Tensor) -> Result<Vec<u8>, FrontendError> {
    Ok(tensor::encode(name, t)?.encode_to_vec())
}

/// Serializes a value: a `TensorProto`, `SequenceProto` or `OptionalProto`
/// (the inverse of [`decode_value`]).
pub fn encode_value(name: &str, v: &Value) -> Result<Vec<u8>, FrontendError> {
    Ok(match v {
        Value::Tensor(t) => tensor::encode(name, t)?.encode_to_vec(),
        Value::Sequence(_) => sequence_proto(name, v)?.encode_to_vec(),
        Value::Optional(_) => optional_proto(name, v)?.encode_to_vec(),
    })
}

fn sequence_proto(name: &str, v: &Value) -> Result<SequenceProto, FrontendError> {
    let mut sp = SequenceProto {
        name: Some(name.to_string()),
        ..Default::default()
    };
    let Value::Sequence(items) = v else {
        return Err(FrontendError::Invalid("not a sequence".into()));
    };
    let kind = match items.first() {
        None | Some(Value::Tensor(_)) => elem_kind::TENSOR,
        Some(Value::Sequence(_)) => elem_kind::SEQUENCE,
        Some(Value::Optional(_)) => elem_kind::OPTIONAL,
    };
    sp.elem_type = Some(kind);
    for it in items {
        match it {
            Value::Tensor(t) if kind == elem_kind::TENSOR => sp.tensor_values.push(tensor::encode("", t)?),
            Value::Sequence(_) if kind == elem_kind::SEQUENCE => sp.sequence_values.push(sequence_proto("", it)?),
            Value::Optional(_) if kind == elem_kind::OPTIONAL => sp.optional_values.push(optional_proto("", it)?),
            _ => return Err(FrontendError::Invalid("sequence elements of different kinds".into())),
        }
    }
    Ok(sp)
}

fn optional_proto(name: &str, v: &Value) -> Result<OptionalProto, FrontendError> {
    let mut op = OptionalProto {
        name: Some(name.to_string()),
        ..Default::default()
    };
    let Value::Optional(inner) = v else {
        return Err(FrontendError::Invalid("not an optional".into()));
    };
    match inner.as_deref() {
        None => {}
        Some(Value::Tensor(t)) => {
            op.elem_type = Some(elem_kind::TENSOR);
            op.tensor_value = Some(tensor::encode("", t)?);
        }
        Some(s @ Value::Sequence(_)) => {
            op.elem_type = Some(elem_kind::SEQUENCE);
            op.sequence_value = Some(sequence_proto("", s)?);
        }
        Some(o @ Value::Optional(_)) => {
            op.elem_type = Some(elem_kind::OPTIONAL);
            op.optional_value = Some(Box::new(optional_proto("", o)?));
        }
    }
    Ok(op)
}
