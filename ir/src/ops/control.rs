//! Control flow (If, Loop, Scan), sequence and optional ops.
//!
//! The subgraph ops own their body graphs; `subgraphs()` exposes them so the
//! verifier, inference and the interpreter's liveness analysis see the outer
//! names a body captures. Inference takes the types the (already inferred)
//! bodies declare for their outputs.

use super::{normalize_axis, InferCtx, OpKind, ParseCtx};
use crate::error::{IrError, IrResult};
use crate::graph::Graph;
use crate::types::{Dim, Shape, TensorType, ValueType};
use crate::DType;

/// Scan's attributes. Opset 8 Scan has a leading `sequence_lens` input and a
/// batch axis 0 on every input; opset 9+ has none of that but per-input and
/// per-output axes and directions.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScanAttrs {
    pub body: Graph,
    pub num_scan_inputs: usize,
    /// True for the opset-8 form (batched, `sequence_lens` first input).
    pub batched: bool,
    /// Per scan input: the axis iterated over (opset 9+; opset 8 uses 1 after the batch axis).
    pub scan_input_axes: Vec<i64>,
    /// Per scan input: 0 forward, 1 reverse (`directions` in opset 8).
    pub scan_input_directions: Vec<i64>,
    /// Per scan output: the axis the iterations are stacked along.
    pub scan_output_axes: Option<Vec<i64>>,
    /// Per scan output: 0 append, 1 prepend.
    pub scan_output_directions: Option<Vec<i64>>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ControlOp {
    If {
        then_branch: Box<Graph>,
        else_branch: Box<Graph>,
    },
    Loop {
        body: Box<Graph>,
    },
    Scan(Box<ScanAttrs>),
    SequenceConstruct,
    SequenceEmpty {
        dtype: DType,
    },
    SequenceAt,
    SequenceInsert,
    SequenceErase,
    SequenceLength,
    SequenceMap {
        body: Box<Graph>,
    },
    SplitToSequence {
        axis: i64,
        keepdims: bool,
    },
    ConcatFromSequence {
        axis: i64,
        new_axis: bool,
    },
    /// `ty` is the `type` attribute: the element type of an empty optional.
    Optional {
        ty: Option<ValueType>,
    },
    OptionalHasElement,
    OptionalGetElement,
}

fn check_directions(op: &str, name: &str, d: &[i64]) -> IrResult<()> {
    if d.iter().any(|&v| v != 0 && v != 1) {
        return Err(IrError::bad_attr(
            op,
            name,
            format!("directions must be 0 or 1, got {d:?}"),
        ));
    }
    Ok(())
}

impl ControlOp {
    pub fn parse(cx: &mut ParseCtx) -> IrResult<Option<Self>> {
        if !cx.domain.is_empty() && cx.domain != "ai.onnx" {
            return Ok(None);
        }
        let op = cx.op_type;
        let a = &mut cx.attrs;
        let parsed = match op {
            "If" => {
                let then_branch = a.req_graph("then_branch")?;
                let else_branch = a.req_graph("else_branch")?;
                if then_branch.outputs.len() != else_branch.outputs.len() {
                    return Err(IrError::bad_attr(
                        op,
                        "else_branch",
                        format!(
                            "then_branch has {} outputs but else_branch has {}",
                            then_branch.outputs.len(),
                            else_branch.outputs.len()
                        ),
                    ));
                }
                ControlOp::If {
                    then_branch: Box::new(then_branch),
                    else_branch: Box::new(else_branch),
                }
            }
            "Loop" => {
                let body = a.req_graph("body")?;
                if body.inputs.len() < 2 || body.outputs.is_empty() {
                    return Err(IrError::bad_attr(
                        op,
                        "body",
                        "the body must take (iteration_num, condition, carried...) and return (condition, ...)",
                    ));
                }
                ControlOp::Loop { body: Box::new(body) }
            }
            "Scan" => {
                let body = a.req_graph("body")?;
                let m = a.req_int("num_scan_inputs")?;
                if m < 1 || m as usize > body.inputs.len() {
                    return Err(IrError::bad_attr(
                        op,
                        "num_scan_inputs",
                        format!("{m} is not in 1..={} (the body's input count)", body.inputs.len()),
                    ));
                }
                let m = m as usize;
                let n_state = body.inputs.len() - m;
                let n_scan_out = body.outputs.len().checked_sub(n_state).ok_or_else(|| {
                    IrError::bad_attr(op, "body", "the body returns fewer outputs than it has state inputs")
                })?;
                let batched = cx.opset < 9;
                let (axes, dirs, out_axes, out_dirs) = if batched {
                    let dirs = a.ints("directions")?.unwrap_or_else(|| vec![0; m]);
                    if dirs.len() != m {
                        return Err(IrError::bad_attr(
                            op,
                            "directions",
                            format!("needs {m} values, got {}", dirs.len()),
                        ));
                    }
                    check_directions(op, "directions", &dirs)?;
                    (vec![1; m], dirs, None, None)
                } else {
                    let axes = a.ints("scan_input_axes")?.unwrap_or_else(|| vec![0; m]);
                    if axes.len() != m {
                        return Err(IrError::bad_attr(
                            op,
                            "scan_input_axes",
                            format!("needs {m} values, got {}", axes.len()),
                        ));
                    }
                    let dirs = a.ints("scan_input_directions")?.unwrap_or_else(|| vec![0; m]);
                    if dirs.len() != m {
                        return Err(IrError::bad_attr(
                            op,
                            "scan_input_directions",
                            format!("needs {m} values, got {}", dirs.len()),
                        ));
                    }
                    check_directions(op, "scan_input_directions", &dirs)?;
                    let out_axes = a.ints("scan_output_axes")?;
                    if let Some(v) = &out_axes {
                        if v.len() != n_scan_out {
                            return Err(IrError::bad_attr(
                                op,
                                "scan_output_axes",
                                format!("needs {n_scan_out} values, got {}", v.len()),
                            ));
                        }
                    }
                    let out_dirs = a.ints("scan_output_directions")?;
                    if let Some(v) = &out_dirs {
                        if v.len() != n_scan_out {
                            return Err(IrError::bad_attr(
                                op,
                                "scan_output_directions",
                                format!("needs {n_scan_out} values, got {}", v.len()),
                            ));
                        }
                        check_directions(op, "scan_output_directions", v)?;
                    }
                    (axes, dirs, out_axes, out_dirs)
                };
                ControlOp::Scan(Box::new(ScanAttrs {
                    body,
                    num_scan_inputs: m,
                    batched,
                    scan_input_axes: axes,
                    scan_input_directions: dirs,
                    scan_output_axes: out_axes,
                    scan_output_directions: out_dirs,
                }))
            }
            "SequenceConstruct" => ControlOp::SequenceConstruct,
            "SequenceEmpty" => {
                let code = a.int_or("dtype", 1)?;
                let dtype = i32::try_from(code)
                    .ok()
                    .and_then(DType::from_onnx_code)
                    .ok_or_else(|| IrError::bad_attr(op, "dtype", format!("{code} is not a known ONNX data type")))?;
                ControlOp::SequenceEmpty { dtype }
            }
            "SequenceAt" => ControlOp::SequenceAt,
            "SequenceInsert" => ControlOp::SequenceInsert,
            "SequenceErase" => ControlOp::SequenceErase,
            "SequenceLength" => ControlOp::SequenceLength,
            "SequenceMap" => {
                let body = a.req_graph("body")?;
                if body.inputs.is_empty() {
                    return Err(IrError::bad_attr(op, "body", "the body must take at least one input"));
                }
                ControlOp::SequenceMap { body: Box::new(body) }
            }
            "SplitToSequence" => {
                let axis = a.int_or("axis", 0)?;
                let keepdims = a.int_or("keepdims", 1)?;
                if keepdims != 0 && keepdims != 1 {
                    return Err(IrError::bad_attr(
                        op,
                        "keepdims",
                        format!("must be 0 or 1, got {keepdims}"),
                    ));
                }
                ControlOp::SplitToSequence {
                    axis,
                    keepdims: keepdims == 1,
                }
            }
            "ConcatFromSequence" => {
                let axis = a.req_int("axis")?;
                let new_axis = a.int_or("new_axis", 0)?;
                if new_axis != 0 && new_axis != 1 {
                    return Err(IrError::bad_attr(
                        op,
                        "new_axis",
                        format!("must be 0 or 1, got {new_axis}"),
                    ));
                }
                ControlOp::ConcatFromSequence {
                    axis,
                    new_axis: new_axis == 1,
                }
            }
            "Optional" => ControlOp::Optional { ty: a.type_("type")? },
            "OptionalHasElement" => ControlOp::OptionalHasElement,
            "OptionalGetElement" => ControlOp::OptionalGetElement,
            _ => return Ok(None),
        };
        cx.attrs.finish()?;
        Ok(Some(parsed))
    }
}

/// The most specific type that describes both `a` and `b` (e.g. the two
/// branches of an If, or a loop-carried value before and after the body):
/// dims that agree are kept, others become unknown.
pub fn unify(a: &ValueType, b: &ValueType) -> ValueType {
    match (a, b) {
        (ValueType::Tensor(x), ValueType::Tensor(y)) => {
            let dtype = match (x.dtype, y.dtype) {
                (Some(p), Some(q)) if p != q => None,
                (p, q) => p.or(q),
            };
            let shape = match (&x.shape, &y.shape) {
                (Some(s), Some(t)) if s.len() == t.len() => Some(
                    s.iter()
                        .zip(t)
                        .map(|(p, q)| if p == q { p.clone() } else { Dim::Unknown })
                        .collect(),
                ),
                _ => None,
            };
            ValueType::Tensor(TensorType { dtype, shape })
        }
        (ValueType::Sequence(x), ValueType::Sequence(y)) => ValueType::Sequence(Box::new(unify_elem(x, y))),
        (ValueType::Optional(x), ValueType::Optional(y)) => ValueType::Optional(Box::new(unify_elem(x, y))),
        (x, y) if x == y => x.clone(),
        _ => ValueType::Unknown,
    }
}

/// Like [`unify`], but an unknown element type (an empty sequence/optional)
/// does not erase what the other side knows.
fn unify_elem(a: &ValueType, b: &ValueType) -> ValueType {
    match (a, b) {
        (ValueType::Unknown, x) | (x, ValueType::Unknown) => x.clone(),
        _ => unify(a, b),
    }
}

/// The type of a loop-carried value after the loop: what the initial value
/// and the body's output agree on. When the body's output type is unknown
/// only the initial value's dtype is kept (its shape may change per iteration).
fn carried(initial: &ValueType, body_out: &ValueType) -> ValueType {
    match (initial, body_out) {
        (ValueType::Tensor(t), ValueType::Unknown) => ValueType::Tensor(TensorType {
            dtype: t.dtype,
            shape: None,
        }),
        _ => unify(initial, body_out),
    }
}

/// The type of input `i`, `Unknown` when absent.
fn input_type(cx: &InferCtx, i: usize) -> ValueType {
    cx.inputs.get(i).cloned().flatten().unwrap_or(ValueType::Unknown)
}

/// The element type of a sequence-typed input (`Unknown` if not known).
fn seq_elem(cx: &InferCtx, i: usize) -> IrResult<ValueType> {
    match input_type(cx, i) {
        ValueType::Sequence(e) => Ok(*e),
        ValueType::Unknown => Ok(ValueType::Unknown),
        other => Err(cx.err(format!("input {i} must be a sequence, got {other}"))),
    }
}

fn need_inputs(cx: &InferCtx, min: usize, max: usize) -> IrResult<()> {
    let n = cx.inputs.len();
    if n < min || n > max {
        let want = if min == max {
            format!("{min}")
        } else if max == usize::MAX {
            format!("at least {min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(cx.err(format!("takes {want} inputs, got {n}")));
    }
    Ok(())
}

/// Inserts `dim` into a tensor type's shape at `axis` (an axis of the result).
fn with_dim_inserted(t: &ValueType, axis: i64, dim: Dim, op: &str) -> IrResult<ValueType> {
    match t {
        ValueType::Tensor(TensorType { dtype, shape: Some(s) }) => {
            let ax = normalize_axis(op, axis, s.len() + 1)?;
            let mut s = s.clone();
            s.insert(ax, dim);
            Ok(ValueType::Tensor(TensorType {
                dtype: *dtype,
                shape: Some(s),
            }))
        }
        ValueType::Tensor(TensorType { dtype, shape: None }) => Ok(ValueType::Tensor(TensorType {
            dtype: *dtype,
            shape: None,
        })),
        _ => Ok(ValueType::Tensor(TensorType::default())),
    }
}

impl ControlOp {
    fn infer_if(&self, cx: &InferCtx, then_branch: &Graph, else_branch: &Graph) -> IrResult<Vec<ValueType>> {
        need_inputs(cx, 1, 1)?;
        let c = cx.tensor(0)?;
        if c.dtype.is_some_and(|d| d != DType::Bool) {
            return Err(cx.err(format!("cond must be bool, got {c}")));
        }
        Ok(then_branch
            .outputs
            .iter()
            .zip(&else_branch.outputs)
            .map(|(t, e)| unify(&t.ty, &e.ty))
            .collect())
    }

    fn infer_loop(&self, cx: &InferCtx, body: &Graph) -> IrResult<Vec<ValueType>> {
        need_inputs(cx, 2, usize::MAX)?;
        let n_carried = cx.inputs.len() - 2;
        if body.inputs.len() != n_carried + 2 {
            return Err(cx.err(format!(
                "the body takes {} inputs but the node gives {} loop-carried values (+2)",
                body.inputs.len(),
                n_carried
            )));
        }
        if body.outputs.len() < n_carried + 1 {
            return Err(cx.err(format!(
                "the body returns {} outputs, fewer than 1 + {n_carried} loop-carried values",
                body.outputs.len()
            )));
        }
        if let Some(m) = cx.opt_tensor(0)? {
            if m.dtype.is_some_and(|d| d != DType::I64) {
                return Err(cx.err(format!("M must be int64, got {m}")));
            }
        }
        if let Some(c) = cx.opt_tensor(1)? {
            if c.dtype.is_some_and(|d| d != DType::Bool) {
                return Err(cx.err(format!("cond must be bool, got {c}")));
            }
        }
        let mut out = Vec::new();
        for k in 0..n_carried {
            out.push(carried(&input_type(cx, k + 2), &body.outputs[k + 1].ty));
        }
        for o in &body.outputs[n_carried + 1..] {
            out.push(with_dim_inserted(&o.ty, 0, Dim::Unknown, cx.op)?);
        }
        Ok(out)
    }

    fn infer_scan(&self, cx: &InferCtx, s: &ScanAttrs) -> IrResult<Vec<ValueType>> {
        let body = &s.body;
        let first = usize::from(s.batched);
        let m = s.num_scan_inputs;
        let n_state = body
            .inputs
            .len()
            .checked_sub(m)
            .ok_or_else(|| cx.err("num_scan_inputs exceeds the body's input count"))?;
        if cx.inputs.len() != first + n_state + m {
            return Err(cx.err(format!(
                "takes {} inputs (body has {n_state} states and {m} scan inputs), got {}",
                first + n_state + m,
                cx.inputs.len()
            )));
        }
        if body.outputs.len() < n_state {
            return Err(cx.err("the body returns fewer outputs than it has states"));
        }
        // The sequence length, if every scan input agrees on a known one.
        let mut seq: Option<Dim> = None;
        let mut batch: Option<Dim> = None;
        for j in 0..m {
            let t = cx.tensor(first + n_state + j)?;
            if let Some(shape) = &t.shape {
                let ax = normalize_axis(cx.op, s.scan_input_axes.get(j).copied().unwrap_or(0), shape.len())?;
                if s.batched && shape.len() < 2 {
                    return Err(cx.err(format!("scan input {j} needs rank >= 2 (batch, sequence), got {t}")));
                }
                let d = shape[ax].clone();
                seq = Some(match seq {
                    None => d,
                    Some(prev) if prev == d => prev,
                    Some(Dim::Known(a)) if matches!(d, Dim::Known(b) if b != a) => {
                        return Err(cx.err(format!("scan inputs have different sequence lengths ({a} vs {d})")))
                    }
                    Some(_) => Dim::Unknown,
                });
                if s.batched {
                    batch.get_or_insert_with(|| shape[0].clone());
                }
            } else {
                seq = Some(Dim::Unknown);
            }
        }
        let seq = seq.unwrap_or(Dim::Unknown);
        let batch = batch.unwrap_or(Dim::Unknown);
        let mut out = Vec::new();
        for k in 0..n_state {
            let body_ty = &body.outputs[k].ty;
            let ty = if s.batched {
                with_dim_inserted(body_ty, 0, batch.clone(), cx.op)?
            } else {
                body_ty.clone()
            };
            out.push(carried(&input_type(cx, first + k), &ty));
        }
        for (k, o) in body.outputs[n_state..].iter().enumerate() {
            let ty = if s.batched {
                let t = with_dim_inserted(&o.ty, 0, seq.clone(), cx.op)?;
                with_dim_inserted(&t, 0, batch.clone(), cx.op)?
            } else {
                let axis = s.scan_output_axes.as_ref().and_then(|v| v.get(k).copied()).unwrap_or(0);
                with_dim_inserted(&o.ty, axis, seq.clone(), cx.op)?
            };
            out.push(ty);
        }
        Ok(out)
    }
}

fn tensor_of(t: &ValueType) -> TensorType {
    t.as_tensor().cloned().unwrap_or_default()
}

impl OpKind for ControlOp {
    fn op_type(&self) -> &'static str {
        match self {
            ControlOp::If { .. } => "If",
            ControlOp::Loop { .. } => "Loop",
            ControlOp::Scan(_) => "Scan",
            ControlOp::SequenceConstruct => "SequenceConstruct",
            ControlOp::SequenceEmpty { .. } => "SequenceEmpty",
            ControlOp::SequenceAt => "SequenceAt",
            ControlOp::SequenceInsert => "SequenceInsert",
            ControlOp::SequenceErase => "SequenceErase",
            ControlOp::SequenceLength => "SequenceLength",
            ControlOp::SequenceMap { .. } => "SequenceMap",
            ControlOp::SplitToSequence { .. } => "SplitToSequence",
            ControlOp::ConcatFromSequence { .. } => "ConcatFromSequence",
            ControlOp::Optional { .. } => "Optional",
            ControlOp::OptionalHasElement => "OptionalHasElement",
            ControlOp::OptionalGetElement => "OptionalGetElement",
        }
    }

    fn infer(&self, cx: &InferCtx) -> IrResult<Vec<ValueType>> {
        let i64_scalar = || ValueType::tensor(DType::I64, Vec::new());
        Ok(match self {
            ControlOp::If {
                then_branch,
                else_branch,
            } => return self.infer_if(cx, then_branch, else_branch),
            ControlOp::Loop { body } => return self.infer_loop(cx, body),
            ControlOp::Scan(s) => return self.infer_scan(cx, s),
            ControlOp::SequenceConstruct => {
                need_inputs(cx, 1, usize::MAX)?;
                let mut elem = ValueType::Tensor(cx.tensor(0)?);
                for i in 1..cx.inputs.len() {
                    let t = cx.tensor(i)?;
                    let e = tensor_of(&elem);
                    if let (Some(a), Some(b)) = (e.dtype, t.dtype) {
                        if a != b {
                            return Err(cx.err(format!("all inputs must have one dtype: {a} vs {b} (input {i})")));
                        }
                    }
                    elem = unify(&elem, &ValueType::Tensor(t));
                }
                vec![ValueType::Sequence(Box::new(elem))]
            }
            ControlOp::SequenceEmpty { dtype } => {
                need_inputs(cx, 0, 0)?;
                vec![ValueType::Sequence(Box::new(ValueType::Tensor(TensorType::of_dtype(
                    *dtype,
                ))))]
            }
            ControlOp::SequenceAt => {
                need_inputs(cx, 2, 2)?;
                let elem = seq_elem(cx, 0)?;
                cx.tensor(1)?;
                vec![elem]
            }
            ControlOp::SequenceInsert => {
                need_inputs(cx, 2, 3)?;
                let elem = seq_elem(cx, 0)?;
                let t = cx.tensor(1)?;
                if let (Some(a), Some(b)) = (tensor_of(&elem).dtype, t.dtype) {
                    if a != b {
                        return Err(cx.err(format!("cannot insert a {b} tensor into a sequence of {a}")));
                    }
                }
                vec![ValueType::Sequence(Box::new(unify(&elem, &ValueType::Tensor(t))))]
            }
            ControlOp::SequenceErase => {
                need_inputs(cx, 1, 2)?;
                let elem = seq_elem(cx, 0)?;
                vec![ValueType::Sequence(Box::new(elem))]
            }
            ControlOp::SequenceLength => {
                need_inputs(cx, 1, 1)?;
                seq_elem(cx, 0)?;
                vec![i64_scalar()]
            }
            ControlOp::SequenceMap { body } => {
                need_inputs(cx, 1, usize::MAX)?;
                if cx.inputs.len() != body.inputs.len() {
                    return Err(cx.err(format!(
                        "the body takes {} inputs, the node gives {}",
                        body.inputs.len(),
                        cx.inputs.len()
                    )));
                }
                seq_elem(cx, 0)?;
                body.outputs
                    .iter()
                    .map(|o| ValueType::Sequence(Box::new(o.ty.clone())))
                    .collect()
            }
            ControlOp::SplitToSequence { axis, keepdims } => {
                need_inputs(cx, 1, 2)?;
                let t = cx.tensor(0)?;
                let split = cx.opt_tensor(1)?;
                let shape = match &t.shape {
                    Some(s) => {
                        let ax = normalize_axis(cx.op, *axis, s.len())?;
                        let mut s: Shape = s.clone();
                        if split.is_none() {
                            if *keepdims {
                                s[ax] = Dim::Known(1);
                            } else {
                                s.remove(ax);
                            }
                        } else {
                            // All parts have one length when the split is a
                            // constant that says so.
                            let parts = cx.const_i64s(1).unwrap_or_default();
                            let one_len = match (parts.first(), &s[ax]) {
                                (Some(&c), _) if parts.iter().all(|&p| p == c) && c >= 0 => {
                                    let even = match s[ax] {
                                        Dim::Known(d) => c > 0 && d % c as usize == 0,
                                        _ => false,
                                    };
                                    (parts.len() > 1 || even).then_some(c as usize)
                                }
                                _ => None,
                            };
                            s[ax] = one_len.map_or(Dim::Unknown, Dim::Known);
                        }
                        Some(s)
                    }
                    None => None,
                };
                vec![ValueType::Sequence(Box::new(ValueType::Tensor(TensorType {
                    dtype: t.dtype,
                    shape,
                })))]
            }
            ControlOp::ConcatFromSequence { axis, new_axis } => {
                need_inputs(cx, 1, 1)?;
                let e = tensor_of(&seq_elem(cx, 0)?);
                let shape = match &e.shape {
                    Some(s) => {
                        let mut s: Shape = s.clone();
                        if *new_axis {
                            let ax = normalize_axis(cx.op, *axis, s.len() + 1)?;
                            s.insert(ax, Dim::Unknown);
                        } else {
                            let ax = normalize_axis(cx.op, *axis, s.len())?;
                            s[ax] = Dim::Unknown;
                        }
                        Some(s)
                    }
                    None => None,
                };
                vec![ValueType::Tensor(TensorType { dtype: e.dtype, shape })]
            }
            ControlOp::Optional { ty } => {
                need_inputs(cx, 0, 1)?;
                let inner = match (cx.inputs.first().cloned().flatten(), ty) {
                    (Some(t), Some(a)) => unify_elem(&t, a),
                    (Some(t), None) => t,
                    (None, Some(a)) => a.clone(),
                    (None, None) => return Err(cx.err("needs an input or the 'type' attribute")),
                };
                vec![ValueType::Optional(Box::new(inner))]
            }
            ControlOp::OptionalHasElement => {
                need_inputs(cx, 0, 1)?;
                vec![ValueType::tensor(DType::Bool, Vec::new())]
            }
            ControlOp::OptionalGetElement => {
                need_inputs(cx, 1, 1)?;
                vec![match input_type(cx, 0) {
                    ValueType::Optional(e) => *e,
                    other => other,
                }]
            }
        })
    }

    fn subgraphs(&self) -> Vec<&Graph> {
        match self {
            ControlOp::If {
                then_branch,
                else_branch,
            } => vec![&**then_branch, &**else_branch],
            ControlOp::Loop { body } | ControlOp::SequenceMap { body } => vec![&**body],
            ControlOp::Scan(s) => vec![&s.body],
            _ => Vec::new(),
        }
    }

    fn subgraphs_mut(&mut self) -> Vec<&mut Graph> {
        match self {
            ControlOp::If {
                then_branch,
                else_branch,
            } => vec![&mut **then_branch, &mut **else_branch],
            ControlOp::Loop { body } | ControlOp::SequenceMap { body } => vec![&mut **body],
            ControlOp::Scan(s) => vec![&mut s.body],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::{Attr, Attrs};
    use crate::graph::ValueInfo;

    fn parse(op: &str, opset: i64, items: Vec<(&str, Attr)>) -> IrResult<Option<ControlOp>> {
        let attrs = Attrs::new(op, items.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
        let mut cx = ParseCtx {
            domain: "",
            op_type: op,
            opset,
            attrs,
            num_inputs: 0,
            num_outputs: 0,
        };
        ControlOp::parse(&mut cx)
    }

    fn vi(name: &str, ty: ValueType) -> ValueInfo {
        ValueInfo { name: name.into(), ty }
    }

    fn body(inputs: usize, outputs: Vec<ValueType>) -> Graph {
        Graph {
            inputs: (0..inputs).map(|i| vi(&format!("i{i}"), ValueType::Unknown)).collect(),
            outputs: outputs
                .into_iter()
                .enumerate()
                .map(|(i, t)| vi(&format!("o{i}"), t))
                .collect(),
            ..Default::default()
        }
    }

    fn f32t(dims: &[usize]) -> ValueType {
        ValueType::tensor(DType::F32, dims.iter().map(|&d| Dim::Known(d)).collect())
    }

    fn infer(op: &ControlOp, inputs: Vec<Option<ValueType>>, n_out: usize) -> IrResult<Vec<ValueType>> {
        let consts = vec![None; inputs.len()];
        let cx = InferCtx {
            inputs: &inputs,
            consts: &consts,
            num_outputs: n_out,
            op: op.op_type(),
        };
        op.infer(&cx)
    }

    #[test]
    fn scan_parse_follows_opset() {
        let g = || Attr::Graph(Box::new(body(2, vec![f32t(&[2]), f32t(&[2])])));
        let s8 = parse(
            "Scan",
            8,
            vec![
                ("body", g()),
                ("num_scan_inputs", Attr::Int(1)),
                ("directions", Attr::Ints(vec![1])),
            ],
        );
        match s8.unwrap() {
            Some(ControlOp::Scan(s)) => assert!(s.batched && s.scan_input_directions == vec![1]),
            other => panic!("{other:?}"),
        }
        // `directions` is not a Scan-9 attribute.
        assert!(parse(
            "Scan",
            9,
            vec![
                ("body", g()),
                ("num_scan_inputs", Attr::Int(1)),
                ("directions", Attr::Ints(vec![1]))
            ]
        )
        .is_err());
        let bad_len = parse(
            "Scan",
            11,
            vec![
                ("body", g()),
                ("num_scan_inputs", Attr::Int(1)),
                ("scan_input_axes", Attr::Ints(vec![0, 1])),
            ],
        );
        assert!(matches!(bad_len, Err(IrError::BadAttribute { attr, .. }) if attr == "scan_input_axes"));
        let bad_dir = parse(
            "Scan",
            11,
            vec![
                ("body", g()),
                ("num_scan_inputs", Attr::Int(1)),
                ("scan_output_directions", Attr::Ints(vec![2])),
            ],
        );
        assert!(bad_dir.is_err());
        assert!(parse("Scan", 11, vec![("body", g()), ("num_scan_inputs", Attr::Int(3))]).is_err());
        assert!(parse("Scan", 11, vec![("num_scan_inputs", Attr::Int(1))]).is_err());
    }

    #[test]
    fn parse_other_ops() {
        assert_eq!(parse("Add", 13, vec![]).unwrap(), None);
        assert_eq!(
            parse("SequenceEmpty", 11, vec![("dtype", Attr::Int(7))]).unwrap(),
            Some(ControlOp::SequenceEmpty { dtype: DType::I64 })
        );
        assert!(parse("SequenceEmpty", 11, vec![("dtype", Attr::Int(999))]).is_err());
        assert!(parse("ConcatFromSequence", 11, vec![]).is_err());
        assert!(parse("SplitToSequence", 11, vec![("keepdims", Attr::Int(2))]).is_err());
        assert!(parse("SequenceAt", 11, vec![("axis", Attr::Int(0))]).is_err());
        let if_bad = parse(
            "If",
            11,
            vec![
                ("then_branch", Attr::Graph(Box::new(body(0, vec![f32t(&[1])])))),
                ("else_branch", Attr::Graph(Box::new(body(0, vec![])))),
            ],
        );
        assert!(if_bad.is_err());
    }

    #[test]
    fn if_unifies_branch_types() {
        let op = ControlOp::If {
            then_branch: Box::new(body(0, vec![f32t(&[2, 3])])),
            else_branch: Box::new(body(0, vec![f32t(&[2, 4])])),
        };
        let out = infer(&op, vec![Some(ValueType::tensor(DType::Bool, vec![]))], 1).unwrap();
        assert_eq!(
            out,
            vec![ValueType::Tensor(TensorType::new(
                DType::F32,
                vec![Dim::Known(2), Dim::Unknown]
            ))]
        );
        assert!(infer(&op, vec![Some(f32t(&[]))], 1).is_err());
    }

    #[test]
    fn loop_and_scan_types() {
        let op = ControlOp::Loop {
            body: Box::new(body(
                3,
                vec![ValueType::tensor(DType::Bool, vec![]), f32t(&[2]), f32t(&[3])],
            )),
        };
        let out = infer(&op, vec![None, None, Some(f32t(&[2]))], 2).unwrap();
        assert_eq!(out[0], f32t(&[2]));
        assert_eq!(
            out[1],
            ValueType::Tensor(TensorType::new(DType::F32, vec![Dim::Unknown, Dim::Known(3)]))
        );
        assert!(infer(&op, vec![None, None], 2).is_err());

        let scan = |batched: bool, out_axis| {
            ControlOp::Scan(Box::new(ScanAttrs {
                body: body(2, vec![f32t(&[2]), f32t(&[2])]),
                num_scan_inputs: 1,
                batched,
                scan_input_axes: vec![if batched { 1 } else { 0 }],
                scan_input_directions: vec![0],
                scan_output_axes: Some(vec![out_axis]),
                scan_output_directions: None,
            }))
        };
        let out = infer(&scan(false, -1), vec![Some(f32t(&[2])), Some(f32t(&[5, 2]))], 2).unwrap();
        assert_eq!(out, vec![f32t(&[2]), f32t(&[2, 5])]);
        let out = infer(
            &scan(true, 0),
            vec![None, Some(f32t(&[1, 2])), Some(f32t(&[1, 5, 2]))],
            2,
        )
        .unwrap();
        assert_eq!(out, vec![f32t(&[1, 2]), f32t(&[1, 5, 2])]);
    }

    #[test]
    fn sequence_types() {
        let seq = |t: ValueType| ValueType::Sequence(Box::new(t));
        let out = infer(
            &ControlOp::SequenceConstruct,
            vec![Some(f32t(&[2])), Some(f32t(&[3]))],
            1,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![seq(ValueType::Tensor(TensorType::new(DType::F32, vec![Dim::Unknown])))]
        );
        let i64t = ValueType::tensor(DType::I64, vec![]);
        assert!(infer(
            &ControlOp::SequenceConstruct,
            vec![Some(f32t(&[2])), Some(i64t.clone())],
            1
        )
        .is_err());
        let out = infer(
            &ControlOp::SequenceAt,
            vec![Some(seq(f32t(&[2]))), Some(i64t.clone())],
            1,
        )
        .unwrap();
        assert_eq!(out, vec![f32t(&[2])]);
        let split = ControlOp::SplitToSequence {
            axis: 1,
            keepdims: false,
        };
        assert_eq!(
            infer(&split, vec![Some(f32t(&[3, 6]))], 1).unwrap(),
            vec![seq(f32t(&[3]))]
        );
        let cat = ControlOp::ConcatFromSequence {
            axis: -1,
            new_axis: true,
        };
        let out = infer(&cat, vec![Some(seq(f32t(&[3])))], 1).unwrap();
        assert_eq!(
            out,
            vec![ValueType::Tensor(TensorType::new(
                DType::F32,
                vec![Dim::Known(3), Dim::Unknown]
            ))]
        );
        let opt = ValueType::Optional(Box::new(seq(f32t(&[2]))));
        assert_eq!(
            infer(&ControlOp::OptionalGetElement, vec![Some(opt)], 1).unwrap(),
            vec![seq(f32t(&[2]))]
        );
        assert!(infer(&ControlOp::Optional { ty: None }, vec![], 1).is_err());
    }

    #[test]
    fn split_to_sequence_with_constant_split() {
        let op = ControlOp::SplitToSequence {
            axis: 1,
            keepdims: true,
        };
        let split = crate::Tensor::scalar_i64(2);
        let inputs = vec![Some(f32t(&[3, 6])), Some(ValueType::tensor(DType::I64, vec![]))];
        let consts = vec![None, Some(&split)];
        let cx = InferCtx {
            inputs: &inputs,
            consts: &consts,
            num_outputs: 1,
            op: "SplitToSequence",
        };
        assert_eq!(
            op.infer(&cx).unwrap(),
            vec![ValueType::Sequence(Box::new(f32t(&[3, 2])))]
        );
        let uneven = crate::Tensor::scalar_i64(4);
        let consts = vec![None, Some(&uneven)];
        let cx = InferCtx {
            inputs: &inputs,
            consts: &consts,
            num_outputs: 1,
            op: "SplitToSequence",
        };
        let want = ValueType::Tensor(TensorType::new(DType::F32, vec![Dim::Known(3), Dim::Unknown]));
        assert_eq!(op.infer(&cx).unwrap(), vec![ValueType::Sequence(Box::new(want))]);
    }
}
