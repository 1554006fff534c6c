//! The pass manager: pipelines per optimization level, re-inference and
//! verification between passes, per-pass timing and node/FLOP deltas.

use crate::error::PassError;
use carbide_ir::cost::graph_flops;
use carbide_ir::{Graph, Model};
use serde::Serialize;
use std::collections::BTreeSet;
use std::time::Instant;

/// What `optimize` does.
#[derive(Clone, Debug)]
pub struct PassOptions {
    /// 0: nothing; 1: classic cleanups; 2: + fusions; 3: + e-graph rewriting.
    pub level: u8,
    /// Verify the IR and re-run inference after every pass even in release builds
    /// (debug builds always do).
    pub verify_each: bool,
    /// Record the IR text after each pass with one of these names.
    pub dump_after: Vec<String>,
    /// Constant folding never stores an output larger than this many bytes
    /// unless its inputs were at least as large: folding must not bloat the model.
    pub fold_limit_bytes: usize,
    /// Rounds of the cleanup pipeline before giving up on a fixed point.
    pub max_rounds: usize,
    /// The cost model the e-graph level extracts for ("cpu" or "gpu"; see
    /// `egraph::cost::CostModel::for_target`).
    pub cost_target: String,
}

impl Default for PassOptions {
    fn default() -> Self {
        PassOptions {
            level: 3,
            verify_each: false,
            dump_after: Vec::new(),
            fold_limit_bytes: 1 << 16,
            max_rounds: 4,
            cost_target: "cpu".into(),
        }
    }
}

/// One run of one pass.
#[derive(Clone, Debug, Serialize)]
pub struct PassStat {
    pub name: String,
    pub ms: f64,
    pub changed: bool,
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub flops_before: u64,
    pub flops_after: u64,
    /// The e-graph run of this pass, for the e-graph level's passes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egraph: Option<crate::egraph::EGraphStats>,
}

/// The IR text after a pass, when asked for with `dump_after`.
#[derive(Clone, Debug, Serialize)]
pub struct Dump {
    pub pass: String,
    pub round: usize,
    pub text: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PassReport {
    pub level: u8,
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub flops_before: u64,
    pub flops_after: u64,
    pub total_ms: f64,
    pub passes: Vec<PassStat>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dumps: Vec<Dump>,
    /// Every e-graph run (-O3), in order: size, time, stop reason, cost.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub egraph: Vec<crate::egraph::EGraphStats>,
}

/// What a pass sees besides the graph.
pub struct PassCtx<'a> {
    pub opts: &'a PassOptions,
    pub name: &'static str,
}

pub type PassFn = fn(&mut Graph, &PassCtx) -> Result<bool, PassError>;

/// A named graph transformation; returns whether it changed anything.
#[derive(Clone, Copy)]
pub struct Pass {
    pub name: &'static str,
    pub run: PassFn,
    /// The lowest level that runs it.
    pub level: u8,
}

/// Every pass, in pipeline order.
pub const PASSES: &[Pass] = &[
    Pass {
        name: "remove-noops",
        run: crate::cleanup::remove_noops,
        level: 1,
    },
    Pass {
        name: "fold-shapes",
        run: crate::fold::fold_shapes,
        level: 1,
    },
    Pass {
        name: "fold-constants",
        run: crate::fold::fold_constants,
        level: 1,
    },
    Pass {
        name: "cse",
        run: crate::cleanup::cse,
        level: 1,
    },
    Pass {
        name: "cancel-transposes",
        run: crate::algebra::cancel_transposes,
        level: 1,
    },
    Pass {
        name: "fold-batchnorm",
        run: crate::algebra::fold_batchnorm,
        level: 1,
    },
    Pass {
        name: "fold-scale-into-weights",
        run: crate::algebra::fold_scale_into_weights,
        level: 1,
    },
    Pass {
        name: "matmul-add-to-gemm",
        run: crate::algebra::matmul_add_to_gemm,
        level: 1,
    },
    Pass {
        name: "fuse-activations",
        run: crate::fusion::fuse_activations,
        level: 2,
    },
    Pass {
        name: "fuse-norms",
        run: crate::fusion::fuse_norms,
        level: 2,
    },
    Pass {
        name: "fuse-attention",
        run: crate::attention::fuse_attention,
        level: 2,
    },
    Pass {
        name: "fuse-bias-activation",
        run: crate::fusion::fuse_bias_activation,
        level: 2,
    },
    // After the fusions: it rewrites what they left, so it never hides a
    // pattern from them.
    Pass {
        name: "egraph-rewrite",
        run: crate::egraph::egraph_rewrite,
        level: 3,
    },
    Pass {
        name: "dce",
        run: crate::cleanup::dce,
        level: 1,
    },
];

/// The names `dump_after` accepts.
pub fn pass_names() -> Vec<&'static str> {
    PASSES.iter().map(|p| p.name).collect()
}

fn infer(g: &mut Graph) -> Result<(), carbide_ir::IrError> {
    // Types recorded before a rewrite may describe values that changed
    // meaning; inference from the inputs is the truth.
    g.value_info.clear();
    carbide_ir::infer::infer_graph(g, &Default::default())
}

/// Optimizes `model` in place at `opts.level`.
pub fn optimize(model: &mut Model, opts: &PassOptions) -> Result<PassReport, PassError> {
    if opts.level > 3 {
        return Err(PassError::BadLevel(opts.level));
    }
    for d in &opts.dump_after {
        if !PASSES.iter().any(|p| p.name == d) {
            return Err(PassError::UnknownPass(d.clone()));
        }
    }
    if crate::egraph::cost::CostModel::for_target(&opts.cost_target).is_none() {
        return Err(PassError::UnknownCostTarget(opts.cost_target.clone()));
    }
    let start = Instant::now();
    let g = &mut model.graph;
    carbide_ir::verify::verify_graph(g, &BTreeSet::new()).map_err(PassError::Input)?;
    let keep_types = g.value_info.clone();
    if infer(g).is_err() {
        // Fall back to the importer's types; passes only use what is known.
        g.value_info = keep_types;
    }
    let mut report = PassReport {
        level: opts.level,
        nodes_before: g.nodes.len(),
        flops_before: graph_flops(g),
        ..Default::default()
    };
    let check = cfg!(debug_assertions) || opts.verify_each;
    let pipeline: Vec<Pass> = PASSES.iter().copied().filter(|p| p.level <= opts.level).collect();
    let rounds = if pipeline.is_empty() { 0 } else { opts.max_rounds.max(1) };
    for round in 0..rounds {
        let mut any = false;
        for pass in &pipeline {
            let nodes_before = g.nodes.len();
            let flops_before = graph_flops(g);
            let t = Instant::now();
            crate::egraph::take_stats();
            let changed = (pass.run)(g, &PassCtx { opts, name: pass.name })?;
            let egraph = crate::egraph::take_stats().pop();
            report.egraph.extend(egraph.clone());
            if changed {
                crate::util::toposort(g);
                crate::util::prune_value_info(g);
                if check {
                    carbide_ir::verify::verify_graph(g, &BTreeSet::new()).map_err(|source| PassError::Verify {
                        pass: pass.name.to_string(),
                        source,
                    })?;
                }
                infer(g).map_err(|source| PassError::Infer {
                    pass: pass.name.to_string(),
                    source,
                })?;
            }
            any |= changed;
            report.passes.push(PassStat {
                name: pass.name.to_string(),
                ms: t.elapsed().as_secs_f64() * 1e3,
                changed,
                nodes_before,
                nodes_after: g.nodes.len(),
                flops_before,
                flops_after: graph_flops(g),
                egraph,
            });
            if opts.dump_after.iter().any(|d| d == pass.name) {
                report.dumps.push(Dump {
                    pass: pass.name.to_string(),
                    round,
                    text: carbide_ir::print::graph_to_text(g),
                });
            }
        }
        if !any {
            break;
        }
    }
    report.nodes_after = g.nodes.len();
    report.flops_after = graph_flops(g);
    report.total_ms = start.elapsed().as_secs_f64() * 1e3;
    Ok(report)
}
