//! The native part of the `carbide` Python package (`carbide._carbide`).
//!
//! The pure-Python package in `python/carbide/` re-exports everything here
//! and adds onnxruntime's small helper classes. Everything that touches a
//! model runs with the GIL released; every error becomes a
//! `carbide.CarbideError` subclass (see [`errors`]).

mod convert;
mod engine;
mod errors;
mod module;
mod session;
mod source;
mod tune;

use pyo3::prelude::*;
use source::ModelSource;

/// inspect(model) -> dict
///
/// Summarizes a model (a path, bytes or an onnx.ModelProto): producer, opsets,
/// inputs and outputs with their types, node count, op histogram, parameter
/// count and bytes, and a FLOPs estimate -- what ``carbide inspect --json`` prints.
///
/// Example::
///
///     >>> carbide.inspect("resnet18.onnx")["op_histogram"]["Conv"]
///     20
#[pyfunction]
fn inspect<'py>(py: Python<'py>, model: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let model = ModelSource::from_py(model)?.import(py)?;
    let summary = carbide::inspect::summarize(&model);
    let json = serde_json::to_string(&summary)
        .map_err(|e| errors::Failure::new(errors::Kind::Generic, format!("cannot encode the summary: {e}")))?;
    py.import("json")?.call_method1("loads", (json,))
}

#[pymodule]
fn _carbide(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<session::InferenceSession>()?;
    m.add_class::<session::NodeArg>()?;
    m.add_class::<session::ModelMetadata>()?;
    m.add_class::<module::Module>()?;
    m.add_function(wrap_pyfunction!(module::compile, m)?)?;
    m.add_function(wrap_pyfunction!(module::load, m)?)?;
    m.add_function(wrap_pyfunction!(tune::tune, m)?)?;
    m.add_function(wrap_pyfunction!(tune::_tune_worker, m)?)?;
    m.add_function(wrap_pyfunction!(inspect, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
