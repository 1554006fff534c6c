//! Measuring candidate schedules of one kernel: candidates are built in
//! batches (one C compile for the whole batch amortizes the compiler's
//! start-up), then each runs alone as a one-kernel [`Module`] on fixed
//! random inputs — warm-up, repeats, median — in a worker process with a
//! deadline (see [`crate::worker`]: a crash or hang costs only the
//! candidate), and its outputs are checked against the default schedule's
//! before its time counts.

use crate::worker::{Request, Worker};
use carbide_backend_cpu::{build_library, lower, KernelGroup, LoweredKernel, Target};
use carbide_ir::kernel::Schedule;
use carbide_ir::ndarray::{ArrayD, IxDyn};
use carbide_ir::{DType, Dim, Model, Tensor, Value};
use carbide_runtime::artifact::{encode_parts, TargetInfo};
use carbide_runtime::{KernelStep, Module, ModuleParts, Step};
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How each candidate is timed.
#[derive(Debug, Clone, Copy)]
pub struct MeasureConfig {
    /// Worker threads of the measured module (the model's thread count).
    pub threads: usize,
    /// Timed repeats; the result is their median.
    pub repeats: usize,
    /// Each repeat runs the kernel often enough to last about this long.
    pub min_repeat: Duration,
    /// A candidate that has not finished loading, warm-up and repeats by
    /// then is discarded (its worker process killed).
    pub timeout: Duration,
    /// Allowed max |candidate - reference| relative to max(1, max |reference|).
    pub tolerance: f32,
}

impl Default for MeasureConfig {
    fn default() -> Self {
        MeasureConfig {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            repeats: 5,
            min_repeat: Duration::from_millis(2),
            timeout: Duration::from_secs(20),
            tolerance: 1e-3,
        }
    }
}

/// A kernel group ready to measure: its one-group model and fixed inputs.
pub struct Bench {
    group: KernelGroup,
    target: Target,
    model: Model,
    feeds: Vec<(String, Value)>,
    /// Outputs of the default schedule: what every candidate must reproduce.
    reference: Option<Vec<Value>>,
}

fn shape_of(ty: &carbide_ir::TensorType) -> Vec<usize> {
    ty.shape
        .iter()
        .flatten()
        .map(|d| match d {
            Dim::Known(n) => *n,
            // Symbolic dims are measured at 1 (batch, sequence).
            _ => 1,
        })
        .collect()
}

impl Bench {
    pub fn new(group: &KernelGroup, target: &Target, seed: u64) -> Result<Bench, String> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut feeds = Vec::new();
        for v in group.inputs.iter().filter(|v| v.constant.is_none()) {
            if v.ty.dtype != Some(DType::F32) {
                return Err(format!(
                    "input '{}' is {:?}; only f32 inputs are measured",
                    v.name, v.ty.dtype
                ));
            }
            let shape = shape_of(&v.ty);
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let t = ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| e.to_string())?;
            feeds.push((v.name.clone(), Value::Tensor(Tensor::F32(t))));
        }
        Ok(Bench {
            group: group.clone(),
            target: target.clone(),
            model: group.standalone_model(),
            feeds,
            reference: None,
        })
    }

    pub fn has_reference(&self) -> bool {
        self.reference.is_some()
    }

    /// Measures `schedules` (one C compile for all) in `worker`. Returns
    /// per schedule the median time in µs or why it was discarded. When no
    /// reference is set yet, `schedules[0]` must be the default schedule:
    /// its outputs become the reference.
    pub fn measure(
        &mut self,
        worker: &mut Worker,
        schedules: &[Schedule],
        cfg: &MeasureConfig,
    ) -> Vec<Result<f64, String>> {
        let mut results: Vec<Result<f64, String>> = vec![Err("not built".into()); schedules.len()];
        let mut kernels: Vec<(usize, LoweredKernel)> = Vec::new();
        for (i, s) in schedules.iter().enumerate() {
            match lower(&self.group, &self.target, Some(s)) {
                Ok(Some(k)) => kernels.push((i, k)),
                Ok(None) => results[i] = Err("the backend declined the group".into()),
                Err(e) => results[i] = Err(format!("codegen: {e}")),
            }
        }
        let (slots, lowered): (Vec<usize>, Vec<LoweredKernel>) = kernels.into_iter().unzip();
        for (slot, r) in slots.into_iter().zip(self.measure_lowered(worker, lowered, cfg)) {
            results[slot] = r;
        }
        results
    }

    /// Measures already generated kernels of this group (one C compile for
    /// all, one by one if that fails), in `worker`. The first may set the
    /// reference (see [`Bench::measure`]). Public so that hand-made kernels
    /// (e.g. ones that crash, in tests) go through the same path.
    pub fn measure_lowered(
        &mut self,
        worker: &mut Worker,
        mut kernels: Vec<LoweredKernel>,
        cfg: &MeasureConfig,
    ) -> Vec<Result<f64, String>> {
        static UNIQUE: AtomicU64 = AtomicU64::new(0);
        let mut results: Vec<Result<f64, String>> = vec![Err("not built".into()); kernels.len()];
        if kernels.is_empty() {
            return results;
        }
        for k in &mut kernels {
            // Every candidate of a batch gets its own symbol.
            let entry = format!("{}_t{}", k.call.entry, UNIQUE.fetch_add(1, Ordering::Relaxed));
            k.source = k.source.replace(&k.call.entry, &entry);
            k.call.entry = entry;
        }
        let libs: Vec<(usize, Arc<Vec<u8>>)> = match build_library(&kernels, &self.target) {
            Ok(lib) => {
                let lib = Arc::new(lib);
                (0..kernels.len()).map(|i| (i, lib.clone())).collect()
            }
            // One bad candidate must not sink the batch: build them one by one.
            Err(_) => (0..kernels.len())
                .filter_map(
                    |i| match build_library(std::slice::from_ref(&kernels[i]), &self.target) {
                        Ok(lib) => Some((i, Arc::new(lib))),
                        Err(e) => {
                            results[i] = Err(format!("build: {e}"));
                            None
                        }
                    },
                )
                .collect(),
        };
        for (i, lib) in libs {
            results[i] = self.run_one(worker, &kernels[i], &lib, cfg, i == 0);
        }
        results
    }

    fn run_one(
        &mut self,
        worker: &mut Worker,
        k: &LoweredKernel,
        lib: &[u8],
        cfg: &MeasureConfig,
        may_set_reference: bool,
    ) -> Result<f64, String> {
        let n = self.group.nodes.len();
        let step = KernelStep {
            call: k.call.clone(),
            nodes: (0..n).collect(),
            inputs: self.group.inputs.iter().map(|v| v.name.clone()).collect(),
            outputs: self.group.outputs.iter().map(|v| v.name.clone()).collect(),
            input_types: self.group.inputs.iter().map(|v| v.ty.clone()).collect(),
            output_types: self.group.outputs.iter().map(|v| v.ty.clone()).collect(),
        };
        let artifact = encode_parts(ModuleParts {
            model: self.model.clone(),
            steps: vec![Step::Kernel(Box::new(step))],
            library: lib.to_vec(),
            target: TargetInfo {
                name: self.target.name().to_string(),
                arch: self.target.arch().to_string(),
                required_features: self.target.required_cpu_features(),
            },
        })
        .map_err(|e| format!("writing the artifact: {e}"))?;
        let request = Request {
            artifact: &artifact,
            feeds: &self.feeds,
            config: cfg,
        };
        let (median_us, outputs) = worker.measure(&request, cfg.timeout)?;
        match &self.reference {
            Some(reference) => check(&outputs, reference, cfg.tolerance)?,
            None if may_set_reference => self.reference = Some(outputs),
            None => return Err("no reference output to check against".into()),
        }
        Ok(median_us)
    }
}

/// Runs per repeat at least: a long kernel (milliseconds) run once per
/// repeat is preempted in most repeats on a loaded machine, and then even
/// the median is the disturbed time.
const MIN_RUNS_PER_REPEAT: usize = 3;

/// Warm-up, then `repeats` repeats of enough runs (at least 3) to last `min_repeat`;
/// the result is the median over repeats of each repeat's fastest run.
/// Only the kernel run is timed, not copying the feeds.
pub(crate) fn time_module(
    module: &Module,
    feeds: &[(String, Value)],
    cfg: &MeasureConfig,
) -> Result<(f64, Vec<Value>), String> {
    let run = |f: Vec<(String, Value)>| -> Result<(Duration, Vec<(String, Value)>), String> {
        let t = Instant::now();
        let out = module.run(f).map_err(|e| format!("run: {e}"))?;
        Ok((t.elapsed(), out))
    };
    let (_, out) = run(feeds.to_vec())?;
    let (first, _) = run(feeds.to_vec())?;
    let inner = (cfg.min_repeat.as_secs_f64() / first.as_secs_f64().max(1e-7))
        .ceil()
        .clamp(MIN_RUNS_PER_REPEAT as f64, 1000.0) as usize;
    let mut samples = Vec::with_capacity(cfg.repeats.max(1));
    for _ in 0..cfg.repeats.max(1) {
        // The fastest run of each repeat: on a shared machine a run that
        // lost its core to another process says nothing about the kernel.
        let mut fastest = Duration::MAX;
        for _ in 0..inner {
            fastest = fastest.min(run(feeds.to_vec())?.0);
        }
        samples.push(fastest.as_secs_f64() * 1e6);
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    // Nanosecond resolution: the value then survives the JSON round trip exactly.
    let median_us = (samples[samples.len() / 2] * 1e3).round() / 1e3;
    Ok((median_us, out.into_iter().map(|(_, v)| v).collect()))
}

/// Fails unless every output matches the reference within tolerance.
fn check(outputs: &[Value], reference: &[Value], tol: f32) -> Result<(), String> {
    if outputs.len() != reference.len() {
        return Err(format!(
            "{} outputs, the reference has {}",
            outputs.len(),
            reference.len()
        ));
    }
    for (i, (o, r)) in outputs.iter().zip(reference).enumerate() {
        let (Some(Tensor::F32(o)), Some(Tensor::F32(r))) = (o.as_tensor(), r.as_tensor()) else {
            return Err(format!("output {i} is not an f32 tensor"));
        };
        if o.shape() != r.shape() {
            return Err(format!(
                "output {i} has shape {:?}, expected {:?}",
                o.shape(),
                r.shape()
            ));
        }
        let scale = r.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let mut worst = 0.0f32;
        for (a, b) in o.iter().zip(r.iter()) {
            let d = (a - b).abs();
            if d.is_nan() {
                return Err(format!("output {i} has NaN where the reference has {b}"));
            }
            worst = worst.max(d);
        }
        if worst > tol * scale {
            return Err(format!(
                "wrong result: output {i} differs by {worst} (allowed {})",
                tol * scale
            ));
        }
    }
    Ok(())
}
