//! The compiler pipeline: a model in, a [`Module`] out.
//!
//! Steps: optimize the graph at the requested level (-O0: constant folding
//! only, which partitioning needs for folded shapes; -O2 and up hand the
//! backend the optimizer's fused ops), re-infer types, partition the graph
//! into kernel groups and ask the code generator for each, then build the
//! module (kernel library, weights, step list) that runs or saves as an
//! artifact.

pub mod cpu;
pub mod partition;
mod symbolic;

use carbide_ir::{Graph, Model};
use carbide_runtime::artifact::{ArtifactError, TargetInfo};
use carbide_runtime::{Module, ModuleParts};
use partition::KernelGen;
use std::path::PathBuf;
use thiserror::Error;

/// Target names `--target` accepts.
pub const TARGETS: [&str; 4] = ["native", "x86-64-avx2", "x86-64-avx512", "aarch64-neon"];

/// How to compile.
#[derive(Clone, Debug, PartialEq)]
pub struct CompileOptions {
    /// "native" (the machine compiling), "x86-64-avx2", "x86-64-avx512" or "aarch64-neon".
    pub target: String,
    /// 0: no graph optimization; 1..=3: the optimizer's levels.
    pub opt_level: u8,
    /// Tuning records to replay (checked to exist and parse as JSON).
    pub tuning_db: Option<PathBuf>,
    /// Worker threads of the returned module (default: all cores).
    pub threads: Option<usize>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            target: "native".into(),
            opt_level: 3,
            tuning_db: None,
            threads: None,
        }
    }
}

#[derive(Debug, Error)]
pub enum CompileError {
    #[error("unknown target '{0}' (expected one of native, x86-64-avx2, x86-64-avx512, aarch64-neon)")]
    UnknownTarget(String),
    #[error("optimization level {0} is out of range (0..=3)")]
    BadOptLevel(u8),
    #[error("tuning database {path}: {reason}")]
    TuningDb { path: String, reason: String },
    #[error("code generation for kernel group at node '{node}': {reason}")]
    Codegen { node: String, reason: String },
    #[error("optimizing the graph: {0}")]
    Optimize(#[from] carbide_passes::PassError),
    #[error(transparent)]
    Ir(#[from] carbide_ir::IrError),
    #[error("building the module: {0}")]
    Module(#[from] ArtifactError),
}

/// What a compilation did, for reports (`carbide compile --json`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct CompileReport {
    /// The target the kernels were built for ("native" resolved, e.g.
    /// "x86-64-avx512"; "host" when every step runs on the host).
    pub target: String,
    pub nodes_in: usize,
    pub nodes_folded: usize,
    /// Nodes after the graph optimizer (equal to `nodes_in` at -O0).
    pub nodes_optimized: usize,
    pub kernels: usize,
    /// Graph nodes computed by generated kernels.
    pub nodes_in_kernels: usize,
    pub host_steps: usize,
    pub alias_steps: usize,
    pub library_bytes: usize,
    /// Kernels compiled with a schedule from the tuning database.
    pub tuned: Vec<TunedKernel>,
    /// Anchor nodes of tunable kernels the tuning database had no record for
    /// (empty without `--tuning-db`).
    pub untuned: Vec<String>,
}

/// A kernel whose schedule came from a tuning record.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TunedKernel {
    pub node: String,
    pub workload: String,
    pub schedule: carbide_ir::kernel::Schedule,
    pub median_us: Option<f64>,
    pub default_us: Option<f64>,
}

/// Compiles `model` for `opts.target` and loads the result (the target's
/// CPU must be this machine's; [`compile_artifact`] writes any target).
pub fn compile(model: &Model, opts: &CompileOptions) -> Result<Module, CompileError> {
    compile_with_report(model, opts).map(|(m, _)| m)
}

/// [`compile`], also returning what it did.
pub fn compile_with_report(model: &Model, opts: &CompileOptions) -> Result<(Module, CompileReport), CompileError> {
    let (parts, report) = compile_parts(model, opts)?;
    let mut module = Module::from_parts(parts)?;
    if let Some(t) = opts.threads {
        module.set_threads(t)?;
    }
    Ok((module, report))
}

/// Compiles `model` for `opts.target` into the bytes of a `.carbide`
/// artifact without loading the kernels, so it works for every target on
/// every machine (e.g. `aarch64-neon` on x86). `opts.threads` is not
/// stored: the loader picks its thread count.
pub fn compile_artifact(model: &Model, opts: &CompileOptions) -> Result<(Vec<u8>, CompileReport), CompileError> {
    let (parts, report) = compile_parts(model, opts)?;
    Ok((carbide_runtime::artifact::encode_parts(parts)?, report))
}

/// The pipeline up to the module's parts (nothing loaded or run).
fn compile_parts(model: &Model, opts: &CompileOptions) -> Result<(ModuleParts, CompileReport), CompileError> {
    let tuning = match &opts.tuning_db {
        Some(db) => Some(load_tuning_db(db)?),
        None => None,
    };
    let (mut model, mut report, cpu_target) = prepare(model, opts)?;
    let mut gen = cpu::CpuGen::new(cpu_target, &model.graph);
    gen.tuning = tuning;
    let steps = partition::partition(&model.graph, &mut gen as &mut dyn KernelGen)?;
    let library = gen.finish()?;
    let target = if library.is_empty() {
        TargetInfo::host_only()
    } else {
        gen.target_info()
    };
    prune_weights(&mut model.graph, &steps);
    for s in &steps {
        match s {
            carbide_runtime::Step::Host { .. } => report.host_steps += 1,
            carbide_runtime::Step::Alias { .. } => report.alias_steps += 1,
            carbide_runtime::Step::Kernel(k) => {
                report.kernels += 1;
                report.nodes_in_kernels += k.nodes.len();
            }
        }
    }
    report.library_bytes = library.len();
    report.target = target.name.clone();
    report.tuned = std::mem::take(&mut gen.tuned);
    report.untuned = std::mem::take(&mut gen.untuned);
    let parts = ModuleParts {
        model,
        steps,
        library,
        target,
    };
    Ok((parts, report))
}

/// The kernel groups compilation would generate for `model` (with their
/// default schedules): what the autotuner tunes.
pub fn kernel_groups(
    model: &Model,
    opts: &CompileOptions,
) -> Result<(Vec<carbide_backend_cpu::KernelGroup>, carbide_backend_cpu::Target), CompileError> {
    let (model, _, cpu_target) = prepare(model, opts)?;
    let mut gen = cpu::CpuGen::new(cpu_target.clone(), &model.graph);
    gen.keep_groups = true;
    partition::partition(&model.graph, &mut gen as &mut dyn KernelGen)?;
    Ok((std::mem::take(&mut gen.groups), cpu_target))
}

/// Checks the options, optimizes and folds the graph: everything before partitioning.
fn prepare(
    model: &Model,
    opts: &CompileOptions,
) -> Result<(Model, CompileReport, carbide_backend_cpu::Target), CompileError> {
    if !TARGETS.contains(&opts.target.as_str()) {
        return Err(CompileError::UnknownTarget(opts.target.clone()));
    }
    if opts.opt_level > 3 {
        return Err(CompileError::BadOptLevel(opts.opt_level));
    }
    let mut model = model.clone();
    let mut report = CompileReport {
        nodes_in: model.graph.nodes.len(),
        ..Default::default()
    };
    let pass_opts = carbide_passes::PassOptions {
        level: opts.opt_level,
        fold_limit_bytes: MAX_FOLDED_BYTES,
        ..Default::default()
    };
    let folding = ["fold-constants", "fold-shapes"];
    if opts.opt_level >= 1 {
        let passes = carbide_passes::optimize(&mut model, &pass_opts)?;
        report.nodes_folded = (passes.passes.iter())
            .filter(|p| folding.contains(&p.name.as_str()))
            .map(|p| p.nodes_before.saturating_sub(p.nodes_after))
            .sum();
    } else {
        // Kernels need the shapes that folding makes known, even at -O0.
        let before = model.graph.nodes.len();
        carbide_passes::fold::fold_constants(
            &mut model.graph,
            &carbide_passes::PassCtx {
                opts: &pass_opts,
                name: "fold-constants",
            },
        )?;
        carbide_passes::cleanup::dce(
            &mut model.graph,
            &carbide_passes::PassCtx {
                opts: &pass_opts,
                name: "dce",
            },
        )?;
        report.nodes_folded = before - model.graph.nodes.len();
    }
    report.nodes_optimized = model.graph.nodes.len();
    carbide_ir::infer::infer_graph(&mut model.graph, &Default::default())?;
    // Symbolic dims that flow through shape arithmetic (Shape → Slice → ...);
    // each round can expose more (a refined value's Shape), so up to a few.
    for _ in 0..4 {
        if symbolic::refine(&mut model.graph) == 0 {
            break;
        }
        carbide_ir::infer::infer_graph(&mut model.graph, &Default::default())?;
    }
    let cpu_target = carbide_backend_cpu::Target::parse(&opts.target)
        .map_err(|e| CompileError::UnknownTarget(format!("{}: {e}", opts.target)))?;
    Ok((model, report, cpu_target))
}

/// Reads the tuning records (JSON lines, see `carbide_autotune::records`).
fn load_tuning_db(path: &std::path::Path) -> Result<carbide_autotune::Database, CompileError> {
    carbide_autotune::Database::load(path).map_err(|e| CompileError::TuningDb {
        path: path.display().to_string(),
        reason: match e {
            carbide_autotune::TuneError::Db { reason, .. } => reason,
            other => other.to_string(),
        },
    })
}

/// Largest folded constant kept (bigger results, e.g. a huge Expand, stay
/// computed at run time rather than bloating the artifact); weights are in
/// the artifact anyway, so this is far above the optimizer's default.
const MAX_FOLDED_BYTES: usize = 64 << 20;

/// Drops weights no step reads (e.g. ones a kernel took pre-packed).
fn prune_weights(graph: &mut Graph, steps: &[carbide_runtime::Step]) {
    use carbide_ir::kernel::BufferArg;
    use carbide_runtime::Step;
    let mut used: std::collections::HashSet<String> = graph.inputs.iter().map(|i| i.name.clone()).collect();
    used.extend(graph.outputs.iter().map(|o| o.name.clone()));
    let mut names = Vec::new();
    for step in steps {
        match step {
            Step::Host { node } | Step::Alias { node } => {
                let n = &graph.nodes[*node];
                names.extend(n.present_inputs().map(str::to_string));
                for g in n.op.subgraphs() {
                    all_names(g, &mut names);
                }
            }
            Step::Kernel(k) => {
                for b in &k.call.buffers {
                    if let BufferArg::Input(i) = b {
                        names.push(k.inputs[*i].clone());
                    }
                }
            }
        }
    }
    used.extend(names);
    graph.initializers.retain(|k, _| used.contains(k));
}

fn all_names(g: &Graph, out: &mut Vec<String>) {
    for n in &g.nodes {
        out.extend(n.present_inputs().map(str::to_string));
        for sub in n.op.subgraphs() {
            all_names(sub, out);
        }
    }
    out.extend(g.outputs.iter().map(|o| o.name.clone()));
}
