//! Folding: nodes whose inputs are all constants are evaluated once on the
//! reference runtime; shape computations are folded from static types,
//! element by element, so a `Shape` of a value with symbolic dims still
//! folds the parts that are known.

use crate::cleanup::is_nondeterministic;
use crate::error::PassError;
use crate::manager::PassCtx;
use crate::util::{constant, tensor_type, Uses};
use carbide_ir::ops::elementwise::ElementwiseOp;
use carbide_ir::ops::TensorOp;
use carbide_ir::{Dim, Graph, Op, Tensor, Value};
use carbide_runtime::ops::{eval, EvalCtx, SubgraphRunner};
use carbide_runtime::OpError;

struct NoSubgraphs;

impl SubgraphRunner for NoSubgraphs {
    fn run_subgraph(&self, _: &carbide_ir::Graph, _: Vec<Value>) -> Result<Vec<Value>, OpError> {
        Err(OpError::Unsupported("constant folding does not run subgraphs".into()))
    }
}

fn bytes(t: &Tensor) -> usize {
    (t.len() * t.dtype().bit_width()).div_ceil(8)
}

/// Evaluates nodes whose inputs are all constants and stores their outputs
/// as initializers, unless that would store more than
/// `max(fold_limit_bytes, bytes of the constant inputs)`.
pub fn fold_constants(g: &mut Graph, cx: &PassCtx) -> Result<bool, PassError> {
    let mut changed = false;
    let mut i = 0;
    while i < g.nodes.len() {
        let n = &g.nodes[i];
        let skip = !n.op.subgraphs().is_empty()
            || is_nondeterministic(&n.op)
            || n.present_inputs().count() == 0
            || n.present_inputs().any(|x| constant(g, x).is_none());
        if skip {
            i += 1;
            continue;
        }
        let inputs: Vec<Option<Value>> = n
            .inputs
            .iter()
            .map(|x| constant(g, x).map(|t| Value::Tensor(t.clone())))
            .collect();
        let refs: Vec<Option<&Value>> = inputs.iter().map(Option::as_ref).collect();
        let ecx = EvalCtx {
            num_outputs: n.outputs.len(),
            runner: &NoSubgraphs,
            seed: 0,
        };
        // A node that fails on its constant inputs fails at run time too;
        // leaving it keeps that behaviour (and its error message).
        let Ok(outs) = eval(&n.op, &refs, &ecx) else {
            i += 1;
            continue;
        };
        let in_bytes: usize = n.present_inputs().filter_map(|x| constant(g, x)).map(bytes).sum();
        let mut tensors = Vec::new();
        for (name, v) in n.outputs.iter().zip(outs) {
            if name.is_empty() {
                continue;
            }
            match v {
                Value::Tensor(t) => tensors.push((name.clone(), t)),
                _ => break,
            }
        }
        let wanted = n.outputs.iter().filter(|o| !o.is_empty()).count();
        let out_bytes: usize = tensors.iter().map(|(_, t)| bytes(t)).sum();
        if tensors.len() != wanted || out_bytes > cx.opts.fold_limit_bytes.max(in_bytes) {
            i += 1;
            continue;
        }
        g.initializers.extend(tensors);
        g.nodes.remove(i);
        changed = true;
    }
    Ok(changed)
}

/// One element of a 1-D integer value whose elements are known separately.
#[derive(Clone, Debug, PartialEq)]
pub enum Elem {
    Known(i64),
    /// A symbolic dim: equal to any other dim of the same name.
    Sym(String),
    Unknown,
}

/// The element-wise knowledge about a small 1-D (or scalar) int64 value.
#[derive(Clone, Debug)]
pub struct Partial {
    pub elems: Vec<Elem>,
    pub scalar: bool,
}

impl Partial {
    fn known(&self) -> Option<Vec<i64>> {
        self.elems
            .iter()
            .map(|e| match e {
                Elem::Known(v) => Some(*v),
                _ => None,
            })
            .collect()
    }
}

/// What is known of the elements of a small integer value computed by
/// shape arithmetic (Shape, Gather, Slice, Concat, ...): shape folding and
/// the compiler's symbolic-dim refinement both read shape values this way.
pub fn shape_value(g: &Graph, uses: &Uses, name: &str) -> Option<Partial> {
    partial_of(g, uses, name, 0, &|_, _| Elem::Unknown)
}

/// [`shape_value`], where a `Shape` dim that the types leave unknown reads
/// as `unknown_dim(value, axis)`: for a caller that can prove more about
/// dims than shape inference (the attention matcher).
pub fn shape_value_resolving(
    g: &Graph,
    uses: &Uses,
    name: &str,
    unknown_dim: &dyn Fn(&str, usize) -> Elem,
) -> Option<Partial> {
    partial_of(g, uses, name, 0, unknown_dim)
}

type UnknownDim<'a> = &'a dyn Fn(&str, usize) -> Elem;

fn partial_of(g: &Graph, uses: &Uses, name: &str, depth: usize, unknown_dim: UnknownDim) -> Option<Partial> {
    if depth > 16 || name.is_empty() {
        return None;
    }
    if let Some(t) = constant(g, name) {
        if t.rank() > 1 || t.len() > 64 || !t.dtype().is_int() {
            return None;
        }
        return Some(Partial {
            elems: t.to_i64_vec()?.into_iter().map(Elem::Known).collect(),
            scalar: t.rank() == 0,
        });
    }
    let (_, n) = uses.producer(g, name)?;
    let input = |i: usize| n.inputs.get(i).filter(|s| !s.is_empty()).map(String::as_str);
    let ints = |i: usize| input(i).and_then(|s| constant(g, s)).and_then(|t| t.to_i64_vec());
    match &n.op {
        Op::Tensor(TensorOp::Shape { start, end }) => {
            let shape = tensor_type(g, input(0)?)?.shape?;
            let r = shape.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (s, e) = (clamp(*start), clamp(end.unwrap_or(r)));
            let elems = shape[s..e.max(s)]
                .iter()
                .enumerate()
                .map(|(k, d)| match d {
                    Dim::Known(v) => Elem::Known(*v as i64),
                    Dim::Sym(s) => Elem::Sym(s.clone()),
                    Dim::Unknown => input(0).map_or(Elem::Unknown, |x| unknown_dim(x, s + k)),
                })
                .collect();
            Some(Partial { elems, scalar: false })
        }
        Op::Tensor(TensorOp::Identity) => partial_of(g, uses, input(0)?, depth + 1, unknown_dim),
        Op::Elementwise(ElementwiseOp::Cast { to, .. }) if to.is_int() => {
            partial_of(g, uses, input(0)?, depth + 1, unknown_dim)
        }
        Op::Tensor(TensorOp::Gather { axis: 0 }) => {
            let data = partial_of(g, uses, input(0)?, depth + 1, unknown_dim)?;
            let idx = constant(g, input(1)?)?;
            if idx.rank() > 1 || data.scalar {
                return None;
            }
            let r = data.elems.len() as i64;
            let elems = idx
                .to_i64_vec()?
                .into_iter()
                .map(|k| {
                    let k = if k < 0 { k + r } else { k };
                    (0..r).contains(&k).then(|| data.elems[k as usize].clone())
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Partial {
                elems,
                scalar: idx.rank() == 0,
            })
        }
        Op::Tensor(TensorOp::Slice { starts, ends, axes }) => {
            let data = partial_of(g, uses, input(0)?, depth + 1, unknown_dim)?;
            let (starts, ends, axes, steps) = if starts.is_some() {
                (starts.clone()?, ends.clone()?, axes.clone(), None)
            } else {
                (
                    ints(1)?,
                    ints(2)?,
                    input(3).map(|_| ints(3)).flatten_opt()?,
                    input(4).map(|_| ints(4)).flatten_opt()?,
                )
            };
            if starts.len() != 1 || ends.len() != 1 || data.scalar {
                return None;
            }
            if axes.is_some_and(|a| a != [0] && a != [-1]) || steps.is_some_and(|s| s != [1]) {
                return None;
            }
            let r = data.elems.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (s, e) = (clamp(starts[0]), clamp(ends[0]));
            Some(Partial {
                elems: data.elems[s..e.max(s)].to_vec(),
                scalar: false,
            })
        }
        Op::Tensor(TensorOp::Concat { axis: 0 | -1 }) => {
            let mut elems = Vec::new();
            for x in n.present_inputs() {
                let p = partial_of(g, uses, x, depth + 1, unknown_dim)?;
                if p.scalar {
                    return None;
                }
                elems.extend(p.elems);
            }
            Some(Partial { elems, scalar: false })
        }
        Op::Tensor(TensorOp::Unsqueeze { axes }) => {
            let p = partial_of(g, uses, input(0)?, depth + 1, unknown_dim)?;
            let axes = match axes {
                Some(a) => a.clone(),
                None => ints(1)?,
            };
            (p.scalar && (axes == [0] || axes == [-1])).then_some(Partial {
                elems: p.elems,
                scalar: false,
            })
        }
        Op::Tensor(TensorOp::Squeeze { .. }) => {
            let p = partial_of(g, uses, input(0)?, depth + 1, unknown_dim)?;
            (!p.scalar && p.elems.len() == 1).then_some(Partial {
                elems: p.elems,
                scalar: true,
            })
        }
        _ => None,
    }
}

trait FlattenOpt<T> {
    fn flatten_opt(self) -> Option<Option<T>>;
}

impl<T> FlattenOpt<T> for Option<Option<T>> {
    /// Absent stays `Some(None)`; present but not constant is `None`.
    fn flatten_opt(self) -> Option<Option<T>> {
        match self {
            None => Some(None),
            Some(Some(v)) => Some(Some(v)),
            Some(None) => None,
        }
    }
}

/// Folds shape computations: a `Shape`/`Gather`/`Slice`/`Concat`/
/// `Unsqueeze`/`Squeeze` chain whose elements are all known becomes a
/// constant, and `Size` of a fully known shape too. A `Reshape` whose
/// target is only partly known gets a constant target where each unknown
/// element copies the same symbolic dim of the input (0) or is the one
/// remaining unknown (-1).
pub fn fold_shapes(g: &mut Graph, _cx: &PassCtx) -> Result<bool, PassError> {
    let mut changed = false;
    let uses = Uses::of(g);
    let mut folded: Vec<(usize, String, Tensor)> = Vec::new();
    let mut new_targets: Vec<(usize, String, Tensor)> = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let Some(out) = n.outputs.first().filter(|o| !o.is_empty()) else {
            continue;
        };
        if n.outputs.len() != 1 || constant(g, out).is_some() {
            continue;
        }
        if let Op::Tensor(TensorOp::Size) = n.op {
            if let Some(s) = n.inputs.first().and_then(|x| crate::util::known_shape(g, x)) {
                folded.push((i, out.clone(), Tensor::scalar_i64(s.iter().product::<usize>() as i64)));
            }
            continue;
        }
        if let Op::Tensor(TensorOp::Reshape {
            allowzero: false,
            shape: None,
        }) = n.op
        {
            if let Some(t) = reshape_target(g, &uses, n) {
                new_targets.push((i, n.name.clone(), t));
            }
            continue;
        }
        if !matches!(
            n.op,
            Op::Tensor(
                TensorOp::Shape { .. }
                    | TensorOp::Gather { .. }
                    | TensorOp::Slice { .. }
                    | TensorOp::Concat { .. }
                    | TensorOp::Unsqueeze { .. }
                    | TensorOp::Squeeze { .. }
            ) | Op::Elementwise(ElementwiseOp::Cast { .. })
        ) {
            continue;
        }
        let Some(p) = shape_value(g, &uses, out) else {
            continue;
        };
        let Some(v) = p.known() else { continue };
        // The folded value must have the dtype the node produced.
        let dtype = tensor_type(g, out).and_then(|t| t.dtype);
        if dtype != Some(carbide_ir::DType::I64) {
            continue;
        }
        let t = if p.scalar {
            Tensor::scalar_i64(v[0])
        } else {
            Tensor::from_i64s(v)
        };
        folded.push((i, out.clone(), t));
    }
    let mut namer = crate::util::Namer::new(g);
    for (i, name, t) in new_targets {
        let c = namer.fresh(&format!("{name}_shape"));
        g.initializers.insert(c.clone(), t);
        g.nodes[i].inputs[1] = c;
        changed = true;
    }
    let mut remove: Vec<usize> = Vec::new();
    for (i, name, t) in folded {
        g.initializers.insert(name, t);
        remove.push(i);
    }
    changed |= !remove.is_empty();
    let mut k = 0;
    g.nodes.retain(|_| {
        k += 1;
        !remove.contains(&(k - 1))
    });
    Ok(changed)
}

/// A constant Reshape target for a partly known one (see [`fold_shapes`]).
fn reshape_target(g: &Graph, uses: &Uses, n: &carbide_ir::Node) -> Option<Tensor> {
    let target = n.inputs.get(1)?;
    if constant(g, target).is_some() {
        return None;
    }
    let p = shape_value(g, uses, target)?;
    let data = tensor_type(g, n.inputs.first()?)?.shape?;
    if p.scalar || p.elems.contains(&Elem::Known(0)) {
        return None;
    }
    let mut out = Vec::with_capacity(p.elems.len());
    let mut minus_one = p.elems.contains(&Elem::Known(-1));
    for (k, e) in p.elems.iter().enumerate() {
        match e {
            Elem::Known(v) => out.push(*v),
            Elem::Sym(s) if data.get(k) == Some(&Dim::Sym(s.clone())) => out.push(0),
            _ if !minus_one => {
                minus_one = true;
                out.push(-1);
            }
            _ => return None,
        }
    }
    Some(Tensor::from_i64s(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{op_types, ramp, G};
    use crate::util::{binary, unary};
    use carbide_ir::ops::elementwise::{Binary, Unary};

    #[test]
    fn folds_constant_chains() {
        let mut t = G::new();
        t.input("x", &[2, 3])
            .init("w", ramp(&[3, 2], 0.1))
            .node(
                Op::Tensor(TensorOp::Transpose { perm: Some(vec![1, 0]) }),
                &["w"],
                &["wt"],
            )
            .node(unary(Unary::Exp), &["wt"], &["e"])
            .node(binary(Binary::Mul), &["x", "e"], &["y"])
            .output("y");
        let g = t.check_pass(fold_constants);
        assert_eq!(op_types(&g), ["Mul"]);
    }

    #[test]
    fn the_size_cap_keeps_expansions() {
        let mut t = G::new();
        t.input("x", &[1])
            .init("c", Tensor::scalar_f32(2.0))
            .init("s", Tensor::from_i64s(vec![1000, 100]))
            .node(Op::Tensor(TensorOp::Expand), &["c", "s"], &["big"])
            .node(binary(Binary::Add), &["x", "big"], &["y"])
            .output("y");
        let m = t.model();
        let mut g = m.graph.clone();
        let opts = crate::PassOptions::default();
        assert!(!fold_constants(&mut g, &PassCtx { opts: &opts, name: "t" }).unwrap());
    }

    #[test]
    fn folds_known_dims_of_symbolic_shapes() {
        // Reshape(x, Concat(Shape(x)[0], Shape(x)[1] / 3, 3)) with x: [batch, 12] -> Reshape(x, [0, 4, 3]).
        let mut t = G::new();
        t.sym_input("x", &[Err("batch"), Ok(12)], &[2, 12])
            .init("i0", Tensor::scalar_i64(0))
            .init("i1", Tensor::scalar_i64(1))
            .init("tail", Tensor::from_i64s(vec![3]))
            .init("ax", Tensor::from_i64s(vec![0]))
            .node(Op::Tensor(TensorOp::Shape { start: 0, end: None }), &["x"], &["s"])
            .node(Op::Tensor(TensorOp::Gather { axis: 0 }), &["s", "i0"], &["b"])
            .node(Op::Tensor(TensorOp::Gather { axis: 0 }), &["s", "i1"], &["f"])
            .node(Op::Tensor(TensorOp::Unsqueeze { axes: None }), &["b", "ax"], &["bu"])
            .node(Op::Tensor(TensorOp::Unsqueeze { axes: None }), &["f", "ax"], &["fu"])
            .node(binary(Binary::Div), &["fu", "tail"], &["q"])
            .node(
                Op::Tensor(TensorOp::Concat { axis: 0 }),
                &["bu", "q", "tail"],
                &["target"],
            )
            .node(
                Op::Tensor(TensorOp::Reshape {
                    allowzero: false,
                    shape: None,
                }),
                &["x", "target"],
                &["y"],
            )
            .output("y");
        // The pipeline's cleanups finish what shape folding starts.
        let g = t.check_level(1);
        assert_eq!(op_types(&g), ["Reshape"]);
        let target = &g.initializers[&g.nodes[0].inputs[1]];
        assert_eq!(target.to_i64_vec().unwrap(), vec![0, 4, 3]);
    }
}
