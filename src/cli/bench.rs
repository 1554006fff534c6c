use super::run::{build_feeds, is_artifact, FeedArgs, Runner};
use anyhow::{bail, Context, Result};
use carbide::compile::{compile, CompileOptions};
use carbide::runtime::module::profile::{step_totals, ChromeTrace, StepTotal};
use clap::Args;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    /// An ONNX model (compiled first, unless --reference) or a .carbide artifact.
    model: PathBuf,
    #[command(flatten)]
    feeds: FeedArgs,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Untimed runs before measuring.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Benchmark an ONNX model on the reference runtime instead of compiling it.
    #[arg(long)]
    reference: bool,
    /// Target when compiling an ONNX model.
    #[arg(long, default_value = "native")]
    target: String,
    /// Optimization level when compiling an ONNX model.
    #[arg(short = 'O', default_value_t = 3, value_parser = clap::value_parser!(u8).range(0..=3))]
    opt_level: u8,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Time every step of the timed runs (compiled models only): write them
    /// as a Chrome trace (chrome://tracing, Perfetto) to FILE and print the
    /// 10 steps that take the most time.
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
}

/// How many of the slowest steps `--profile` reports.
const PROFILE_TOP: usize = 10;

/// The `q`-quantile of sorted samples (linear interpolation).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

pub fn run(a: BenchArgs) -> Result<ExitCode> {
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let runner = if is_artifact(&a.model) || a.reference {
        Runner::open(&a.model, a.threads)?
    } else {
        let model = carbide::load_model(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
        let opts = CompileOptions {
            target: a.target.clone(),
            opt_level: a.opt_level,
            tuning_db: None,
            threads: a.threads,
        };
        Runner::Compiled(Box::new(compile(&model, &opts).context("compiling")?))
    };
    let feeds = build_feeds(&runner.inputs(), &a.feeds, a.json)?;
    for _ in 0..a.warmup {
        runner.run(feeds.clone())?;
    }
    let module = match (&runner, &a.profile) {
        (Runner::Compiled(m), Some(_)) => Some(m),
        (Runner::Reference(_), Some(_)) => {
            bail!("--profile needs a compiled model (an artifact, or an ONNX model without --reference)")
        }
        _ => None,
    };
    let mut ms = Vec::with_capacity(a.runs);
    let mut profiles = Vec::new();
    for _ in 0..a.runs {
        let f = feeds.clone();
        let start = Instant::now();
        match module {
            Some(m) => profiles.push(m.run_profiled(f)?.1),
            None => {
                runner.run(f)?;
            }
        }
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let top: Vec<StepTotal> = step_totals(&profiles).into_iter().take(PROFILE_TOP).collect();
    if let Some(path) = &a.profile {
        let trace = serde_json::to_string(&ChromeTrace::from_runs(&profiles))?;
        std::fs::write(path, trace).with_context(|| format!("writing {}", path.display()))?;
    }
    ms.sort_by(f64::total_cmp);
    let (p10, median, p90) = (quantile(&ms, 0.1), quantile(&ms, 0.5), quantile(&ms, 0.9));
    if a.json {
        let v = serde_json::json!({
            "model": a.model,
            "runner": runner.kind(),
            "threads": a.threads,
            "warmup": a.warmup,
            "runs": a.runs,
            "median_ms": median,
            "p10_ms": p10,
            "p90_ms": p90,
        });
        let mut v = v;
        if let (Some(path), Some(obj)) = (&a.profile, v.as_object_mut()) {
            obj.insert("profile".into(), serde_json::json!({"trace": path, "top_steps": top}));
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{} ({}): median {median:.3} ms, p10 {p10:.3} ms, p90 {p90:.3} ms over {} runs",
            a.model.display(),
            runner.kind(),
            a.runs
        );
        if let Some(path) = &a.profile {
            print!("{}", top_steps_text(&top, a.runs));
            println!("wrote trace {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The slowest steps as an aligned table (times are means per run).
fn top_steps_text(top: &[StepTotal], runs: usize) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "top {} steps by total time over {runs} runs:", top.len());
    let _ = writeln!(
        o,
        "  {:>5} {:<7}{:>11}{:>8}  name: nodes",
        "step", "kind", "mean us", "%"
    );
    for t in top {
        let _ = writeln!(
            o,
            "  {:>5} {:<7}{:>11.1}{:>7.1}%  {}: {}",
            t.step,
            t.kind.as_str(),
            t.mean_us,
            t.percent,
            t.name,
            t.nodes.join(" + ")
        );
    }
    o
}
