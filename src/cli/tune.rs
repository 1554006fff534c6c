use anyhow::{Context, Result};
use carbide::compile::CompileOptions;
use carbide::tune::autotune::{Database, MeasureConfig, TuneOptions, TuneSummary};
use carbide::tune::{parse_duration, tune_model};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct TuneArgs {
    /// The ONNX model.
    model: PathBuf,
    /// Code generation target (must run on this machine): native, x86-64-avx2 or x86-64-avx512.
    #[arg(long, default_value = "native")]
    target: String,
    /// Optimization level, as for `carbide compile` (the kernels tuned are the ones it generates).
    #[arg(short = 'O', default_value_t = 3, value_parser = clap::value_parser!(u8).range(0..=3))]
    opt_level: u8,
    /// Total measured trials for the model, counting those already in the database.
    #[arg(long, default_value_t = 400)]
    trials: usize,
    /// Tuning records (JSON lines): read to resume, appended to as trials finish.
    #[arg(long, default_value = "tune.jsonl", value_name = "FILE")]
    db: PathBuf,
    /// Stop starting new trials after this long (e.g. 90s, 10m, 1h).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    time_budget: std::time::Duration,
    /// Threads each kernel is measured with (default: all cores, as `carbide run`).
    #[arg(long)]
    threads: Option<usize>,
    /// Candidates per C compile.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Seed of the search.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the summary as JSON (no progress bar).
    #[arg(long)]
    json: bool,
}

pub fn run(a: TuneArgs) -> Result<ExitCode> {
    let model = carbide::load_model(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    let compile = CompileOptions {
        target: a.target.clone(),
        opt_level: a.opt_level,
        ..Default::default()
    };
    let mut db = Database::open(&a.db)?;
    let mut measure = MeasureConfig::default();
    if let Some(t) = a.threads {
        measure.threads = t.max(1);
    }
    let opts = TuneOptions {
        trials: a.trials,
        time_budget: Some(a.time_budget),
        batch: a.batch.max(1),
        measure,
        seed: a.seed,
        measure_peak: true,
        // This binary's hidden `tune-worker` subcommand.
        worker: None,
    };
    let bar = (!a.json).then(|| {
        let pb = indicatif::ProgressBar::new(a.trials as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} trials [{elapsed_precise} < {eta}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb.set_message("partitioning the model");
        pb.enable_steady_tick(std::time::Duration::from_millis(200));
        pb
    });
    let mut on_progress = |p: &carbide::tune::autotune::Progress| {
        if let Some(pb) = &bar {
            pb.set_position(p.trials_done as u64);
            let us = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
            pb.set_message(format!(
                "task {}/{} {}: best {} µs (default {} µs)",
                p.tasks_started,
                p.tasks,
                p.task,
                us(p.best_us),
                us(p.default_us)
            ));
        }
    };
    let summary = tune_model(&model, &compile, &mut db, &opts, &mut on_progress)
        .with_context(|| format!("tuning {}", a.model.display()))?;
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_table(&summary, &a.db);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(s: &TuneSummary, db: &std::path::Path) {
    let fmt = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |v| format!("{v:.p$}"));
    println!(
        "{} trials in {:.1} s ({} resumed from {}, {} discarded, {} measuring process(es), {} kernel(s) verified against the default), target {}, {} thread(s), FMA peak {} GFLOP/s",
        s.trials_run,
        s.seconds,
        s.trials_resumed,
        db.display(),
        s.failed_trials,
        s.workers_started,
        s.verified_tasks,
        s.target,
        s.threads,
        fmt(s.peak_gflops, 1)
    );
    println!(
        "{:<8} {:<28} {:>3} {:>8} {:>11} {:>11} {:>7} {:>8} {:>6} {:>6}",
        "op", "kernel", "n", "GFLOP", "default µs", "tuned µs", "speedup", "GFLOP/s", "%peak", "trials"
    );
    let mut rows: Vec<_> = s.tasks.iter().collect();
    rows.sort_by(|a, b| {
        let w = |t: &&carbide::tune::autotune::TaskSummary| t.default_us.unwrap_or(0.0) * t.count as f64;
        w(b).partial_cmp(&w(a)).unwrap_or(std::cmp::Ordering::Equal)
    });
    for t in rows {
        let name: String = t.nodes.first().map_or("", |n| n.as_str()).chars().take(28).collect();
        println!(
            "{:<8} {:<28} {:>3} {:>8.3} {:>11} {:>11} {:>7} {:>8} {:>6} {:>6}",
            t.op,
            name,
            t.count,
            t.gflop,
            fmt(t.default_us, 1),
            fmt(t.best_us, 1),
            t.speedup.map_or("-".into(), |v| format!("{v:.2}x")),
            fmt(t.best_gflops, 1),
            fmt(t.peak_pct, 0),
            t.trials
        );
    }
    if s.total_default_us > 0.0 {
        println!(
            "tuned kernels: {:.1} µs → {:.1} µs per inference ({:.2}x)",
            s.total_default_us,
            s.total_tuned_us,
            s.total_default_us / s.total_tuned_us.max(1e-9)
        );
    }
}

/// The hidden `tune-worker` subcommand: serves measurement requests until
/// the tuner closes stdin.
pub fn worker() -> Result<ExitCode> {
    carbide::tune::autotune::worker::serve_stdio().context("tuning worker")?;
    Ok(ExitCode::SUCCESS)
}
