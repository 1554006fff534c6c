//! Per-step timing of a compiled run: what `carbide bench --profile` turns
//! into a Chrome trace and a table of the slowest steps, so the perf work and
//! the autotuner can see which kernels the time goes to.

use serde::Serialize;

/// What kind of step a timing belongs to (the trace's `cat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    Kernel,
    Host,
    Alias,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Kernel => "kernel",
            StepKind::Host => "host",
            StepKind::Alias => "alias",
        }
    }
}

/// The wall time of one step of one run.
#[derive(Clone, Debug, Serialize)]
pub struct StepTime {
    /// Index into `Module::steps`.
    pub step: usize,
    pub kind: StepKind,
    /// The kernel's entry point, or the node's name for host and alias steps.
    pub name: String,
    /// The graph nodes the step computes, as "name (OpType)".
    pub nodes: Vec<String>,
    /// The kernel's entry point (kernel steps only).
    pub entry: Option<String>,
    /// Start, in microseconds since the run began.
    pub start_us: f64,
    pub dur_us: f64,
}

/// The step timings of one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Profile {
    pub steps: Vec<StepTime>,
    /// Wall time of the whole run, including binding the inputs and copying
    /// the outputs out (so slightly more than the sum of the steps).
    pub total_us: f64,
}

/// One Chrome-trace "complete" event (`ph: "X"`), loadable in
/// chrome://tracing and Perfetto.
#[derive(Clone, Debug, Serialize)]
pub struct TraceEvent {
    pub name: String,
    pub cat: &'static str,
    pub ph: &'static str,
    pub ts: f64,
    pub dur: f64,
    pub pid: u32,
    pub tid: u32,
    pub args: TraceArgs,
}

#[derive(Clone, Debug, Serialize)]
pub struct TraceArgs {
    pub step: usize,
    pub nodes: Vec<String>,
    pub entry: Option<String>,
    pub run: usize,
}

/// A Chrome trace file: `{"traceEvents": [...]}`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChromeTrace {
    #[serde(rename = "traceEvents")]
    pub trace_events: Vec<TraceEvent>,
}

impl ChromeTrace {
    /// Lays the runs end to end on one timeline (run `r` starts where run
    /// `r - 1` ended), one event per step.
    pub fn from_runs(runs: &[Profile]) -> ChromeTrace {
        let mut events = Vec::new();
        let mut offset = 0.0;
        for (r, p) in runs.iter().enumerate() {
            for s in &p.steps {
                events.push(TraceEvent {
                    name: s.name.clone(),
                    cat: s.kind.as_str(),
                    ph: "X",
                    ts: offset + s.start_us,
                    dur: s.dur_us,
                    pid: 1,
                    tid: 1,
                    args: TraceArgs {
                        step: s.step,
                        nodes: s.nodes.clone(),
                        entry: s.entry.clone(),
                        run: r,
                    },
                });
            }
            offset += p.total_us;
        }
        ChromeTrace { trace_events: events }
    }
}

/// One step's time summed over several runs.
#[derive(Clone, Debug, Serialize)]
pub struct StepTotal {
    pub step: usize,
    pub kind: StepKind,
    pub name: String,
    pub nodes: Vec<String>,
    pub entry: Option<String>,
    pub total_us: f64,
    pub mean_us: f64,
    /// Share of the summed wall time of all runs, in percent.
    pub percent: f64,
    pub calls: usize,
}

/// Every step's time summed over `runs`, slowest first.
pub fn step_totals(runs: &[Profile]) -> Vec<StepTotal> {
    let mut by_step: Vec<Option<StepTotal>> = Vec::new();
    for p in runs {
        for s in &p.steps {
            if by_step.len() <= s.step {
                by_step.resize(s.step + 1, None);
            }
            let t = by_step[s.step].get_or_insert_with(|| StepTotal {
                step: s.step,
                kind: s.kind,
                name: s.name.clone(),
                nodes: s.nodes.clone(),
                entry: s.entry.clone(),
                total_us: 0.0,
                mean_us: 0.0,
                percent: 0.0,
                calls: 0,
            });
            t.total_us += s.dur_us;
            t.calls += 1;
        }
    }
    let wall: f64 = runs.iter().map(|p| p.total_us).sum();
    let mut totals: Vec<StepTotal> = by_step.into_iter().flatten().collect();
    for t in &mut totals {
        t.mean_us = t.total_us / t.calls as f64;
        t.percent = if wall > 0.0 { 100.0 * t.total_us / wall } else { 0.0 };
    }
    totals.sort_by(|a, b| b.total_us.total_cmp(&a.total_us).then(a.step.cmp(&b.step)));
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(durs: &[f64]) -> Profile {
        let mut start = 0.0;
        let steps = durs
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                let s = StepTime {
                    step: i,
                    kind: if i == 0 { StepKind::Kernel } else { StepKind::Host },
                    name: format!("s{i}"),
                    nodes: vec![format!("n{i} (Relu)")],
                    entry: (i == 0).then(|| "k0".to_string()),
                    start_us: start,
                    dur_us: d,
                };
                start += d;
                s
            })
            .collect();
        Profile {
            steps,
            total_us: start + 1.0,
        }
    }

    #[test]
    fn totals_sum_over_runs_slowest_first() {
        let t = step_totals(&[run(&[1.0, 5.0]), run(&[3.0, 1.0])]);
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].step, t[0].total_us, t[0].calls), (1, 6.0, 2));
        assert_eq!((t[1].step, t[1].total_us, t[1].mean_us), (0, 4.0, 2.0));
        assert!((t[0].percent - 100.0 * 6.0 / 12.0).abs() < 1e-9);
    }

    #[test]
    fn trace_lays_runs_end_to_end() {
        let trace = ChromeTrace::from_runs(&[run(&[1.0, 5.0]), run(&[3.0])]);
        let ts: Vec<f64> = trace.trace_events.iter().map(|e| e.ts).collect();
        assert_eq!(ts, vec![0.0, 1.0, 7.0]);
        assert_eq!(trace.trace_events[0].cat, "kernel");
        assert_eq!(trace.trace_events[1].cat, "host");
        assert_eq!(trace.trace_events[2].args.run, 1);
    }
}
