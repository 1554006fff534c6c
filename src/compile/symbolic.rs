//! Symbolic dims through shape arithmetic, so kernels see them.
//!
//! Shape inference leaves a dim unknown when it comes from a tensor's
//! *value* computed at run time: `Slice(pos_table, 0, Shape(ids)[1])` in a
//! transformer is `seq` rows, but inference only knows "some rows", and every
//! value downstream (the whole encoder) loses the `seq` dim, so no kernel
//! can be generated for it. This pass reads integer shape values
//! symbolically through the optimizer's [`shape_value`] (Shape, Slice,
//! Gather, Concat, Unsqueeze, Squeeze, Cast, Identity) and refines the output types of the ops that consume them
//! (Slice, Reshape, Range, Expand, ConstantOfShape), then shape inference
//! carries the refined dims on.
//!
//! One refinement is an assumption: `Slice(x, 0, s)` along an axis of
//! extent n is `s` long only when s ≤ n. It is safe because every kernel
//! checks its inputs against the types it was generated for (binding `s`
//! consistently for the whole run) before it touches them: a run where the
//! assumption fails is a clear shape error at the first kernel, never a
//! wrong answer; host steps compute real shapes regardless.

use carbide_ir::ops::TensorOp;
use carbide_ir::{Dim, Graph, Op, TensorType, ValueType};
use carbide_passes::fold::{shape_value, Elem};
use carbide_passes::util::Uses;

/// Elements of a small integer tensor (see [`shape_value`]).
type ShapeValue = Vec<Elem>;

/// Refines value types in `graph.value_info` (call shape inference after).
/// Returns how many values got a more precise type.
pub fn refine(graph: &mut Graph) -> usize {
    let uses = Uses::of(graph);
    let mut refined = Vec::new();
    for node in &graph.nodes {
        let input = |k: usize| node.inputs.get(k).filter(|n| !n.is_empty());
        let partial = |k: usize| input(k).and_then(|n| shape_value(graph, &uses, n));
        let value = |k: usize| partial(k).filter(|p| !p.scalar).map(|p| p.elems);
        let scalar = |k: usize| partial(k).filter(|p| p.scalar).and_then(|p| p.elems.into_iter().next());
        let ty = |k: usize| input(k).and_then(|n| tensor_type(graph, n));
        let Some(out) = node.outputs.first().filter(|o| !o.is_empty()) else {
            continue;
        };
        // A shape value itself (e.g. a Slice of a Shape) is typed exactly already.
        if shape_value(graph, &uses, out).is_some() {
            continue;
        }
        // Types of values shaped by shape values.
        let dims: Option<Vec<Dim>> = match &node.op {
            Op::Tensor(TensorOp::Slice { starts: None, .. }) => slice_dims(
                &ty(0),
                value(1).as_ref(),
                value(2).as_ref(),
                value(3).as_ref(),
                value(4).as_ref(),
                input(3).is_some(),
                input(4).is_some(),
            ),
            Op::Tensor(TensorOp::Reshape { allowzero, shape: None }) => {
                ty(0).and_then(|t| t.shape).zip(value(1)).map(|(data, shape)| {
                    shape
                        .iter()
                        .enumerate()
                        .map(|(i, e)| match e {
                            Elem::Known(0) if !allowzero => data.get(i).cloned().unwrap_or(Dim::Unknown),
                            Elem::Known(n) if *n > 0 => Dim::Known(*n as usize),
                            Elem::Sym(s) => Dim::Sym(s.clone()),
                            _ => Dim::Unknown,
                        })
                        .collect()
                })
            }
            Op::Tensor(TensorOp::Range) => match (scalar(0), scalar(1), scalar(2)) {
                (Some(Elem::Known(0)), Some(Elem::Sym(s)), Some(Elem::Known(1))) => Some(vec![Dim::Sym(s)]),
                _ => None,
            },
            Op::Tensor(TensorOp::ConstantOfShape { .. }) => value(0).map(|v| v.iter().map(dim_of).collect()),
            Op::Tensor(TensorOp::Expand) => ty(0).and_then(|t| t.shape).zip(value(1)).map(|(data, shape)| {
                let rank = data.len().max(shape.len());
                (0..rank)
                    .map(|i| {
                        let d = (i + data.len()).checked_sub(rank).map(|j| &data[j]);
                        let s = (i + shape.len()).checked_sub(rank).map(|j| dim_of(&shape[j]));
                        match (d, s) {
                            (None | Some(Dim::Known(1)), Some(s)) => s,
                            (Some(d), None | Some(Dim::Known(1))) => d.clone(),
                            (Some(d), Some(s)) if *d == s => s,
                            _ => Dim::Unknown,
                        }
                    })
                    .collect()
            }),
            _ => None,
        };
        let Some(dims) = dims else { continue };
        let current = tensor_type(graph, out).unwrap_or_default();
        let better = match &current.shape {
            None => dims.iter().any(|d| !matches!(d, Dim::Unknown)),
            Some(cur) => {
                cur.len() == dims.len()
                    && cur
                        .iter()
                        .zip(&dims)
                        .any(|(c, d)| matches!(c, Dim::Unknown) && !matches!(d, Dim::Unknown))
            }
        };
        if better {
            let ty = ValueType::Tensor(TensorType {
                dtype: current.dtype,
                shape: Some(dims),
            });
            refined.push((out.clone(), ty));
        }
    }
    let n = refined.len();
    for (name, ty) in refined {
        let merged = match graph.value_info.get(&name) {
            Some(old) => carbide_ir::infer::merge(old, &ty),
            None => ty,
        };
        graph.value_info.insert(name, merged);
    }
    n
}

fn consts(v: &ShapeValue) -> Option<Vec<i64>> {
    v.iter()
        .map(|e| match e {
            Elem::Known(c) => Some(*c),
            _ => None,
        })
        .collect()
}

fn dim_of(e: &Elem) -> Dim {
    match e {
        Elem::Known(n) if *n >= 0 => Dim::Known(*n as usize),
        Elem::Sym(s) => Dim::Sym(s.clone()),
        _ => Dim::Unknown,
    }
}

/// `Slice(data, starts, ends, axes, steps)` where an end is symbolic: a
/// slice from 0 with step 1 to `s` is `s` long (see the module doc).
fn slice_dims(
    data: &Option<TensorType>,
    starts: Option<&ShapeValue>,
    ends: Option<&ShapeValue>,
    axes: Option<&ShapeValue>,
    steps: Option<&ShapeValue>,
    has_axes: bool,
    has_steps: bool,
) -> Option<Vec<Dim>> {
    let data = data.as_ref()?.shape.clone()?;
    let (starts, ends) = (starts?, ends?);
    if starts.len() != ends.len() {
        return None;
    }
    let rank = data.len() as i64;
    let axes: Vec<i64> = if has_axes {
        consts(axes?)?
    } else {
        (0..starts.len() as i64).collect()
    };
    let steps: Vec<i64> = if has_steps {
        consts(steps?)?
    } else {
        vec![1; starts.len()]
    };
    if axes.len() != starts.len() || steps.len() != starts.len() {
        return None;
    }
    let mut out = data.clone();
    let mut any_symbolic = false;
    for (k, &axis) in axes.iter().enumerate() {
        let axis = if axis < 0 { axis + rank } else { axis };
        let slot = out.get_mut(usize::try_from(axis).ok()?)?;
        *slot = match (&starts[k], &ends[k], steps[k]) {
            (Elem::Known(0), Elem::Sym(s), 1) => {
                any_symbolic = true;
                Dim::Sym(s.clone())
            }
            // Constant bounds: shape inference already did what can be done.
            _ => Dim::Unknown,
        };
    }
    any_symbolic.then_some(out)
}

/// The static tensor type of a value (graph input, inferred, or weight),
/// without cloning weights.
fn tensor_type(graph: &Graph, name: &str) -> Option<TensorType> {
    if let Some(t) = graph.initializers.get(name) {
        return Some(TensorType::new(t.dtype(), carbide_ir::types::shape_of(t.shape())));
    }
    let from_io = graph
        .inputs
        .iter()
        .chain(&graph.outputs)
        .find(|i| i.name == name)
        .and_then(|i| i.ty.as_tensor().cloned());
    let from_info = graph.value_info.get(name).and_then(|t| t.as_tensor().cloned());
    match (from_io, from_info) {
        (Some(a), Some(b)) => carbide_ir::infer::merge(&ValueType::Tensor(a), &ValueType::Tensor(b))
            .as_tensor()
            .cloned(),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbide_ir::{DType, Node, Tensor, ValueInfo};

    fn node(name: &str, op: Op, inputs: &[&str], outputs: &[&str]) -> Node {
        Node {
            name: name.into(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn position_rows_sliced_by_the_input_length_are_seq_long() {
        let mut g = Graph::default();
        g.inputs.push(ValueInfo {
            name: "ids".into(),
            ty: ValueType::tensor(DType::I64, vec![Dim::Sym("batch".into()), Dim::Sym("seq".into())]),
        });
        g.initializers
            .insert("table".into(), Tensor::zeros(DType::F32, &[128, 8]).unwrap());
        g.initializers.insert("zero".into(), Tensor::from_i64s(vec![0]));
        g.initializers.insert("one".into(), Tensor::from_i64s(vec![1]));
        g.initializers.insert("two".into(), Tensor::from_i64s(vec![2]));
        g.nodes.push(node(
            "shape",
            Op::Tensor(TensorOp::Shape { start: 0, end: None }),
            &["ids"],
            &["s"],
        ));
        g.nodes.push(node(
            "len",
            Op::Tensor(TensorOp::Slice {
                starts: None,
                ends: None,
                axes: None,
            }),
            &["s", "one", "two"],
            &["len"],
        ));
        g.nodes.push(node(
            "rows",
            Op::Tensor(TensorOp::Slice {
                starts: None,
                ends: None,
                axes: None,
            }),
            &["table", "zero", "len", "zero"],
            &["rows"],
        ));
        carbide_ir::infer::infer_graph(&mut g, &Default::default()).unwrap();
        assert_eq!(refine(&mut g), 1);
        carbide_ir::infer::infer_graph(&mut g, &Default::default()).unwrap();
        let t = tensor_type(&g, "rows").unwrap();
        assert_eq!(t.shape, Some(vec![Dim::Sym("seq".into()), Dim::Known(8)]));
        // A second pass finds nothing new.
        assert_eq!(refine(&mut g), 0);
    }

    #[test]
    fn exporter_style_shape_chains_refine_reshape_and_range() {
        let mut g = Graph::default();
        let sym = |s: &str| Dim::Sym(s.into());
        g.inputs.push(ValueInfo {
            name: "x".into(),
            ty: ValueType::tensor(DType::F32, vec![sym("batch"), sym("seq"), Dim::Known(8)]),
        });
        g.initializers.insert("i0".into(), Tensor::scalar_i64(0));
        g.initializers.insert("i1".into(), Tensor::scalar_i64(1));
        g.initializers.insert("axes0".into(), Tensor::from_i64s(vec![0]));
        g.initializers.insert("heads".into(), Tensor::from_i64s(vec![2, 4]));
        let t = |op| Op::Tensor(op);
        g.nodes.push(node(
            "shape",
            t(TensorOp::Shape { start: 0, end: None }),
            &["x"],
            &["s"],
        ));
        g.nodes
            .push(node("b", t(TensorOp::Gather { axis: 0 }), &["s", "i0"], &["b"]));
        g.nodes
            .push(node("n", t(TensorOp::Gather { axis: 0 }), &["s", "i1"], &["n"]));
        g.nodes.push(node(
            "b1",
            t(TensorOp::Unsqueeze { axes: None }),
            &["b", "axes0"],
            &["b1"],
        ));
        g.nodes.push(node(
            "n1",
            t(TensorOp::Unsqueeze { axes: None }),
            &["n", "axes0"],
            &["n1"],
        ));
        g.nodes.push(node(
            "cat",
            t(TensorOp::Concat { axis: 0 }),
            &["b1", "n1", "heads"],
            &["shape"],
        ));
        g.nodes.push(node(
            "split",
            t(TensorOp::Reshape {
                allowzero: false,
                shape: None,
            }),
            &["x", "shape"],
            &["y"],
        ));
        g.nodes
            .push(node("pos", t(TensorOp::Range), &["i0", "n", "i1"], &["pos"]));
        carbide_ir::infer::infer_graph(&mut g, &Default::default()).unwrap();
        refine(&mut g);
        carbide_ir::infer::infer_graph(&mut g, &Default::default()).unwrap();
        let shape = |n: &str| tensor_type(&g, n).unwrap().shape.unwrap();
        assert_eq!(shape("y"), vec![sym("batch"), sym("seq"), Dim::Known(2), Dim::Known(4)]);
        assert_eq!(shape("pos"), vec![sym("seq")]);
    }
}
