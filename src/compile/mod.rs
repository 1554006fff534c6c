//! The compiler pipeline: a model in, a [`Module`] out.
//!
//! Steps: fold constants (nodes whose inputs are all weights run once, here),
//! re-infer types (folded shapes make more dims known), partition the graph
//! into kernel groups and ask the code generator for each, then build the
//! module (kernel library, weights, step list) that runs or saves as an
//! artifact.

pub mod cpu;
pub mod partition;

use carbide_ir::ops::{MiscOp, NnOp};
use carbide_ir::{Graph, Model, Op, Value};
use carbide_runtime::artifact::{ArtifactError, TargetInfo};
use carbide_runtime::ops::{eval, EvalCtx, SubgraphRunner};
use carbide_runtime::{Module, ModuleParts, OpError};
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
    #[error("folding constant node '{node}' ({op}): {cause}")]
    Fold { node: String, op: String, cause: OpError },
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
}

/// The optimizer level compilation uses at -O1 and above: the classic
/// cleanups (folding, CSE, BatchNorm into weights, no-op removal).
const COMPILE_PASS_LEVEL: u8 = 1;

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
    if !TARGETS.contains(&opts.target.as_str()) {
        return Err(CompileError::UnknownTarget(opts.target.clone()));
    }
    if opts.opt_level > 3 {
        return Err(CompileError::BadOptLevel(opts.opt_level));
    }
    if let Some(db) = &opts.tuning_db {
        check_tuning_db(db)?;
    }
    let mut model = model.clone();
    let mut report = CompileReport {
        nodes_in: model.graph.nodes.len(),
        ..Default::default()
    };
    if opts.opt_level >= 1 {
        // The CPU backend does not lower the optimizer's com.carbide fused ops
        // yet (the partitioner fuses the same epilogues into kernels itself),
        // so compilation runs the classic cleanups only, whatever the level.
        let pass_opts = carbide_passes::PassOptions {
            level: COMPILE_PASS_LEVEL,
            ..Default::default()
        };
        carbide_passes::optimize(&mut model, &pass_opts)?;
    }
    report.nodes_optimized = model.graph.nodes.len();
    report.nodes_folded = fold_constants(&mut model.graph)?;
    carbide_ir::infer::infer_graph(&mut model.graph, &Default::default())?;
    let cpu_target = carbide_backend_cpu::Target::parse(&opts.target)
        .map_err(|e| CompileError::UnknownTarget(format!("{}: {e}", opts.target)))?;
    let mut gen = cpu::CpuGen::new(cpu_target, &model.graph);
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
    let parts = ModuleParts {
        model,
        steps,
        library,
        target,
    };
    Ok((parts, report))
}

fn check_tuning_db(path: &std::path::Path) -> Result<(), CompileError> {
    let err = |reason: String| CompileError::TuningDb {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    // Records are JSON values, one per line (JSON Lines) or one document.
    if serde_json::from_str::<serde_json::Value>(&text).is_ok() {
        return Ok(());
    }
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line).map_err(|e| err(format!("line {}: {e}", i + 1)))?;
    }
    Ok(())
}

struct NoSubgraphs;

impl SubgraphRunner for NoSubgraphs {
    fn run_subgraph(&self, graph: &Graph, _: Vec<Value>) -> Result<Vec<Value>, OpError> {
        Err(OpError::Unsupported(format!(
            "subgraph '{}' while folding constants",
            graph.name
        )))
    }
}

/// Whether running `op` once at compile time gives the same result as
/// running it at every inference.
fn foldable(op: &Op) -> bool {
    op.subgraphs().is_empty()
        && !matches!(
            op,
            Op::Misc(MiscOp::Random(_) | MiscOp::Multinomial { .. } | MiscOp::Bernoulli { .. })
                | Op::Nn(NnOp::Dropout { .. })
        )
}

/// Largest folded constant kept (bigger results, e.g. a huge Expand, stay
/// computed at run time rather than bloating the artifact).
const MAX_FOLDED_BYTES: usize = 64 << 20;

/// Evaluates nodes whose inputs are all weights and makes their outputs
/// weights. Returns how many nodes it removed.
fn fold_constants(graph: &mut Graph) -> Result<usize, CompileError> {
    let inputs: std::collections::HashSet<String> = graph.inputs.iter().map(|i| i.name.clone()).collect();
    let mut kept = Vec::with_capacity(graph.nodes.len());
    let mut folded = 0;
    for node in std::mem::take(&mut graph.nodes) {
        // A weight that is also a graph input can be overridden at run time: not a constant.
        let is_const = |n: &str| graph.initializers.contains_key(n) && !inputs.contains(n);
        if !foldable(&node.op) || !node.present_inputs().all(is_const) {
            kept.push(node);
            continue;
        }
        let vals: Vec<Option<Value>> = node
            .inputs
            .iter()
            .map(|n| (!n.is_empty()).then(|| Value::Tensor(graph.initializers[n].clone())))
            .collect();
        let refs: Vec<Option<&Value>> = vals.iter().map(Option::as_ref).collect();
        let cx = EvalCtx {
            num_outputs: node.outputs.len(),
            runner: &NoSubgraphs,
            seed: 0,
        };
        let outs = eval(&node.op, &refs, &cx).map_err(|cause| CompileError::Fold {
            node: node.name.clone(),
            op: node.op.op_type().to_string(),
            cause,
        })?;
        let tensors: Option<Vec<_>> = outs.into_iter().map(Value::into_tensor).collect();
        let too_big = |t: &carbide_ir::Tensor| t.len() * 8 > MAX_FOLDED_BYTES;
        match tensors {
            Some(ts) if ts.len() >= node.outputs.len() && !ts.iter().any(too_big) => {
                for (name, t) in node.outputs.iter().zip(ts) {
                    if !name.is_empty() {
                        graph.initializers.insert(name.clone(), t);
                    }
                }
                folded += 1;
            }
            _ => kept.push(node),
        }
    }
    graph.nodes = kept;
    // Weights nothing reads any more (folded into others) are dropped.
    let mut used: std::collections::HashSet<&str> = graph.inputs.iter().map(|i| i.name.as_str()).collect();
    used.extend(graph.outputs.iter().map(|o| o.name.as_str()));
    let mut sub = Vec::new();
    for n in &graph.nodes {
        used.extend(n.present_inputs());
        for g in n.op.subgraphs() {
            all_names(g, &mut sub);
        }
    }
    used.extend(sub.iter().map(String::as_str));
    let used: std::collections::HashSet<String> = used.into_iter().map(str::to_string).collect();
    graph.initializers.retain(|k, _| used.contains(k));
    Ok(folded)
}

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
