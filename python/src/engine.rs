//! What actually runs a model, behind both Python APIs, and the feed
//! handling they share: validating a feed dict against the model's inputs,
//! converting it, and running with the GIL released.

use crate::convert;
use crate::errors::{self, Failure};
use carbide_ir::{Value, ValueInfo};
use carbide_runtime::{Module, RuntimeError, Session};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// A runnable model. `Sync`: runs from several threads share it.
// One per session, created once and never moved on a hot path: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Engine {
    /// The reference interpreter (every op on the host).
    Reference(Session),
    /// A compiled module (generated kernels where the compiler made them, host ops elsewhere).
    Compiled(Module),
}

impl Engine {
    /// Every declared graph input, including those with a default (an initializer).
    pub fn declared_inputs(&self) -> &[ValueInfo] {
        match self {
            Engine::Reference(s) => &s.model().graph.inputs,
            Engine::Compiled(m) => &m.model().graph.inputs,
        }
    }

    /// The inputs a caller must feed.
    pub fn required_inputs(&self) -> Vec<ValueInfo> {
        match self {
            Engine::Reference(s) => s.model().graph.required_inputs().cloned().collect(),
            Engine::Compiled(m) => m.inputs(),
        }
    }

    pub fn outputs(&self) -> &[ValueInfo] {
        match self {
            Engine::Reference(s) => &s.model().graph.outputs,
            Engine::Compiled(m) => m.outputs(),
        }
    }

    fn run(&self, feeds: Vec<(String, Value)>) -> Result<Vec<(String, Value)>, RuntimeError> {
        match self {
            Engine::Reference(s) => s.run(feeds),
            Engine::Compiled(m) => m.run(feeds),
        }
    }

    /// Validates and converts `feeds` (a dict name -> array), runs with the
    /// GIL released, and returns every output in declaration order.
    pub fn run_py(&self, py: Python<'_>, feeds: &Bound<'_, PyAny>) -> PyResult<Vec<(String, Value)>> {
        let feeds = feeds.cast::<PyDict>().map_err(|_| {
            let ty = feeds.get_type().name().map(|n| n.to_string()).unwrap_or_default();
            Failure::invalid_argument(format!("feeds must be a dict of input name -> array, got {ty}")).into_pyerr(py)
        })?;
        let declared = self.declared_inputs();
        let mut values = Vec::with_capacity(feeds.len());
        for (key, obj) in feeds.iter() {
            let name: String = key.extract().map_err(|_| {
                Failure::invalid_argument(format!("feed keys must be input names (str), got {key}")).into_pyerr(py)
            })?;
            let Some(info) = declared.iter().find(|i| i.name == name) else {
                let known: Vec<String> = self.required_inputs().iter().map(|i| format!("'{}'", i.name)).collect();
                return Err(Failure::bad_input(
                    &name,
                    format!("the model has no input '{name}'; its inputs are {}", known.join(", ")),
                )
                .into_pyerr(py));
            };
            values.push((name, convert::input_value(&info.name, &obj, &info.ty)?));
        }
        for input in self.required_inputs() {
            if !values.iter().any(|(n, _)| *n == input.name) {
                return Err(Failure::bad_input(
                    &input.name,
                    format!(
                        "missing input '{}' (expected {})",
                        input.name,
                        convert::describe_type(&input.ty)
                    ),
                )
                .into_pyerr(py));
            }
        }
        py.detach(|| self.run(values))
            .map_err(|e| errors::from_runtime(&e).into_pyerr(py))
    }
}
