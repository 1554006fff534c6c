//! The extraction cost: FLOPs plus bytes moved plus a fixed cost per
//! kernel, weighted per target. Values computable from weights alone cost
//! nothing: extraction folds them into new weights.

use super::language::{ClassData, TensorLang, EG};
use egg::{CostFunction, Id, Language};
use std::collections::HashSet;

/// Relative prices of one FLOP, one byte of memory traffic and one kernel
/// launch on a target, in FLOP-equivalents.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CostModel {
    pub target: &'static str,
    pub per_flop: f64,
    pub per_byte: f64,
    pub per_node: f64,
}

impl CostModel {
    /// 2-core Zen 4: ~234 GFLOP/s over ~27 GB/s (≈ 9 FLOPs per byte); a
    /// kernel call costs about a microsecond of dispatch.
    pub fn cpu() -> CostModel {
        CostModel {
            target: "cpu",
            per_flop: 1.0,
            per_byte: 9.0,
            per_node: 2.0e5,
        }
    }

    /// A datacenter GPU: ~60 TFLOP/s over ~4.8 TB/s, ~5 µs per launch.
    pub fn gpu() -> CostModel {
        CostModel {
            target: "gpu",
            per_flop: 1.0,
            per_byte: 12.0,
            per_node: 3.0e8,
        }
    }

    pub fn for_target(name: &str) -> Option<CostModel> {
        match name {
            "cpu" => Some(CostModel::cpu()),
            "gpu" | "cuda" | "wgpu" => Some(CostModel::gpu()),
            _ => None,
        }
    }

    /// The cost of computing `node` alone (its inputs already computed).
    pub fn node_cost(&self, eg: &EG, node: &TensorLang) -> f64 {
        let data = |id: &Id| &eg[*id].data;
        let ins = || node.children().iter().map(|c| data(c).bytes()).sum::<f64>();
        let out = node_out(eg, node);
        let (flops, bytes, launches) = match node {
            TensorLang::Leaf(_) => return 0.0,
            // A reshape is a view: only its dispatch costs.
            TensorLang::Reshape(..) => (0.0, 0.0, 1.0),
            TensorLang::Transpose(..) | TensorLang::Concat(..) | TensorLang::Pad(..) => (0.0, ins() + out.bytes(), 1.0),
            TensorLang::Unary(..) | TensorLang::Scale(..) => {
                (out.elems().unwrap_or(0) as f64, ins() + out.bytes(), 1.0)
            }
            // One part of a Split: the Split's dispatch is paid once by the group.
            TensorLang::Slice { .. } => (0.0, 2.0 * out.bytes(), 0.0),
            TensorLang::MatMul([a, _]) => {
                let k = data(a).shape.as_ref().and_then(|s| s.last().copied()).unwrap_or(1);
                (2.0 * (out.elems().unwrap_or(0) * k) as f64, ins() + out.bytes(), 1.0)
            }
            // The bias add and the activation: one FLOP each per element.
            TensorLang::FusedMatMul(_, args) => {
                let k = data(&args[0])
                    .shape
                    .as_ref()
                    .and_then(|s| s.last().copied())
                    .unwrap_or(1);
                let elems = out.elems().unwrap_or(0);
                ((2 * elems * k + 2 * elems) as f64, ins() + out.bytes(), 1.0)
            }
            TensorLang::Gemm(f, args) => {
                let k = data(&args[0])
                    .shape
                    .as_ref()
                    .map(|s| if f.trans_a { s[0] } else { s[s.len() - 1] })
                    .unwrap_or(1);
                let activation = f.activation.map_or(0, |_| out.elems().unwrap_or(0));
                (
                    (2 * out.elems().unwrap_or(0) * k + activation) as f64,
                    ins() + out.bytes(),
                    1.0,
                )
            }
            // Each output element is a dot product over C/group x kernel taps.
            TensorLang::Conv(spec, args) => {
                let taps = data(&args[1])
                    .shape
                    .as_ref()
                    .map_or(1, |s| s[1..].iter().product::<usize>());
                let elems = out.elems().unwrap_or(0);
                let activation = spec.activation.map_or(0, |_| elems);
                ((2 * elems * taps + activation) as f64, ins() + out.bytes(), 1.0)
            }
        };
        self.per_flop * flops + self.per_byte * bytes + self.per_node * launches
    }
}

/// The type of `node`'s value: its class's data when it is in the e-graph.
fn node_out(eg: &EG, node: &TensorLang) -> ClassData {
    match eg.lookup(node.clone()) {
        Some(id) => eg[id].data.clone(),
        None => {
            let ty = super::language::node_type(node, &eg.analysis.leaves, |i| eg[i].data.clone());
            ClassData {
                shape: ty.as_ref().map(|t| t.0.clone()),
                dtype: ty.map(|t| t.1),
                constant: false,
            }
        }
    }
}

/// Greedy extraction cost: a node's own cost plus its children's; nodes
/// computable from weights cost nothing. The slices of merged parallel ops
/// are never picked here: a tree cost counts their shared wide op once per
/// slice, so extraction decides those groups as a whole (`Merge`).
pub struct Extraction<'a> {
    eg: &'a EG,
    model: CostModel,
    merge_slices: HashSet<TensorLang>,
}

impl<'a> Extraction<'a> {
    pub fn new(eg: &'a EG, model: CostModel) -> Self {
        let merge_slices = eg
            .analysis
            .merges
            .iter()
            .flat_map(|m| &m.slices)
            .map(|s| s.clone().map_children(|c| eg.find(c)))
            .collect();
        Extraction {
            eg,
            model,
            merge_slices,
        }
    }
}

impl CostFunction<TensorLang> for Extraction<'_> {
    type Cost = f64;

    fn cost<C>(&mut self, enode: &TensorLang, mut costs: C) -> f64
    where
        C: FnMut(Id) -> f64,
    {
        let constant = match enode {
            TensorLang::Leaf(_) => true,
            _ => enode.children().iter().all(|c| self.eg[*c].data.constant),
        };
        if constant {
            return 0.0;
        }
        if matches!(enode, TensorLang::Slice { .. })
            && !self.merge_slices.is_empty()
            && self
                .merge_slices
                .contains(&enode.clone().map_children(|c| self.eg.find(c)))
        {
            return f64::INFINITY;
        }
        let own = self.model.node_cost(self.eg, enode);
        enode.children().iter().fold(own, |acc, c| acc + costs(*c))
    }
}
