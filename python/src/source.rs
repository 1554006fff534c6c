//! What a model argument may be (a path, bytes, an `onnx.ModelProto`) and
//! how it is imported.

use crate::errors::{self, Failure};
use carbide_ir::Model;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};
use std::path::PathBuf;

/// A model argument, normalized.
pub enum ModelSource {
    Path(PathBuf),
    /// Serialized ONNX; external data cannot be resolved (no folder).
    Bytes(Vec<u8>),
}

impl ModelSource {
    /// Accepts str / os.PathLike (a file), bytes / bytearray / memoryview (a
    /// serialized model), or anything with `SerializeToString()` (onnx.ModelProto).
    pub fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<ModelSource> {
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(ModelSource::Bytes(b.as_bytes().to_vec()));
        }
        if let Ok(b) = obj.cast::<PyByteArray>() {
            return Ok(ModelSource::Bytes(b.to_vec()));
        }
        if obj.is_instance_of::<PyString>() || obj.hasattr("__fspath__")? {
            return Ok(ModelSource::Path(obj.extract::<PathBuf>()?));
        }
        if obj.hasattr("SerializeToString")? {
            let bytes = obj.call_method0("SerializeToString")?;
            return Ok(ModelSource::Bytes(bytes.cast::<PyBytes>()?.as_bytes().to_vec()));
        }
        if let Ok(view) = obj.call_method0("tobytes") {
            if let Ok(b) = view.cast::<PyBytes>() {
                return Ok(ModelSource::Bytes(b.as_bytes().to_vec()));
            }
        }
        let ty = obj.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        Err(Failure::invalid_argument(format!("model must be a path, bytes or an onnx.ModelProto, got {ty}")).into())
    }

    /// Where the model came from, for messages.
    pub fn describe(&self) -> String {
        match self {
            ModelSource::Path(p) => p.display().to_string(),
            ModelSource::Bytes(b) => format!("<{} bytes of ONNX>", b.len()),
        }
    }

    /// Imports the model (GIL released: large models take a while).
    pub fn import(&self, py: Python<'_>) -> PyResult<Model> {
        let loaded = py.detach(|| match self {
            ModelSource::Path(p) => carbide_frontend::load_model(p),
            ModelSource::Bytes(b) => carbide_frontend::load_model_bytes(b, None),
        });
        loaded.map_err(|e| errors::from_frontend(&e, &self.describe()).into_pyerr(py))
    }
}
