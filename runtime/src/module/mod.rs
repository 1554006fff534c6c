//! A compiled model: the steps the compiler chose (generated kernels, host
//! ops, shape-only aliases), its weights and kernel library, ready to run.
//!
//! [`Module`] is what `carbide::compile` returns and what a `.carbide`
//! artifact loads into; loading needs no compiler (the kernel library is
//! already built and is only `dlopen`ed). Steps without a kernel run the
//! reference host implementation, so every model runs.

mod exec;
mod plan;
pub mod profile;
mod workers;

pub use exec::{TensorMut, TensorRef, PLAN_CACHE_SIZE};
pub use plan::{PlanStats, ARENA_ALIGN};
pub use profile::{ChromeTrace, Profile, StepKind, StepTime, StepTotal};

use exec::PlanCache;
use workers::{KernelFn, WorkerPool};

use crate::artifact::{self, ArtifactError, Manifest, TargetInfo};
use crate::error::RuntimeError;
use crate::interpreter::{bind_feeds, eval_node, Scope};
use carbide_ir::kernel::{BufferArg, KernelCall};
use carbide_ir::{tensor_apply, tensor_map, DType, Dim, Model, Tensor, TensorType, Value, ValueInfo};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ffi::c_void;
use std::path::Path;

/// One step of a compiled model, in execution order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Step {
    /// Graph node `node` runs on the host (the reference implementation).
    Host { node: usize },
    /// Graph node `node` only changes the shape (Reshape, Flatten, Squeeze,
    /// Unsqueeze, Identity): its output shares the input's data.
    Alias { node: usize },
    /// A generated kernel computing the graph nodes `nodes`.
    Kernel(Box<KernelStep>),
}

/// A generated kernel and the graph values it reads and writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelStep {
    pub call: KernelCall,
    /// The graph nodes the kernel replaces (for reports).
    pub nodes: Vec<usize>,
    /// Value names bound to `BufferArg::Input(i)` / `Output(i)`.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Static types the kernel was generated for: each input is checked
    /// against them before the call (a kernel may rely on known dims), and
    /// output shapes come from them with symbolic dims bound.
    pub input_types: Vec<TensorType>,
    pub output_types: Vec<TensorType>,
}

/// What the compiler hands over to make a [`Module`].
pub struct ModuleParts {
    /// The graph the steps refer to (node indices), with its weights.
    pub model: Model,
    pub steps: Vec<Step>,
    /// The kernels' shared object (empty when every step runs on the host).
    pub library: Vec<u8>,
    pub target: TargetInfo,
}

/// A heap block aligned to 64 bytes (packed weights and scratch).
struct AlignedBuf {
    blocks: Vec<Block>,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Block([u8; 64]);

impl AlignedBuf {
    fn zeroed(len: usize) -> AlignedBuf {
        AlignedBuf {
            blocks: vec![Block([0; 64]); len.div_ceil(64)],
            len,
        }
    }

    fn from_bytes(bytes: &[u8]) -> AlignedBuf {
        let mut b = AlignedBuf::zeroed(bytes.len());
        b.as_mut_bytes().copy_from_slice(bytes);
        b
    }

    fn as_bytes(&self) -> &[u8] {
        // SAFETY: `blocks` is plain bytes, at least `len` long.
        unsafe { std::slice::from_raw_parts(self.blocks.as_ptr() as *const u8, self.len) }
    }

    fn as_mut_bytes(&mut self) -> &mut [u8] {
        // SAFETY: as above, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_mut_ptr() as *mut u8, self.len) }
    }

    fn as_ptr(&self) -> *const u8 {
        self.blocks.as_ptr() as *const u8
    }

    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.blocks.as_mut_ptr() as *mut u8
    }
}

/// A kernel step's entry point and its packed operands.
struct LoadedKernel {
    entry: KernelFn,
    packed: Vec<AlignedBuf>,
}

/// The loaded kernel library; kept open as long as the module lives.
struct KernelLibrary {
    bytes: Vec<u8>,
    _lib: libloading::Library,
}

/// A compiled model ready to run. `Send + Sync`: [`Module::run`] may be
/// called from several threads at once.
pub struct Module {
    /// The graph, without its main-graph initializers (held in `weights`).
    model: Model,
    weights: HashMap<String, Value>,
    steps: Vec<Step>,
    /// Per step: the loaded kernel of a `Step::Kernel`.
    kernels: Vec<Option<LoadedKernel>>,
    library: Option<KernelLibrary>,
    target: TargetInfo,
    /// For each value name, the last step that reads it (graph outputs never).
    last_use: HashMap<String, usize>,
    threads: usize,
    workers: WorkerPool,
    /// Memory plans of recent input shape sets (see [`plan`]).
    plans: PlanCache,
    /// `CARBIDE_UNPLANNED=1` at load: `run` skips the memory plan (to
    /// measure what it saves, and to rule it out when chasing a bug).
    unplanned: bool,
    /// Seed for random ops without a `seed` attribute.
    pub seed: u64,
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn build_pool(threads: usize) -> Result<WorkerPool, ArtifactError> {
    WorkerPool::new(threads).map_err(|e| ArtifactError::Library(format!("starting {threads} worker threads: {e}")))
}

/// Writes the library to a private temp file and dlopens it (a loaded
/// library stays mapped after its file is removed).
fn open_library(bytes: &[u8]) -> Result<libloading::Library, ArtifactError> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let path = std::env::temp_dir().join(format!(
        "carbide-kernels-{}-{}-{nanos}.so",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let io = |source| ArtifactError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    drop(f);
    // SAFETY: the library is Carbide-generated kernel code (checksummed,
    // built for a CPU checked above); its initializers do nothing unusual.
    let lib = unsafe { libloading::Library::new(&path) };
    let _ = std::fs::remove_file(&path);
    lib.map_err(|e| ArtifactError::Library(e.to_string()))
}

impl Module {
    /// Builds a module from the compiler's output (also the last step of
    /// loading an artifact). Checks that every step is consistent with the
    /// graph and the library, so a bad artifact fails here, not mid-run.
    pub fn from_parts(parts: ModuleParts) -> Result<Module, ArtifactError> {
        let ModuleParts {
            mut model,
            steps,
            library,
            target,
        } = parts;
        let corrupt = |m: String| ArtifactError::Corrupt(m);
        let weights: HashMap<String, Value> = std::mem::take(&mut model.graph.initializers)
            .into_iter()
            .map(|(k, t)| (k, Value::Tensor(t)))
            .collect();
        let n_nodes = model.graph.nodes.len();
        let has_kernels = steps.iter().any(|s| matches!(s, Step::Kernel(_)));
        if has_kernels {
            target.check_host()?;
        }
        let library = if library.is_empty() {
            None
        } else {
            let lib = open_library(&library)?;
            Some(KernelLibrary {
                bytes: library,
                _lib: lib,
            })
        };
        let mut kernels = Vec::with_capacity(steps.len());
        for (i, step) in steps.iter().enumerate() {
            match step {
                Step::Host { node } | Step::Alias { node } => {
                    if *node >= n_nodes {
                        return Err(corrupt(format!("step {i} names node {node}, the graph has {n_nodes}")));
                    }
                    kernels.push(None);
                }
                Step::Kernel(k) => {
                    kernels.push(Some(load_kernel(i, k, library.as_ref(), n_nodes)?));
                }
            }
        }
        let mut last_use = HashMap::new();
        for (i, step) in steps.iter().enumerate() {
            let reads: Vec<&str> = match step {
                Step::Host { node } | Step::Alias { node } => {
                    let node = &model.graph.nodes[*node];
                    let mut r: Vec<&str> = node.present_inputs().collect();
                    let mut sub = Vec::new();
                    for g in node.op.subgraphs() {
                        names_used(g, &mut sub);
                    }
                    r.extend(sub);
                    r
                }
                Step::Kernel(k) => k.inputs.iter().map(String::as_str).collect(),
            };
            for r in reads {
                last_use.insert(r.to_string(), i);
            }
        }
        for o in &model.graph.outputs {
            last_use.insert(o.name.clone(), usize::MAX);
        }
        let threads = default_threads();
        Ok(Module {
            model,
            weights,
            steps,
            kernels,
            library,
            target,
            last_use,
            threads,
            workers: build_pool(threads)?,
            plans: PlanCache::default(),
            unplanned: std::env::var_os("CARBIDE_UNPLANNED").is_some_and(|v| v == "1"),
            seed: 0,
        })
    }

    /// Loads a `.carbide` file.
    pub fn load(path: impl AsRef<Path>) -> Result<Module, ArtifactError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ArtifactError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Module::from_bytes(&bytes)
    }

    /// Loads an artifact from memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Module, ArtifactError> {
        let artifact::Sections {
            manifest,
            data,
            library,
        } = artifact::decode(bytes)?;
        let Manifest {
            target,
            mut model,
            weights,
            string_weights,
            mut steps,
            packed,
            ..
        } = manifest;
        if steps.iter().any(|s| matches!(s, Step::Kernel(_))) {
            // Before touching the library: a wrong CPU must not get as far as dlopen.
            target.check_host()?;
        }
        for w in &weights {
            let bytes = artifact::blob(data, &w.blob, &format!("weight '{}'", w.name))?;
            let t = Tensor::from_le_bytes(w.dtype, &w.shape, bytes)
                .map_err(|e| ArtifactError::Corrupt(format!("weight '{}': {e}", w.name)))?;
            model.graph.initializers.insert(w.name.clone(), t);
        }
        model.graph.initializers.extend(string_weights);
        let mut packed = packed.into_iter();
        for (i, step) in steps.iter_mut().enumerate() {
            if let Step::Kernel(k) = step {
                let refs = packed
                    .next()
                    .ok_or_else(|| ArtifactError::Corrupt(format!("kernel step {i} has no packed-operand table")))?;
                k.call.packed = refs
                    .iter()
                    .map(|r| artifact::blob(data, r, &format!("packed operand of step {i}")).map(<[u8]>::to_vec))
                    .collect::<Result<_, _>>()?;
            }
        }
        Module::from_parts(ModuleParts {
            model,
            steps,
            library: library.to_vec(),
            target,
        })
    }

    /// Serializes the module as a `.carbide` artifact.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ArtifactError> {
        let weights: Vec<(&str, &Tensor)> = self
            .weights
            .iter()
            .filter_map(|(name, v)| v.as_tensor().map(|t| (name.as_str(), t)))
            .collect();
        let packed: Vec<Vec<&[u8]>> = self
            .steps
            .iter()
            .zip(&self.kernels)
            .filter_map(|(step, loaded)| match (step, loaded) {
                (Step::Kernel(_), Some(l)) => Some(l.packed.iter().map(AlignedBuf::as_bytes).collect()),
                _ => None,
            })
            .collect();
        let library = self.library.as_ref().map_or(&[][..], |l| &l.bytes[..]);
        artifact::write(&self.target, &self.model, &weights, &self.steps, &packed, library)
    }

    /// Writes the module as a `.carbide` file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ArtifactError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()?).map_err(|source| ArtifactError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Sets the worker thread count for kernels (default: all cores).
    pub fn set_threads(&mut self, threads: usize) -> Result<(), ArtifactError> {
        let threads = threads.max(1);
        if threads != self.threads {
            self.workers = build_pool(threads)?;
            self.threads = threads;
            // Plans fix each kernel's part count for the thread count.
            self.plans.get_mut().unwrap_or_else(|e| e.into_inner()).clear();
        }
        Ok(())
    }

    pub fn threads(&self) -> usize {
        debug_assert_eq!(self.threads, self.workers.threads());
        self.threads
    }

    /// What the memory plan for inputs of these shapes (in [`Module::inputs`]
    /// order, with their declared dtypes) saves; `None` when the model
    /// cannot be planned for them.
    pub fn plan_stats(&self, input_shapes: &[Vec<usize>]) -> Result<Option<PlanStats>, RuntimeError> {
        let inputs = self.inputs();
        let mut key = Vec::with_capacity(inputs.len());
        for (i, shape) in inputs.iter().zip(input_shapes) {
            let dtype = match &i.ty {
                carbide_ir::ValueType::Tensor(TensorType { dtype: Some(d), .. }) => *d,
                _ => return Ok(None),
            };
            key.push((dtype, shape.as_slice()));
        }
        Ok(self.prepared(&key)?.map(|p| p.plan.stats.clone()))
    }

    /// Inputs a caller must feed (those without a default weight).
    pub fn inputs(&self) -> Vec<ValueInfo> {
        let g = &self.model.graph;
        g.inputs
            .iter()
            .filter(|i| !self.weights.contains_key(&i.name))
            .cloned()
            .collect()
    }

    pub fn outputs(&self) -> &[ValueInfo] {
        &self.model.graph.outputs
    }

    /// The graph the steps refer to (main-graph weights not included).
    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    pub fn target(&self) -> &TargetInfo {
        &self.target
    }

    /// Size of the kernel library in bytes (0 when everything runs on the host).
    pub fn library_len(&self) -> usize {
        self.library.as_ref().map_or(0, |l| l.bytes.len())
    }

    /// Names of the main-graph weights, sorted.
    pub fn weight_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.weights.keys().cloned().collect();
        v.sort();
        v
    }

    /// A main-graph weight by name.
    pub fn weight(&self, name: &str) -> Option<&Value> {
        self.weights.get(name)
    }

    /// Runs the model. `feeds` must hold every required input; returns the
    /// graph outputs in declaration order (as `Session::run` does).
    pub fn run(&self, feeds: Vec<(String, Value)>) -> Result<Vec<(String, Value)>, RuntimeError> {
        self.run_timed(feeds, None)
    }

    /// Runs the model like [`Module::run`] and also returns each step's wall
    /// time (for `carbide bench --profile`).
    pub fn run_profiled(&self, feeds: Vec<(String, Value)>) -> Result<(Vec<(String, Value)>, Profile), RuntimeError> {
        let mut profile = Profile::default();
        let outs = self.run_timed(feeds, Some(&mut profile))?;
        Ok((outs, profile))
    }

    /// Step `i`'s entry in a profile: its kind, name, nodes and entry, timed
    /// from `t0` (its start) to now, placed relative to `run_start`.
    fn step_time(&self, i: usize, run_start: std::time::Instant, t0: std::time::Instant) -> StepTime {
        let g = &self.model.graph;
        let desc = |n: usize| format!("{} ({})", g.nodes[n].name, g.nodes[n].op.op_type());
        let (kind, name, nodes, entry) = match &self.steps[i] {
            Step::Host { node } => (StepKind::Host, g.nodes[*node].name.clone(), vec![desc(*node)], None),
            Step::Alias { node } => (StepKind::Alias, g.nodes[*node].name.clone(), vec![desc(*node)], None),
            Step::Kernel(k) => (
                StepKind::Kernel,
                k.call.entry.clone(),
                k.nodes.iter().map(|&n| desc(n)).collect(),
                Some(k.call.entry.clone()),
            ),
        };
        StepTime {
            step: i,
            kind,
            name,
            nodes,
            entry,
            start_us: t0.duration_since(run_start).as_secs_f64() * 1e6,
            dur_us: t0.elapsed().as_secs_f64() * 1e6,
        }
    }

    /// Runs on the memory plan for the feeds' shapes, or unplanned when
    /// the model cannot be planned (see [`Module::run_into`]).
    fn run_timed(
        &self,
        feeds: Vec<(String, Value)>,
        mut profile: Option<&mut Profile>,
    ) -> Result<Vec<(String, Value)>, RuntimeError> {
        let (bound, syms) = bind_feeds(&self.model.graph, &self.weights, feeds)?;
        if !self.unplanned {
            if let Some(outs) = self.run_planned(&bound, profile.as_deref_mut())? {
                return Ok(outs);
            }
        }
        self.run_unplanned(bound, syms, profile)
    }

    /// Runs step by step with values by name, allocating every result: for
    /// models the planner cannot handle (and as its reference in tests).
    fn run_unplanned(
        &self,
        bound: HashMap<String, Value>,
        mut syms: HashMap<String, usize>,
        mut profile: Option<&mut Profile>,
    ) -> Result<Vec<(String, Value)>, RuntimeError> {
        let run_start = std::time::Instant::now();
        let graph = &self.model.graph;
        let mut scope = Scope {
            values: bound,
            borrowed: Some(&self.weights),
            parent: None,
        };
        for (i, step) in self.steps.iter().enumerate() {
            let step_start = profile.is_some().then(std::time::Instant::now);
            let (names, outs): (&[String], Vec<Value>) = match step {
                Step::Host { node } => {
                    let node = &graph.nodes[*node];
                    (&node.outputs, eval_node(node, &scope, self.seed)?)
                }
                Step::Alias { node } => {
                    let node = &graph.nodes[*node];
                    (&node.outputs, self.alias(node, &scope)?)
                }
                Step::Kernel(k) => {
                    // from_parts loads every kernel step, so this is always Some.
                    let Some(loaded) = self.kernels.get(i).and_then(Option::as_ref) else {
                        return Err(RuntimeError::Kernel {
                            entry: k.call.entry.clone(),
                            reason: format!("step {i} has no loaded kernel"),
                        });
                    };
                    (&k.outputs, self.run_kernel(k, loaded, &scope, &mut syms)?)
                }
            };
            for (name, v) in names.iter().zip(outs) {
                if !name.is_empty() {
                    scope.values.insert(name.clone(), v);
                }
            }
            scope
                .values
                .retain(|name, _| self.last_use.get(name).is_some_and(|&l| l > i));
            if let (Some(p), Some(t0)) = (profile.as_deref_mut(), step_start) {
                p.steps.push(self.step_time(i, run_start, t0));
            }
        }
        let outs = graph
            .outputs
            .iter()
            .map(|o| {
                scope
                    .get(&o.name)
                    .cloned()
                    .map(|v| (o.name.clone(), v))
                    .ok_or_else(|| RuntimeError::Undefined(o.name.clone()))
            })
            .collect();
        if let Some(p) = profile {
            p.total_us = run_start.elapsed().as_secs_f64() * 1e6;
        }
        outs
    }

    /// A shape-only node. Its output is the input under a new shape; the
    /// host op re-shapes it (a copy, cheap next to the kernels around it).
    fn alias(&self, node: &carbide_ir::Node, scope: &Scope<'_>) -> Result<Vec<Value>, RuntimeError> {
        eval_node(node, scope, self.seed)
    }

    fn run_kernel(
        &self,
        k: &KernelStep,
        loaded: &LoadedKernel,
        scope: &Scope<'_>,
        syms: &mut HashMap<String, usize>,
    ) -> Result<Vec<Value>, RuntimeError> {
        let err = |reason: String| RuntimeError::Kernel {
            entry: k.call.entry.clone(),
            reason,
        };
        // Inputs the kernel reads through a buffer; the others (weights it
        // took pre-packed) only lend their static shape to the parameters.
        let bound: Vec<bool> = (0..k.inputs.len())
            .map(|i| k.call.buffers.contains(&BufferArg::Input(i)))
            .collect();
        let mut copies: Vec<Option<Tensor>> = Vec::with_capacity(k.inputs.len());
        let mut in_shapes_owned: Vec<Vec<usize>> = Vec::with_capacity(k.inputs.len());
        for ((name, ty), &is_bound) in k.inputs.iter().zip(&k.input_types).zip(&bound) {
            let t = match scope.get(name) {
                Some(Value::Tensor(t)) => t,
                Some(other) => return Err(err(format!("input '{name}' is a {}", other.value_type()))),
                None if !is_bound => {
                    let shape = resolve_shape(ty, syms).map_err(|r| err(format!("input '{name}': {r}")))?;
                    in_shapes_owned.push(shape);
                    copies.push(None);
                    continue;
                }
                None => return Err(RuntimeError::Undefined(name.clone())),
            };
            check_against(t, ty, syms).map_err(|r| err(format!("input '{name}': {r}")))?;
            in_shapes_owned.push(t.shape().to_vec());
            let dense = tensor_apply!(t, a => a.is_standard_layout());
            copies.push((!dense && is_bound).then(|| tensor_map!(t, a => a.as_standard_layout().into_owned())));
        }
        let inputs: Vec<Option<&Tensor>> = k
            .inputs
            .iter()
            .zip(&copies)
            .map(|(name, c)| match c {
                Some(c) => Some(c),
                None => scope.get(name).and_then(Value::as_tensor),
            })
            .collect();
        let mut outputs = Vec::with_capacity(k.outputs.len());
        for (name, ty) in k.outputs.iter().zip(&k.output_types) {
            let shape = resolve_shape(ty, syms).map_err(|r| err(format!("output '{name}': {r}")))?;
            let dtype = ty.dtype.ok_or_else(|| err(format!("output '{name}' has no dtype")))?;
            outputs.push(Tensor::zeros(dtype, &shape).ok_or_else(|| err(format!("output '{name}' is {dtype}")))?);
        }
        let in_shapes: Vec<&[usize]> = in_shapes_owned.iter().map(Vec::as_slice).collect();
        let out_shapes: Vec<Vec<usize>> = outputs.iter().map(|t| t.shape().to_vec()).collect();
        let out_shapes: Vec<&[usize]> = out_shapes.iter().map(Vec::as_slice).collect();
        let eval =
            |e: &carbide_ir::kernel::ParamExpr, what: &str| eval_expr(e, &in_shapes, &out_shapes, what).map_err(err);
        let (params, parts) = bind_call(&k.call, &in_shapes, &out_shapes, self.threads).map_err(err)?;
        let mut scratch: Vec<AlignedBuf> = Vec::new();
        let mut buffers: Vec<*mut c_void> = Vec::with_capacity(k.call.buffers.len());
        for b in &k.call.buffers {
            let p = match b {
                BufferArg::Input(i) => {
                    let t = inputs[*i].ok_or_else(|| RuntimeError::Undefined(k.inputs[*i].clone()))?;
                    tensor_apply!(t, a => a.as_ptr() as *mut c_void)
                }
                BufferArg::Output(i) => tensor_apply!(&mut outputs[*i], a => a.as_mut_ptr() as *mut c_void),
                BufferArg::Packed(i) => loaded.packed[*i].as_bytes().as_ptr() as *mut c_void,
                BufferArg::Scratch { bytes, per_part } => {
                    let n = usize::try_from(eval(bytes, "scratch size")?)
                        .map_err(|_| err("negative scratch size".into()))?;
                    let n = if *per_part {
                        n.checked_mul(parts)
                            .ok_or_else(|| err("scratch size overflows".into()))?
                    } else {
                        n
                    };
                    // The blocks live on the heap: moving the buffer into `scratch` keeps the pointer valid.
                    let mut buf = AlignedBuf::zeroed(n);
                    let p = buf.as_mut_ptr() as *mut c_void;
                    scratch.push(buf);
                    p
                }
            };
            buffers.push(p);
        }
        // SAFETY: buffers were bound per the kernel's call contract, sized from
        // the checked shapes; each part writes only its own share.
        unsafe { self.workers.call(loaded.entry, &buffers, &params, parts) };
        Ok(outputs.into_iter().map(Value::Tensor).collect())
    }
}

/// Checks a tensor against the type a kernel was generated for, binding
/// symbolic dims (consistently across all inputs of the run).
fn check_against(t: &Tensor, ty: &TensorType, syms: &mut HashMap<String, usize>) -> Result<(), String> {
    if t.dtype() == DType::String {
        return Err("string tensors cannot be passed to kernels".into());
    }
    check_shape(ty, t.dtype(), t.shape(), syms)
}

/// Checks a value known by dtype and shape against the type a kernel was
/// generated for, binding symbolic dims.
fn check_shape(
    ty: &TensorType,
    dtype: DType,
    shape: &[usize],
    syms: &mut HashMap<String, usize>,
) -> Result<(), String> {
    if let Some(d) = ty.dtype {
        if d != dtype {
            return Err(format!("expected {d}, got {dtype}"));
        }
    }
    let dims = ty.shape.as_ref().ok_or("the kernel's type has no shape")?;
    if dims.len() != shape.len() {
        return Err(format!("expected rank {}, got shape {shape:?}", dims.len()));
    }
    for (i, (d, &n)) in dims.iter().zip(shape).enumerate() {
        match d {
            Dim::Known(k) if *k != n => return Err(format!("dim {i} must be {k}, got {n}")),
            Dim::Sym(s) => {
                let prev = *syms.entry(s.clone()).or_insert(n);
                if prev != n {
                    return Err(format!("dim {i} ('{s}') is {n}, but '{s}' is bound to {prev}"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn resolve_shape(ty: &TensorType, syms: &HashMap<String, usize>) -> Result<Vec<usize>, String> {
    ty.shape
        .as_ref()
        .ok_or("rank unknown")?
        .iter()
        .map(|d| match d {
            Dim::Known(n) => Ok(*n),
            Dim::Sym(s) => syms.get(s).copied().ok_or_else(|| format!("dim '{s}' is not bound")),
            Dim::Unknown => Err("a dim is unknown".to_string()),
        })
        .collect()
}

fn load_kernel(
    step: usize,
    k: &KernelStep,
    library: Option<&KernelLibrary>,
    n_nodes: usize,
) -> Result<LoadedKernel, ArtifactError> {
    let corrupt = |m: String| ArtifactError::Corrupt(format!("kernel step {step} ({}): {m}", k.call.entry));
    if let Some(n) = k.nodes.iter().find(|&&n| n >= n_nodes) {
        return Err(corrupt(format!("names node {n}, the graph has {n_nodes}")));
    }
    if k.inputs.len() != k.input_types.len() || k.outputs.len() != k.output_types.len() {
        return Err(corrupt("value and type lists differ in length".into()));
    }
    for b in &k.call.buffers {
        let ok = match b {
            BufferArg::Input(i) => *i < k.inputs.len(),
            BufferArg::Output(i) => *i < k.outputs.len(),
            BufferArg::Packed(i) => *i < k.call.packed.len(),
            BufferArg::Scratch { .. } => true,
        };
        if !ok {
            return Err(corrupt(format!("buffer {b:?} is out of range")));
        }
    }
    for ty in k.input_types.iter().chain(&k.output_types) {
        if ty.dtype.is_none() || ty.shape.is_none() {
            return Err(corrupt(format!("a kernel value has an incomplete type {ty}")));
        }
    }
    let lib = library.ok_or_else(|| corrupt("the artifact has no kernel library".into()))?;
    // SAFETY: the symbol is a generated entry point with the `KernelFn` ABI.
    let entry: KernelFn = unsafe {
        *lib._lib
            .get::<KernelFn>(k.call.entry.as_bytes())
            .map_err(|e| corrupt(format!("entry point missing from the library: {e}")))?
    };
    Ok(LoadedKernel {
        entry,
        packed: k.call.packed.iter().map(|p| AlignedBuf::from_bytes(p)).collect(),
    })
}

fn names_used<'g>(g: &'g carbide_ir::Graph, out: &mut Vec<&'g str>) {
    for n in &g.nodes {
        out.extend(n.present_inputs());
        for sub in n.op.subgraphs() {
            names_used(sub, out);
        }
    }
    out.extend(g.outputs.iter().map(|o| o.name.as_str()));
}

/// Evaluates one of a kernel call's shape expressions on the bound shapes.
fn eval_expr(
    e: &carbide_ir::kernel::ParamExpr,
    ins: &[&[usize]],
    outs: &[&[usize]],
    what: &str,
) -> Result<i64, String> {
    e.eval(ins, outs)
        .ok_or_else(|| format!("cannot evaluate {what} {e:?} on the bound shapes"))
}

/// A kernel call's parameter values and part count on the bound shapes:
/// the planned and the unplanned paths bind calls the same way.
fn bind_call(
    call: &KernelCall,
    ins: &[&[usize]],
    outs: &[&[usize]],
    threads: usize,
) -> Result<(Vec<i64>, usize), String> {
    let params = (call.params.iter())
        .map(|p| eval_expr(p, ins, outs, "parameter"))
        .collect::<Result<Vec<_>, _>>()?;
    let max_parts = match &call.max_parts {
        Some(e) => eval_expr(e, ins, outs, "max_parts")?.max(1) as usize,
        None => threads,
    };
    Ok((params, threads.min(max_parts).max(1)))
}
