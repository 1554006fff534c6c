//! Kernels of the control-flow, sequence and optional ops. Bodies (If
//! branches, Loop/Scan/SequenceMap bodies) run through the interpreter's
//! [`SubgraphRunner`](super::SubgraphRunner): inputs bind positionally to the
//! body's declared inputs, outer names resolve in the enclosing scopes.

use super::MAX_ELEMS;
use super::{opt_tensor_in, tensor_in, EvalCtx};
use crate::error::{invalid, OpResult};
use carbide_ir::ndarray::{self, ArrayD, ArrayViewD, Axis, IxDyn, Slice};
use carbide_ir::ops::control::ScanAttrs;
use carbide_ir::ops::ControlOp;
use carbide_ir::{tensor_map, DType, Graph, Tensor, Value, ValueType};

/// The most iterations a Loop without a finite trip count may run.
const MAX_ITERS: i64 = 1 << 31;

pub fn eval(op: &ControlOp, inputs: &[Option<&Value>], cx: &EvalCtx) -> OpResult<Vec<Value>> {
    match op {
        ControlOp::If {
            then_branch,
            else_branch,
        } => {
            let c = scalar_bool(tensor_in(inputs, 0)?, "cond")?;
            cx.runner
                .run_subgraph(if c { then_branch } else { else_branch }, Vec::new())
        }
        ControlOp::Loop { body } => eval_loop(body, inputs, cx),
        ControlOp::Scan(s) if s.batched => eval_scan8(s, inputs, cx),
        ControlOp::Scan(s) => eval_scan(s, inputs, cx),
        ControlOp::SequenceConstruct => {
            let mut items = Vec::with_capacity(inputs.len());
            for i in 0..inputs.len() {
                let t = tensor_in(inputs, i)?;
                if let Some(Value::Tensor(first)) = items.first() {
                    same_dtype(first, t, "SequenceConstruct")?;
                }
                items.push(Value::Tensor(t.clone()));
            }
            Ok(vec![Value::Sequence(items)])
        }
        ControlOp::SequenceEmpty { .. } => Ok(vec![Value::Sequence(Vec::new())]),
        ControlOp::SequenceAt => {
            let seq = seq_in(inputs, 0)?;
            let pos = scalar_i64(tensor_in(inputs, 1)?, "position")?;
            let i = seq_index(pos, seq.len(), false)?;
            Ok(vec![seq[i].clone()])
        }
        ControlOp::SequenceInsert => {
            let seq = seq_in(inputs, 0)?;
            let t = tensor_in(inputs, 1)?;
            if let Some(Value::Tensor(first)) = seq.first() {
                same_dtype(first, t, "SequenceInsert")?;
            }
            let i = match opt_tensor_in(inputs, 2)? {
                Some(p) => seq_index(scalar_i64(p, "position")?, seq.len(), true)?,
                None => seq.len(),
            };
            let mut out = Vec::with_capacity(seq.len() + 1);
            out.extend_from_slice(&seq[..i]);
            out.push(Value::Tensor(t.clone()));
            out.extend_from_slice(&seq[i..]);
            Ok(vec![Value::Sequence(out)])
        }
        ControlOp::SequenceErase => {
            let seq = seq_in(inputs, 0)?;
            let i = match opt_tensor_in(inputs, 1)? {
                Some(p) => seq_index(scalar_i64(p, "position")?, seq.len(), false)?,
                None if seq.is_empty() => return Err(invalid("cannot erase from an empty sequence")),
                None => seq.len() - 1,
            };
            let mut out = seq.to_vec();
            out.remove(i);
            Ok(vec![Value::Sequence(out)])
        }
        ControlOp::SequenceLength => {
            let seq = seq_in(inputs, 0)?;
            Ok(vec![Value::Tensor(Tensor::scalar_i64(seq.len() as i64))])
        }
        ControlOp::SequenceMap { body } => eval_sequence_map(body, inputs, cx),
        ControlOp::SplitToSequence { axis, keepdims } => {
            let t = tensor_in(inputs, 0)?;
            let split = opt_tensor_in(inputs, 1)?;
            split_to_sequence(t, split, *axis, *keepdims).map(|v| vec![Value::Sequence(v)])
        }
        ControlOp::ConcatFromSequence { axis, new_axis } => {
            let seq = seq_in(inputs, 0)?;
            let ts = seq
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_tensor()
                        .ok_or_else(|| invalid(format!("sequence element {i} is not a tensor")))
                })
                .collect::<OpResult<Vec<_>>>()?;
            let first = ts
                .first()
                .ok_or_else(|| invalid("cannot concatenate an empty sequence"))?;
            let rank = first.rank() + usize::from(*new_axis);
            let ax = norm_axis(*axis, rank)?;
            if !*new_axis && first.rank() == 0 {
                return Err(invalid("cannot concatenate rank-0 tensors without new_axis"));
            }
            Ok(vec![Value::Tensor(join(&ts, ax, *new_axis)?)])
        }
        ControlOp::Optional { .. } => {
            let v = inputs.first().copied().flatten().map(|v| Box::new(v.clone()));
            Ok(vec![Value::Optional(v)])
        }
        ControlOp::OptionalHasElement => {
            let has = match inputs.first().copied().flatten() {
                None | Some(Value::Optional(None)) => false,
                Some(_) => true,
            };
            Ok(vec![Value::Tensor(Tensor::Bool(ArrayD::from_elem(IxDyn(&[]), has)))])
        }
        ControlOp::OptionalGetElement => match inputs.first().copied().flatten() {
            Some(Value::Optional(Some(v))) => Ok(vec![(**v).clone()]),
            Some(Value::Optional(None)) => Err(invalid("the optional input is empty")),
            Some(v) => Ok(vec![v.clone()]),
            None => Err(invalid("input 0 is required")),
        },
    }
}

// ---------------------------------------------------------------- helpers

/// A one-element integer tensor (shape [] or [1]) read as i64.
fn scalar_i64(t: &Tensor, what: &str) -> OpResult<i64> {
    if t.len() != 1 {
        return Err(invalid(format!(
            "{what} must hold one element, got shape {:?}",
            t.shape()
        )));
    }
    match t.dtype() {
        DType::I32 | DType::I64 | DType::I16 | DType::I8 | DType::U8 | DType::U16 | DType::U32 | DType::U64 => {}
        d => return Err(invalid(format!("{what} must be an integer tensor, got {d}"))),
    }
    t.to_i64_vec()
        .and_then(|v| v.first().copied())
        .ok_or_else(|| invalid(format!("{what} is not an integer")))
}

/// A one-element boolean tensor read as bool (integer tensors: nonzero).
fn scalar_bool(t: &Tensor, what: &str) -> OpResult<bool> {
    if t.len() != 1 {
        return Err(invalid(format!(
            "{what} must hold one element, got shape {:?}",
            t.shape()
        )));
    }
    match t {
        Tensor::Bool(a) => Ok(a.iter().next().copied().unwrap_or(false)),
        _ => t
            .to_i64_vec()
            .and_then(|v| v.first().map(|&x| x != 0))
            .ok_or_else(|| invalid(format!("{what} must be a bool tensor, got {}", t.dtype()))),
    }
}

fn bool_scalar(v: bool) -> Value {
    Value::Tensor(Tensor::Bool(ArrayD::from_elem(IxDyn(&[]), v)))
}

fn seq_in<'a>(inputs: &[Option<&'a Value>], i: usize) -> OpResult<&'a [Value]> {
    match inputs.get(i).copied().flatten() {
        Some(Value::Sequence(s)) => Ok(s),
        Some(_) => Err(invalid(format!("input {i} must be a sequence"))),
        None => Err(invalid(format!("input {i} is required"))),
    }
}

fn same_dtype(a: &Tensor, b: &Tensor, op: &str) -> OpResult<()> {
    if a.dtype() != b.dtype() {
        return Err(invalid(format!(
            "{op}: sequence elements must share one dtype, got {} and {}",
            a.dtype(),
            b.dtype()
        )));
    }
    Ok(())
}

/// A sequence position in [-n, n-1] (or [-n, n] when inserting) as an index.
fn seq_index(pos: i64, n: usize, inserting: bool) -> OpResult<usize> {
    let n_i = n as i64;
    let hi = if inserting { n_i } else { n_i - 1 };
    if pos < -n_i || pos > hi {
        return Err(invalid(format!(
            "position {pos} is out of range for a sequence of length {n}"
        )));
    }
    Ok(if pos < 0 { (pos + n_i) as usize } else { pos as usize })
}

fn norm_axis(axis: i64, rank: usize) -> OpResult<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(invalid(format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(a as usize)
}

/// Concatenates (`stack == false`) or stacks along a new axis
/// (`stack == true`) tensors that must share one dtype.
fn join(ts: &[&Tensor], axis: usize, stack: bool) -> OpResult<Tensor> {
    fn go<T: Clone>(v: &[ArrayViewD<'_, T>], axis: usize, stack: bool) -> OpResult<ArrayD<T>> {
        let r = if stack {
            ndarray::stack(Axis(axis), v)
        } else {
            ndarray::concatenate(Axis(axis), v)
        };
        r.map_err(|e| {
            let shapes: Vec<&[usize]> = v.iter().map(|a| a.shape()).collect();
            invalid(format!(
                "cannot {} shapes {shapes:?} along axis {axis}: {e}",
                if stack { "stack" } else { "concatenate" }
            ))
        })
    }
    let first = *ts.first().ok_or_else(|| invalid("nothing to join"))?;
    let mismatch = |t: &Tensor| {
        invalid(format!(
            "all tensors must have dtype {}, got {}",
            first.dtype(),
            t.dtype()
        ))
    };
    macro_rules! arm {
        ($v:ident) => {{
            let vs = ts
                .iter()
                .map(|t| match t {
                    Tensor::$v(a) => Ok(a.view()),
                    o => Err(mismatch(o)),
                })
                .collect::<OpResult<Vec<_>>>()?;
            Tensor::$v(go(&vs, axis, stack)?)
        }};
    }
    Ok(match first {
        Tensor::F32(_) => arm!(F32),
        Tensor::F64(_) => arm!(F64),
        Tensor::F16(_) => arm!(F16),
        Tensor::BF16(_) => arm!(BF16),
        Tensor::I8(_) => arm!(I8),
        Tensor::I16(_) => arm!(I16),
        Tensor::I32(_) => arm!(I32),
        Tensor::I64(_) => arm!(I64),
        Tensor::U8(_) => arm!(U8),
        Tensor::U16(_) => arm!(U16),
        Tensor::U32(_) => arm!(U32),
        Tensor::U64(_) => arm!(U64),
        Tensor::Bool(_) => arm!(Bool),
        Tensor::String(_) => arm!(String),
        Tensor::Small(d, _) => {
            let vs = ts
                .iter()
                .map(|t| match t {
                    Tensor::Small(e, a) if e == d => Ok(a.view()),
                    o => Err(mismatch(o)),
                })
                .collect::<OpResult<Vec<_>>>()?;
            Tensor::Small(*d, go(&vs, axis, stack)?)
        }
    })
}

/// The sub-tensor at index `i` along `axis` (rank drops by one).
fn index_axis(t: &Tensor, axis: usize, i: usize) -> OpResult<Tensor> {
    if axis >= t.rank() || i >= t.shape()[axis] {
        return Err(invalid(format!(
            "index {i} along axis {axis} is out of range for shape {:?}",
            t.shape()
        )));
    }
    Ok(tensor_map!(t, a => a.index_axis(Axis(axis), i).to_owned()))
}

/// An empty tensor for a scan output that no iteration produced: the dtype
/// and dims the body declares (unknown dims read as 0), with `extra` zero
/// dims inserted in front.
fn empty_scan_output(ty: &ValueType, axis: i64, extra: usize) -> OpResult<Tensor> {
    let tt = ty.as_tensor().cloned().unwrap_or_default();
    let dtype = tt.dtype.unwrap_or(DType::F32);
    let mut shape: Vec<usize> = tt
        .shape
        .unwrap_or_default()
        .iter()
        .map(|d| d.known().unwrap_or(0))
        .collect();
    let ax = norm_axis(axis, shape.len() + 1)?;
    shape.insert(ax, 0);
    for _ in 1..extra {
        shape.insert(0, 0);
    }
    Tensor::zeros(dtype, &shape).ok_or_else(|| crate::error::unsupported(format!("scan output of dtype {dtype}")))
}

/// Tracks the elements accumulated into scan outputs against [`MAX_ELEMS`].
struct Budget(usize);

impl Budget {
    fn take(&mut self, n: usize) -> OpResult<()> {
        self.0 = self.0.saturating_add(n);
        if self.0 > MAX_ELEMS {
            return Err(invalid(format!("scan outputs would exceed {MAX_ELEMS} elements")));
        }
        Ok(())
    }
}

fn run_body(cx: &EvalCtx, body: &Graph, args: Vec<Value>) -> OpResult<Vec<Value>> {
    let outs = cx.runner.run_subgraph(body, args)?;
    if outs.len() != body.outputs.len() {
        return Err(invalid(format!(
            "the body returned {} values, it declares {}",
            outs.len(),
            body.outputs.len()
        )));
    }
    Ok(outs)
}

fn into_tensor(v: Value, what: &str) -> OpResult<Tensor> {
    v.into_tensor()
        .ok_or_else(|| invalid(format!("{what} must be a tensor")))
}

// ---------------------------------------------------------------- Loop

fn eval_loop(body: &Graph, inputs: &[Option<&Value>], cx: &EvalCtx) -> OpResult<Vec<Value>> {
    let max_trip = opt_tensor_in(inputs, 0)?.map(|t| scalar_i64(t, "M")).transpose()?;
    let mut cond = opt_tensor_in(inputs, 1)?
        .map(|t| scalar_bool(t, "cond"))
        .transpose()?
        .unwrap_or(true);
    let n = inputs.len().saturating_sub(2);
    if body.inputs.len() != n + 2 {
        return Err(invalid(format!(
            "the body takes {} inputs, the node gives {n} loop-carried values (+2)",
            body.inputs.len()
        )));
    }
    let k = body.outputs.len().checked_sub(n + 1).ok_or_else(|| {
        invalid(format!(
            "the body returns {} values, fewer than 1 + {n}",
            body.outputs.len()
        ))
    })?;
    let mut carried = (0..n)
        .map(|j| {
            inputs[j + 2]
                .cloned()
                .ok_or_else(|| invalid(format!("loop-carried input {j} is absent")))
        })
        .collect::<OpResult<Vec<_>>>()?;
    let mut scans: Vec<Vec<Tensor>> = vec![Vec::new(); k];
    let mut budget = Budget(0);
    let limit = max_trip.unwrap_or(MAX_ITERS);
    let mut i: i64 = 0;
    while cond && i < limit {
        if i >= MAX_ITERS {
            return Err(invalid(format!("the loop ran {MAX_ITERS} iterations without stopping")));
        }
        let mut args = Vec::with_capacity(n + 2);
        args.push(Value::Tensor(Tensor::scalar_i64(i)));
        args.push(bool_scalar(cond));
        args.append(&mut carried);
        let mut outs = run_body(cx, body, args)?.into_iter();
        let c = outs.next().ok_or_else(|| invalid("the body returned no condition"))?;
        cond = scalar_bool(
            &into_tensor(c, "the body's condition output")?,
            "the body's condition output",
        )?;
        carried.extend(outs.by_ref().take(n));
        for (j, v) in outs.enumerate() {
            let t = into_tensor(v, "a scan output")?;
            budget.take(t.len())?;
            scans[j].push(t);
        }
        i += 1;
    }
    let mut out = carried;
    for (j, items) in scans.into_iter().enumerate() {
        out.push(Value::Tensor(if items.is_empty() {
            empty_scan_output(&body.outputs[n + 1 + j].ty, 0, 1)?
        } else {
            let refs: Vec<&Tensor> = items.iter().collect();
            join(&refs, 0, true).map_err(|e| invalid(format!("scan output {j}: {e}")))?
        }));
    }
    Ok(out)
}

// ---------------------------------------------------------------- Scan

/// Scan (opset 9+): no batch axis; per-input axes and directions.
fn eval_scan(s: &ScanAttrs, inputs: &[Option<&Value>], cx: &EvalCtx) -> OpResult<Vec<Value>> {
    let body = &s.body;
    let m = s.num_scan_inputs;
    let n = body.inputs.len().saturating_sub(m);
    if inputs.len() != n + m {
        return Err(invalid(format!(
            "takes {} inputs ({n} states, {m} scan inputs), got {}",
            n + m,
            inputs.len()
        )));
    }
    let k = body
        .outputs
        .len()
        .checked_sub(n)
        .ok_or_else(|| invalid("the body returns fewer values than it has states"))?;
    let mut states = (0..n)
        .map(|j| {
            inputs[j]
                .cloned()
                .ok_or_else(|| invalid(format!("state input {j} is absent")))
        })
        .collect::<OpResult<Vec<_>>>()?;
    let mut scan_ins = Vec::with_capacity(m);
    let mut len: Option<usize> = None;
    for j in 0..m {
        let t = tensor_in(inputs, n + j)?;
        let ax = norm_axis(s.scan_input_axes.get(j).copied().unwrap_or(0), t.rank())
            .map_err(|e| invalid(format!("scan input {j}: {e}")))?;
        let l = t.shape()[ax];
        if len.is_some_and(|p| p != l) {
            return Err(invalid(format!(
                "scan inputs have different lengths ({} and {l})",
                len.unwrap_or(0)
            )));
        }
        len = Some(l);
        scan_ins.push((t, ax, s.scan_input_directions.get(j) == Some(&1)));
    }
    let len = len.unwrap_or(0);
    let mut scans: Vec<Vec<Tensor>> = vec![Vec::new(); k];
    let mut budget = Budget(0);
    for it in 0..len {
        let mut args = Vec::with_capacity(n + m);
        args.append(&mut states);
        for (t, ax, rev) in &scan_ins {
            args.push(Value::Tensor(index_axis(t, *ax, if *rev { len - 1 - it } else { it })?));
        }
        let mut outs = run_body(cx, body, args)?.into_iter();
        states.extend(outs.by_ref().take(n));
        for (j, v) in outs.enumerate() {
            let t = into_tensor(v, "a scan output")?;
            budget.take(t.len())?;
            scans[j].push(t);
        }
    }
    let mut out = states;
    for (j, mut items) in scans.into_iter().enumerate() {
        let axis = s.scan_output_axes.as_ref().and_then(|v| v.get(j).copied()).unwrap_or(0);
        if s.scan_output_directions.as_ref().and_then(|v| v.get(j)) == Some(&1) {
            items.reverse();
        }
        out.push(Value::Tensor(if items.is_empty() {
            empty_scan_output(&body.outputs[n + j].ty, axis, 1)?
        } else {
            let ax = norm_axis(axis, items[0].rank() + 1).map_err(|e| invalid(format!("scan output {j}: {e}")))?;
            let refs: Vec<&Tensor> = items.iter().collect();
            join(&refs, ax, true).map_err(|e| invalid(format!("scan output {j}: {e}")))?
        }));
    }
    Ok(out)
}

/// Scan (opset 8): axis 0 of every input is a batch axis, scan inputs are
/// iterated along axis 1, `sequence_lens` (first input) may shorten each
/// batch entry's sequence; scan outputs are zero-padded to the full length.
fn eval_scan8(s: &ScanAttrs, inputs: &[Option<&Value>], cx: &EvalCtx) -> OpResult<Vec<Value>> {
    let body = &s.body;
    let m = s.num_scan_inputs;
    let n = body.inputs.len().saturating_sub(m);
    if inputs.len() != 1 + n + m {
        return Err(invalid(format!(
            "takes {} inputs (sequence_lens, {n} states, {m} scan inputs), got {}",
            1 + n + m,
            inputs.len()
        )));
    }
    let k = body
        .outputs
        .len()
        .checked_sub(n)
        .ok_or_else(|| invalid("the body returns fewer values than it has states"))?;
    let states = (0..n).map(|j| tensor_in(inputs, 1 + j)).collect::<OpResult<Vec<_>>>()?;
    let scan_ins = (0..m)
        .map(|j| tensor_in(inputs, 1 + n + j))
        .collect::<OpResult<Vec<_>>>()?;
    let (batch, max_len) = match scan_ins.first().map(|t| t.shape()).unwrap_or(&[]) {
        [b, l, ..] => (*b, *l),
        s => {
            return Err(invalid(format!(
                "scan input 0 needs rank >= 2 (batch, sequence), got shape {s:?}"
            )))
        }
    };
    for (j, t) in scan_ins.iter().enumerate() {
        if t.rank() < 2 || t.shape()[0] != batch || t.shape()[1] != max_len {
            return Err(invalid(format!(
                "scan input {j} has shape {:?}, expected [{batch}, {max_len}, ...]",
                t.shape()
            )));
        }
    }
    for (j, t) in states.iter().enumerate() {
        if t.rank() < 1 || t.shape()[0] != batch {
            return Err(invalid(format!(
                "state {j} has shape {:?}, expected batch size {batch} first",
                t.shape()
            )));
        }
    }
    let lens: Vec<usize> = match opt_tensor_in(inputs, 0)? {
        None => vec![max_len; batch],
        Some(t) => {
            let v = t
                .to_i64_vec()
                .ok_or_else(|| invalid("sequence_lens must be an integer tensor"))?;
            if v.len() != batch {
                return Err(invalid(format!(
                    "sequence_lens has {} values for batch size {batch}",
                    v.len()
                )));
            }
            v.iter()
                .map(|&l| {
                    usize::try_from(l)
                        .ok()
                        .filter(|&l| l <= max_len)
                        .ok_or_else(|| invalid(format!("sequence length {l} is not in 0..={max_len}")))
                })
                .collect::<OpResult<_>>()?
        }
    };
    let mut budget = Budget(0);
    let mut final_states: Vec<Vec<Tensor>> = vec![Vec::with_capacity(batch); n];
    let mut batch_scans: Vec<Vec<Vec<Tensor>>> = vec![Vec::with_capacity(batch); k];
    for (b, &len) in lens.iter().enumerate() {
        let mut st = states
            .iter()
            .map(|t| index_axis(t, 0, b).map(Value::Tensor))
            .collect::<OpResult<Vec<_>>>()?;
        let ins = scan_ins
            .iter()
            .map(|t| index_axis(t, 0, b))
            .collect::<OpResult<Vec<_>>>()?;
        let mut scans: Vec<Vec<Tensor>> = vec![Vec::new(); k];
        for it in 0..len {
            let mut args = Vec::with_capacity(n + m);
            args.append(&mut st);
            for (j, t) in ins.iter().enumerate() {
                let idx = if s.scan_input_directions.get(j) == Some(&1) {
                    len - 1 - it
                } else {
                    it
                };
                args.push(Value::Tensor(index_axis(t, 0, idx)?));
            }
            let mut outs = run_body(cx, body, args)?.into_iter();
            st.extend(outs.by_ref().take(n));
            for (j, v) in outs.enumerate() {
                let t = into_tensor(v, "a scan output")?;
                budget.take(t.len())?;
                scans[j].push(t);
            }
        }
        for (j, v) in st.into_iter().enumerate() {
            final_states[j].push(into_tensor(v, "a state")?);
        }
        for (j, sc) in scans.into_iter().enumerate() {
            batch_scans[j].push(sc);
        }
    }
    let mut out = Vec::with_capacity(n + k);
    for (j, items) in final_states.iter().enumerate() {
        let refs: Vec<&Tensor> = items.iter().collect();
        out.push(Value::Tensor(if refs.is_empty() {
            states[j].clone()
        } else {
            join(&refs, 0, true).map_err(|e| invalid(format!("state {j}: {e}")))?
        }));
    }
    for (j, per_batch) in batch_scans.into_iter().enumerate() {
        // The element shape, from any batch entry that produced one.
        let proto = per_batch
            .iter()
            .flatten()
            .next()
            .map(|t| (t.dtype(), t.shape().to_vec()));
        let Some((dtype, elem_shape)) = proto else {
            // No iteration ran anywhere: the declared element type, zero-filled.
            let declared = empty_scan_output(&body.outputs[n + j].ty, 0, 1)?;
            let mut shape = declared.shape().to_vec();
            shape[0] = max_len;
            shape.insert(0, batch);
            budget.take(
                shape
                    .iter()
                    .try_fold(1usize, |a, &b| a.checked_mul(b))
                    .unwrap_or(usize::MAX),
            )?;
            let t = Tensor::zeros(declared.dtype(), &shape).ok_or_else(|| invalid("unsupported scan output dtype"))?;
            out.push(Value::Tensor(t));
            continue;
        };
        let pad = Tensor::zeros(dtype, &elem_shape).ok_or_else(|| invalid("unsupported scan output dtype"))?;
        budget.take(pad.len().saturating_mul(batch.saturating_mul(max_len)))?;
        let mut rows = Vec::with_capacity(batch);
        for items in &per_batch {
            let mut refs: Vec<&Tensor> = items.iter().collect();
            refs.resize(max_len, &pad);
            rows.push(if refs.is_empty() {
                Tensor::zeros(dtype, &[&[0][..], &elem_shape].concat()).ok_or_else(|| invalid("bad dtype"))?
            } else {
                join(&refs, 0, true).map_err(|e| invalid(format!("scan output {j}: {e}")))?
            });
        }
        let refs: Vec<&Tensor> = rows.iter().collect();
        out.push(Value::Tensor(
            join(&refs, 0, true).map_err(|e| invalid(format!("scan output {j}: {e}")))?,
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------- sequences

fn eval_sequence_map(body: &Graph, inputs: &[Option<&Value>], cx: &EvalCtx) -> OpResult<Vec<Value>> {
    let seq = seq_in(inputs, 0)?;
    if body.inputs.len() != inputs.len() {
        return Err(invalid(format!(
            "the body takes {} inputs, the node gives {}",
            body.inputs.len(),
            inputs.len()
        )));
    }
    for (j, v) in inputs.iter().enumerate().skip(1) {
        match v {
            Some(Value::Sequence(s)) if s.len() != seq.len() => {
                return Err(invalid(format!(
                    "input {j} is a sequence of length {}, input 0 has length {}",
                    s.len(),
                    seq.len()
                )))
            }
            Some(Value::Sequence(_)) | Some(Value::Tensor(_)) => {}
            Some(Value::Optional(_)) => return Err(invalid(format!("input {j} must be a sequence or a tensor"))),
            None => return Err(invalid(format!("input {j} is absent"))),
        }
    }
    let mut outs: Vec<Vec<Value>> = vec![Vec::with_capacity(seq.len()); body.outputs.len()];
    for (i, item) in seq.iter().enumerate() {
        let mut args = Vec::with_capacity(inputs.len());
        args.push(item.clone());
        for v in inputs.iter().skip(1).flatten() {
            args.push(match v {
                Value::Sequence(s) => s[i].clone(),
                other => (*other).clone(),
            });
        }
        for (j, v) in run_body(cx, body, args)?.into_iter().enumerate() {
            outs[j].push(v);
        }
    }
    Ok(outs.into_iter().map(Value::Sequence).collect())
}

fn split_to_sequence(t: &Tensor, split: Option<&Tensor>, axis: i64, keepdims: bool) -> OpResult<Vec<Value>> {
    let ax = norm_axis(axis, t.rank())?;
    let dim = t.shape()[ax];
    let lens: Vec<usize> = match split {
        None => {
            return (0..dim)
                .map(|i| {
                    let part = index_axis(t, ax, i)?;
                    Ok(Value::Tensor(if keepdims {
                        let mut s = part.shape().to_vec();
                        s.insert(ax, 1);
                        part.reshaped(&s).ok_or_else(|| invalid("reshape failed"))?
                    } else {
                        part
                    }))
                })
                .collect();
        }
        Some(s) => {
            let v = s
                .to_i64_vec()
                .ok_or_else(|| invalid(format!("split must be an integer tensor, got {}", s.dtype())))?;
            if s.rank() == 0 {
                let c = v.first().copied().unwrap_or(0);
                if c <= 0 {
                    return Err(invalid(format!("split size must be positive, got {c}")));
                }
                let c = c as usize;
                let count = dim.div_ceil(c);
                (0..count).map(|i| c.min(dim - i * c)).collect()
            } else if s.rank() == 1 {
                let lens = v
                    .iter()
                    .map(|&x| usize::try_from(x).map_err(|_| invalid(format!("split lengths must be >= 0, got {x}"))))
                    .collect::<OpResult<Vec<usize>>>()?;
                let total = lens.iter().try_fold(0usize, |a, &b| a.checked_add(b));
                if total != Some(dim) {
                    return Err(invalid(format!(
                        "split lengths {v:?} do not sum to the axis length {dim}"
                    )));
                }
                lens
            } else {
                return Err(invalid(format!(
                    "split must be a scalar or 1-D, got shape {:?}",
                    s.shape()
                )));
            }
        }
    };
    let mut start = 0;
    let mut out = Vec::with_capacity(lens.len());
    for l in lens {
        let end = start + l;
        out.push(Value::Tensor(
            tensor_map!(t, a => a.slice_axis(Axis(ax), Slice::from(start..end)).to_owned()),
        ));
        start = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::Session;
    use carbide_ir::ndarray::{ArrayD, IxDyn};
    use carbide_ir::ops::control::{ControlOp, ScanAttrs};
    use carbide_ir::{DType, Graph, Model, Node, Op, Tensor, TensorType, Value, ValueInfo, ValueType};

    fn vi(name: &str) -> ValueInfo {
        ValueInfo {
            name: name.into(),
            ty: ValueType::Unknown,
        }
    }

    fn node(op: ControlOp, inputs: &[&str], outputs: &[&str]) -> Node {
        Node {
            name: format!("n_{}", outputs.first().copied().unwrap_or("")),
            op: Op::Control(op),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn graph(inputs: &[&str], nodes: Vec<Node>, outputs: &[&str]) -> Graph {
        Graph {
            name: "g".into(),
            inputs: inputs.iter().map(|s| vi(s)).collect(),
            outputs: outputs.iter().map(|s| vi(s)).collect(),
            nodes,
            ..Default::default()
        }
    }

    fn run(g: Graph, feeds: Vec<(&str, Value)>) -> Result<Vec<Value>, crate::RuntimeError> {
        let model = Model {
            graph: g,
            ..Default::default()
        };
        let outs = Session::new(model).run(feeds.into_iter().map(|(k, v)| (k.to_string(), v)).collect())?;
        Ok(outs.into_iter().map(|(_, v)| v).collect())
    }

    fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap())
    }

    fn t(v: Tensor) -> Value {
        Value::Tensor(v)
    }

    fn b(v: bool) -> Value {
        t(Tensor::Bool(ArrayD::from_elem(IxDyn(&[]), v)))
    }

    fn seq(v: Vec<Tensor>) -> Value {
        Value::Sequence(v.into_iter().map(Value::Tensor).collect())
    }

    #[test]
    fn if_runs_the_chosen_branch_with_outer_names() {
        let then_b = graph(&[], vec![], &["x"]);
        let else_b = graph(
            &[],
            vec![node(ControlOp::SequenceConstruct, &["x", "x"], &["s"])],
            &["s"],
        );
        let g = graph(
            &["c", "x"],
            vec![node(
                ControlOp::If {
                    then_branch: Box::new(then_b),
                    else_branch: Box::new(else_b),
                },
                &["c"],
                &["y"],
            )],
            &["y"],
        );
        let x = f32s(&[2], &[1.0, 2.0]);
        assert_eq!(
            run(g.clone(), vec![("c", b(true)), ("x", t(x.clone()))]).unwrap(),
            vec![t(x.clone())]
        );
        assert_eq!(
            run(g, vec![("c", b(false)), ("x", t(x.clone()))]).unwrap(),
            vec![seq(vec![x.clone(), x])]
        );
    }

    /// Body: (i, cond, x, s) -> (cond, x, SequenceInsert(s, i), i): x is carried
    /// unchanged, s collects the iteration numbers, i is a scan output.
    fn loop_graph() -> Graph {
        let body = graph(
            &["i", "c_in", "x_in", "s_in"],
            vec![node(ControlOp::SequenceInsert, &["s_in", "i"], &["s_out"])],
            &["c_in", "x_in", "s_out", "i"],
        );
        graph(
            &["m", "c", "x", "s"],
            vec![node(
                ControlOp::Loop { body: Box::new(body) },
                &["m", "c", "x", "s"],
                &["x_f", "s_f", "scan"],
            )],
            &["x_f", "s_f", "scan"],
        )
    }

    #[test]
    fn loop_carries_values_and_stacks_scan_outputs() {
        let x = f32s(&[1], &[5.0]);
        let outs = run(
            loop_graph(),
            vec![
                ("m", t(Tensor::scalar_i64(3))),
                ("c", b(true)),
                ("x", t(x.clone())),
                ("s", seq(vec![])),
            ],
        )
        .unwrap();
        let ints = (0..3).map(Tensor::scalar_i64).collect();
        assert_eq!(outs, vec![t(x), seq(ints), t(Tensor::from_i64s(vec![0, 1, 2]))]);
    }

    #[test]
    fn loop_with_false_cond_runs_zero_times() {
        let mut g = loop_graph();
        // The body declares its scan output as an i64 scalar.
        if let Op::Control(ControlOp::Loop { body }) = &mut g.nodes[0].op {
            body.outputs[3].ty = ValueType::tensor(DType::I64, vec![]);
        }
        let x = f32s(&[1], &[5.0]);
        let outs = run(
            g,
            vec![
                ("m", t(Tensor::scalar_i64(3))),
                ("c", b(false)),
                ("x", t(x.clone())),
                ("s", seq(vec![])),
            ],
        )
        .unwrap();
        assert_eq!(outs, vec![t(x), seq(vec![]), t(Tensor::from_i64s(vec![]))]);
    }

    #[test]
    fn loop_rejects_a_non_scalar_trip_count() {
        let e = run(
            loop_graph(),
            vec![
                ("m", t(Tensor::from_i64s(vec![1, 2]))),
                ("c", b(true)),
                ("x", t(f32s(&[], &[0.0]))),
                ("s", seq(vec![])),
            ],
        )
        .unwrap_err();
        assert!(e.to_string().contains("M must hold one element"), "{e}");
    }

    /// Body: (s, x) -> (x, s): the state becomes the current element and the
    /// scan output is the previous state.
    fn scan_body() -> Graph {
        graph(&["s_in", "x_in"], vec![], &["x_in", "s_in"])
    }

    fn scan9(dir: i64, out_axis: i64, out_dir: i64) -> Graph {
        let op = ControlOp::Scan(Box::new(ScanAttrs {
            body: scan_body(),
            num_scan_inputs: 1,
            batched: false,
            scan_input_axes: vec![1],
            scan_input_directions: vec![dir],
            scan_output_axes: Some(vec![out_axis]),
            scan_output_directions: Some(vec![out_dir]),
        }));
        graph(
            &["init", "x"],
            vec![node(op, &["init", "x"], &["fin", "ys"])],
            &["fin", "ys"],
        )
    }

    #[test]
    fn scan9_axes_and_directions() {
        // x is [2, 3]: scanned along axis 1, each element a column of 2.
        let x = f32s(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let init = f32s(&[2], &[0.0, 0.0]);
        let feeds = || vec![("init", t(init.clone())), ("x", t(x.clone()))];
        let outs = run(scan9(0, 0, 0), feeds()).unwrap();
        assert_eq!(outs[0], t(f32s(&[2], &[3.0, 6.0])));
        assert_eq!(outs[1], t(f32s(&[3, 2], &[0.0, 0.0, 1.0, 4.0, 2.0, 5.0])));
        let outs = run(scan9(1, 0, 0), feeds()).unwrap();
        assert_eq!(outs[0], t(f32s(&[2], &[1.0, 4.0])));
        assert_eq!(outs[1], t(f32s(&[3, 2], &[0.0, 0.0, 3.0, 6.0, 2.0, 5.0])));
        let outs = run(scan9(0, 1, 1), feeds()).unwrap();
        assert_eq!(outs[1], t(f32s(&[2, 3], &[2.0, 1.0, 0.0, 5.0, 4.0, 0.0])));
    }

    /// A Scan-8 (batched) graph over `scan_body`, scanning x along axis 1.
    fn scan8_graph() -> Graph {
        let op = ControlOp::Scan(Box::new(ScanAttrs {
            body: scan_body(),
            num_scan_inputs: 1,
            batched: true,
            scan_input_axes: vec![1],
            scan_input_directions: vec![0],
            scan_output_axes: None,
            scan_output_directions: None,
        }));
        graph(
            &["lens", "init", "x"],
            vec![node(op, &["lens", "init", "x"], &["fin", "ys"])],
            &["fin", "ys"],
        )
    }

    #[test]
    fn scan8_batches_and_pads_short_sequences() {
        let g = scan8_graph();
        // batch 2, sequence 3, elements of 1.
        let x = f32s(&[2, 3, 1], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let init = f32s(&[2, 1], &[-1.0, -2.0]);
        let lens = Tensor::from_i64s(vec![3, 1]);
        let outs = run(g, vec![("lens", t(lens)), ("init", t(init)), ("x", t(x))]).unwrap();
        assert_eq!(outs[0], t(f32s(&[2, 1], &[3.0, 4.0])));
        assert_eq!(outs[1], t(f32s(&[2, 3, 1], &[-1.0, 1.0, 2.0, -2.0, 0.0, 0.0])));
    }

    fn one_op(op: ControlOp, inputs: &[&str], feeds: Vec<(&str, Value)>) -> Result<Value, crate::RuntimeError> {
        let present: Vec<&str> = inputs.iter().copied().filter(|s| !s.is_empty()).collect();
        let g = graph(&present, vec![node(op, inputs, &["out"])], &["out"]);
        run(g, feeds).map(|mut v| v.remove(0))
    }

    #[test]
    fn split_to_sequence_forms() {
        let x = f32s(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let op = |keepdims| ControlOp::SplitToSequence { axis: 1, keepdims };
        let out = one_op(op(false), &["x"], vec![("x", t(x.clone()))]).unwrap();
        assert_eq!(
            out,
            seq(vec![
                f32s(&[2], &[1.0, 4.0]),
                f32s(&[2], &[2.0, 5.0]),
                f32s(&[2], &[3.0, 6.0])
            ])
        );
        let out = one_op(op(true), &["x"], vec![("x", t(x.clone()))]).unwrap();
        assert_eq!(
            out,
            seq(vec![
                f32s(&[2, 1], &[1.0, 4.0]),
                f32s(&[2, 1], &[2.0, 5.0]),
                f32s(&[2, 1], &[3.0, 6.0])
            ])
        );
        let out = one_op(
            op(true),
            &["x", "s"],
            vec![("x", t(x.clone())), ("s", t(Tensor::scalar_i64(2)))],
        )
        .unwrap();
        assert_eq!(
            out,
            seq(vec![f32s(&[2, 2], &[1.0, 2.0, 4.0, 5.0]), f32s(&[2, 1], &[3.0, 6.0])])
        );
        let out = one_op(
            op(true),
            &["x", "s"],
            vec![("x", t(x.clone())), ("s", t(Tensor::from_i64s(vec![1, 2])))],
        )
        .unwrap();
        assert_eq!(
            out,
            seq(vec![f32s(&[2, 1], &[1.0, 4.0]), f32s(&[2, 2], &[2.0, 3.0, 5.0, 6.0])])
        );
        let e = one_op(
            op(true),
            &["x", "s"],
            vec![("x", t(x.clone())), ("s", t(Tensor::from_i64s(vec![1, 1])))],
        );
        assert!(e.is_err());
        let e = one_op(
            op(true),
            &["x", "s"],
            vec![("x", t(x)), ("s", t(Tensor::scalar_i64(0)))],
        );
        assert!(e.is_err());
    }

    #[test]
    fn concat_from_sequence_with_and_without_new_axis() {
        let s = seq(vec![f32s(&[2], &[1.0, 2.0]), f32s(&[2], &[3.0, 4.0])]);
        let op = |axis, new_axis| ControlOp::ConcatFromSequence { axis, new_axis };
        assert_eq!(
            one_op(op(0, false), &["s"], vec![("s", s.clone())]).unwrap(),
            t(f32s(&[4], &[1.0, 2.0, 3.0, 4.0]))
        );
        assert_eq!(
            one_op(op(-1, true), &["s"], vec![("s", s.clone())]).unwrap(),
            t(f32s(&[2, 2], &[1.0, 3.0, 2.0, 4.0]))
        );
        assert!(one_op(op(1, false), &["s"], vec![("s", s)]).is_err());
        assert!(one_op(op(0, false), &["s"], vec![("s", seq(vec![]))]).is_err());
        let mixed = Value::Sequence(vec![t(f32s(&[1], &[1.0])), t(Tensor::from_i64s(vec![1]))]);
        assert!(one_op(op(0, false), &["s"], vec![("s", mixed)]).is_err());
    }

    #[test]
    fn sequence_positions() {
        let items: Vec<Tensor> = (0..3).map(Tensor::scalar_i64).collect();
        let s = seq(items.clone());
        let p = |v| t(Tensor::scalar_i64(v));
        let at = |v| one_op(ControlOp::SequenceAt, &["s", "p"], vec![("s", s.clone()), ("p", p(v))]);
        assert_eq!(at(-1).unwrap(), t(items[2].clone()));
        assert!(at(3).is_err());
        assert!(at(-4).is_err());
        let ins = one_op(
            ControlOp::SequenceInsert,
            &["s", "x", "p"],
            vec![("s", s.clone()), ("x", p(9)), ("p", t(Tensor::from_i64s(vec![-3])))],
        )
        .unwrap();
        assert_eq!(ins, seq([9, 0, 1, 2].into_iter().map(Tensor::scalar_i64).collect()));
        let ins = one_op(
            ControlOp::SequenceInsert,
            &["s", "x"],
            vec![("s", s.clone()), ("x", p(9))],
        )
        .unwrap();
        assert_eq!(ins, seq([0, 1, 2, 9].into_iter().map(Tensor::scalar_i64).collect()));
        let bad = one_op(
            ControlOp::SequenceInsert,
            &["s", "x"],
            vec![("s", s.clone()), ("x", t(f32s(&[], &[1.0])))],
        );
        assert!(bad.is_err());
        let er = one_op(
            ControlOp::SequenceErase,
            &["s", "p"],
            vec![("s", s.clone()), ("p", p(0))],
        )
        .unwrap();
        assert_eq!(er, seq(vec![items[1].clone(), items[2].clone()]));
        let er = one_op(ControlOp::SequenceErase, &["s"], vec![("s", s.clone())]).unwrap();
        assert_eq!(er, seq(vec![items[0].clone(), items[1].clone()]));
        assert!(one_op(ControlOp::SequenceErase, &["s"], vec![("s", seq(vec![]))]).is_err());
        assert_eq!(one_op(ControlOp::SequenceLength, &["s"], vec![("s", s)]).unwrap(), p(3));
        let empty = one_op(ControlOp::SequenceEmpty { dtype: DType::F32 }, &[], vec![]).unwrap();
        assert_eq!(empty, seq(vec![]));
    }

    #[test]
    fn optionals() {
        let x = t(f32s(&[1], &[1.0]));
        let opt = one_op(ControlOp::Optional { ty: None }, &["x"], vec![("x", x.clone())]).unwrap();
        assert_eq!(opt, Value::Optional(Some(Box::new(x.clone()))));
        let ty = Some(ValueType::Tensor(TensorType::of_dtype(DType::F32)));
        let none = one_op(ControlOp::Optional { ty }, &[], vec![]).unwrap();
        assert_eq!(none, Value::Optional(None));
        let has = |v: Value| one_op(ControlOp::OptionalHasElement, &["o"], vec![("o", v)]).unwrap();
        assert_eq!(has(opt.clone()), b(true));
        assert_eq!(has(none.clone()), b(false));
        assert_eq!(has(x.clone()), b(true));
        assert_eq!(one_op(ControlOp::OptionalHasElement, &[""], vec![]).unwrap(), b(false));
        let get = |v: Value| one_op(ControlOp::OptionalGetElement, &["o"], vec![("o", v)]);
        assert_eq!(get(opt).unwrap(), x);
        assert_eq!(get(x.clone()).unwrap(), x);
        assert!(get(none).is_err());
    }

    #[test]
    fn sequence_map_zips_sequences_and_repeats_tensors() {
        // Body: (a, b) -> (b, a).
        let body = graph(&["a", "b"], vec![], &["b", "a"]);
        let g = graph(
            &["s", "x"],
            vec![node(
                ControlOp::SequenceMap { body: Box::new(body) },
                &["s", "x"],
                &["o1", "o2"],
            )],
            &["o1", "o2"],
        );
        let s = seq(vec![Tensor::scalar_i64(1), Tensor::scalar_i64(2)]);
        let x = Tensor::scalar_f32(7.0);
        let outs = run(g, vec![("s", s.clone()), ("x", t(x.clone()))]).unwrap();
        assert_eq!(outs, vec![seq(vec![x.clone(), x]), s]);
    }

    #[test]
    fn hostile_inputs_are_errors() {
        // Scan inputs of different lengths.
        let mut g = scan9(0, 0, 0);
        g.inputs.push(vi("x2"));
        if let Op::Control(ControlOp::Scan(s)) = &mut g.nodes[0].op {
            s.body.inputs.push(vi("x2_in"));
            s.num_scan_inputs = 2;
            s.scan_input_axes.push(0);
            s.scan_input_directions.push(0);
        }
        g.nodes[0].inputs.push("x2".into());
        let feeds = vec![
            ("init", t(f32s(&[2], &[0.0, 0.0]))),
            ("x", t(f32s(&[2, 3], &[0.0; 6]))),
            ("x2", t(f32s(&[2], &[0.0; 2]))),
        ];
        let e = run(g, feeds).unwrap_err();
        assert!(e.to_string().contains("different lengths"), "{e}");
        // A scan axis beyond the input's rank.
        let e = run(
            scan9(0, 0, 0),
            vec![("init", t(f32s(&[2], &[0.0; 2]))), ("x", t(f32s(&[2], &[0.0; 2])))],
        )
        .unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        // A Loop whose scan output is a sequence, not a tensor.
        let body = graph(&["i", "c_in", "s_in"], vec![], &["c_in", "s_in", "s_in"]);
        let g = graph(
            &["m", "s"],
            vec![node(
                ControlOp::Loop { body: Box::new(body) },
                &["m", "", "s"],
                &["s_f", "scan"],
            )],
            &["s_f", "scan"],
        );
        let e = run(g, vec![("m", t(Tensor::scalar_i64(2))), ("s", seq(vec![]))]).unwrap_err();
        assert!(e.to_string().contains("must be a tensor"), "{e}");
        // Scan-8 with sequence_lens beyond the sequence length.
        let g = scan8_graph();
        let feeds = vec![
            ("lens", t(Tensor::from_i64s(vec![4]))),
            ("init", t(f32s(&[1, 1], &[0.0]))),
            ("x", t(f32s(&[1, 3, 1], &[0.0; 3]))),
        ];
        assert!(run(g, feeds).is_err());
    }
}
