//! The ONNX node-test conformance harness.
//!
//! Each case directory holds `model.onnx` and `test_data_set_N/{input,output}_K.pb`.
//! Cases run in child processes (`carbide conformance-case DIR`) so that a
//! timeout, a stack overflow or an abort in one case is reported as that
//! case's failure instead of ending the run.
//!
//! With [`Engine::Compiled`] each case's model goes through `carbide::compile`
//! (once per case; symbolic inputs stay symbolic, so every data set runs on
//! the same module at its own shapes) and the compiled module's outputs are
//! compared with the same tolerances. A case that fails compiled is also run
//! on the reference so the report can tell compiler bugs (the reference
//! passes) from cases the runtime does not support either.

use crate::compare::{compare_values, Tolerance};
use crate::compile::{compile, CompileOptions};
use carbide_ir::{Value, ValueType};
use carbide_runtime::Session;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

/// The outcome of one case.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaseResult {
    pub name: String,
    pub status: Status,
    /// Op types of the case's main graph (for the per-op table).
    pub ops: Vec<String>,
    pub message: Option<String>,
    pub millis: u64,
    /// Compiled runs only, for a failing case: whether the reference
    /// interpreter passes it (true means the failure is the compiler's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_passes: Option<bool>,
}

/// What executes each case's model.
#[derive(Clone, Debug, PartialEq)]
pub enum Engine {
    /// The reference interpreter (`Session`).
    Reference,
    /// `carbide::compile` with these options, then the compiled `Module`.
    Compiled(CompileOptions),
}

/// Something that runs a loaded model on feeds (the interpreter or a compiled module).
type Runner = Box<dyn Fn(Vec<(String, Value)>) -> Result<Vec<(String, Value)>, String>>;

/// Runs one case in this process: load, (compile,) run each data set, compare.
pub fn run_case(dir: &Path, tol: Tolerance, engine: &Engine) -> CaseResult {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let start = Instant::now();
    let mut ops = Vec::new();
    let outcome = run_case_inner(dir, tol, engine, &mut ops);
    let mut reference_passes = None;
    let (status, message) = match outcome {
        Ok(()) => (Status::Pass, None),
        Err(m) => {
            if matches!(engine, Engine::Compiled(_)) {
                reference_passes = Some(run_case_inner(dir, tol, &Engine::Reference, &mut Vec::new()).is_ok());
            }
            (Status::Fail, Some(m))
        }
    };
    CaseResult {
        name,
        status,
        ops,
        message,
        millis: start.elapsed().as_millis() as u64,
        reference_passes,
    }
}

fn run_case_inner(dir: &Path, tol: Tolerance, engine: &Engine, ops: &mut Vec<String>) -> Result<(), String> {
    let model = carbide_frontend::load_model(&dir.join("model.onnx")).map_err(|e| {
        // The op list is still useful for the table when loading fails.
        if let Some(op) = unsupported_op_name(&e.to_string()) {
            ops.push(op);
        }
        format!("load: {e}")
    })?;
    let mut seen = std::collections::BTreeSet::new();
    for n in &model.graph.nodes {
        if seen.insert(n.op.op_type()) {
            ops.push(n.op.op_type().to_string());
        }
    }
    let input_types: Vec<(String, ValueType)> = model
        .graph
        .required_inputs()
        .map(|i| (i.name.clone(), i.ty.clone()))
        .collect();
    let output_types: Vec<ValueType> = model.graph.outputs.iter().map(|o| o.ty.clone()).collect();
    let runner: Runner = match engine {
        Engine::Reference => {
            let session = Session::new(model);
            Box::new(move |feeds| session.run(feeds).map_err(|e| format!("run: {e}")))
        }
        Engine::Compiled(opts) => {
            let module = compile(&model, opts).map_err(|e| format!("compile: {e}"))?;
            Box::new(move |feeds| module.run(feeds).map_err(|e| format!("run compiled: {e}")))
        }
    };
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set"))
        })
        .collect();
    sets.sort();
    if sets.is_empty() {
        return Err("no test_data_set directories".into());
    }
    for set in sets {
        let read = |kind: &str, k: usize, ty: &ValueType| -> Result<Option<Value>, String> {
            let p = set.join(format!("{kind}_{k}.pb"));
            if !p.exists() {
                return Ok(None);
            }
            let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            carbide_frontend::decode_value(&bytes, ty)
                .map(Some)
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        let mut feeds = Vec::new();
        for (k, (name, ty)) in input_types.iter().enumerate() {
            if let Some(v) = read("input", k, ty)? {
                feeds.push((name.clone(), v));
            }
        }
        let outputs = runner(feeds)?;
        for (k, ((name, actual), ty)) in outputs.iter().zip(&output_types).enumerate() {
            let expected = read("output", k, ty)?.ok_or_else(|| format!("missing output_{k}.pb"))?;
            compare_values(&expected, actual, tol).map_err(|m| format!("output '{name}': {m}"))?;
        }
    }
    Ok(())
}

fn unsupported_op_name(msg: &str) -> Option<String> {
    let rest = msg.split("unsupported op '").nth(1)?;
    Some(rest.split('\'').next()?.to_string())
}

/// Options of a suite run.
pub struct SuiteOptions {
    pub filter: Option<regex::Regex>,
    pub timeout: Duration,
    pub jobs: usize,
    /// The executable that runs one case (`carbide`).
    pub exe: PathBuf,
    /// Extra arguments for each `conformance-case` child (e.g. `--target native -O 3`).
    pub case_args: Vec<String>,
}

/// Lists case directories (those holding a model.onnx), sorted by name.
pub fn list_cases(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    cases.sort();
    Ok(cases)
}

/// Runs every case (matching the filter) in child processes, `jobs` at a
/// time, calling `progress` after each.
pub fn run_suite(cases: &[PathBuf], opts: &SuiteOptions, progress: &(dyn Fn(&CaseResult) + Sync)) -> Vec<CaseResult> {
    let selected: Vec<&PathBuf> = cases
        .iter()
        .filter(|c| {
            let name = c
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            opts.filter.as_ref().is_none_or(|f| f.is_match(&name))
        })
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::with_capacity(selected.len()));
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(case) = selected.get(i) else { break };
                let r = run_child(case, opts);
                progress(&r);
                if let Ok(mut v) = results.lock() {
                    v.push(r);
                }
            });
        }
    });
    let mut out = results.into_inner().unwrap_or_default();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn run_child(case: &Path, opts: &SuiteOptions) -> CaseResult {
    let name = case
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let start = Instant::now();
    let fail = |message: String| CaseResult {
        name: name.clone(),
        status: Status::Fail,
        ops: Vec::new(),
        message: Some(message),
        millis: start.elapsed().as_millis() as u64,
        reference_passes: None,
    };
    let child = Command::new(&opts.exe)
        .arg("conformance-case")
        .arg(case)
        .args(&opts.case_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return fail(format!("could not start {}: {e}", opts.exe.display())),
    };
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut out = String::new();
                let mut err = String::new();
                if let Some(mut o) = child.stdout.take() {
                    let _ = std::io::Read::read_to_string(&mut o, &mut out);
                }
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                if let Some(line) = out.lines().rev().find(|l| l.starts_with('{')) {
                    if let Ok(r) = serde_json::from_str::<CaseResult>(line) {
                        return r;
                    }
                }
                let tail: String = err.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
                return fail(format!("crashed ({status}): {tail}"));
            }
            Ok(None) if start.elapsed() > opts.timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return fail(format!("timed out after {:.0} s", opts.timeout.as_secs_f64()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return fail(format!("wait failed: {e}")),
        }
    }
}

/// Per-op pass/fail counts: a case counts under every op its graph uses.
pub fn per_op_table(results: &[CaseResult]) -> BTreeMap<String, (usize, usize)> {
    let mut table: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in results {
        let ops: Vec<String> = if r.ops.is_empty() {
            vec!["(unknown)".into()]
        } else {
            r.ops.clone()
        };
        for op in ops {
            let e = table.entry(op).or_default();
            match r.status {
                Status::Pass => e.0 += 1,
                Status::Fail => e.1 += 1,
                Status::Skip => {}
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The node tests live in .cache (scripts/setup.sh); without them this
    /// test passes vacuously unless CARBIDE_REQUIRE_DATA=1 (CI) demands them.
    fn node_tests() -> Option<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/onnx-node-tests");
        if dir.is_dir() {
            return Some(dir);
        }
        assert!(
            std::env::var("CARBIDE_REQUIRE_DATA").is_err(),
            "{} is missing",
            dir.display()
        );
        None
    }

    #[test]
    fn compiled_cases_pass_like_the_reference() {
        let Some(dir) = node_tests() else { return };
        let engine = Engine::Compiled(CompileOptions {
            threads: Some(1),
            ..Default::default()
        });
        for case in [
            "test_relu",
            "test_conv_with_strides_padding",
            "test_gemm_default_matrix_bias",
            "test_matmul_2d",
            "test_softmax_axis_1",
        ] {
            let r = run_case(&dir.join(case), Tolerance::default(), &engine);
            assert_eq!(r.status, Status::Pass, "{case}: {:?}", r.message);
            assert_eq!(r.reference_passes, None);
        }
    }

    #[test]
    fn compiled_failures_say_whether_the_reference_passes() {
        let Some(dir) = node_tests() else { return };
        // An unknown target fails every case at compile time, while the
        // reference passes it: exactly what the report must flag.
        let engine = Engine::Compiled(CompileOptions {
            target: "no-such-cpu".into(),
            ..Default::default()
        });
        let r = run_case(&dir.join("test_relu"), Tolerance::default(), &engine);
        assert_eq!(r.status, Status::Fail);
        assert!(
            r.message.as_deref().is_some_and(|m| m.starts_with("compile:")),
            "{:?}",
            r.message
        );
        assert_eq!(r.reference_passes, Some(true));
    }
}
