//! The static memory plan of a compiled model for one set of input shapes.
//!
//! Every value a kernel produces, and every kernel's scratch, lives in one
//! arena at an offset fixed here: liveness over the step list (first
//! definition, last use) gives each buffer a lifetime, and buffers are
//! placed largest first at the best-fitting free gap among the buffers
//! whose lifetimes overlap (the greedy size-sorted planner of TVM and
//! ONNX Runtime). Shape-only steps become views (same bytes, new shape),
//! an elementwise kernel may write over an input that dies at that step,
//! and kernel parameters are evaluated once. A Concat whose parts are all
//! kernel outputs and contiguous slices of its result (every axis before
//! the concat axis has extent 1) costs nothing: the kernels write straight
//! into their slices of one buffer. Host steps keep producing owned values
//! (their shapes may depend on data).

use super::{check_shape, names_used, resolve_shape, KernelStep, Module, Step};
use crate::error::RuntimeError;
use crate::interpreter::{eval_node, Scope};
use carbide_ir::kernel::BufferArg;
use carbide_ir::tensor_bytes::element_size;
use carbide_ir::{tensor_apply, tensor_map, DType, Dim, Op, Tensor, TensorType, Value};
use std::collections::HashMap;

/// Alignment of every arena buffer (a cache line; what SIMD loads like).
pub const ARENA_ALIGN: usize = 64;

/// Where a value's bytes are during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Loc {
    /// The caller's `i`-th input.
    Input(usize),
    /// A main-graph weight (`Plan::weight_ptrs[i]`).
    Weight(usize),
    /// An arena buffer.
    Arena(usize),
    /// The caller's `j`-th output buffer (a kernel writes it directly).
    Output(usize),
    /// An owned value a host step produced (shape known only when it runs).
    Host,
}

#[derive(Clone, Debug)]
pub(crate) struct ValuePlan {
    pub name: String,
    pub dtype: Option<DType>,
    /// Known for every value not produced by a host step.
    pub shape: Option<Vec<usize>>,
    pub loc: Loc,
    /// Bytes from the start of `loc` (non-zero only for a slice of a
    /// concatenation's arena buffer).
    pub offset: usize,
}

/// What a kernel's buffer slot points at.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg {
    Value(usize),
    Packed(usize),
    Scratch(usize),
}

#[derive(Clone, Debug)]
pub(crate) enum StepPlan {
    Kernel {
        /// Index into `Module::steps` (and its loaded kernels).
        step: usize,
        args: Vec<Arg>,
        params: Vec<i64>,
        parts: usize,
        /// Host-produced inputs: (value, the shape the kernel needs), checked per run.
        host_inputs: Vec<(usize, Vec<usize>)>,
    },
    /// A shape-only step whose output is a view: nothing to do at run time.
    View,
    Host {
        node: usize,
        /// Values the node (and its subgraphs) read that are in the plan.
        reads: Vec<usize>,
        /// The value of each node output (`None` for an unnamed output).
        outputs: Vec<Option<usize>>,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct Buffer {
    pub bytes: usize,
    pub first: usize,
    pub last: usize,
    pub offset: usize,
}

/// What the plan saves, for `carbide inspect`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PlanStats {
    /// Bytes of the arena one run uses.
    pub arena_bytes: usize,
    /// The most bytes live at once (a lower bound on the arena).
    pub peak_live_bytes: usize,
    /// Every intermediate value and scratch region, summed: what a run
    /// without a plan allocates.
    pub total_intermediate_bytes: usize,
    /// Kernel outputs written over a dying input.
    pub in_place: usize,
    /// Shape-only steps that became views (no copy).
    pub zero_copy_aliases: usize,
    /// Concats whose parts the kernels wrote straight into the result.
    pub in_place_concats: usize,
    /// Shape-only steps that still run on the host (their input comes from a host step
    /// or their target shape is computed at run time).
    pub copied_aliases: usize,
    pub host_steps: usize,
    pub kernel_steps: usize,
}

/// A pointer to weight bytes the module owns (stable: the module's weights never move).
#[derive(Clone, Copy, Debug)]
pub(crate) struct WeightPtr(pub *const u8);
// SAFETY: points into the module's immutable weights, which outlive the plan.
unsafe impl Send for WeightPtr {}
unsafe impl Sync for WeightPtr {}

pub(crate) struct Plan {
    pub values: Vec<ValuePlan>,
    pub steps: Vec<StepPlan>,
    pub buffers: Vec<Buffer>,
    /// Value of each graph output.
    pub outputs: Vec<usize>,
    pub weight_ptrs: Vec<WeightPtr>,
    /// Dense copies of weights that were not row-major (the pointers point here).
    _dense_weights: Vec<Tensor>,
    pub max_args: usize,
    pub stats: PlanStats,
}

/// Why a model cannot be planned for these shapes: it then runs unplanned.
pub(crate) struct Unplannable(#[allow(dead_code)] pub String);

pub(crate) enum PlanError {
    Runtime(RuntimeError),
    Unplannable(Unplannable),
}

impl From<RuntimeError> for PlanError {
    fn from(e: RuntimeError) -> Self {
        PlanError::Runtime(e)
    }
}

fn unplannable(why: String) -> PlanError {
    PlanError::Unplannable(Unplannable(why))
}

/// Checks an input's dtype and shape against its declared type, binding symbolic dims.
fn check_input(
    name: &str,
    ty: &TensorType,
    dtype: DType,
    shape: &[usize],
    syms: &mut HashMap<String, usize>,
) -> Result<(), RuntimeError> {
    let bad = |reason: String| RuntimeError::BadInput {
        name: name.to_string(),
        reason,
    };
    if let Some(d) = ty.dtype {
        if d != dtype {
            return Err(bad(format!("expected dtype {d}, got {dtype}")));
        }
    }
    if let Some(dims) = &ty.shape {
        if dims.len() != shape.len() {
            return Err(bad(format!("expected rank {}, got shape {shape:?}", dims.len())));
        }
        for (i, (d, &n)) in dims.iter().zip(shape).enumerate() {
            match d {
                Dim::Known(k) if *k != n => return Err(bad(format!("dim {i} must be {k}, got {n}"))),
                Dim::Sym(s) => {
                    let prev = *syms.entry(s.clone()).or_insert(n);
                    if prev != n {
                        return Err(bad(format!("dim {i} ('{s}') is {n}, but '{s}' is bound to {prev}")));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Whether every node of a kernel is elementwise, so output element `i`
/// only reads element `i` of a same-shaped input (safe to overwrite it).
fn is_elementwise_kernel(module: &Module, k: &KernelStep) -> bool {
    !k.nodes.is_empty()
        && k.nodes.iter().all(|&n| {
            matches!(&module.model.graph.nodes[n].op, Op::Elementwise(e)
                if !matches!(e, carbide_ir::ops::ElementwiseOp::BitCast { .. }))
        })
}

/// The output shape of a shape-only node on an input of `shape`, when its
/// other inputs are weights (so the shape is known before the run).
fn alias_shape(module: &Module, node: &carbide_ir::Node, dtype: DType, shape: &[usize]) -> Option<Vec<usize>> {
    let rest_are_weights = node
        .inputs
        .iter()
        .skip(1)
        .all(|n| n.is_empty() || module.weights.contains_key(n));
    if !rest_are_weights || node.outputs.len() != 1 {
        return None;
    }
    let probe = Tensor::zeros(dtype, shape)?;
    let mut values = HashMap::new();
    values.insert(node.inputs.first()?.clone(), Value::Tensor(probe));
    let scope = Scope {
        values,
        borrowed: Some(&module.weights),
        parent: None,
    };
    let out = eval_node(node, &scope, module.seed).ok()?;
    match out.first()? {
        Value::Tensor(t) if t.dtype() == dtype => Some(t.shape().to_vec()),
        _ => None,
    }
}

struct Builder<'m> {
    module: &'m Module,
    values: Vec<ValuePlan>,
    ids: HashMap<String, usize>,
    buffers: Vec<Buffer>,
    weight_ptrs: Vec<WeightPtr>,
    dense_weights: Vec<Tensor>,
}

impl Builder<'_> {
    fn add(&mut self, v: ValuePlan) -> usize {
        let id = self.values.len();
        self.ids.insert(v.name.clone(), id);
        self.values.push(v);
        id
    }

    /// The plan's value for `name`, registering a weight on first use.
    fn lookup(&mut self, name: &str) -> Option<usize> {
        if let Some(&id) = self.ids.get(name) {
            return Some(id);
        }
        let Some(Value::Tensor(t)) = self.module.weights.get(name) else {
            return None;
        };
        if t.dtype() == DType::String {
            return None;
        }
        let dense = tensor_apply!(t, a => a.is_standard_layout());
        let t = if dense {
            t
        } else {
            self.dense_weights
                .push(tensor_map!(t, a => a.as_standard_layout().into_owned()));
            self.dense_weights.last()?
        };
        let ptr = tensor_apply!(t, a => a.as_ptr() as *const std::ffi::c_void as *const u8);
        let w = self.weight_ptrs.len();
        self.weight_ptrs.push(WeightPtr(ptr));
        Some(self.add(ValuePlan {
            name: name.to_string(),
            dtype: Some(t.dtype()),
            shape: Some(t.shape().to_vec()),
            loc: Loc::Weight(w),
            offset: 0,
        }))
    }

    fn new_buffer(&mut self, bytes: usize, step: usize) -> usize {
        self.buffers.push(Buffer {
            bytes,
            first: step,
            last: step,
            offset: 0,
        });
        self.buffers.len() - 1
    }
}

impl Plan {
    /// Plans a run of `module` on inputs (in `Module::inputs()` order) of
    /// these dtypes and shapes; an input that does not fit its declared type
    /// is an error, a model this planner cannot handle is `Unplannable`.
    pub(crate) fn build(module: &Module, inputs: &[(DType, &[usize])]) -> Result<Plan, PlanError> {
        let graph = &module.model.graph;
        let required = module.inputs();
        if inputs.len() != required.len() {
            return Err(PlanError::Runtime(RuntimeError::BadInput {
                name: required.get(inputs.len()).map_or_else(String::new, |i| i.name.clone()),
                reason: format!("the model takes {} inputs, got {}", required.len(), inputs.len()),
            }));
        }
        let mut syms = HashMap::new();
        let mut b = Builder {
            module,
            values: Vec::new(),
            ids: HashMap::new(),
            buffers: Vec::new(),
            weight_ptrs: Vec::new(),
            dense_weights: Vec::new(),
        };
        for (i, (info, &(dtype, shape))) in required.iter().zip(inputs).enumerate() {
            let ty = match &info.ty {
                carbide_ir::ValueType::Tensor(t) => t,
                other => return Err(unplannable(format!("input '{}' is a {other}", info.name))),
            };
            check_input(&info.name, ty, dtype, shape, &mut syms)?;
            if element_size(dtype).is_none() {
                return Err(unplannable(format!("input '{}' is {dtype}", info.name)));
            }
            b.add(ValuePlan {
                name: info.name.clone(),
                dtype: Some(dtype),
                shape: Some(shape.to_vec()),
                loc: Loc::Input(i),
                offset: 0,
            });
        }
        let output_index: HashMap<&str, usize> = graph
            .outputs
            .iter()
            .enumerate()
            .map(|(j, o)| (o.name.as_str(), j))
            .collect();
        let duplicated_output = |name: &str| graph.outputs.iter().filter(|o| o.name == name).count() > 1;
        let concats = in_place_concats(module, &syms, &output_index);
        let concat_slots: HashMap<&str, (usize, usize)> = concats
            .iter()
            .enumerate()
            .flat_map(|(c, cc)| cc.parts.iter().map(move |(name, at)| (name.as_str(), (c, *at))))
            .collect();
        let mut concat_bufs: Vec<Option<usize>> = vec![None; concats.len()];
        let mut steps = Vec::with_capacity(module.steps.len());
        let mut stats = PlanStats::default();
        for (si, step) in module.steps.iter().enumerate() {
            match step {
                Step::Kernel(k) => {
                    stats.kernel_steps += 1;
                    let entry = &k.call.entry;
                    let kerr = |reason: String| RuntimeError::Kernel {
                        entry: entry.clone(),
                        reason,
                    };
                    let bound: Vec<bool> = (0..k.inputs.len())
                        .map(|i| k.call.buffers.contains(&BufferArg::Input(i)))
                        .collect();
                    let mut in_ids = Vec::with_capacity(k.inputs.len());
                    let mut in_shapes = Vec::with_capacity(k.inputs.len());
                    let mut host_inputs = Vec::new();
                    for ((name, ty), &is_bound) in k.inputs.iter().zip(&k.input_types).zip(&bound) {
                        let id = b.lookup(name);
                        let known = id.and_then(|id| b.values[id].shape.clone().map(|s| (id, s)));
                        match (id, known) {
                            (_, Some((id, shape))) => {
                                let v = &b.values[id];
                                let probe_dtype = v.dtype.unwrap_or(DType::F32);
                                check_shape(ty, probe_dtype, &shape, &mut syms)
                                    .map_err(|r| kerr(format!("input '{name}': {r}")))?;
                                in_shapes.push(shape);
                            }
                            (Some(id), None) => {
                                let shape = resolve_shape(ty, &syms).map_err(|r| {
                                    unplannable(format!("kernel {entry} input '{name}' from a host step: {r}"))
                                })?;
                                if is_bound {
                                    host_inputs.push((id, shape.clone()));
                                }
                                in_shapes.push(shape);
                            }
                            (None, None) if !is_bound => {
                                let shape =
                                    resolve_shape(ty, &syms).map_err(|r| kerr(format!("input '{name}': {r}")))?;
                                in_shapes.push(shape);
                            }
                            (None, None) => {
                                return Err(unplannable(format!("kernel {entry} reads '{name}', not a tensor here")))
                            }
                        }
                        in_ids.push(id);
                    }
                    let mut out_shapes = Vec::with_capacity(k.outputs.len());
                    for (name, ty) in k.outputs.iter().zip(&k.output_types) {
                        let shape = resolve_shape(ty, &syms).map_err(|r| kerr(format!("output '{name}': {r}")))?;
                        out_shapes.push(shape);
                    }
                    let ins: Vec<&[usize]> = in_shapes.iter().map(Vec::as_slice).collect();
                    let outs: Vec<&[usize]> = out_shapes.iter().map(Vec::as_slice).collect();
                    let eval = |e: &carbide_ir::kernel::ParamExpr, what: &str| {
                        super::eval_expr(e, &ins, &outs, what).map_err(kerr)
                    };
                    let (params, parts) = super::bind_call(&k.call, &ins, &outs, module.threads).map_err(kerr)?;
                    // Reads extend the lifetimes of the buffers behind the inputs.
                    for id in in_ids.iter().flatten() {
                        touch(&mut b.buffers, &b.values, *id, si);
                    }
                    // Outputs: the caller's buffer for a graph output, else the arena,
                    // over a dying same-sized input when the kernel is elementwise.
                    let elementwise = is_elementwise_kernel(module, k);
                    let mut out_ids = Vec::with_capacity(k.outputs.len());
                    for (o, (name, ty)) in k.outputs.iter().zip(&k.output_types).enumerate() {
                        let dtype = ty.dtype.ok_or_else(|| kerr(format!("output '{name}' has no dtype")))?;
                        let size = element_size(dtype).ok_or_else(|| kerr(format!("output '{name}' is {dtype}")))?
                            * out_shapes[o].iter().product::<usize>();
                        stats.total_intermediate_bytes += size;
                        let mut offset = 0;
                        let loc = match (output_index.get(name.as_str()), concat_slots.get(name.as_str())) {
                            (Some(&j), _) if !duplicated_output(name) && !b.ids.contains_key(name) => Loc::Output(j),
                            (None, Some(&(c, at))) => {
                                offset = at;
                                let bytes = concats[c].bytes;
                                Loc::Arena(*concat_bufs[c].get_or_insert_with(|| b.new_buffer(bytes, si)))
                            }
                            _ => {
                                let reuse = if elementwise && k.outputs.len() == 1 {
                                    in_place_candidate(&b, &in_ids, &bound, &out_shapes[0], dtype, si, module)
                                } else {
                                    None
                                };
                                match reuse {
                                    Some(buf) => {
                                        stats.in_place += 1;
                                        Loc::Arena(buf)
                                    }
                                    None => Loc::Arena(b.new_buffer(size, si)),
                                }
                            }
                        };
                        if name.is_empty() {
                            return Err(unplannable(format!("kernel {entry} has an unnamed output")));
                        }
                        out_ids.push(b.add(ValuePlan {
                            name: name.clone(),
                            dtype: Some(dtype),
                            shape: Some(out_shapes[o].clone()),
                            loc,
                            offset,
                        }));
                    }
                    let mut args = Vec::with_capacity(k.call.buffers.len());
                    for arg in &k.call.buffers {
                        args.push(match arg {
                            BufferArg::Input(i) => match in_ids[*i] {
                                Some(id) => Arg::Value(id),
                                None => return Err(PlanError::Runtime(RuntimeError::Undefined(k.inputs[*i].clone()))),
                            },
                            BufferArg::Output(i) => Arg::Value(out_ids[*i]),
                            BufferArg::Packed(i) => Arg::Packed(*i),
                            BufferArg::Scratch { bytes, per_part } => {
                                let n = usize::try_from(eval(bytes, "scratch size")?)
                                    .map_err(|_| kerr("negative scratch size".into()))?;
                                let n = if *per_part {
                                    n.checked_mul(parts)
                                        .ok_or_else(|| kerr("scratch size overflows".into()))?
                                } else {
                                    n
                                };
                                stats.total_intermediate_bytes += n;
                                Arg::Scratch(b.new_buffer(n, si))
                            }
                        });
                    }
                    steps.push(StepPlan::Kernel {
                        step: si,
                        args,
                        params,
                        parts,
                        host_inputs,
                    });
                }
                Step::Alias { node: n } | Step::Host { node: n } => {
                    let node = &graph.nodes[*n];
                    if let Some(c) = concats.iter().position(|c| c.node == *n) {
                        if concat_view(&mut b, &concats[c], concat_bufs[c], si).is_some() {
                            stats.in_place_concats += 1;
                            steps.push(StepPlan::View);
                            continue;
                        }
                    }
                    if let Step::Alias { .. } = step {
                        let src = node.inputs.first().and_then(|name| b.lookup(name));
                        let view = src.and_then(|id| {
                            let v = &b.values[id];
                            let out = alias_shape(module, node, v.dtype?, v.shape.as_ref()?)?;
                            Some((id, out))
                        });
                        let out_name = &node.outputs[0];
                        let is_output = output_index.contains_key(out_name.as_str());
                        if let (Some((id, shape)), false) = (view, out_name.is_empty()) {
                            let src = b.values[id].clone();
                            // A graph output aliasing an input or weight is copied out at the end.
                            let _ = is_output;
                            stats.zero_copy_aliases += 1;
                            touch(&mut b.buffers, &b.values, id, si);
                            b.add(ValuePlan {
                                name: out_name.clone(),
                                dtype: src.dtype,
                                shape: Some(shape),
                                loc: src.loc,
                                offset: src.offset,
                            });
                            steps.push(StepPlan::View);
                            continue;
                        }
                        stats.copied_aliases += 1;
                    } else {
                        stats.host_steps += 1;
                    }
                    let mut names: Vec<&str> = node.present_inputs().collect();
                    for g in node.op.subgraphs() {
                        names_used(g, &mut names);
                    }
                    let mut reads = Vec::new();
                    for name in names {
                        if let Some(id) = b.lookup(name) {
                            if !reads.contains(&id) && !matches!(b.values[id].loc, Loc::Weight(_)) {
                                reads.push(id);
                            }
                        }
                    }
                    for &id in &reads {
                        touch(&mut b.buffers, &b.values, id, si);
                    }
                    let outputs = node
                        .outputs
                        .iter()
                        .map(|name| {
                            (!name.is_empty()).then(|| {
                                b.add(ValuePlan {
                                    name: name.clone(),
                                    dtype: None,
                                    shape: None,
                                    loc: Loc::Host,
                                    offset: 0,
                                })
                            })
                        })
                        .collect();
                    steps.push(StepPlan::Host {
                        node: *n,
                        reads,
                        outputs,
                    });
                }
            }
        }
        let mut outputs = Vec::with_capacity(graph.outputs.len());
        let end = module.steps.len();
        for o in &graph.outputs {
            let id = b
                .lookup(&o.name)
                .ok_or_else(|| RuntimeError::Undefined(o.name.clone()))?;
            touch(&mut b.buffers, &b.values, id, end);
            outputs.push(id);
        }
        let (arena_bytes, peak_live_bytes) = assign_offsets(&mut b.buffers);
        stats.arena_bytes = arena_bytes;
        stats.peak_live_bytes = peak_live_bytes;
        let max_args = steps
            .iter()
            .map(|s| {
                if let StepPlan::Kernel { args, .. } = s {
                    args.len()
                } else {
                    0
                }
            })
            .max()
            .unwrap_or(0);
        Ok(Plan {
            values: b.values,
            steps,
            buffers: b.buffers,
            outputs,
            weight_ptrs: b.weight_ptrs,
            _dense_weights: b.dense_weights,
            max_args,
            stats,
        })
    }

    pub(crate) fn arena_bytes(&self) -> usize {
        self.stats.arena_bytes
    }
}

/// A Concat computed in place: its parts are written by kernels at these
/// byte offsets of one arena buffer of `bytes`.
struct InPlaceConcat {
    node: usize,
    parts: Vec<(String, usize)>,
    out: String,
    dtype: DType,
    shape: Vec<usize>,
    bytes: usize,
}

/// The Concat host steps whose parts can be written in place: every part is
/// a kernel output used once in the Concat, neither it nor the result is a
/// graph output, and the parts are contiguous slices of the result (all
/// axes before the concat axis have extent 1). Each part's name is claimed
/// by at most one Concat.
fn in_place_concats(
    module: &Module,
    syms: &HashMap<String, usize>,
    graph_outputs: &HashMap<&str, usize>,
) -> Vec<InPlaceConcat> {
    let graph = &module.model.graph;
    let mut kernel_outputs: HashMap<&str, &TensorType> = HashMap::new();
    for step in &module.steps {
        if let Step::Kernel(k) = step {
            for (name, ty) in k.outputs.iter().zip(&k.output_types) {
                kernel_outputs.insert(name.as_str(), ty);
            }
        }
    }
    let mut claimed: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut found = Vec::new();
    for step in &module.steps {
        let Step::Host { node: n } = step else { continue };
        let node = &graph.nodes[*n];
        let Op::Tensor(carbide_ir::ops::TensorOp::Concat { axis }) = &node.op else {
            continue;
        };
        let Some(out) = node
            .outputs
            .first()
            .filter(|o| !o.is_empty() && !graph_outputs.contains_key(o.as_str()))
        else {
            continue;
        };
        let parts: Option<Vec<(&str, DType, Vec<usize>)>> = node
            .inputs
            .iter()
            .map(|name| {
                let ty = kernel_outputs.get(name.as_str())?;
                let once = node.inputs.iter().filter(|i| *i == name).count() == 1;
                (once && !claimed.contains(name.as_str()) && !graph_outputs.contains_key(name.as_str()))
                    .then_some(())?;
                Some((name.as_str(), ty.dtype?, resolve_shape(ty, syms).ok()?))
            })
            .collect();
        let Some(parts) = parts.filter(|p| p.len() >= 2) else {
            continue;
        };
        let (dtype, first) = (parts[0].1, &parts[0].2);
        let rank = first.len() as i64;
        let axis = if *axis < 0 { axis + rank } else { *axis };
        if !(0..rank).contains(&axis) {
            continue;
        }
        let axis = axis as usize;
        let fits = parts.iter().all(|(_, d, s)| {
            *d == dtype
                && s.len() == first.len()
                && s.iter().zip(first).enumerate().all(|(i, (a, b))| i == axis || a == b)
        });
        let Some(esize) = element_size(dtype) else { continue };
        if !fits || first[..axis].iter().any(|&d| d != 1) {
            continue;
        }
        let mut at = 0;
        let mut slots = Vec::with_capacity(parts.len());
        for (name, _, s) in &parts {
            slots.push((name.to_string(), at));
            at += esize * s.iter().product::<usize>();
        }
        let mut shape = first.clone();
        shape[axis] = parts.iter().map(|(_, _, s)| s[axis]).sum();
        claimed.extend(parts.iter().map(|(name, _, _)| *name));
        found.push(InPlaceConcat {
            node: *n,
            parts: slots,
            out: out.clone(),
            dtype,
            shape,
            bytes: at,
        });
    }
    found
}

/// The Concat's result as a view of the buffer its parts were written to,
/// when every part really landed at its slot (else the host concatenates).
fn concat_view(b: &mut Builder<'_>, c: &InPlaceConcat, buf: Option<usize>, step: usize) -> Option<usize> {
    let buf = buf?;
    let mut ids = Vec::with_capacity(c.parts.len());
    for (name, at) in &c.parts {
        let id = *b.ids.get(name)?;
        let v = &b.values[id];
        (v.loc == Loc::Arena(buf) && v.offset == *at).then_some(())?;
        ids.push(id);
    }
    for id in ids {
        touch(&mut b.buffers, &b.values, id, step);
    }
    Some(b.add(ValuePlan {
        name: c.out.clone(),
        dtype: Some(c.dtype),
        shape: Some(c.shape.clone()),
        loc: Loc::Arena(buf),
        offset: 0,
    }))
}

/// Extends the lifetime of the buffer behind value `id` to `step` (aliases
/// and in-place outputs share their input's buffer; lifetimes are per buffer).
fn touch(buffers: &mut [Buffer], values: &[ValuePlan], id: usize, step: usize) {
    if let Loc::Arena(buf) = values[id].loc {
        buffers[buf].last = buffers[buf].last.max(step);
    }
}

/// An arena buffer an elementwise kernel may overwrite: a bound input of
/// the output's shape and byte size, in the arena, read by nothing after
/// this step and not bound to any other argument of the kernel.
fn in_place_candidate(
    b: &Builder<'_>,
    in_ids: &[Option<usize>],
    bound: &[bool],
    out_shape: &[usize],
    out_dtype: DType,
    step: usize,
    module: &Module,
) -> Option<usize> {
    let out_size = element_size(out_dtype)?;
    for (i, id) in in_ids.iter().enumerate() {
        let Some(id) = *id else { continue };
        let v = &b.values[id];
        let Loc::Arena(buf) = v.loc else { continue };
        if !bound[i] || v.shape.as_deref() != Some(out_shape) || element_size(v.dtype?)? != out_size {
            continue;
        }
        // Every value on this buffer must die here: no later step reads any of them.
        let dies_here = b
            .values
            .iter()
            .filter(|w| w.loc == Loc::Arena(buf))
            .all(|w| module.last_use.get(&w.name).is_some_and(|&l| l <= step));
        let shared = in_ids
            .iter()
            .enumerate()
            .any(|(j, other)| j != i && other.is_some_and(|o| b.values[o].loc == Loc::Arena(buf)));
        if dies_here && !shared && b.buffers[buf].bytes == out_size * out_shape.iter().product::<usize>() {
            return Some(buf);
        }
    }
    None
}

/// The offset of the smallest free gap of at least `size` bytes between the
/// `busy` byte ranges (sorted by start), else the end of the last one.
fn best_fit(busy: &[(usize, usize)], size: usize) -> usize {
    let mut best: Option<(usize, usize)> = None; // (gap size, offset)
    let mut cursor = 0;
    for &(start, end) in busy {
        if start > cursor {
            let gap = start - cursor;
            if gap >= size && best.is_none_or(|(g, _)| gap < g) {
                best = Some((gap, cursor));
            }
        }
        cursor = cursor.max(end);
    }
    best.map_or(cursor, |(_, o)| o)
}

/// Places every buffer (largest first, best-fitting gap among the buffers
/// whose lifetimes overlap it), 64-byte aligned. Returns the arena size and
/// the peak of live bytes over the steps.
pub(crate) fn assign_offsets(buffers: &mut [Buffer]) -> (usize, usize) {
    let align = |n: usize| n.div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
    let mut order: Vec<usize> = (0..buffers.len()).collect();
    order.sort_by(|&a, &b| {
        buffers[b]
            .bytes
            .cmp(&buffers[a].bytes)
            .then(buffers[a].first.cmp(&buffers[b].first))
    });
    let mut placed: Vec<usize> = Vec::with_capacity(buffers.len());
    let mut arena = 0;
    for &i in &order {
        let size = align(buffers[i].bytes);
        let (first, last) = (buffers[i].first, buffers[i].last);
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .map(|&p| &buffers[p])
            .filter(|p| p.first <= last && first <= p.last)
            .map(|p| (p.offset, p.offset + align(p.bytes)))
            .collect();
        busy.sort_unstable();
        let offset = best_fit(&busy, size);
        buffers[i].offset = offset;
        arena = arena.max(offset + size);
        placed.push(i);
    }
    let steps = buffers.iter().map(|b| b.last + 1).max().unwrap_or(0);
    let mut peak = 0;
    for s in 0..steps {
        let live: usize = buffers
            .iter()
            .filter(|b| b.first <= s && s <= b.last)
            .map(|b| align(b.bytes))
            .sum();
        peak = peak.max(live);
    }
    (arena, peak)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(bytes: usize, first: usize, last: usize) -> Buffer {
        Buffer {
            bytes,
            first,
            last,
            offset: usize::MAX,
        }
    }

    fn overlaps(a: &Buffer, b: &Buffer) -> bool {
        let lifetimes = a.first <= b.last && b.first <= a.last;
        let bytes = a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
        lifetimes && bytes
    }

    #[test]
    fn a_chain_reuses_two_buffers() {
        // x0 -> x1 -> x2 -> x3: each value dies when the next is made.
        let mut bufs = vec![buf(1000, 0, 1), buf(1000, 1, 2), buf(1000, 2, 3), buf(1000, 3, 4)];
        let (arena, peak) = assign_offsets(&mut bufs);
        assert_eq!(arena, 2 * 1024);
        assert_eq!(peak, 2 * 1024);
        assert!(bufs.iter().all(|b| b.offset % ARENA_ALIGN == 0));
    }

    #[test]
    fn live_buffers_never_share_bytes() {
        // A pseudo-random mix of sizes and lifetimes.
        let mut bufs = Vec::new();
        let mut x = 12345u64;
        for _ in 0..60 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let first = (x >> 33) as usize % 40;
            let len = (x >> 20) as usize % 8;
            let bytes = 1 + (x >> 45) as usize % 5000;
            bufs.push(buf(bytes, first, first + len));
        }
        let (arena, peak) = assign_offsets(&mut bufs);
        for (i, a) in bufs.iter().enumerate() {
            assert!(a.offset + a.bytes <= arena);
            for b in &bufs[i + 1..] {
                assert!(!overlaps(a, b), "{a:?} and {b:?} share bytes while both live");
            }
        }
        assert!(peak <= arena);
        let total: usize = bufs.iter().map(|b| b.bytes.div_ceil(64) * 64).sum();
        assert!(arena < total, "no reuse: arena {arena}, total {total}");
    }

    #[test]
    fn best_fit_takes_the_smallest_gap_that_fits() {
        let busy = [(0, 64), (192, 256), (512, 768)];
        assert_eq!(best_fit(&busy, 64), 64);
        assert_eq!(best_fit(&busy, 128), 64);
        assert_eq!(best_fit(&busy, 200), 256);
        assert_eq!(best_fit(&busy, 300), 768);
        assert_eq!(best_fit(&[], 300), 0);
    }
}
