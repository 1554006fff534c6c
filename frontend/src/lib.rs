//! ONNX import: protobuf bytes -> Graph IR. (stub: the importer is being written)

use carbide_ir::{Model, Tensor, Value, ValueType};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum FrontendError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: malformed protobuf: {reason}")]
    Decode { context: String, reason: String },
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Ir(#[from] carbide_ir::IrError),
}

/// Loads an ONNX model file; external data is read relative to its folder.
pub fn load_model(path: &Path) -> Result<Model, FrontendError> {
    let bytes = std::fs::read(path).map_err(|e| FrontendError::Io { path: path.to_path_buf(), source: e })?;
    load_model_bytes(&bytes, path.parent())
}

/// Decodes an ONNX model from bytes. `base_dir` is where external data
/// files live (`None`: external data is an error).
pub fn load_model_bytes(_bytes: &[u8], _base_dir: Option<&Path>) -> Result<Model, FrontendError> {
    Err(FrontendError::Unsupported("the ONNX importer is not built yet".into()))
}

/// Decodes a serialized `TensorProto` (e.g. a test's `input_0.pb`).
pub fn decode_tensor(_bytes: &[u8]) -> Result<Tensor, FrontendError> {
    Err(FrontendError::Unsupported("the ONNX importer is not built yet".into()))
}

/// Decodes a test-data file holding a value of type `ty`: a `TensorProto`
/// for tensors, a `SequenceProto` or `OptionalProto` otherwise.
pub fn decode_value(_bytes: &[u8], _ty: &ValueType) -> Result<Value, FrontendError> {
    Err(FrontendError::Unsupported("the ONNX importer is not built yet".into()))
}

/// Serializes a tensor as a `TensorProto` (raw_data encoding).
pub fn encode_tensor(_name: &str, _t: &Tensor) -> Result<Vec<u8>, FrontendError> {
    Err(FrontendError::Unsupported("the ONNX importer is not built yet".into()))
}
