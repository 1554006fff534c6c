//! Running a compiled model on its memory plan: borrowed inputs, outputs
//! written into caller buffers, one arena per concurrent run reused across
//! runs, so a model of kernels and views allocates nothing per run.

use super::plan::{Arg, Loc, Plan, PlanError, StepPlan};
use super::profile::Profile;
use super::{AlignedBuf, Module};
use crate::error::RuntimeError;
use crate::interpreter::{eval_node, Scope};
use carbide_ir::tensor_bytes::element_size;
use carbide_ir::{tensor_apply, tensor_map, DType, Tensor, Value};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How many input shape sets keep their plan (most recently used first).
pub const PLAN_CACHE_SIZE: usize = 8;

/// A borrowed, dense, row-major input tensor of any dtype (its bytes in
/// native byte order).
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    pub dtype: DType,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
}

/// A caller-owned, dense, row-major output buffer.
#[derive(Debug)]
pub struct TensorMut<'a> {
    pub dtype: DType,
    pub shape: &'a [usize],
    pub bytes: &'a mut [u8],
}

impl<'a> TensorRef<'a> {
    pub fn f32(shape: &'a [usize], data: &'a [f32]) -> TensorRef<'a> {
        // SAFETY: any f32 slice is a valid byte slice of 4x the length.
        let bytes = unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, std::mem::size_of_val(data)) };
        TensorRef {
            dtype: DType::F32,
            shape,
            bytes,
        }
    }

    /// A view of a tensor's data; `None` for strings and non-row-major layouts.
    pub fn from_tensor(t: &'a Tensor) -> Option<TensorRef<'a>> {
        if t.dtype() == DType::String {
            return None;
        }
        let (ptr, len) = tensor_apply!(t, a => {
            let s = a.as_slice()?;
            (s.as_ptr() as *const c_void as *const u8, std::mem::size_of_val(s))
        });
        // SAFETY: the tensor's dense storage, borrowed for 'a.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
        Some(TensorRef {
            dtype: t.dtype(),
            shape: t.shape(),
            bytes,
        })
    }
}

impl<'a> TensorMut<'a> {
    pub fn f32(shape: &'a [usize], data: &'a mut [f32]) -> TensorMut<'a> {
        let len = std::mem::size_of_val(data);
        // SAFETY: any f32 slice is a valid byte slice of 4x the length, and
        // any bytes written are a valid f32.
        let bytes = unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr() as *mut u8, len) };
        TensorMut {
            dtype: DType::F32,
            shape,
            bytes,
        }
    }

    /// The tensor's data as an output buffer; `None` for strings, bool (a
    /// kernel could write an invalid bool) and non-row-major layouts.
    pub fn from_tensor(t: &'a mut Tensor) -> Option<TensorMut<'a>> {
        if matches!(t.dtype(), DType::String | DType::Bool) {
            return None;
        }
        let dtype = t.dtype();
        let (ptr, len, shape) = tensor_apply!(t, a => {
            let shape = a.shape() as *const [usize];
            let s = a.as_slice_mut()?;
            (s.as_mut_ptr() as *mut c_void as *mut u8, std::mem::size_of_val(s), shape)
        });
        // SAFETY: the tensor's dense storage and shape, uniquely borrowed for 'a;
        // the shape is not changed through the byte view.
        let (bytes, shape) = unsafe { (std::slice::from_raw_parts_mut(ptr, len), &*shape) };
        Some(TensorMut { dtype, shape, bytes })
    }
}

/// What one run works in: its arena, the values host steps made, and the
/// pointer array of the kernel being called. Reused across runs.
pub(crate) struct RunState {
    arena: AlignedBuf,
    host: Vec<Option<Value>>,
    ptrs: Vec<*mut c_void>,
}
// SAFETY: `ptrs` only holds pointers during a kernel call of the run that owns the state.
unsafe impl Send for RunState {}

/// A plan and the run states (arenas) of its runs, one per concurrent run.
pub(crate) struct Prepared {
    pub plan: Plan,
    states: Mutex<Vec<RunState>>,
}

impl Prepared {
    fn take_state(&self) -> RunState {
        let pooled = self.states.lock().unwrap_or_else(|e| e.into_inner()).pop();
        pooled.unwrap_or_else(|| RunState {
            arena: AlignedBuf::zeroed(self.plan.arena_bytes()),
            host: (0..self.plan.values.len()).map(|_| None).collect(),
            ptrs: Vec::with_capacity(self.plan.max_args),
        })
    }

    fn give_back(&self, mut state: RunState) {
        for v in &mut state.host {
            *v = None;
        }
        state.ptrs.clear();
        self.states.lock().unwrap_or_else(|e| e.into_inner()).push(state);
    }
}

/// The plan cache: input dtypes and shapes → plan (`None`: not plannable).
pub(crate) type PlanCache = Mutex<Vec<(Vec<DType>, Vec<Vec<usize>>, Option<Arc<Prepared>>)>>;

fn bytes_of(dtype: DType, shape: &[usize]) -> Option<usize> {
    Some(shape.iter().product::<usize>() * element_size(dtype)?)
}

impl Module {
    /// The prepared plan for inputs of these dtypes and shapes (built on
    /// first use); `None` when the model cannot be planned.
    pub(crate) fn prepared(&self, inputs: &[(DType, &[usize])]) -> Result<Option<Arc<Prepared>>, RuntimeError> {
        let matches = |dtypes: &[DType], shapes: &[Vec<usize>]| {
            dtypes.len() == inputs.len()
                && inputs
                    .iter()
                    .zip(dtypes.iter().zip(shapes))
                    .all(|((d, s), (pd, ps))| d == pd && *s == ps.as_slice())
        };
        {
            let mut cache = self.plans.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = cache.iter().position(|(d, s, _)| matches(d, s)) {
                cache[..=i].rotate_right(1);
                return Ok(cache[0].2.clone());
            }
        }
        let prepared = match Plan::build(self, inputs) {
            Ok(plan) => Some(Arc::new(Prepared {
                plan,
                states: Mutex::new(Vec::new()),
            })),
            Err(PlanError::Unplannable(why)) => {
                tracing::debug!("running unplanned: {}", why.0);
                None
            }
            Err(PlanError::Runtime(e)) => return Err(e),
        };
        let mut cache = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(
            0,
            (
                inputs.iter().map(|(d, _)| *d).collect(),
                inputs.iter().map(|(_, s)| s.to_vec()).collect(),
                prepared.clone(),
            ),
        );
        cache.truncate(PLAN_CACHE_SIZE);
        Ok(prepared)
    }

    /// Runs the model on borrowed inputs (in [`Module::inputs`] order) and
    /// writes the outputs (in [`Module::outputs`] order) into the caller's
    /// buffers, whose dtypes and shapes must be the outputs'.
    ///
    /// After the first run for a set of input shapes (which builds the
    /// memory plan and the arena), a model whose steps are all kernels and
    /// shape-only views performs no heap allocation. Host steps (ops without
    /// a generated kernel) still allocate their results. A model that
    /// cannot be planned (e.g. a kernel whose shapes depend on data) is an
    /// error here; [`Module::run`] runs it unplanned.
    pub fn run_into(&self, inputs: &[TensorRef<'_>], outputs: &mut [TensorMut<'_>]) -> Result<(), RuntimeError> {
        let n_in = self
            .model
            .graph
            .inputs
            .iter()
            .filter(|i| !self.weights.contains_key(&i.name))
            .count();
        if inputs.len() != n_in {
            return Err(RuntimeError::BadInput {
                name: String::new(),
                reason: format!("the model takes {n_in} inputs, got {}", inputs.len()),
            });
        }
        for (i, t) in inputs.iter().enumerate() {
            if bytes_of(t.dtype, t.shape) != Some(t.bytes.len()) {
                return Err(RuntimeError::BadInput {
                    name: format!("#{i}"),
                    reason: format!(
                        "{} bytes do not hold a {} tensor of shape {:?}",
                        t.bytes.len(),
                        t.dtype,
                        t.shape
                    ),
                });
            }
        }
        let n_out = self.model.graph.outputs.len();
        if outputs.len() != n_out {
            return Err(RuntimeError::BadInput {
                name: String::new(),
                reason: format!("the model has {n_out} outputs, got {} buffers", outputs.len()),
            });
        }
        // The plan key is the input dtypes and shapes: a fixed-size stack array
        // of them keeps this call allocation-free for models with few inputs.
        const STACK_INPUTS: usize = 16;
        let mut key_buf: [(DType, &[usize]); STACK_INPUTS] = [(DType::F32, &[]); STACK_INPUTS];
        let key_vec: Vec<(DType, &[usize])>;
        let key: &[(DType, &[usize])] = if inputs.len() <= STACK_INPUTS {
            for (k, t) in key_buf.iter_mut().zip(inputs) {
                *k = (t.dtype, t.shape);
            }
            &key_buf[..inputs.len()]
        } else {
            key_vec = inputs.iter().map(|t| (t.dtype, t.shape)).collect();
            &key_vec
        };
        let prep = self.prepared(key)?.ok_or_else(|| RuntimeError::Kernel {
            entry: String::new(),
            reason: "this model cannot be memory-planned (a kernel's shapes depend on data); use Module::run".into(),
        })?;
        let plan = &prep.plan;
        for (j, (&id, out)) in plan.outputs.iter().zip(outputs.iter()).enumerate() {
            let v = &plan.values[id];
            let name = &self.model.graph.outputs[j].name;
            let bad = |reason: String| RuntimeError::BadInput {
                name: format!("output '{name}'"),
                reason,
            };
            if v.dtype.is_some_and(|d| d != out.dtype) {
                return Err(bad(format!(
                    "the buffer is {}, the output {}",
                    out.dtype,
                    v.dtype.unwrap_or(out.dtype)
                )));
            }
            if v.shape.as_deref().is_some_and(|s| s != out.shape) {
                return Err(bad(format!(
                    "the buffer has shape {:?}, the output {:?}",
                    out.shape, v.shape
                )));
            }
            if bytes_of(out.dtype, out.shape) != Some(out.bytes.len()) {
                return Err(bad(format!(
                    "{} bytes do not hold shape {:?}",
                    out.bytes.len(),
                    out.shape
                )));
            }
        }
        let mut out_ptrs_buf = [std::ptr::null_mut::<u8>(); STACK_INPUTS];
        let out_ptrs_vec: Vec<*mut u8>;
        let out_ptrs: &[*mut u8] = if outputs.len() <= STACK_INPUTS {
            for (p, o) in out_ptrs_buf.iter_mut().zip(outputs.iter_mut()) {
                *p = o.bytes.as_mut_ptr();
            }
            &out_ptrs_buf[..outputs.len()]
        } else {
            out_ptrs_vec = outputs.iter_mut().map(|o| o.bytes.as_mut_ptr()).collect();
            &out_ptrs_vec
        };
        let mut state = prep.take_state();
        let result = self.execute(plan, &mut state, inputs, out_ptrs, None);
        let result = result.and_then(|()| {
            for (j, &id) in plan.outputs.iter().enumerate() {
                if plan.values[id].loc == Loc::Output(j) {
                    continue;
                }
                let name = &self.model.graph.outputs[j].name;
                let out = &mut outputs[j];
                let (dtype, shape) =
                    value_type(plan, id, &state).ok_or_else(|| RuntimeError::Undefined(name.clone()))?;
                if dtype != out.dtype || shape != out.shape {
                    return Err(RuntimeError::BadInput {
                        name: format!("output '{name}'"),
                        reason: format!(
                            "the buffer is {} {:?}, the output {dtype} {shape:?}",
                            out.dtype, out.shape
                        ),
                    });
                }
                match &state.host[id] {
                    // A host step's result may have any layout.
                    Some(Value::Tensor(t)) => match TensorRef::from_tensor(t) {
                        Some(r) => out.bytes.copy_from_slice(r.bytes),
                        None => out
                            .bytes
                            .copy_from_slice(&t.to_le_bytes().ok_or_else(|| RuntimeError::Undefined(name.clone()))?),
                    },
                    _ => out
                        .bytes
                        .copy_from_slice(value_bytes(plan, id, &state, inputs, out_ptrs)?),
                }
            }
            Ok(())
        });
        prep.give_back(state);
        result
    }

    /// The planned part of [`Module::run`]: `Ok(None)` when the model cannot
    /// be planned for these feeds (it then runs unplanned).
    pub(crate) fn run_planned(
        &self,
        bound: &HashMap<String, Value>,
        profile: Option<&mut Profile>,
    ) -> Result<Option<Vec<(String, Value)>>, RuntimeError> {
        let graph = &self.model.graph;
        let mut refs = Vec::new();
        for i in graph.inputs.iter().filter(|i| !self.weights.contains_key(&i.name)) {
            match bound.get(&i.name) {
                Some(Value::Tensor(t)) => match TensorRef::from_tensor(t) {
                    Some(r) => refs.push(r),
                    None => return Ok(None),
                },
                _ => return Ok(None),
            }
        }
        // A feed overriding a weight's default: the plan bakes weights in.
        if bound.len() != refs.len() {
            return Ok(None);
        }
        let key: Vec<(DType, &[usize])> = refs.iter().map(|r| (r.dtype, r.shape)).collect();
        let Some(prep) = self.prepared(&key)? else {
            return Ok(None);
        };
        let plan = &prep.plan;
        // Outputs the kernels write directly get a fresh tensor each.
        let mut direct: Vec<Option<Tensor>> = Vec::with_capacity(plan.outputs.len());
        for (j, &id) in plan.outputs.iter().enumerate() {
            let v = &plan.values[id];
            direct.push(match (v.loc, v.dtype, &v.shape) {
                (Loc::Output(k), Some(d), Some(s)) if k == j => Some(Tensor::zeros(d, s).ok_or_else(|| {
                    RuntimeError::Undefined(format!("output '{}' of dtype {d}", graph.outputs[j].name))
                })?),
                _ => None,
            });
        }
        let mut out_ptrs = Vec::with_capacity(direct.len());
        for d in &mut direct {
            out_ptrs.push(match d {
                Some(t) => TensorMut::from_tensor(t).map_or(std::ptr::null_mut(), |m| m.bytes.as_mut_ptr()),
                None => std::ptr::null_mut(),
            });
        }
        let mut state = prep.take_state();
        let run_start = Instant::now();
        let result = self.execute(plan, &mut state, &refs, &out_ptrs, profile.map(|p| (p, run_start)));
        let result = result.and_then(|()| {
            let mut outs = Vec::with_capacity(direct.len());
            for (j, &id) in plan.outputs.iter().enumerate() {
                let name = graph.outputs[j].name.clone();
                if let Some(t) = direct[j].take() {
                    outs.push((name, Value::Tensor(t)));
                    continue;
                }
                if plan.values[id].loc == Loc::Host {
                    let shared = plan.outputs[j + 1..].contains(&id);
                    let v = if shared {
                        state.host[id].clone()
                    } else {
                        state.host[id].take()
                    };
                    outs.push((name.clone(), v.ok_or(RuntimeError::Undefined(name))?));
                    continue;
                }
                let (dtype, shape) =
                    value_type(plan, id, &state).ok_or_else(|| RuntimeError::Undefined(name.clone()))?;
                let bytes = value_bytes(plan, id, &state, &refs, &out_ptrs)?;
                let t = Tensor::from_le_bytes(dtype, shape, bytes)?;
                outs.push((name, Value::Tensor(t)));
            }
            Ok(outs)
        });
        prep.give_back(state);
        result.map(Some)
    }

    /// Runs every step of `plan`. `out_ptrs[j]` is the caller's buffer of
    /// graph output `j` (used for the outputs the plan writes directly).
    fn execute(
        &self,
        plan: &Plan,
        state: &mut RunState,
        inputs: &[TensorRef<'_>],
        out_ptrs: &[*mut u8],
        mut profile: Option<(&mut Profile, Instant)>,
    ) -> Result<(), RuntimeError> {
        let base = state.arena.as_mut_ptr();
        for (i, sp) in plan.steps.iter().enumerate() {
            let step_start = profile.as_ref().map(|_| Instant::now());
            match sp {
                StepPlan::View => {}
                StepPlan::Kernel {
                    step,
                    args,
                    params,
                    parts,
                    host_inputs,
                } => {
                    let (Some(super::Step::Kernel(k)), Some(Some(loaded))) =
                        (self.steps.get(*step), self.kernels.get(*step))
                    else {
                        return Err(RuntimeError::Kernel {
                            entry: String::new(),
                            reason: format!("step {step} has no loaded kernel"),
                        });
                    };
                    let kerr = |reason: String| RuntimeError::Kernel {
                        entry: k.call.entry.clone(),
                        reason,
                    };
                    // Host-made inputs: checked, and made row-major if they are not.
                    let mut dense_copies: Vec<(usize, Tensor)> = Vec::new();
                    for (id, shape) in host_inputs {
                        let name = &plan.values[*id].name;
                        let Some(Value::Tensor(t)) = &state.host[*id] else {
                            return Err(kerr(format!("input '{name}' is not a tensor")));
                        };
                        if t.shape() != shape.as_slice() {
                            return Err(kerr(format!(
                                "input '{name}' has shape {:?}, the kernel needs {shape:?}",
                                t.shape()
                            )));
                        }
                        let pos = k.inputs.iter().position(|n| n == name);
                        if let Some(d) = pos.and_then(|p| k.input_types[p].dtype) {
                            if d != t.dtype() || d == DType::String {
                                return Err(kerr(format!("input '{name}' is {}, the kernel needs {d}", t.dtype())));
                            }
                        }
                        if !tensor_apply!(t, a => a.is_standard_layout()) {
                            dense_copies.push((*id, tensor_map!(t, a => a.as_standard_layout().into_owned())));
                        }
                    }
                    state.ptrs.clear();
                    for a in args {
                        let p = match a {
                            Arg::Packed(j) => loaded.packed[*j].as_bytes().as_ptr() as *mut c_void,
                            // SAFETY: the plan placed the buffer inside the arena.
                            Arg::Scratch(b) => unsafe { base.add(plan.buffers[*b].offset) as *mut c_void },
                            Arg::Value(id) => match dense_copies.iter().find(|(d, _)| d == id) {
                                Some((_, t)) => tensor_apply!(t, a => a.as_ptr() as *mut c_void),
                                None => value_ptr(plan, *id, base, &state.host, inputs, out_ptrs)? as *mut c_void,
                            },
                        };
                        state.ptrs.push(p);
                    }
                    // SAFETY: every buffer was bound as the call contract says, sized
                    // by the plan from the checked shapes; params were evaluated on them.
                    unsafe { self.workers.call(loaded.entry, &state.ptrs, params, *parts) };
                }
                StepPlan::Host { node, reads, outputs } => {
                    let node = &self.model.graph.nodes[*node];
                    let mut values = HashMap::with_capacity(reads.len());
                    for &id in reads {
                        let v = &plan.values[id];
                        let value = if v.loc == Loc::Host {
                            state.host[id]
                                .take()
                                .ok_or_else(|| RuntimeError::Undefined(v.name.clone()))?
                        } else {
                            let (dtype, shape) =
                                value_type(plan, id, state).ok_or_else(|| RuntimeError::Undefined(v.name.clone()))?;
                            let bytes = value_bytes(plan, id, state, inputs, out_ptrs)?;
                            Value::Tensor(Tensor::from_le_bytes(dtype, shape, bytes)?)
                        };
                        values.insert(v.name.clone(), value);
                    }
                    let mut scope = Scope {
                        values,
                        borrowed: Some(&self.weights),
                        parent: None,
                    };
                    let result = eval_node(node, &scope, self.seed);
                    for &id in reads {
                        if plan.values[id].loc == Loc::Host {
                            state.host[id] = scope.values.remove(&plan.values[id].name);
                        }
                    }
                    for (o, v) in outputs.iter().zip(result?) {
                        if let Some(id) = o {
                            state.host[*id] = Some(v);
                        }
                    }
                }
            }
            if let (Some((p, run_start)), Some(t0)) = (profile.as_mut(), step_start) {
                p.steps.push(self.step_time(i, *run_start, t0));
            }
        }
        if let Some((p, run_start)) = profile {
            p.total_us = run_start.elapsed().as_secs_f64() * 1e6;
        }
        Ok(())
    }
}

/// The dtype and shape of value `id` in this run.
fn value_type<'s>(plan: &'s Plan, id: usize, state: &'s RunState) -> Option<(DType, &'s [usize])> {
    let v = &plan.values[id];
    match (v.dtype, &v.shape) {
        (Some(d), Some(s)) => Some((d, s)),
        _ => match state.host[id].as_ref()? {
            Value::Tensor(t) => Some((t.dtype(), t.shape())),
            _ => None,
        },
    }
}

/// Where value `id`'s bytes start (not for host values made non-dense).
fn value_ptr(
    plan: &Plan,
    id: usize,
    base: *mut u8,
    host: &[Option<Value>],
    inputs: &[TensorRef<'_>],
    out_ptrs: &[*mut u8],
) -> Result<*mut u8, RuntimeError> {
    let v = &plan.values[id];
    Ok(match v.loc {
        Loc::Input(i) => inputs[i].bytes.as_ptr() as *mut u8,
        Loc::Weight(w) => plan.weight_ptrs[w].0 as *mut u8,
        // SAFETY: the plan placed the buffer inside the arena.
        Loc::Arena(b) => unsafe { base.add(plan.buffers[b].offset + v.offset) },
        Loc::Output(j) if !out_ptrs[j].is_null() => out_ptrs[j],
        Loc::Output(_) => return Err(RuntimeError::Undefined(v.name.clone())),
        Loc::Host => match &host[id] {
            Some(Value::Tensor(t)) if t.dtype() != DType::String => {
                tensor_apply!(t, a => a.as_ptr() as *mut c_void as *mut u8)
            }
            _ => return Err(RuntimeError::Undefined(v.name.clone())),
        },
    })
}

/// The bytes of value `id` (row-major; a host value that is not is an error).
fn value_bytes<'s>(
    plan: &'s Plan,
    id: usize,
    state: &'s RunState,
    inputs: &[TensorRef<'s>],
    out_ptrs: &[*mut u8],
) -> Result<&'s [u8], RuntimeError> {
    let v = &plan.values[id];
    let (dtype, shape) = value_type(plan, id, state).ok_or_else(|| RuntimeError::Undefined(v.name.clone()))?;
    let len = bytes_of(dtype, shape).ok_or_else(|| RuntimeError::Undefined(v.name.clone()))?;
    if let (Loc::Host, Some(Value::Tensor(t))) = (v.loc, &state.host[id]) {
        if !tensor_apply!(t, a => a.is_standard_layout()) {
            return Err(RuntimeError::Kernel {
                entry: String::new(),
                reason: format!("value '{}' is not row-major", v.name),
            });
        }
    }
    let base = state.arena.as_ptr() as *mut u8;
    let p = value_ptr(plan, id, base, &state.host, inputs, out_ptrs)?;
    // SAFETY: `p` points at `len` bytes of the value (arena, input, weight, output or host storage).
    Ok(unsafe { std::slice::from_raw_parts(p as *const u8, len) })
}
