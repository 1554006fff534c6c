//! Reading a kernel group: its fused elementwise chain as an [`Expr`], and
//! how group inputs broadcast onto the output.

use crate::cexpr::pmul;
use crate::KernelGroup;
use carbide_ir::kernel::{BinaryFn, Expr, ParamExpr, UnaryFn};
use carbide_ir::ops::elementwise::{Binary, ElementwiseOp, Unary, Variadic};
use carbide_ir::{DType, Dim, Node, Op, Tensor, TensorType};
use std::collections::HashMap;

/// Dim `axis` of group input `input` as a kernel parameter: a constant when
/// known, read from the bound shape when symbolic, `None` when unknown.
pub fn dim_param(d: &Dim, input: usize, axis: usize) -> Option<ParamExpr> {
    match d {
        Dim::Known(n) => Some(ParamExpr::Const(*n as i64)),
        Dim::Sym(_) => Some(ParamExpr::InputDim { input, axis }),
        Dim::Unknown => None,
    }
}

/// Resolves a value name to its expression (registering group inputs as operands).
type Resolver<'a> = dyn FnMut(&str, &HashMap<String, Expr>) -> Option<Expr> + 'a;

/// A fused elementwise chain: `expr` reads `Load(i)` from group input
/// `operands[i]` and `Acc` from the anchor.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    pub expr: Expr,
    pub operands: Vec<usize>,
}

/// A single f32 value of a constant, if it has exactly one element.
fn scalar_const(t: &Tensor) -> Option<f32> {
    match t {
        Tensor::F32(a) if a.len() == 1 => a.iter().next().copied(),
        _ => None,
    }
}

pub fn is_f32(ty: &TensorType) -> bool {
    ty.dtype == Some(DType::F32)
}

fn unary_fn(u: &Unary) -> Option<UnaryFn> {
    Some(match *u {
        Unary::Abs => UnaryFn::Abs,
        Unary::Neg => UnaryFn::Neg,
        Unary::Reciprocal => UnaryFn::Reciprocal,
        Unary::Sqrt => UnaryFn::Sqrt,
        Unary::Exp => UnaryFn::Exp,
        Unary::Erf => UnaryFn::Erf,
        Unary::Tanh => UnaryFn::Tanh,
        Unary::Sigmoid => UnaryFn::Sigmoid,
        Unary::Relu => UnaryFn::Relu,
        Unary::LeakyRelu { alpha } => UnaryFn::LeakyRelu { alpha },
        Unary::HardSigmoid { alpha, beta } => UnaryFn::HardSigmoid { alpha, beta },
        Unary::HardSwish => UnaryFn::HardSwish,
        Unary::Gelu { tanh } => UnaryFn::Gelu { tanh },
        Unary::Swish { alpha } => UnaryFn::Swish { alpha },
        Unary::Floor => UnaryFn::Floor,
        Unary::Ceil => UnaryFn::Ceil,
        _ => return None,
    })
}

/// Builds the expression of `nodes` (a group's elementwise nodes), where
/// `start` (if any) is the anchor's output, bound to `Acc`. `None` when a
/// node is not a supported f32 elementwise op or the group's single output
/// is not the chain's last value.
pub fn chain(group: &KernelGroup, nodes: &[Node], start: Option<&str>) -> Option<Chain> {
    let mut values: HashMap<String, Expr> = HashMap::new();
    if let Some(s) = start {
        values.insert(s.to_string(), Expr::Acc);
    }
    let mut operands: Vec<usize> = Vec::new();
    let mut resolve = |name: &str, values: &HashMap<String, Expr>| -> Option<Expr> {
        if let Some(e) = values.get(name) {
            return Some(e.clone());
        }
        let idx = group.inputs.iter().position(|v| v.name == name)?;
        let gv = &group.inputs[idx];
        if !is_f32(&gv.ty) {
            return None;
        }
        if let Some(c) = gv.constant.as_ref().and_then(scalar_const) {
            return Some(Expr::Const(c));
        }
        let slot = match operands.iter().position(|&o| o == idx) {
            Some(s) => s,
            None => {
                operands.push(idx);
                operands.len() - 1
            }
        };
        Some(Expr::Load(slot))
    };
    let mut last = start.map(str::to_string);
    for node in nodes {
        let Op::Elementwise(op) = &node.op else { return None };
        let ins: Vec<&str> = node.inputs.iter().map(String::as_str).collect();
        if node.outputs.len() != 1 {
            return None;
        }
        let arg = |i: usize, values: &HashMap<String, Expr>, r: &mut Resolver| {
            ins.get(i).filter(|s| !s.is_empty()).and_then(|s| r(s, values))
        };
        let e = match op {
            ElementwiseOp::Unary(u) if ins.len() == 1 => Expr::unary(unary_fn(u)?, arg(0, &values, &mut resolve)?),
            ElementwiseOp::Binary { op, legacy_axis: None } if ins.len() == 2 => {
                let f = match op {
                    Binary::Add => BinaryFn::Add,
                    Binary::Sub => BinaryFn::Sub,
                    Binary::Mul => BinaryFn::Mul,
                    Binary::Div => BinaryFn::Div,
                    Binary::PRelu => BinaryFn::PRelu,
                    _ => return None,
                };
                Expr::binary(f, arg(0, &values, &mut resolve)?, arg(1, &values, &mut resolve)?)
            }
            ElementwiseOp::Variadic(v) if !ins.is_empty() => {
                let f = match v {
                    Variadic::Max => BinaryFn::Max,
                    Variadic::Min => BinaryFn::Min,
                    Variadic::Sum => BinaryFn::Add,
                    Variadic::Mean => return None,
                };
                let mut e = arg(0, &values, &mut resolve)?;
                for i in 1..ins.len() {
                    e = Expr::binary(f, e, arg(i, &values, &mut resolve)?);
                }
                e
            }
            ElementwiseOp::Clip { min, max } => {
                let bound = |i: usize, attr: Option<f32>, default: f32| -> Option<f32> {
                    match ins.get(i).filter(|s| !s.is_empty()) {
                        None => Some(attr.unwrap_or(default)),
                        Some(name) => group
                            .inputs
                            .iter()
                            .find(|v| v.name == *name)
                            .and_then(|v| v.constant.as_ref())
                            .and_then(scalar_const),
                    }
                };
                let lo = bound(1, *min, f32::NEG_INFINITY)?;
                let hi = bound(2, *max, f32::INFINITY)?;
                Expr::unary(UnaryFn::Clip { min: lo, max: hi }, arg(0, &values, &mut resolve)?)
            }
            _ => return None,
        };
        values.insert(node.outputs[0].clone(), e);
        last = Some(node.outputs[0].clone());
    }
    let last = last?;
    if group.outputs.len() != 1 || group.outputs[0].name != last || !is_f32(&group.outputs[0].ty) {
        return None;
    }
    Some(Chain {
        expr: values.remove(&last)?,
        operands,
    })
}

/// Element strides (one per output dim) of group input `input` read with
/// numpy broadcasting onto `out`: 0 along broadcast dims. `None` when an
/// unknown dim makes broadcasting undecidable.
pub fn broadcast_strides(ty: &TensorType, input: usize, out: &[Dim]) -> Option<Vec<ParamExpr>> {
    let shape = ty.shape.as_ref()?;
    if shape.len() > out.len() {
        return None;
    }
    let off = out.len() - shape.len();
    let mut strides = vec![ParamExpr::Const(0); out.len()];
    let mut running = ParamExpr::Const(1);
    for d in (0..shape.len()).rev() {
        let (od, id) = (&out[off + d], &shape[d]);
        let dim_expr = dim_param(id, input, d)?;
        let broadcast = match (id, od) {
            (Dim::Known(1), _) => true,
            (Dim::Known(a), Dim::Known(b)) if a == b => false,
            (Dim::Sym(a), Dim::Sym(b)) if a == b => false,
            (Dim::Known(_), Dim::Sym(_)) => false,
            _ => return None,
        };
        if !broadcast {
            strides[off + d] = running.clone();
        }
        running = pmul(running, dim_expr);
    }
    Some(strides)
}

/// Text of a shape for workload keys.
pub fn shape_text(ty: &TensorType) -> String {
    match &ty.shape {
        None => "?".into(),
        Some(s) => s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x"),
    }
}

impl KernelGroup {
    /// The group as a model of its own: constant inputs become initializers,
    /// the others graph inputs (fed in the group's input order), the group's
    /// outputs the graph outputs. What the reference runtime and the
    /// autotuner run a single kernel as.
    pub fn standalone_model(&self) -> carbide_ir::Model {
        use carbide_ir::{Graph, Model, ValueInfo, ValueType};
        let info = |name: &str, ty: &TensorType| ValueInfo {
            name: name.to_string(),
            ty: ValueType::Tensor(ty.clone()),
        };
        let mut g = Graph {
            name: "kernel_group".into(),
            ..Default::default()
        };
        for v in &self.inputs {
            match &v.constant {
                Some(c) => {
                    g.initializers.insert(v.name.clone(), c.clone());
                }
                None => g.inputs.push(info(&v.name, &v.ty)),
            }
        }
        g.outputs = self.outputs.iter().map(|o| info(&o.name, &o.ty)).collect();
        g.nodes = self.nodes.clone();
        Model {
            graph: g,
            opsets: [("".to_string(), 21)].into_iter().collect(),
            ir_version: 10,
            ..Default::default()
        }
    }
}
