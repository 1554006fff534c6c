//! `carbide.InferenceSession`: onnxruntime's session API, so that code
//! written for onnxruntime runs unchanged with the class swapped.

use crate::convert;
use crate::engine::Engine;
use crate::errors::{Failure, Kind};
use crate::source::ModelSource;
use carbide_ir::{Model, ValueInfo, ValueType};
use carbide_runtime::Session;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// A model input or output as onnxruntime describes it.
#[pyclass(frozen, module = "carbide")]
pub struct NodeArg {
    name: String,
    ty: ValueType,
}

impl NodeArg {
    pub fn new(info: &ValueInfo) -> Self {
        NodeArg {
            name: info.name.clone(),
            ty: info.ty.clone(),
        }
    }
}

#[pymethods]
impl NodeArg {
    /// The value's name in the graph.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Dims: ints where fixed, the symbolic name (str) where named, None where unknown.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        convert::shape_object(py, &self.ty)
    }

    /// The ONNX type string, e.g. 'tensor(float)'.
    #[getter]
    fn r#type(&self) -> String {
        convert::type_string(&self.ty)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let shape = convert::shape_object(py, &self.ty)?.repr()?.to_string();
        Ok(format!(
            "NodeArg(name='{}', type='{}', shape={shape})",
            self.name,
            convert::type_string(&self.ty)
        ))
    }
}

/// Model metadata as onnxruntime's `ModelMetadata` reports it.
#[pyclass(frozen, module = "carbide", get_all)]
pub struct ModelMetadata {
    producer_name: String,
    graph_name: String,
    graph_description: String,
    domain: String,
    description: String,
    version: i64,
    custom_metadata_map: Py<PyDict>,
}

impl ModelMetadata {
    pub fn new(py: Python<'_>, model: &Model) -> PyResult<Self> {
        let custom = PyDict::new(py);
        for (k, v) in &model.metadata {
            custom.set_item(k, v)?;
        }
        Ok(ModelMetadata {
            producer_name: model.producer_name.clone(),
            graph_name: model.graph.name.clone(),
            graph_description: String::new(),
            domain: model.domain.clone(),
            description: model.doc_string.clone(),
            version: model.model_version,
            custom_metadata_map: custom.unbind(),
        })
    }
}

#[pymethods]
impl ModelMetadata {
    fn __repr__(&self) -> String {
        format!(
            "ModelMetadata(producer_name='{}', graph_name='{}', domain='{}', version={})",
            self.producer_name, self.graph_name, self.domain, self.version
        )
    }
}

/// An onnxruntime-compatible inference session.
///
/// ``carbide.InferenceSession(path_or_bytes, sess_options=None, providers=None)``
/// loads an ONNX model (a path, serialized bytes, or an ``onnx.ModelProto``).
/// ``sess_options``, ``providers`` and ``run_options`` are accepted for
/// compatibility and do not change results; Carbide runs on the CPU.
///
/// Example::
///
///     import numpy as np
///     import carbide
///     sess = carbide.InferenceSession("model.onnx")
///     x = np.zeros([1, 3, 224, 224], dtype=np.float32)
///     (y,) = sess.run(None, {sess.get_inputs()[0].name: x})
///
/// ``run`` releases the GIL and may be called from several threads at once.
#[pyclass(frozen, module = "carbide")]
pub struct InferenceSession {
    engine: Engine,
    metadata: Py<ModelMetadata>,
    providers: Vec<String>,
}

/// The only provider Carbide's session has: the host CPU.
const CPU_PROVIDER: &str = "CPUExecutionProvider";

#[pymethods]
impl InferenceSession {
    #[new]
    #[pyo3(signature = (path_or_bytes, sess_options=None, providers=None, provider_options=None, **kwargs))]
    fn new(
        py: Python<'_>,
        path_or_bytes: &Bound<'_, PyAny>,
        sess_options: Option<&Bound<'_, PyAny>>,
        providers: Option<&Bound<'_, PyAny>>,
        provider_options: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let _ = (sess_options, provider_options, kwargs);
        check_providers(providers)?;
        let model = ModelSource::from_py(path_or_bytes)?.import(py)?;
        let metadata = Py::new(py, ModelMetadata::new(py, &model)?)?;
        Ok(InferenceSession {
            engine: Engine::Reference(Session::new(model)),
            metadata,
            providers: vec![CPU_PROVIDER.to_string()],
        })
    }

    /// The inputs a caller must feed (inputs with a default are not listed).
    fn get_inputs(&self) -> Vec<NodeArg> {
        self.engine.required_inputs().iter().map(NodeArg::new).collect()
    }

    /// The model's outputs, in declaration order.
    fn get_outputs(&self) -> Vec<NodeArg> {
        self.engine.outputs().iter().map(NodeArg::new).collect()
    }

    /// Inputs backed by an initializer, which a feed may override.
    fn get_overridable_initializers(&self) -> Vec<NodeArg> {
        let required = self.engine.required_inputs();
        self.engine
            .declared_inputs()
            .iter()
            .filter(|i| !required.iter().any(|r| r.name == i.name))
            .map(NodeArg::new)
            .collect()
    }

    fn get_providers(&self) -> Vec<String> {
        self.providers.clone()
    }

    fn get_provider_options(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let d = PyDict::new(py);
        d.set_item(CPU_PROVIDER, PyDict::new(py))?;
        Ok(d.unbind())
    }

    fn get_modelmeta(&self, py: Python<'_>) -> Py<ModelMetadata> {
        self.metadata.clone_ref(py)
    }

    /// Runs the model.
    ///
    /// ``output_names``: names to return, in that order (None or [] for all);
    /// ``input_feed``: dict input name -> numpy array (any layout; copied).
    /// Returns a list of numpy arrays (sequences as lists, empty optionals as None).
    /// Raises ``carbide.InvalidArgument`` for a missing, unknown or mistyped input.
    #[pyo3(signature = (output_names, input_feed, run_options=None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        output_names: Option<Vec<String>>,
        input_feed: &Bound<'py, PyAny>,
        run_options: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let _ = run_options;
        let wanted = output_names.filter(|n| !n.is_empty());
        if let Some(names) = &wanted {
            for n in names {
                if !self.engine.outputs().iter().any(|o| &o.name == n) {
                    let known: Vec<String> = self.engine.outputs().iter().map(|o| format!("'{}'", o.name)).collect();
                    return Err(Failure::invalid_argument(format!(
                        "the model has no output '{n}'; its outputs are {}",
                        known.join(", ")
                    ))
                    .into_pyerr(py));
                }
            }
        }
        let mut outputs = self.engine.run_py(py, input_feed)?;
        match wanted {
            None => outputs
                .into_iter()
                .map(|(name, v)| convert::value_to_py(py, &name, v))
                .collect(),
            Some(names) => names
                .iter()
                .map(|n| {
                    // Outputs are unique by name; a name asked for twice gets a copy the second time.
                    let pos = outputs.iter().position(|(o, _)| o == n).ok_or_else(|| {
                        Failure::new(Kind::Generic, format!("the run produced no output '{n}'")).into_pyerr(py)
                    })?;
                    let value = if names.iter().filter(|m| *m == n).count() > 1 {
                        outputs[pos].1.clone()
                    } else {
                        std::mem::replace(&mut outputs[pos].1, carbide_ir::Value::Optional(None))
                    };
                    convert::value_to_py(py, n, value)
                })
                .collect(),
        }
    }

    /// Sets the providers (accepted for compatibility; Carbide runs on the CPU).
    #[pyo3(signature = (providers=None, provider_options=None))]
    fn set_providers(
        &self,
        providers: Option<&Bound<'_, PyAny>>,
        provider_options: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let _ = provider_options;
        check_providers(providers)
    }

    fn __repr__(&self) -> String {
        let inputs: Vec<&str> = self.engine.declared_inputs().iter().map(|i| i.name.as_str()).collect();
        let outputs: Vec<&str> = self.engine.outputs().iter().map(|o| o.name.as_str()).collect();
        format!("carbide.InferenceSession(inputs={inputs:?}, outputs={outputs:?})")
    }
}

/// Provider lists are names or (name, options) pairs; every provider falls back to the CPU,
/// as onnxruntime does for ones it lacks, so only the shape of the argument is checked.
fn check_providers(providers: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
    let Some(p) = providers else { return Ok(()) };
    if p.is_none() {
        return Ok(());
    }
    for item in p.try_iter()? {
        let item = item?;
        let ok = item.extract::<String>().is_ok() || item.extract::<(String, Bound<'_, PyAny>)>().is_ok();
        if !ok {
            return Err(Failure::invalid_argument(format!(
                "providers must be names or (name, options) pairs, got {}",
                item.repr()?
            ))
            .into());
        }
    }
    Ok(())
}
