//! E-graph → graph: the cheapest e-node of each needed class becomes a graph
//! node. Classes computable from weights alone are evaluated on the
//! reference kernels into new initializers; slices of one value that tile
//! an axis are emitted as one Split. Root values keep their names.

use super::cost::{CostModel, Extraction};
use super::language::{TensorAnalysis, TensorLang, EG};
use crate::util::{binary, node, unary, Namer};
use carbide_ir::ops::elementwise::Binary;
use carbide_ir::ops::linalg::GemmAttrs;
use carbide_ir::ops::nn::{AutoPad, ConvAttrs};
use carbide_ir::ops::tensor::PadMode;
use carbide_ir::ops::{FusedOp, LinalgOp, NnOp, TensorOp};
use carbide_ir::{Graph, Node, Op, Tensor, Value};
use carbide_runtime::ops::{eval, EvalCtx, SubgraphRunner};
use carbide_runtime::OpError;
use egg::{Extractor, Id, Language};
use std::collections::{BTreeSet, HashMap};

struct NoSubgraphs;

impl SubgraphRunner for NoSubgraphs {
    fn run_subgraph(&self, _: &Graph, _: Vec<Value>) -> Result<Vec<Value>, OpError> {
        Err(OpError::Unsupported("e-graph extraction does not run subgraphs".into()))
    }
}

/// The region as graph nodes, ready to replace the old ones.
pub struct Emitted {
    pub nodes: Vec<Node>,
    pub initializers: Vec<(String, Tensor)>,
    /// Root values now defined under another name: (old, new). Uses of the
    /// old name outside the region must be renamed.
    pub renames: Vec<(String, String)>,
    /// The cost model's price of the emitted nodes (each counted once).
    pub cost: f64,
}

fn activation(analysis: &TensorAnalysis, i: u32) -> Result<carbide_ir::ops::fused::Activation, String> {
    analysis
        .activations
        .get(i as usize)
        .copied()
        .ok_or_else(|| format!("activation #{i} is not interned"))
}

fn i64s(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

/// The graph op for an e-node, and the constant inputs it takes after its
/// children (shape, scalar, slice bounds, pads).
fn op_of(n: &TensorLang, eg: &EG) -> Result<(Op, Vec<Tensor>), String> {
    let analysis = &eg.analysis;
    let ints = |v: &[usize]| Tensor::from_i64s(i64s(v));
    Ok(match n {
        TensorLang::Leaf(_) => return Err("a leaf is not an op".into()),
        TensorLang::Transpose(p, _) => (
            Op::Tensor(TensorOp::Transpose {
                perm: Some(p.iter().map(|&x| x as i64).collect()),
            }),
            vec![],
        ),
        TensorLang::Reshape(s, _) => (
            Op::Tensor(TensorOp::Reshape {
                allowzero: false,
                shape: None,
            }),
            vec![ints(s)],
        ),
        TensorLang::Unary(u, _) => {
            let u = analysis
                .unaries
                .get(*u as usize)
                .ok_or_else(|| format!("unary op #{u} is not interned"))?;
            (unary(*u), vec![])
        }
        TensorLang::Scale(k, _) => (binary(Binary::Mul), vec![Tensor::scalar_f32(f32::from_bits(*k))]),
        TensorLang::MatMul(_) => (Op::Linalg(LinalgOp::MatMul), vec![]),
        TensorLang::FusedMatMul(a, _) => (
            Op::Fused(FusedOp::FusedMatMul {
                activation: activation(analysis, *a)?,
            }),
            vec![],
        ),
        TensorLang::Gemm(f, _) => {
            let gemm = GemmAttrs {
                alpha: f32::from_bits(f.alpha),
                beta: f32::from_bits(f.beta),
                trans_a: f.trans_a,
                trans_b: f.trans_b,
            };
            let op = match f.activation.map(|a| activation(analysis, a)).transpose()? {
                None => Op::Linalg(LinalgOp::Gemm(gemm)),
                Some(activation) => Op::Fused(FusedOp::FusedGemm { gemm, activation }),
            };
            (op, vec![])
        }
        TensorLang::Conv(spec, args) => {
            let kernel = args
                .get(1)
                .and_then(|w| eg[*w].data.shape.as_ref())
                .map(|s| i64s(&s[2..]))
                .ok_or("a Conv e-node without a typed weight")?;
            let conv = ConvAttrs {
                auto_pad: AutoPad::NotSet,
                dilations: Some(i64s(&spec.dilations)),
                group: spec.group as i64,
                kernel_shape: Some(kernel),
                pads: Some(i64s(&spec.pads)),
                strides: Some(i64s(&spec.strides)),
            };
            let op = match spec.activation.map(|a| activation(analysis, a)).transpose()? {
                None => Op::Nn(NnOp::Conv(conv)),
                Some(activation) => Op::Fused(FusedOp::FusedConv { conv, activation }),
            };
            (op, vec![])
        }
        TensorLang::Pad(pads, _) => (
            Op::Tensor(TensorOp::Pad {
                mode: PadMode::Constant,
                pads: None,
                value: 0.0,
            }),
            vec![ints(pads)],
        ),
        TensorLang::Concat(axis, _) => (Op::Tensor(TensorOp::Concat { axis: *axis as i64 }), vec![]),
        TensorLang::Slice { axis, start, end, .. } => (
            Op::Tensor(TensorOp::Slice {
                starts: None,
                ends: None,
                axes: None,
            }),
            vec![ints(&[*start]), ints(&[*end]), ints(&[*axis])],
        ),
    })
}

/// A chosen slice: (its class, start, end).
type SlicePart = (Id, usize, usize);

struct Emitter<'a> {
    g: &'a Graph,
    eg: &'a EG,
    extractor: Extractor<'a, Extraction<'a>, TensorLang, TensorAnalysis>,
    model: CostModel,
    namer: Namer,
    names: HashMap<Id, String>,
    root_name: HashMap<Id, String>,
    consts: HashMap<Id, Tensor>,
    /// Choices made for groups of classes instead of by the greedy extractor.
    overrides: HashMap<Id, TensorLang>,
    /// Classes being emitted: meeting one again means the choice is cyclic.
    visiting: BTreeSet<Id>,
    folding: BTreeSet<Id>,
    /// The chosen slices per (sliced class, axis): (class, start, end).
    slices: HashMap<(Id, usize), Vec<SlicePart>>,
    out: Emitted,
}

impl Emitter<'_> {
    fn best(&self, id: Id) -> TensorLang {
        let id = self.eg.find(id);
        match self.overrides.get(&id) {
            Some(n) => n.clone(),
            None => self.extractor.find_best_node(id).clone(),
        }
    }

    /// The cost of `n` relative to a merge: its own cost plus its
    /// children's, where the shared input and constants are free and each
    /// merged class pays its op but not the shared input again. Tree costs
    /// would count everything above the shared input once per merged class.
    fn relative_cost(&self, n: &TensorLang, shared: Id, members: &BTreeSet<Id>) -> f64 {
        let shared_cost = self.extractor.find_best_cost(shared);
        let children = n.children().iter().map(|c| {
            let c = self.eg.find(*c);
            if c == shared || self.eg[c].data.constant {
                0.0
            } else if members.contains(&c) {
                self.extractor.find_best_cost(c) - shared_cost
            } else {
                self.extractor.find_best_cost(c)
            }
        });
        self.model.node_cost(self.eg, n) + children.sum::<f64>()
    }

    /// When the wide op of a merge also computes a value the graph already
    /// had from the merged classes (a Concat of the parts: Split→Concat
    /// cancelled), picks between the two by their relative costs: the greedy
    /// extractor would count everything above the shared input once per part
    /// and always prefer the wide op. Returns whether the wide op lost.
    fn decide_wide_class(&mut self, m: &super::language::Merge, wide: Id) -> bool {
        let eg = self.eg;
        let shared = eg.find(m.shared);
        let members: BTreeSet<Id> = m.classes.iter().map(|c| eg.find(*c)).collect();
        let is_wide_op = |n: &TensorLang| {
            matches!(
                n,
                TensorLang::MatMul(_) | TensorLang::FusedMatMul(..) | TensorLang::Gemm(..) | TensorLang::Conv(..)
            ) && n.children().first().map(|c| eg.find(*c)) == Some(shared)
        };
        let of_members = |n: &TensorLang| {
            let live: Vec<Id> = n
                .children()
                .iter()
                .map(|c| eg.find(*c))
                .filter(|c| !eg[*c].data.constant)
                .collect();
            !live.is_empty() && live.iter().all(|c| members.contains(c))
        };
        let Some(wide_op) = eg[wide].nodes.iter().find(|n| is_wide_op(n)) else {
            return false;
        };
        // Only the tree-cost mistake between these two is corrected; a third
        // form the greedy extractor found cheaper stays.
        let greedy = self.best(wide);
        if !is_wide_op(&greedy) && !of_members(&greedy) {
            return false;
        }
        let wide_cost = self.relative_cost(wide_op, shared, &members);
        let alternative = eg[wide]
            .nodes
            .iter()
            .filter(|n| of_members(n))
            .map(|n| (self.relative_cost(n, shared, &members), n))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        let Some((alt_cost, alt)) = alternative else {
            return false;
        };
        let (choice, lost) = if alt_cost < wide_cost {
            (alt, true)
        } else {
            (wide_op, false)
        };
        self.overrides.insert(wide, choice.clone().map_children(|c| eg.find(c)));
        lost
    }

    /// Takes the merged form of parallel ops (MatMul, Gemm, Conv) where it
    /// is cheaper as a whole: the wide op and its Split are paid once, not
    /// per part. Merges that share a class compete: the larger saving wins.
    fn decide_merges(&mut self) {
        let eg = self.eg;
        let mut paying = Vec::new();
        for m in &eg.analysis.merges {
            let Some(TensorLang::Slice { arg: [wide], .. }) = m.slices.first() else {
                continue;
            };
            let wide = self.eg.find(*wide);
            if self.decide_wide_class(m, wide) {
                continue;
            }
            let shared = self.extractor.find_best_cost(self.eg.find(m.shared));
            let apart: f64 = m
                .classes
                .iter()
                .map(|c| self.extractor.find_best_cost(self.eg.find(*c)) - shared)
                .sum();
            let slicing: f64 = m.slices.iter().map(|s| self.model.node_cost(self.eg, s)).sum();
            let merged = self.extractor.find_best_cost(wide) - shared + slicing + self.model.per_node;
            if merged < apart {
                paying.push((apart - merged, m));
            }
        }
        paying.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, m) in paying {
            let classes: Vec<Id> = m.classes.iter().map(|c| self.eg.find(*c)).collect();
            if classes.iter().any(|c| self.overrides.contains_key(c)) {
                continue;
            }
            for (c, s) in classes.into_iter().zip(&m.slices) {
                let s = s.clone().map_children(|i| self.eg.find(i));
                self.overrides.insert(c, s);
            }
        }
    }

    fn folds(&self, id: Id) -> bool {
        self.eg[id].data.constant && !self.root_name.contains_key(&id)
    }

    /// Records the slices the extraction will emit, so slices that tile an
    /// axis become one Split.
    fn collect(&mut self, id: Id, seen: &mut BTreeSet<Id>) {
        let id = self.eg.find(id);
        if !seen.insert(id) || self.folds(id) {
            return;
        }
        let best = self.best(id);
        if let TensorLang::Slice {
            axis,
            start,
            end,
            arg: [x],
        } = best
        {
            let x = self.eg.find(x);
            self.slices.entry((x, axis)).or_default().push((id, start, end));
        }
        for c in best.children() {
            self.collect(*c, seen);
        }
    }

    fn const_value(&mut self, id: Id) -> Result<Tensor, String> {
        let id = self.eg.find(id);
        if let Some(t) = self.consts.get(&id) {
            return Ok(t.clone());
        }
        if !self.folding.insert(id) {
            return Err(format!("the folded choice for e-class {id} is cyclic"));
        }
        let got = self.fold(id);
        self.folding.remove(&id);
        got
    }

    fn fold(&mut self, id: Id) -> Result<Tensor, String> {
        let best = self.best(id);
        let t = if let TensorLang::Leaf(k) = best {
            let name = &self.eg.analysis.leaves[k as usize].name;
            self.g
                .initializers
                .get(name)
                .cloned()
                .ok_or_else(|| format!("leaf '{name}' is not an initializer"))?
        } else {
            let mut inputs = Vec::new();
            for c in best.children() {
                if !self.eg[*c].data.constant {
                    return Err(format!("a constant class has a non-constant choice {best:?}"));
                }
                inputs.push(Value::Tensor(self.const_value(*c)?));
            }
            let (op, extra) = op_of(&best, self.eg)?;
            inputs.extend(extra.into_iter().map(Value::Tensor));
            let refs: Vec<Option<&Value>> = inputs.iter().map(Some).collect();
            let cx = EvalCtx {
                num_outputs: 1,
                runner: &NoSubgraphs,
                seed: 0,
            };
            let outs = eval(&op, &refs, &cx).map_err(|e| format!("folding {}: {e}", op.op_type()))?;
            match outs.into_iter().next() {
                Some(Value::Tensor(t)) => t,
                _ => return Err(format!("folding {} gave no tensor", op.op_type())),
            }
        };
        self.consts.insert(id, t.clone());
        Ok(t)
    }

    fn fresh_output(&mut self, id: Id) -> String {
        match self.root_name.get(&id) {
            Some(n) => n.clone(),
            None => self.namer.fresh("eg"),
        }
    }

    fn push(&mut self, op: Op, inputs: Vec<String>, outputs: Vec<String>) {
        let name = self.namer.fresh("egraph");
        self.out.nodes.push(node(name, op, inputs, outputs));
    }

    fn constant_input(&mut self, t: Tensor) -> String {
        let name = self.namer.fresh("egraph_const");
        self.out.initializers.push((name.clone(), t));
        name
    }

    fn value(&mut self, id: Id) -> Result<String, String> {
        let id = self.eg.find(id);
        if let Some(n) = self.names.get(&id) {
            return Ok(n.clone());
        }
        if !self.visiting.insert(id) {
            return Err(format!("the extracted choice for e-class {id} is cyclic"));
        }
        let got = self.emit(id);
        self.visiting.remove(&id);
        got
    }

    fn emit(&mut self, id: Id) -> Result<String, String> {
        let best = self.best(id);
        if let TensorLang::Leaf(k) = best {
            let name = self.eg.analysis.leaves[k as usize].name.clone();
            self.names.insert(id, name.clone());
            return Ok(name);
        }
        if self.folds(id) {
            let t = self.const_value(id)?;
            let name = self.constant_input(t);
            self.names.insert(id, name.clone());
            return Ok(name);
        }
        if let TensorLang::Slice { axis, arg: [x], .. } = best {
            if let Some(name) = self.split(id, self.eg.find(x), axis)? {
                return Ok(name);
            }
        }
        let mut inputs = Vec::new();
        for c in best.children() {
            inputs.push(self.value(*c)?);
        }
        let (op, extra) = op_of(&best, self.eg)?;
        for t in extra {
            inputs.push(self.constant_input(t));
        }
        let launch = if matches!(best, TensorLang::Slice { .. }) {
            self.model.per_node
        } else {
            0.0
        };
        self.out.cost += self.model.node_cost(self.eg, &best) + launch;
        let out = self.fresh_output(id);
        self.push(op, inputs, vec![out.clone()]);
        self.names.insert(id, out.clone());
        Ok(out)
    }

    /// Emits every chosen slice of `x` along `axis` as one Split when they
    /// tile the axis; `None` when they do not.
    fn split(&mut self, id: Id, x: Id, axis: usize) -> Result<Option<String>, String> {
        let Some(mut parts) = self.slices.get(&(x, axis)).cloned() else {
            return Ok(None);
        };
        parts.sort_by_key(|p| (p.1, p.2));
        parts.dedup();
        let dim = self.eg[x].data.shape.as_ref().map(|s| s[axis]);
        let mut at = 0;
        let tiles = parts.len() >= 2
            && parts.iter().all(|&(_, s, e)| {
                let ok = s == at;
                at = e;
                ok
            })
            && Some(at) == dim;
        if !tiles {
            return Ok(None);
        }
        let input = self.value(x)?;
        let sizes = Tensor::from_i64s(parts.iter().map(|&(_, s, e)| (e - s) as i64).collect());
        let sizes = self.constant_input(sizes);
        let mut outputs = Vec::new();
        for &(class, s, e) in &parts {
            let out = self.fresh_output(class);
            self.names.insert(class, out.clone());
            outputs.push(out);
            let part = TensorLang::Slice {
                axis,
                start: s,
                end: e,
                arg: [x],
            };
            self.out.cost += self.model.node_cost(self.eg, &part);
        }
        self.out.cost += self.model.per_node;
        let op = Op::Tensor(TensorOp::Split {
            axis: axis as i64,
            split: None,
            num_outputs: None,
        });
        self.push(op, vec![input, sizes], outputs);
        Ok(self.names.get(&id).cloned())
    }
}

/// Extracts the cheapest graph for the region's roots.
pub fn extract(g: &Graph, eg: &EG, roots: &[(String, Id)], model: CostModel) -> Result<Emitted, String> {
    let extractor = Extractor::new(eg, Extraction::new(eg, model));
    let outputs: BTreeSet<&str> = g.outputs.iter().map(|o| o.name.as_str()).collect();
    let mut root_name = HashMap::new();
    // Graph outputs claim their class's name first: they cannot be renamed.
    for graph_outputs_first in [true, false] {
        for (name, id) in roots {
            if outputs.contains(name.as_str()) == graph_outputs_first {
                root_name.entry(eg.find(*id)).or_insert_with(|| name.clone());
            }
        }
    }
    let mut em = Emitter {
        g,
        eg,
        extractor,
        model,
        namer: Namer::new(g),
        names: HashMap::new(),
        root_name,
        consts: HashMap::new(),
        overrides: HashMap::new(),
        visiting: BTreeSet::new(),
        folding: BTreeSet::new(),
        slices: HashMap::new(),
        out: Emitted {
            nodes: Vec::new(),
            initializers: Vec::new(),
            renames: Vec::new(),
            cost: 0.0,
        },
    };
    em.decide_merges();
    let mut seen = BTreeSet::new();
    for (_, id) in roots {
        em.collect(*id, &mut seen);
    }
    for (name, id) in roots {
        let got = em.value(*id)?;
        if got == *name {
            continue;
        }
        if outputs.contains(name.as_str()) {
            // Two graph outputs (or an output and a leaf) became one value:
            // the interface keeps both names.
            em.out.cost += em.model.per_node;
            em.push(Op::Tensor(TensorOp::Identity), vec![got], vec![name.clone()]);
        } else {
            em.out.renames.push((name.clone(), got));
        }
    }
    Ok(em.out)
}
