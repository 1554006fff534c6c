//! The e-graph level of the optimizer (-O3), with `egg`.
//!
//! The part of a graph the tensor-algebra language expresses (transposes,
//! reshapes, concat/split/slice, MatMul/Gemm, scalar scales, elementwise
//! unary ops, all with static shapes) becomes an e-graph; rules add
//! equivalent forms (transpose algebra, reshape and concat/split
//! cancellation, parallel MatMul merging, scale factoring, matmul
//! re-association) until saturation or a bound; extraction picks the
//! cheapest form under a per-target cost model (FLOPs + bytes moved +
//! launches). The result replaces the region only when it is cheaper and has
//! no more nodes, so -O3 never grows the graph.

pub mod convert;
pub mod cost;
pub mod extract;
pub mod language;
pub mod rules;

use crate::error::PassError;
use crate::manager::PassCtx;
use carbide_ir::Graph;
use cost::CostModel;
use egg::{Runner, StopReason};
use serde::Serialize;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Bounds on equality saturation: it stops at whichever comes first.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub nodes: usize,
    pub iterations: usize,
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            nodes: 20_000,
            iterations: 12,
            time: Duration::from_millis(400),
        }
    }
}

/// What one e-graph run did: the per-model numbers of `carbide inspect --optimize`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EGraphStats {
    pub target: String,
    /// Graph nodes in the rewritten region, and after extraction.
    pub region_nodes: usize,
    pub extracted_nodes: usize,
    pub classes: usize,
    pub enodes: usize,
    pub iterations: usize,
    pub saturation_ms: f64,
    pub extraction_ms: f64,
    /// Saturated, or the bound that stopped it.
    pub stop_reason: String,
    pub cost_before: f64,
    pub cost_after: f64,
    /// Whether the extracted region replaced the original.
    pub accepted: bool,
    /// Why not, when it did not.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub rejected_because: String,
    /// Rule name → times it added something.
    pub rules_applied: BTreeMap<String, usize>,
}

thread_local! {
    static STATS: RefCell<Vec<EGraphStats>> = const { RefCell::new(Vec::new()) };
}

/// The stats of the runs since the last call (the pass manager attaches
/// them to the pass that produced them; a pass function returns only
/// whether it changed the graph).
pub fn take_stats() -> Vec<EGraphStats> {
    STATS.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

fn stop_reason(r: &Option<StopReason>) -> String {
    match r {
        None => "not run".into(),
        Some(StopReason::Saturated) => "saturated".into(),
        Some(StopReason::IterationLimit(n)) => format!("iteration limit ({n})"),
        Some(StopReason::NodeLimit(n)) => format!("node limit ({n})"),
        Some(StopReason::TimeLimit(s)) => format!("time limit ({s} s)"),
        Some(StopReason::Other(s)) => s.clone(),
    }
}

/// The -O3 pass: e-graph rewriting of `g` for the cost model of
/// `cx.opts.cost_target`.
pub fn egraph_rewrite(g: &mut Graph, cx: &PassCtx) -> Result<bool, PassError> {
    let model = CostModel::for_target(&cx.opts.cost_target)
        .ok_or_else(|| PassError::UnknownCostTarget(cx.opts.cost_target.clone()))?;
    let (changed, stats) = rewrite(g, model, Limits::default());
    STATS.with(|s| s.borrow_mut().push(stats));
    Ok(changed)
}

/// Runs equality saturation over `g`'s region and replaces it with the
/// extracted graph when that is cheaper under `model` and not larger.
/// Anything the region cannot express is left as it is.
pub fn rewrite(g: &mut Graph, model: CostModel, limits: Limits) -> (bool, EGraphStats) {
    let mut stats = EGraphStats {
        target: model.target.to_string(),
        ..Default::default()
    };
    let region = convert::build(g);
    stats.region_nodes = region.nodes.len();
    if region.nodes.is_empty() || region.roots.is_empty() {
        stats.stop_reason = "empty region".into();
        return (false, stats);
    }
    // Slice e-nodes carry no launch (they may be parts of one Split):
    // count one launch per Split or Slice graph node instead.
    stats.cost_before = region
        .original
        .iter()
        .filter(|n| !region_node_folds(&region.egraph, n))
        .map(|n| model.node_cost(&region.egraph, n))
        .sum::<f64>()
        + model.per_node * slicing_nodes(g, &region.nodes) as f64;

    let start = Instant::now();
    let runner = Runner::default()
        .with_egraph(region.egraph)
        .with_node_limit(limits.nodes)
        .with_iter_limit(limits.iterations)
        .with_time_limit(limits.time)
        .run(&rules::all_rules());
    stats.saturation_ms = start.elapsed().as_secs_f64() * 1e3;
    stats.iterations = runner.iterations.len();
    stats.stop_reason = stop_reason(&runner.stop_reason);
    stats.classes = runner.egraph.number_of_classes();
    stats.enodes = runner.egraph.total_number_of_nodes();
    for it in &runner.iterations {
        for (rule, n) in &it.applied {
            *stats.rules_applied.entry(rule.to_string()).or_default() += n;
        }
    }

    let start = Instant::now();
    let extracted = extract::extract(g, &runner.egraph, &region.roots, model);
    stats.extraction_ms = start.elapsed().as_secs_f64() * 1e3;
    let emitted = match extracted {
        Ok(e) => e,
        Err(why) => {
            stats.rejected_because = why;
            return (false, stats);
        }
    };
    stats.cost_after = emitted.cost;
    stats.extracted_nodes = emitted.nodes.len();
    let fewer_nodes = emitted.nodes.len() < region.nodes.len();
    let cheaper = stats.cost_after < stats.cost_before * (1.0 - 1e-9);
    let pays = emitted.nodes.len() <= region.nodes.len()
        && (cheaper || (fewer_nodes && stats.cost_after <= stats.cost_before));
    if !pays {
        stats.rejected_because = "not cheaper, or more nodes".into();
        return (false, stats);
    }
    let mut candidate = g.clone();
    let drop: BTreeSet<usize> = region.nodes.iter().copied().collect();
    candidate.nodes = std::mem::take(&mut candidate.nodes)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .map(|(_, n)| n)
        .collect();
    for (old, new) in &emitted.renames {
        crate::util::replace_uses(&mut candidate, old, new);
    }
    candidate.nodes.extend(emitted.nodes);
    candidate.initializers.extend(emitted.initializers);
    crate::util::toposort(&mut candidate);
    crate::util::prune_value_info(&mut candidate);
    // The extraction must produce a valid graph; if it somehow does not,
    // the original stays (a missed optimization, never a broken model).
    if let Err(e) = carbide_ir::verify::verify_graph(&candidate, &BTreeSet::new()) {
        stats.rejected_because = format!("extracted graph does not verify: {e}");
        return (false, stats);
    }
    let mut typed = candidate.clone();
    typed.value_info.clear();
    if let Err(e) = carbide_ir::infer::infer_graph(&mut typed, &Default::default()) {
        stats.rejected_because = format!("extracted graph does not infer: {e}");
        return (false, stats);
    }
    stats.accepted = true;
    *g = candidate;
    (true, stats)
}

/// Region Split and Slice nodes: one launch each.
fn slicing_nodes(g: &Graph, nodes: &[usize]) -> usize {
    nodes
        .iter()
        .filter(|&&i| matches!(g.nodes[i].op.op_type(), "Slice" | "Split"))
        .count()
}

/// An original region node whose inputs are all constants: it costs
/// nothing, as in extraction (constant folding removes it).
fn region_node_folds(eg: &language::EG, n: &language::TensorLang) -> bool {
    use egg::Language;
    n.children().iter().all(|c| eg[*c].data.constant)
}

#[cfg(test)]
mod tests;
