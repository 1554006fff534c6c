//! Graph → e-graph: the region of nodes the language can express (with
//! fully known static shapes) becomes e-nodes; every other value is a leaf.

use super::language::{ConvSpec, GemmFlags, LeafInfo, TensorAnalysis, TensorLang, EG};
use crate::util::{as_binary, as_unary, constant, known_shape, scalar, tensor_type, Uses};
use carbide_ir::ops::elementwise::{Binary, Unary};
use carbide_ir::ops::fused::Activation;
use carbide_ir::ops::linalg::GemmAttrs;
use carbide_ir::ops::nn::{ConvAttrs, Window};
use carbide_ir::ops::{FusedOp, LinalgOp, NnOp, TensorOp};
use carbide_ir::{DType, Graph, Node, Op};
use egg::Id;
use std::collections::{BTreeSet, HashMap};

/// The e-graph of one graph's rewritable region.
pub struct Region {
    pub egraph: EG,
    /// The indices (into `g.nodes`) of the nodes the region replaces.
    pub nodes: Vec<usize>,
    /// Values of the region used outside it (or graph outputs), in graph
    /// order: extraction must define each under its name.
    pub roots: Vec<(String, Id)>,
    /// The e-node each region value had in the graph: the "before" cost.
    pub original: Vec<TensorLang>,
}

/// How one graph node maps to e-nodes: an e-node per output, over the
/// node's inputs by name.
enum Plan {
    /// One output.
    One(fn(Vec<Id>) -> Option<TensorLang>, Vec<String>, Extra),
    /// One Slice per output of a Split.
    Split {
        axis: usize,
        sizes: Vec<usize>,
        input: String,
    },
}

/// The attribute an e-node needs besides its children.
#[derive(Clone)]
enum Extra {
    None,
    Shape(Box<[usize]>),
    Unary(Unary),
    Scale(u32),
    /// The flags, and the activation of a FusedGemm (interned when added).
    Gemm(GemmFlags, Option<Activation>),
    Conv(Box<ConvSpec>, Option<Activation>),
    Activation(Activation),
    Axis(usize),
    Slice(usize, usize, usize),
}

fn unary_keeps_type(u: &Unary) -> bool {
    !matches!(u, Unary::IsNaN | Unary::IsInf { .. } | Unary::Not | Unary::BitwiseNot)
}

fn i64s(g: &Graph, name: Option<&String>) -> Option<Option<Vec<i64>>> {
    match name.filter(|s| !s.is_empty()) {
        None => Some(None),
        Some(n) => constant(g, n)?.to_i64_vec().map(Some),
    }
}

/// An ONNX Slice with constant arguments that cuts exactly one axis with step 1.
fn one_axis_slice(g: &Graph, n: &Node, in_shape: &[usize]) -> Option<(usize, usize, usize)> {
    let Op::Tensor(TensorOp::Slice { starts, ends, axes }) = &n.op else {
        return None;
    };
    let (starts, ends, axes) = match (starts, ends) {
        (Some(s), Some(e)) => (s.clone(), e.clone(), axes.clone()),
        _ => (
            i64s(g, n.inputs.get(1))??,
            i64s(g, n.inputs.get(2))??,
            i64s(g, n.inputs.get(3))?,
        ),
    };
    if let Some(steps) = i64s(g, n.inputs.get(4))? {
        if steps.iter().any(|&s| s != 1) {
            return None;
        }
    }
    let rank = in_shape.len() as i64;
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    if axes.len() != starts.len() || ends.len() != starts.len() {
        return None;
    }
    let mut cut = None;
    for ((&a, &s), &e) in axes.iter().zip(&starts).zip(&ends) {
        let a = if a < 0 { a + rank } else { a };
        if !(0..rank).contains(&a) {
            return None;
        }
        let dim = in_shape[a as usize] as i64;
        let clamp = |v: i64| (if v < 0 { v + dim } else { v }).clamp(0, dim) as usize;
        let (s, e) = (clamp(s), clamp(e));
        if s == 0 && e == dim as usize {
            continue;
        }
        if cut.is_some() || s >= e {
            return None;
        }
        cut = Some((a as usize, s, e));
    }
    cut
}

fn plan(g: &Graph, n: &Node) -> Option<Plan> {
    let ins: Vec<String> = n.inputs.clone();
    let shape = |i: usize| ins.get(i).filter(|s| !s.is_empty()).and_then(|s| known_shape(g, s));
    let out_shape = n.outputs.first().and_then(|o| known_shape(g, o));
    let first = || vec![ins[0].clone()];
    match &n.op {
        Op::Tensor(TensorOp::Transpose { perm }) => {
            let s = shape(0)?;
            out_shape?;
            let perm: Vec<usize> = match perm {
                Some(p) => p.iter().map(|&x| usize::try_from(x).ok()).collect::<Option<_>>()?,
                None => (0..s.len()).rev().collect(),
            };
            Some(Plan::One(
                |c| Some(TensorLang::Transpose(Box::new([]), [c[0]])),
                first(),
                Extra::Shape(perm.into()),
            ))
        }
        Op::Tensor(TensorOp::Reshape { .. }) => {
            shape(0)?;
            // A 0 in a Reshape target means "copy the input dim" unless allowzero.
            let target = out_shape.filter(|t| !t.contains(&0))?;
            Some(Plan::One(
                |c| Some(TensorLang::Reshape(Box::new([]), [c[0]])),
                first(),
                Extra::Shape(target.into()),
            ))
        }
        Op::Tensor(TensorOp::Concat { axis }) => {
            let s = shape(0)?;
            out_shape?;
            if ins.iter().any(|i| i.is_empty() || known_shape(g, i).is_none()) {
                return None;
            }
            let axis = carbide_ir::ops::normalize_axis("Concat", *axis, s.len()).ok()?;
            Some(Plan::One(
                |c| Some(TensorLang::Concat(0, c.into())),
                ins,
                Extra::Axis(axis),
            ))
        }
        Op::Tensor(TensorOp::Split { axis, .. }) => {
            let s = shape(0)?;
            let axis = carbide_ir::ops::normalize_axis("Split", *axis, s.len()).ok()?;
            let sizes = n
                .outputs
                .iter()
                .map(|o| (!o.is_empty()).then(|| known_shape(g, o)).flatten().map(|s| s[axis]))
                .collect::<Option<Vec<usize>>>()?;
            (sizes.iter().sum::<usize>() == s[axis]).then(|| Plan::Split {
                axis,
                sizes,
                input: ins[0].clone(),
            })
        }
        Op::Tensor(TensorOp::Slice { .. }) => {
            let s = shape(0)?;
            out_shape?;
            let (axis, start, end) = one_axis_slice(g, n, &s)?;
            Some(Plan::One(
                |c| {
                    Some(TensorLang::Slice {
                        axis: 0,
                        start: 0,
                        end: 0,
                        arg: [c[0]],
                    })
                },
                first(),
                Extra::Slice(axis, start, end),
            ))
        }
        Op::Linalg(LinalgOp::MatMul) => {
            if shape(0)?.len() < 2 || shape(1)?.len() < 2 {
                return None;
            }
            out_shape?;
            Some(Plan::One(|c| Some(TensorLang::MatMul([c[0], c[1]])), ins, Extra::None))
        }
        Op::Linalg(LinalgOp::Gemm(a)) => gemm_plan(g, n, a, None),
        Op::Fused(FusedOp::FusedGemm { gemm, activation }) => gemm_plan(g, n, gemm, Some(*activation)),
        Op::Nn(NnOp::Conv(a)) => conv_plan(g, n, a, None),
        Op::Fused(FusedOp::FusedMatMul { activation }) => {
            let ins = core_inputs(g, n)?;
            if shape(0)?.len() < 2 || shape(1)?.len() < 2 {
                return None;
            }
            out_shape?;
            Some(Plan::One(
                |c| Some(TensorLang::FusedMatMul(0, c.into())),
                ins,
                Extra::Activation(*activation),
            ))
        }
        Op::Fused(FusedOp::FusedConv { conv, activation }) => conv_plan(g, n, conv, Some(*activation)),
        op => {
            if let Some(u) = as_unary(op) {
                let s = shape(0)?;
                let dt = tensor_type(g, &ins[0])?.dtype?;
                let same = out_shape.as_ref() == Some(&s) && n.outputs.len() == 1;
                let out_dt = tensor_type(g, &n.outputs[0]).and_then(|t| t.dtype);
                return (same && unary_keeps_type(&u) && out_dt == Some(dt))
                    .then(|| Plan::One(|c| Some(TensorLang::Unary(0, [c[0]])), first(), Extra::Unary(u)));
            }
            if as_binary(op) == Some(Binary::Mul) && ins.len() == 2 {
                let out = out_shape?;
                for (x, k) in [(0, 1), (1, 0)] {
                    let Some(c) = scalar(g, &ins[k]) else { continue };
                    let f32_scalar = constant(g, &ins[k]).is_some_and(|t| t.dtype() == DType::F32);
                    let x_ok = shape(x).as_ref() == Some(&out)
                        && tensor_type(g, &ins[x]).and_then(|t| t.dtype) == Some(DType::F32);
                    if f32_scalar && x_ok {
                        return Some(Plan::One(
                            |c| Some(TensorLang::Scale(0, [c[0]])),
                            vec![ins[x].clone()],
                            Extra::Scale((c as f32).to_bits()),
                        ));
                    }
                }
            }
            None
        }
    }
}

/// The inputs of a Gemm or Conv (or their fused forms) that the language
/// takes: the first three, absent ones dropped; `None` with a residual
/// input (the language has no residual).
fn core_inputs(g: &Graph, n: &Node) -> Option<Vec<String>> {
    if n.inputs.get(3).is_some_and(|z| !z.is_empty()) || n.inputs.len() > 4 {
        return None;
    }
    let ins: Vec<String> = n.inputs.iter().take(3).filter(|s| !s.is_empty()).cloned().collect();
    let known = ins.iter().all(|i| known_shape(g, i).is_some());
    let first_two_present = n.inputs.iter().take(2).all(|s| !s.is_empty());
    (known && first_two_present && ins.len() >= 2).then_some(ins)
}

fn gemm_plan(g: &Graph, n: &Node, a: &GemmAttrs, activation: Option<Activation>) -> Option<Plan> {
    n.outputs.first().and_then(|o| known_shape(g, o))?;
    let ins = core_inputs(g, n)?;
    let flags = GemmFlags {
        trans_a: a.trans_a,
        trans_b: a.trans_b,
        alpha: a.alpha.to_bits(),
        beta: a.beta.to_bits(),
        activation: None,
    };
    Some(Plan::One(
        |c| Some(TensorLang::Gemm(GemmFlags::default(), c.into())),
        ins,
        Extra::Gemm(flags, activation),
    ))
}

/// A Conv whose window resolves against its static shapes; `auto_pad`
/// becomes explicit pads.
fn conv_plan(g: &Graph, n: &Node, a: &ConvAttrs, activation: Option<Activation>) -> Option<Plan> {
    let out = n.outputs.first().and_then(|o| known_shape(g, o))?;
    let ins = core_inputs(g, n)?;
    let xs = known_shape(g, &ins[0])?;
    let ws = known_shape(g, &ins[1])?;
    let nsp = xs.len().checked_sub(2).filter(|&k| k > 0)?;
    if ws.len() != xs.len() || a.group < 1 {
        return None;
    }
    if let Some(k) = &a.kernel_shape {
        if k.iter().map(|&d| usize::try_from(d).ok()).collect::<Option<Vec<_>>>()? != ws[2..] {
            return None;
        }
    }
    let window = Window::new(nsp, a.auto_pad, &a.pads, &a.strides, &a.dilations, false).ok()?;
    let dims = window.resolve(&xs[2..], &ws[2..]).ok()?;
    let begin = dims.iter().map(|d| usize::try_from(d.pad_begin).ok());
    let end = dims.iter().map(|d| usize::try_from(d.pad_end).ok());
    let pads: Vec<usize> = begin.chain(end).collect::<Option<_>>()?;
    if dims.iter().map(|d| d.out).ne(out[2..].iter().copied()) {
        return None;
    }
    let spec = ConvSpec {
        strides: window.strides.into(),
        dilations: window.dilations.into(),
        pads: pads.into(),
        group: usize::try_from(a.group).ok()?,
        activation: None,
    };
    Some(Plan::One(
        |c| Some(TensorLang::Conv(Box::new(empty_conv_spec()), c.into())),
        ins,
        Extra::Conv(Box::new(spec), activation),
    ))
}

fn empty_conv_spec() -> ConvSpec {
    ConvSpec {
        strides: Box::new([]),
        dilations: Box::new([]),
        pads: Box::new([]),
        group: 1,
        activation: None,
    }
}

fn with_extra(node: TensorLang, extra: &Extra, analysis: &mut TensorAnalysis) -> TensorLang {
    match (node, extra) {
        (TensorLang::Transpose(_, c), Extra::Shape(p)) => TensorLang::Transpose(p.clone(), c),
        (TensorLang::Reshape(_, c), Extra::Shape(s)) => TensorLang::Reshape(s.clone(), c),
        (TensorLang::Unary(_, c), Extra::Unary(u)) => TensorLang::Unary(analysis.intern_unary(*u), c),
        (TensorLang::Scale(_, c), Extra::Scale(k)) => TensorLang::Scale(*k, c),
        (TensorLang::Gemm(_, c), Extra::Gemm(f, act)) => TensorLang::Gemm(
            GemmFlags {
                activation: act.map(|a| analysis.intern_activation(a)),
                ..*f
            },
            c,
        ),
        (TensorLang::FusedMatMul(_, c), Extra::Activation(a)) => {
            TensorLang::FusedMatMul(analysis.intern_activation(*a), c)
        }
        (TensorLang::Conv(_, c), Extra::Conv(spec, act)) => TensorLang::Conv(
            Box::new(ConvSpec {
                activation: act.map(|a| analysis.intern_activation(a)),
                ..(**spec).clone()
            }),
            c,
        ),
        (TensorLang::Concat(_, c), Extra::Axis(a)) => TensorLang::Concat(*a, c),
        (TensorLang::Slice { arg, .. }, Extra::Slice(axis, start, end)) => TensorLang::Slice {
            axis: *axis,
            start: *start,
            end: *end,
            arg,
        },
        (n, _) => n,
    }
}

impl Default for GemmFlags {
    fn default() -> Self {
        GemmFlags {
            trans_a: false,
            trans_b: false,
            alpha: 1f32.to_bits(),
            beta: 1f32.to_bits(),
            activation: None,
        }
    }
}

/// Builds the e-graph of `g`'s region. Nodes inside subgraphs are not
/// touched; values they read from this graph count as uses outside.
pub fn build(g: &Graph) -> Region {
    let mut eg = EG::new(TensorAnalysis::default());
    let mut class_of: HashMap<String, Id> = HashMap::new();
    let mut nodes = Vec::new();
    let mut original = Vec::new();
    let initializers: BTreeSet<&str> = g.initializers.keys().map(String::as_str).collect();
    let leaf = |eg: &mut EG, class_of: &mut HashMap<String, Id>, name: &str| -> Option<Id> {
        if let Some(id) = class_of.get(name) {
            return Some(*id);
        }
        let shape = known_shape(g, name)?;
        let dtype = tensor_type(g, name)?.dtype?;
        let constant = initializers.contains(name) && constant(g, name).is_some();
        eg.analysis.leaves.push(LeafInfo {
            name: name.to_string(),
            shape,
            dtype,
            constant,
        });
        let id = eg.add(TensorLang::Leaf((eg.analysis.leaves.len() - 1) as u32));
        class_of.insert(name.to_string(), id);
        Some(id)
    };
    for (i, n) in g.nodes.iter().enumerate() {
        if n.outputs.iter().any(|o| o.is_empty()) && !matches!(n.op, Op::Tensor(TensorOp::Split { .. })) {
            continue;
        }
        let Some(p) = plan(g, n) else { continue };
        match p {
            Plan::One(make, inputs, extra) => {
                let Some(children) = inputs
                    .iter()
                    .map(|x| leaf(&mut eg, &mut class_of, x))
                    .collect::<Option<Vec<Id>>>()
                else {
                    continue;
                };
                let Some(node) = make(children) else { continue };
                let node = with_extra(node, &extra, &mut eg.analysis);
                let Some(id) = super::language::add_typed(&mut eg, node.clone()) else {
                    continue;
                };
                if n.outputs.len() != 1 {
                    continue;
                }
                class_of.insert(n.outputs[0].clone(), id);
                original.push(node);
            }
            Plan::Split { axis, sizes, input } => {
                let Some(x) = leaf(&mut eg, &mut class_of, &input) else {
                    continue;
                };
                let Some(parts) = super::language::add_split(&mut eg, x, axis, &sizes) else {
                    continue;
                };
                if parts.len() != n.outputs.len() {
                    continue;
                }
                for (o, (id, node)) in n.outputs.iter().zip(parts) {
                    class_of.insert(o.clone(), id);
                    original.push(node);
                }
            }
        }
        nodes.push(i);
    }
    // Roots: region values with a use outside the region.
    let region: BTreeSet<usize> = nodes.iter().copied().collect();
    let uses = Uses::of(g);
    let mut inside: HashMap<&str, usize> = HashMap::new();
    for &i in &nodes {
        for x in g.nodes[i].present_inputs() {
            *inside.entry(x).or_default() += 1;
        }
    }
    let mut roots = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if !region.contains(&i) {
            continue;
        }
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            let outside = uses.uses(o) > inside.get(o.as_str()).copied().unwrap_or(0);
            if outside {
                roots.push((o.clone(), class_of[o]));
            }
        }
    }
    eg.rebuild();
    Region {
        egraph: eg,
        nodes,
        roots,
        original,
    }
}
