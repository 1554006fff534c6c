//! Task extraction, the search per task and the scheduler across tasks.

use crate::cost::{Gbrt, GbrtParams};
use crate::measure::{Bench, MeasureConfig};
use crate::records::{now_secs, Database, TuningRecord, CARBIDE_VERSION};
use crate::space::{self, GemmDims, SpaceWalk};
use crate::worker::{Worker, WorkerCommand};
use crate::TuneError;
use carbide_backend_cpu::{lower, schedule_space, KernelGroup, Target};
use carbide_ir::kernel::{Schedule, WorkloadKey};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// One distinct workload of a model and the kernels that share it.
#[derive(Debug, Clone)]
pub struct Task {
    pub group: KernelGroup,
    pub workload: WorkloadKey,
    /// The backend's schedule space for the group, its default first.
    pub space: Vec<Schedule>,
    pub dims: GemmDims,
    /// Node names of the anchors of every kernel with this workload.
    pub nodes: Vec<String>,
}

impl Task {
    /// Kernels of the model with this workload (each runs once per inference).
    pub fn count(&self) -> usize {
        self.nodes.len()
    }

    pub fn default_schedule(&self) -> &Schedule {
        &self.space[0]
    }
}

/// The distinct tunable workloads among `groups`, in first-seen order.
pub fn extract_tasks(groups: &[KernelGroup], target: &Target) -> Result<Vec<Task>, TuneError> {
    let mut tasks: Vec<Task> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for g in groups {
        let node = g.nodes.first().map_or_else(String::new, |n| n.name.clone());
        let lowered = lower(g, target, None).map_err(|e| TuneError::Codegen {
            node: node.clone(),
            reason: e.to_string(),
        })?;
        let Some(k) = lowered else { continue };
        if !space::is_tunable(&k.workload.op) {
            continue;
        }
        let Some(dims) = space::gemm_dims(g) else { continue };
        let key = k.workload.canonical();
        match index.get(&key) {
            Some(&i) => tasks[i].nodes.push(node),
            None => {
                let space = schedule_space(g, target).map_err(|e| TuneError::Codegen {
                    node: node.clone(),
                    reason: e.to_string(),
                })?;
                if space.len() < 2 {
                    continue;
                }
                index.insert(key, tasks.len());
                tasks.push(Task {
                    group: g.clone(),
                    workload: k.workload,
                    space,
                    dims,
                    nodes: vec![node],
                });
            }
        }
    }
    Ok(tasks)
}

/// The budget and measurement settings of a tuning run.
#[derive(Debug, Clone)]
pub struct TuneOptions {
    /// Total trials per model, counting the records already in the database.
    pub trials: usize,
    /// Stop starting new batches after this long.
    pub time_budget: Option<Duration>,
    /// Candidates per build (one C compile).
    pub batch: usize,
    pub measure: MeasureConfig,
    pub seed: u64,
    /// Measure the FMA peak for the report's "% of peak".
    pub measure_peak: bool,
    /// The process candidates are measured in; `None`: this executable
    /// with the argument `tune-worker` (the `carbide` binary's hidden
    /// subcommand that calls [`crate::worker::serve_stdio`]).
    pub worker: Option<WorkerCommand>,
}

impl Default for TuneOptions {
    fn default() -> Self {
        TuneOptions {
            trials: 200,
            time_budget: None,
            batch: 8,
            measure: MeasureConfig::default(),
            seed: 0,
            measure_peak: true,
            worker: None,
        }
    }
}

/// What the progress callback sees after every batch.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub trials_done: usize,
    pub trials_total: usize,
    pub elapsed_s: f64,
    /// The task just measured: "op node" and its best-so-far / default µs.
    pub task: String,
    pub best_us: Option<f64>,
    pub default_us: Option<f64>,
    pub tasks_started: usize,
    pub tasks: usize,
}

/// Per-task result for the report.
#[derive(Debug, Clone, Serialize)]
pub struct TaskSummary {
    pub workload: String,
    pub key: String,
    pub op: String,
    pub nodes: Vec<String>,
    pub count: usize,
    pub gflop: f64,
    /// Trials of this workload in the database (this run and earlier ones).
    pub trials: usize,
    pub default_us: Option<f64>,
    pub best_us: Option<f64>,
    pub speedup: Option<f64>,
    pub best_gflops: Option<f64>,
    pub peak_pct: Option<f64>,
    pub schedule: Option<Schedule>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TuneSummary {
    pub target: String,
    pub threads: usize,
    /// Trials measured by this run / found in the database at the start.
    pub trials_run: usize,
    pub trials_resumed: usize,
    pub failed_trials: usize,
    /// Tasks whose default and best schedules were re-measured side by side
    /// at the end of this run (their records then decide, see [`Database::best`]).
    pub verified_tasks: usize,
    /// Measuring processes started: one, plus one after each crash or timeout.
    pub workers_started: usize,
    pub seconds: f64,
    /// FP32 FMA peak of `threads` cores, GFLOP/s.
    pub peak_gflops: Option<f64>,
    /// Sum over tasks of count x latency: the tuned kernels' share of one inference.
    pub total_default_us: f64,
    pub total_tuned_us: f64,
    pub tasks: Vec<TaskSummary>,
}

/// A task's search state.
struct State {
    /// Every schedule tried (this run or in the records), by index into
    /// the task's space: time or failure.
    tried: HashMap<usize, Option<f64>>,
    walk: SpaceWalk,
    default_us: Option<f64>,
    bench: Option<Bench>,
    /// Default measured in this run (its outputs are the reference).
    started: bool,
    /// Rounds since the best improved by more than 1%.
    stale: usize,
    exhausted: bool,
    trials: usize,
    /// Trials measured by this run.
    ran: usize,
}

impl State {
    fn best(&self) -> Option<(usize, f64)> {
        self.tried
            .iter()
            .filter_map(|(k, t)| t.map(|t| (*k, t)))
            .min_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal))
    }
}

/// Tunes `tasks`, appending every trial to `db`; `progress` is called after each batch.
pub fn tune(
    tasks: &[Task],
    target: &Target,
    db: &mut Database,
    opts: &TuneOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<TuneSummary, TuneError> {
    let start = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    let vw = target.vector_width();
    let mut states: Vec<State> = Vec::with_capacity(tasks.len());
    let mut resumed = 0;
    for t in tasks {
        let mut st = State {
            tried: HashMap::new(),
            walk: SpaceWalk::new(&t.space),
            default_us: None,
            bench: None,
            started: false,
            stale: 0,
            exhausted: false,
            trials: 0,
            ran: 0,
        };
        for r in db.trials(&t.workload).filter(|r| !r.verified) {
            // Records of schedules outside today's space (an older backend) are not replayed.
            if let Some(i) = t.space.iter().position(|s| *s == r.schedule) {
                st.tried.insert(i, r.median_us);
                st.trials += 1;
                resumed += 1;
                if i == 0 && r.median_us.is_some() {
                    st.default_us = r.median_us;
                }
            }
        }
        states.push(st);
    }
    let worker_command = match &opts.worker {
        Some(c) => c.clone(),
        None => WorkerCommand::current_exe(&["tune-worker"]).map_err(|reason| TuneError::Worker { reason })?,
    };
    let mut worker = Worker::new(worker_command);
    let mut done = resumed;
    let mut ran = 0;
    let mut failed = 0;
    let over_time = |start: &Instant| opts.time_budget.is_some_and(|b| start.elapsed() >= b);
    // Warm start: tasks by estimated share of the model's time — measured
    // when records exist, else FLOPs (at a nominal 50 GFLOP/s).
    let est = |i: usize, st: &State| -> f64 {
        let per = st.best().map_or(tasks[i].dims.flops() / 50e3, |(_, t)| t);
        per * tasks[i].count() as f64
    };
    let mut order: Vec<usize> = (0..tasks.len()).collect();
    order.sort_by(|&a, &b| {
        est(b, &states[b])
            .partial_cmp(&est(a, &states[a]))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut model = Gbrt::default();
    let mut data_x: Vec<Vec<f64>> = Vec::new();
    let mut data_y: Vec<f64> = Vec::new();
    for (i, st) in states.iter().enumerate() {
        for (&k, t) in &st.tried {
            if let Some(t) = t {
                data_x.push(space::features(&tasks[i].space[k], &tasks[i].dims, vw));
                data_y.push((t / tasks[i].dims.flops().max(1.0)).ln());
            }
        }
    }
    if data_y.len() >= 8 {
        model = Gbrt::fit(&data_x, &data_y, GbrtParams::default());
    }
    let mut warm = order.clone().into_iter();
    loop {
        if done >= opts.trials || over_time(&start) {
            break;
        }
        let remaining = opts.trials - done;
        // Next task: every task once (largest first), then by expected gain.
        let next = warm.next().or_else(|| {
            (0..tasks.len())
                .filter(|&i| !states[i].exhausted)
                .map(|i| {
                    let st = &states[i];
                    let best = st.best().map_or(tasks[i].dims.flops() / 50e3, |(_, t)| t);
                    let expected = 0.25 / (1.0 + st.stale as f64);
                    (i, tasks[i].count() as f64 * best * expected)
                })
                .max_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal))
                .map(|(i, _)| i)
        });
        let Some(i) = next else { break };
        let task = &tasks[i];
        let unstarted = states.iter().filter(|s| !s.started).count().max(1);
        let st = &mut states[i];
        if st.bench.is_none() {
            match Bench::new(&task.group, target, opts.seed ^ task.workload.hash64()) {
                Ok(b) => st.bench = Some(b),
                Err(e) => {
                    st.exhausted = true;
                    st.started = true;
                    tracing_free_warn(&task.nodes[0], &e);
                    continue;
                }
            }
        }
        // During the warm start leave budget for the tasks not started yet.
        let size = if st.started {
            opts.batch.min(remaining)
        } else {
            (remaining / unstarted).clamp(2, opts.batch.max(2)).min(remaining)
        };
        let mut picks: Vec<usize> = Vec::with_capacity(size);
        if !st.started {
            // The default (index 0) first: its outputs are the reference.
            picks.push(0);
            // Then one schedule of every other form, so each is measured.
            let forms = st.walk.form_representatives();
            picks.extend(
                forms
                    .into_iter()
                    .filter(|i| !st.tried.contains_key(i))
                    .take(size.saturating_sub(1)),
            );
        }
        let want = size.saturating_sub(picks.len());
        let proposed = propose(st, task, vw, &model, want + picks.len(), &mut rng);
        for p in proposed {
            if picks.len() < size && !picks.contains(&p) && (p != 0 || st.started) {
                picks.push(p);
            }
        }
        if picks.is_empty() {
            st.exhausted = true;
            continue;
        }
        let schedules: Vec<Schedule> = picks.iter().map(|&i| task.space[i].clone()).collect();
        let Some(bench) = st.bench.as_mut() else { continue };
        let results = bench.measure(&mut worker, &schedules, &opts.measure);
        let before = st.best().map(|(_, t)| t);
        if !st.started {
            st.started = true;
            match &results[0] {
                Ok(t) => st.default_us = Some(*t),
                Err(e) => {
                    // Without a working default there is no reference: stop this task.
                    tracing_free_warn(&task.nodes[0], e);
                    st.exhausted = true;
                }
            }
        }
        for ((&k, s), r) in picks.iter().zip(schedules).zip(&results) {
            let (median_us, error) = match r {
                Ok(t) => (Some(*t), None),
                Err(e) => (None, Some(e.clone())),
            };
            if error.is_some() {
                failed += 1;
            }
            st.tried.insert(k, median_us);
            st.trials += 1;
            st.ran += 1;
            done += 1;
            ran += 1;
            if let Some(t) = median_us {
                data_x.push(space::features(&task.space[k], &task.dims, vw));
                data_y.push((t / task.dims.flops().max(1.0)).ln());
            }
            db.append(TuningRecord {
                workload: task.workload.hex(),
                key: task.workload.canonical(),
                target: task.workload.target.clone(),
                version: CARBIDE_VERSION.to_string(),
                schedule: s,
                median_us,
                default_us: st.default_us,
                error,
                verified: false,
                timestamp: now_secs(),
            })?;
        }
        let after = st.best().map(|(_, t)| t);
        match (before, after) {
            (Some(b), Some(a)) if a < 0.99 * b => st.stale = 0,
            (None, Some(_)) => st.stale = 0,
            _ => st.stale += 1,
        }
        if data_y.len() >= 8 {
            let from = data_y.len().saturating_sub(2000);
            model = Gbrt::fit(&data_x[from..], &data_y[from..], GbrtParams::default());
        }
        let st = &states[i];
        progress(&Progress {
            trials_done: done,
            trials_total: opts.trials,
            elapsed_s: start.elapsed().as_secs_f64(),
            task: format!("{} {}", task.workload.op, task.nodes[0]),
            best_us: st.best().map(|(_, t)| t),
            default_us: st.default_us,
            tasks_started: states.iter().filter(|s| s.started).count(),
            tasks: tasks.len(),
        });
    }
    let mut verified = 0;
    for (task, st) in tasks.iter().zip(states.iter_mut()) {
        if verify(task, st, &mut worker, db, opts)? {
            verified += 1;
        }
    }
    let threads = opts.measure.threads.max(1);
    let peak = if opts.measure_peak {
        crate::peak::measure_fma_peak(target, threads).ok()
    } else {
        None
    };
    let mut summaries = Vec::new();
    let (mut total_default, mut total_tuned) = (0.0, 0.0);
    for (t, st) in tasks.iter().zip(&states) {
        let best = db.best(&t.workload);
        let best_us = best.and_then(|r| r.median_us);
        let default_us = st.default_us.or_else(|| best.and_then(|r| r.default_us));
        let gflop = t.dims.flops() / 1e9;
        let best_gflops = best_us.map(|us| gflop / (us * 1e-6));
        if let (Some(d), Some(b)) = (default_us, best_us) {
            total_default += d * t.count() as f64;
            total_tuned += b.min(d) * t.count() as f64;
        }
        summaries.push(TaskSummary {
            workload: t.workload.hex(),
            key: t.workload.canonical(),
            op: t.workload.op.clone(),
            nodes: t.nodes.clone(),
            count: t.count(),
            gflop,
            trials: st.trials,
            default_us,
            best_us,
            speedup: default_us.zip(best_us).map(|(d, b)| d / b),
            best_gflops,
            peak_pct: best_gflops.zip(peak).map(|(g, p)| 100.0 * g / p),
            schedule: best.map(|r| r.schedule.clone()),
        });
    }
    Ok(TuneSummary {
        target: target.name().to_string(),
        threads,
        trials_run: ran,
        trials_resumed: resumed,
        failed_trials: failed,
        verified_tasks: verified,
        workers_started: worker.spawned,
        seconds: start.elapsed().as_secs_f64(),
        peak_gflops: peak,
        total_default_us: total_default,
        total_tuned_us: total_tuned,
        tasks: summaries,
    })
}

/// How many of the fastest trials are re-measured against the default.
const VERIFY_TOP: usize = 2;
/// Rounds of (default, best candidates) measured back to back.
const VERIFY_ROUNDS: usize = 2;

/// Re-measures the default and the [`VERIFY_TOP`] fastest schedules of a
/// task searched in this run, alternating, [`VERIFY_ROUNDS`] times, and
/// records each one's fastest round as a verification record. On a loaded
/// machine the search's single measurements may flatter a candidate (or
/// the default, measured once at the start); measured side by side, the
/// candidate only wins if it is really faster. Returns whether it ran.
fn verify(
    task: &Task,
    st: &mut State,
    worker: &mut Worker,
    db: &mut Database,
    opts: &TuneOptions,
) -> Result<bool, TuneError> {
    let Some(bench) = st.bench.as_mut().filter(|b| b.has_reference()) else {
        return Ok(false);
    };
    if st.ran == 0 {
        return Ok(false);
    }
    let mut top: Vec<(usize, f64)> = st
        .tried
        .iter()
        .filter_map(|(&i, t)| t.filter(|_| i != 0).map(|t| (i, t)))
        .collect();
    top.sort_by(|a, b| {
        a.1.partial_cmp(&b.1)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.0.cmp(&b.0))
    });
    top.truncate(VERIFY_TOP);
    if top.is_empty() {
        return Ok(false);
    }
    let round: Vec<usize> = std::iter::once(0).chain(top.iter().map(|t| t.0)).collect();
    let picks: Vec<usize> = (0..VERIFY_ROUNDS).flat_map(|_| round.iter().copied()).collect();
    let schedules: Vec<Schedule> = picks.iter().map(|&i| task.space[i].clone()).collect();
    let results = bench.measure(worker, &schedules, &opts.measure);
    let mut fastest: HashMap<usize, Result<f64, String>> = HashMap::new();
    for (&i, r) in picks.iter().zip(results) {
        let merged = match (fastest.remove(&i), r) {
            (None, r) => r,
            (Some(Ok(a)), Ok(b)) => Ok(a.min(b)),
            // A schedule that failed once (crash, wrong result) stays failed.
            (Some(Err(e)), _) | (Some(Ok(_)), Err(e)) => Err(e),
        };
        fastest.insert(i, merged);
    }
    let default_us = fastest.get(&0).and_then(|r| r.as_ref().ok().copied());
    if default_us.is_some() {
        st.default_us = default_us;
    }
    for &i in &round {
        let (median_us, error) = match fastest.remove(&i) {
            Some(Ok(t)) => (Some(t), None),
            Some(Err(e)) => (None, Some(e)),
            None => continue,
        };
        db.append(TuningRecord {
            workload: task.workload.hex(),
            key: task.workload.canonical(),
            target: task.workload.target.clone(),
            version: CARBIDE_VERSION.to_string(),
            schedule: task.space[i].clone(),
            median_us,
            default_us,
            error,
            verified: true,
            timestamp: now_secs(),
        })?;
    }
    Ok(true)
}

/// Failures of a whole task are reported in the summary (no trials); the
/// reason goes to stderr since this crate has no logger of its own.
fn tracing_free_warn(node: &str, why: &str) {
    eprintln!("warning: not tuning the kernel at '{node}': {why}");
}

/// Up to `n` untried schedules (indices into the task's space): children
/// of the best measured ones (mutation, crossover) and random points,
/// ranked by the cost model, with a quarter picked at random to keep exploring.
fn propose(st: &State, task: &Task, vw: usize, model: &Gbrt, n: usize, rng: &mut impl Rng) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let untried: Vec<usize> = (0..task.space.len()).filter(|i| !st.tried.contains_key(i)).collect();
    if untried.len() <= n && !model.is_fitted() {
        return untried;
    }
    let mut elite: Vec<(usize, f64)> = st.tried.iter().filter_map(|(&k, t)| t.map(|t| (k, t))).collect();
    elite.sort_by(|a, b| {
        a.1.partial_cmp(&b.1)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.0.cmp(&b.0))
    });
    elite.truncate(8);
    let parents: Vec<usize> = if elite.is_empty() {
        vec![0]
    } else {
        elite.iter().map(|e| e.0).collect()
    };
    let mut pool: HashSet<usize> = HashSet::new();
    for _ in 0..(16 * n).max(64) {
        let p = *parents.choose(rng).unwrap_or(&0);
        let roll: f64 = rng.gen();
        let child = if roll < 0.5 {
            let c = st.walk.mutate(p, rng);
            if rng.gen_bool(0.3) {
                st.walk.mutate(c, rng)
            } else {
                c
            }
        } else if roll < 0.8 {
            let q = *parents.choose(rng).unwrap_or(&p);
            st.walk.crossover(p, q, rng)
        } else {
            st.walk.random(rng)
        };
        if !st.tried.contains_key(&child) {
            pool.insert(child);
        }
    }
    // Children of the elite may all be tried already: fill from the rest.
    if pool.len() < n {
        pool.extend(untried.choose_multiple(rng, n - pool.len()));
    }
    let mut pool: Vec<usize> = pool.into_iter().collect();
    // Deterministic order before shuffling/scoring (HashSet order is random).
    pool.sort_unstable();
    pool.shuffle(rng);
    if !model.is_fitted() {
        pool.truncate(n);
        return pool;
    }
    let explore = if n >= 4 { n / 4 } else { 0 };
    let mut scored: Vec<(f64, usize)> = pool
        .iter()
        .map(|&i| (model.predict(&space::features(&task.space[i], &task.dims, vw)), i))
        .collect();
    scored.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    let take = n.saturating_sub(explore).min(scored.len());
    let mut out: Vec<usize> = scored.iter().take(take).map(|s| s.1).collect();
    let rest: Vec<usize> = scored.iter().skip(take).map(|s| s.1).collect();
    out.extend(rest.choose_multiple(rng, explore));
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use carbide_backend_cpu::GroupValue;
    use carbide_ir::ndarray::{ArrayD, IxDyn};
    use carbide_ir::ops::LinalgOp;
    use carbide_ir::{DType, Node, Op, Tensor, TensorType};

    fn tt(shape: &[usize]) -> TensorType {
        TensorType::new(DType::F32, carbide_ir::types::shape_of(shape))
    }

    /// y = a[m x k] @ w[k x n] with a constant w: the GEMM workload of a dense layer.
    pub(crate) fn matmul_group(m: usize, k: usize, n: usize) -> KernelGroup {
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
        KernelGroup {
            nodes: vec![Node {
                name: "mm".into(),
                op: Op::Linalg(LinalgOp::MatMul),
                inputs: vec!["a".into(), "w".into()],
                outputs: vec!["y".into()],
            }],
            inputs: vec![
                GroupValue {
                    name: "a".into(),
                    ty: tt(&[m, k]),
                    constant: None,
                },
                GroupValue {
                    name: "w".into(),
                    ty: tt(&[k, n]),
                    constant: Some(Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[k, n]), w).unwrap())),
                },
            ],
            outputs: vec![GroupValue {
                name: "y".into(),
                ty: tt(&[m, n]),
                constant: None,
            }],
        }
    }

    pub(crate) fn host_target() -> Option<Target> {
        Target::parse("native")
            .ok()
            .filter(|t| t.isa() != carbide_backend_cpu::Isa::Neon)
    }

    /// This test binary, re-executed to run only [`worker_process_entry`].
    pub(crate) fn test_worker() -> WorkerCommand {
        let mut w =
            WorkerCommand::current_exe(&["--exact", "tuner::tests::worker_process_entry", "--test-threads", "1"])
                .unwrap();
        w.env.push((WORKER_ENV.into(), "1".into()));
        w
    }

    const WORKER_ENV: &str = "CARBIDE_AUTOTUNE_TEST_WORKER";

    /// The measuring process of these tests: when started by
    /// [`test_worker`] it serves requests on stdin/stdout; in a normal test
    /// run it has nothing to do.
    #[test]
    fn worker_process_entry() {
        if std::env::var_os(WORKER_ENV).is_some() {
            crate::worker::serve_stdio().unwrap();
        }
    }

    pub(crate) fn quick(trials: usize) -> TuneOptions {
        TuneOptions {
            trials,
            batch: 6,
            measure: MeasureConfig {
                threads: 1,
                repeats: 3,
                min_repeat: Duration::from_micros(500),
                ..Default::default()
            },
            measure_peak: false,
            worker: Some(test_worker()),
            ..Default::default()
        }
    }

    #[test]
    fn identical_workloads_are_one_task() {
        let Some(target) = host_target() else { return };
        let g = matmul_group(32, 64, 48);
        let mut other = matmul_group(32, 64, 48);
        other.nodes[0].name = "mm2".into();
        let tasks = extract_tasks(&[g.clone(), other, matmul_group(16, 64, 48)], &target).unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[0].nodes, vec!["mm".to_string(), "mm2".to_string()]);
        assert_eq!(
            tasks[0].dims,
            GemmDims {
                m: 32.0,
                n: 48.0,
                k: 64.0,
                batch: 1.0
            }
        );
    }

    #[test]
    fn search_beats_a_bad_start_and_never_loses_to_the_default() {
        let Some(target) = host_target() else { return };
        let mut tasks = extract_tasks(&[matmul_group(96, 256, 128)], &target).unwrap();
        // Start from a deliberately poor schedule, in place of the default
        // (index 0, always measured first): the register tile that fits the
        // 96 rows worst (28 x 16: a padded fourth panel, and one broadcast
        // per FMA), without k unrolling.
        let space = &mut tasks[0].space;
        let row_waste = |s: &Schedule| s.microkernel.map_or(0, |t| 96usize.div_ceil(t.mr) * t.mr - 96);
        let worst = (0..space.len())
            .max_by_key(|&i| (row_waste(&space[i]), space[i].unroll.is_empty()))
            .unwrap();
        space.swap(0, worst);
        let bad = space[0].clone();
        let mut db = Database::in_memory();
        let s = tune(&tasks, &target, &mut db, &quick(12), &mut |_| {}).unwrap();
        assert_eq!(s.trials_run, 12);
        let (verified, trials): (Vec<_>, Vec<_>) = db.records.iter().partition(|r| r.verified);
        assert_eq!(trials.len(), 12);
        // The default and the two fastest, re-measured side by side; they decide.
        assert_eq!((s.verified_tasks, verified.len()), (1, 1 + VERIFY_TOP));
        assert_eq!(verified[0].schedule, bad);
        let best = db.best(&tasks[0].workload).unwrap();
        assert!(best.verified && best.median_us <= verified[0].median_us);
        assert_eq!(
            s.failed_trials,
            0,
            "{:?}",
            db.records.iter().filter_map(|r| r.error.clone()).collect::<Vec<_>>()
        );
        let t = &s.tasks[0];
        let (d, b) = (t.default_us.unwrap(), t.best_us.unwrap());
        assert!(b <= d * 1.05, "tuned {b} µs vs default {d} µs");
        // A tile that fits the rows and needs fewer broadcasts beats it, so
        // the winner is not the start.
        assert_ne!(t.schedule.as_ref(), Some(&bad));
        assert_eq!(s.workers_started, 1, "no candidate crashed the worker");
    }

    #[test]
    fn records_round_trip_and_a_rerun_resumes() {
        let Some(target) = host_target() else { return };
        let dir = std::env::temp_dir().join(format!("carbide-autotune-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tune.jsonl");
        let _ = std::fs::remove_file(&path);
        let tasks = extract_tasks(&[matmul_group(24, 64, 40)], &target).unwrap();
        let mut db = Database::open(&path).unwrap();
        let first = tune(&tasks, &target, &mut db, &quick(6), &mut |_| {}).unwrap();
        assert_eq!((first.trials_run, first.trials_resumed), (6, 0));
        let reread = Database::load(&path).unwrap();
        assert_eq!(reread.records, db.records);
        assert_eq!(reread.best(&tasks[0].workload), db.best(&tasks[0].workload));
        assert!(reread
            .records
            .iter()
            .all(|r| r.version == CARBIDE_VERSION && r.matches(&tasks[0].workload)));
        // Same budget again: nothing left to do.
        let mut db = Database::open(&path).unwrap();
        let again = tune(&tasks, &target, &mut db, &quick(6), &mut |_| {}).unwrap();
        assert_eq!((again.trials_run, again.trials_resumed), (0, 6));
        // A bigger budget continues without re-trying recorded schedules
        // (besides the default, re-measured once per run as the reference).
        let more = tune(&tasks, &target, &mut db, &quick(10), &mut |_| {}).unwrap();
        assert_eq!((more.trials_run, more.trials_resumed), (4, 6));
        let recs: Vec<TuningRecord> = Database::load(&path)
            .unwrap()
            .records
            .into_iter()
            .filter(|r| !r.verified)
            .collect();
        assert_eq!(recs.len(), 10);
        let distinct: HashSet<String> = recs
            .iter()
            .map(|r| serde_json::to_string(&r.schedule).unwrap())
            .collect();
        assert_eq!(distinct.len(), 9, "only the default is measured twice");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
