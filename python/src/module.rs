//! `carbide.compile`, `carbide.load` and `carbide.Module`: Carbide's own
//! API, a compiled model that runs with dicts of numpy arrays and saves as a
//! `.carbide` artifact.

use crate::convert;
use crate::engine::Engine;
use crate::errors::{self, Failure, Kind};
use crate::session::NodeArg;
use crate::source::ModelSource;
use carbide::{ArtifactError, CompileError, CompileOptions};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;

/// A compiled model. Create one with ``carbide.compile(model)`` or
/// ``carbide.load(path)``.
///
/// ``run(feeds)`` takes a dict input name -> numpy array and returns a dict
/// output name -> numpy array; it releases the GIL and may be called from
/// several threads at once. ``save(path)`` writes a ``.carbide`` artifact.
#[pyclass(frozen, module = "carbide")]
pub struct Module {
    engine: Engine,
}

#[pymethods]
impl Module {
    /// Runs the model: ``feeds`` maps every input name to a numpy array (any
    /// layout; it is copied). Returns a dict output name -> numpy array.
    fn run<'py>(&self, py: Python<'py>, feeds: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
        let outputs = self.engine.run_py(py, feeds)?;
        let dict = PyDict::new(py);
        for (name, value) in outputs {
            let v = convert::value_to_py(py, &name, value)?;
            dict.set_item(name, v)?;
        }
        Ok(dict)
    }

    /// Writes the module as a ``.carbide`` artifact, to be read by ``carbide.load``.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let Engine::Compiled(m) = &self.engine else {
            return Err(Failure::new(Kind::Generic, "this module cannot be saved").into_pyerr(py));
        };
        py.detach(|| m.save(&path))
            .map_err(|e| artifact_failure(&e, &path.display().to_string()).into_pyerr(py))
    }

    /// The serialized ``.carbide`` artifact as bytes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
        let Engine::Compiled(m) = &self.engine else {
            return Err(Failure::new(Kind::Generic, "this module cannot be serialized").into_pyerr(py));
        };
        let bytes = py
            .detach(|| m.to_bytes())
            .map_err(|e| artifact_failure(&e, "module").into_pyerr(py))?;
        Ok(pyo3::types::PyBytes::new(py, &bytes))
    }

    /// The inputs ``run`` needs (name, shape, type).
    #[getter]
    fn inputs(&self) -> Vec<NodeArg> {
        self.engine.required_inputs().iter().map(NodeArg::new).collect()
    }

    /// The outputs ``run`` returns (name, shape, type).
    #[getter]
    fn outputs(&self) -> Vec<NodeArg> {
        self.engine.outputs().iter().map(NodeArg::new).collect()
    }

    fn __repr__(&self) -> String {
        let inputs: Vec<String> = self
            .engine
            .required_inputs()
            .iter()
            .map(|i| format!("{}: {}", i.name, convert::describe_type(&i.ty)))
            .collect();
        let outputs: Vec<&str> = self.engine.outputs().iter().map(|o| o.name.as_str()).collect();
        format!("carbide.Module(inputs=[{}], outputs={outputs:?})", inputs.join(", "))
    }
}

fn artifact_failure(e: &ArtifactError, what: &str) -> Failure {
    let kind = match e {
        ArtifactError::Io { .. } => Kind::InvalidArgument,
        _ => Kind::InvalidModel,
    };
    Failure::new(kind, format!("{what}: {e}"))
}

pub(crate) fn compile_failure(e: &CompileError) -> Failure {
    match e {
        CompileError::UnknownTarget(_) | CompileError::BadOptLevel(_) | CompileError::TuningDb { .. } => {
            Failure::invalid_argument(e.to_string())
        }
        CompileError::Ir(ir) => Failure {
            message: e.to_string(),
            ..errors::from_ir(ir)
        },
        CompileError::Module(a) => artifact_failure(a, "compiling"),
        _ => Failure::new(Kind::Generic, e.to_string()),
    }
}

/// Compiles a model (path, bytes or onnx.ModelProto); see the Python docstring.
#[pyfunction]
#[pyo3(signature = (model, target="native", opt_level=3, tuning_db=None, threads=None))]
pub fn compile(
    py: Python<'_>,
    model: &Bound<'_, PyAny>,
    target: &str,
    opt_level: i64,
    tuning_db: Option<PathBuf>,
    threads: Option<usize>,
) -> PyResult<Module> {
    let opt_level = u8::try_from(opt_level)
        .ok()
        .filter(|l| *l <= 3)
        .ok_or_else(|| Failure::invalid_argument(format!("opt_level must be 0..=3, got {opt_level}")).into_pyerr(py))?;
    if threads == Some(0) {
        return Err(Failure::invalid_argument("threads must be at least 1").into_pyerr(py));
    }
    let model = ModelSource::from_py(model)?.import(py)?;
    let opts = CompileOptions {
        target: target.to_string(),
        opt_level,
        tuning_db,
        threads,
    };
    let module = py
        .detach(|| carbide::compile(&model, &opts))
        .map_err(|e| compile_failure(&e).into_pyerr(py))?;
    Ok(Module {
        engine: Engine::Compiled(module),
    })
}

/// Loads a ``.carbide`` artifact (a path, or the bytes of one).
#[pyfunction]
pub fn load(py: Python<'_>, artifact: &Bound<'_, PyAny>) -> PyResult<Module> {
    let module = match ModelSource::from_py(artifact)? {
        ModelSource::Path(p) => py
            .detach(|| carbide::Module::load(&p))
            .map_err(|e| artifact_failure(&e, &p.display().to_string())),
        ModelSource::Bytes(b) => py
            .detach(|| carbide::Module::from_bytes(&b))
            .map_err(|e| artifact_failure(&e, "artifact bytes")),
    }
    .map_err(|f| f.into_pyerr(py))?;
    Ok(Module {
        engine: Engine::Compiled(module),
    })
}
