//! `carbide.tune`: the autotuner on a model, returning its summary as a dict.

use crate::errors::{Failure, Kind};
use crate::module::compile_failure;
use crate::source::ModelSource;
use carbide::tune::autotune::{Database, MeasureConfig, TuneOptions, WorkerCommand};
use carbide::tune::{parse_duration, tune_model, TuneModelError};
use carbide::CompileOptions;
use pyo3::prelude::*;
use std::path::PathBuf;

/// A time budget from Python: seconds (int/float) or text like "10m".
fn budget(py: Python<'_>, v: Option<&Bound<'_, PyAny>>) -> PyResult<Option<std::time::Duration>> {
    let Some(v) = v.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let bad = |m: String| Failure::invalid_argument(m).into_pyerr(py);
    if let Ok(s) = v.extract::<String>() {
        return parse_duration(&s).map(Some).map_err(bad);
    }
    let secs: f64 = v
        .extract()
        .map_err(|_| bad("time_budget must be seconds or a string like '10m'".into()))?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(bad(format!("time_budget must be non-negative, got {secs}")));
    }
    Ok(Some(std::time::Duration::from_secs_f64(secs)))
}

/// Candidates are measured in a child process so a crashing one cannot take
/// the interpreter down: this Python, importing this package (the parent's
/// `sys.path`) and serving requests with [`tune_worker`].
fn python_worker(py: Python<'_>) -> PyResult<WorkerCommand> {
    let sys = py.import("sys")?;
    let program: PathBuf = sys.getattr("executable")?.extract()?;
    let path: Vec<String> = sys.getattr("path")?.extract()?;
    let sep: String = py.import("os")?.getattr("pathsep")?.extract()?;
    Ok(WorkerCommand {
        program,
        args: vec![
            "-c".into(),
            "from carbide._carbide import _tune_worker; _tune_worker()".into(),
        ],
        env: vec![("PYTHONPATH".into(), path.join(&sep))],
    })
}

/// The measuring process's loop (see `python_worker`); not public API.
#[pyfunction]
pub fn _tune_worker(py: Python<'_>) -> PyResult<()> {
    py.detach(carbide::tune::autotune::worker::serve_stdio)
        .map_err(|e| Failure::new(Kind::Generic, format!("tuning worker: {e}")).into_pyerr(py))
}

/// Tunes a model's kernels; see the Python docstring.
#[pyfunction]
#[pyo3(signature = (model, trials=200, db=PathBuf::from("tune.jsonl"), target="native", time_budget=None, threads=None, opt_level=3, seed=0))]
#[allow(clippy::too_many_arguments)]
pub fn tune<'py>(
    py: Python<'py>,
    model: &Bound<'py, PyAny>,
    trials: usize,
    db: PathBuf,
    target: &str,
    time_budget: Option<&Bound<'py, PyAny>>,
    threads: Option<usize>,
    opt_level: u8,
    seed: u64,
) -> PyResult<Bound<'py, PyAny>> {
    if threads == Some(0) {
        return Err(Failure::invalid_argument("threads must be at least 1").into_pyerr(py));
    }
    let time_budget = budget(py, time_budget)?;
    let model = ModelSource::from_py(model)?.import(py)?;
    let compile = CompileOptions {
        target: target.to_string(),
        opt_level,
        ..Default::default()
    };
    let mut measure = MeasureConfig::default();
    if let Some(t) = threads {
        measure.threads = t;
    }
    let opts = TuneOptions {
        trials,
        time_budget,
        measure,
        seed,
        worker: Some(python_worker(py)?),
        ..Default::default()
    };
    let summary = py
        .detach(|| {
            let mut database = Database::open(&db)?;
            tune_model(&model, &compile, &mut database, &opts, &mut |_| {}).map_err(TuneFailure::Tune)
        })
        .map_err(|e| match e {
            TuneFailure::Db(e) => Failure::invalid_argument(e.to_string()).into_pyerr(py),
            TuneFailure::Tune(TuneModelError::Compile(c)) => compile_failure(&c).into_pyerr(py),
            TuneFailure::Tune(other) => Failure::new(Kind::Generic, other.to_string()).into_pyerr(py),
        })?;
    let json = serde_json::to_string(&summary)
        .map_err(|e| Failure::new(Kind::Generic, format!("cannot encode the summary: {e}")).into_pyerr(py))?;
    py.import("json")?.call_method1("loads", (json,))
}

enum TuneFailure {
    Db(carbide::tune::autotune::TuneError),
    Tune(TuneModelError),
}

impl From<carbide::tune::autotune::TuneError> for TuneFailure {
    fn from(e: carbide::tune::autotune::TuneError) -> Self {
        TuneFailure::Db(e)
    }
}
