use anyhow::{Context, Result};
use carbide::compare::Tolerance;
use carbide::compile::{CompileOptions, TARGETS};
use carbide::conformance::{list_cases, per_op_table, run_case as run_one, run_suite, Engine, Status, SuiteOptions};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct ConformanceArgs {
    /// Folder of node test cases (one subfolder per case).
    dir: PathBuf,
    /// Also write every case's result as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Only run cases whose name matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    filter: Option<String>,
    /// Seconds before a case is killed and counted as failed.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Cases run at once (default: all cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// List every failing case with its error.
    #[arg(long)]
    show_failures: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Which engine runs the cases: the reference interpreter, or the compiler.
#[derive(Args)]
struct EngineArgs {
    /// Compile each case for this target (native, x86-64-avx2, x86-64-avx512,
    /// aarch64-neon) and run the compiled module instead of the reference interpreter.
    #[arg(long, value_name = "TARGET")]
    target: Option<String>,
    /// Optimization level of compiled runs (0..=3; only with --target).
    #[arg(short = 'O', value_parser = clap::value_parser!(u8).range(0..=3), requires = "target")]
    opt_level: Option<u8>,
}

impl EngineArgs {
    fn engine(&self) -> Result<Engine> {
        let Some(target) = &self.target else {
            return Ok(Engine::Reference);
        };
        if !TARGETS.contains(&target.as_str()) {
            anyhow::bail!("unknown target '{target}' (expected one of {})", TARGETS.join(", "));
        }
        let defaults = CompileOptions::default();
        Ok(Engine::Compiled(CompileOptions {
            target: target.clone(),
            opt_level: self.opt_level.unwrap_or(defaults.opt_level),
            // Cases already run in parallel processes: one worker each.
            threads: Some(1),
            ..defaults
        }))
    }

    /// The same options, as arguments for a `conformance-case` child.
    fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(t) = &self.target {
            args.extend(["--target".to_string(), t.clone()]);
        }
        if let Some(o) = self.opt_level {
            args.push(format!("-O{o}"));
        }
        args
    }
}

#[derive(Args)]
pub struct CaseArgs {
    dir: PathBuf,
    #[command(flatten)]
    engine: EngineArgs,
}

pub fn run_case(a: CaseArgs) -> Result<ExitCode> {
    let r = run_one(&a.dir, Tolerance::default(), &a.engine.engine()?);
    println!("{}", serde_json::to_string(&r)?);
    Ok(ExitCode::SUCCESS)
}

pub fn run(a: ConformanceArgs) -> Result<ExitCode> {
    let engine = a.engine.engine()?;
    let cases = list_cases(&a.dir).with_context(|| format!("reading {}", a.dir.display()))?;
    let filter = a
        .filter
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .context("--filter")?;
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let opts = SuiteOptions {
        filter,
        timeout: Duration::from_secs(a.timeout),
        jobs,
        exe: std::env::current_exe().context("locating the carbide executable")?,
        case_args: a.engine.to_args(),
    };
    let bar = ProgressBar::new(cases.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if opts.filter.is_some() {
        bar.set_length(0);
    }
    let progress = |r: &carbide::conformance::CaseResult| {
        if opts.filter.is_some() {
            bar.inc_length(0);
        }
        bar.inc(1);
        bar.set_message(r.name.clone());
    };
    let results = run_suite(&cases, &opts, &progress);
    bar.finish_and_clear();

    let table = per_op_table(&results);
    println!("{:<32} {:>6} {:>6}", "op", "pass", "fail");
    for (op, (p, f)) in &table {
        println!("{op:<32} {p:>6} {f:>6}");
    }
    if a.show_failures {
        println!();
        for r in results.iter().filter(|r| r.status == Status::Fail) {
            let msg = r.message.as_deref().unwrap_or("").replace('\n', " ");
            let tag = match r.reference_passes {
                Some(true) => "FAIL (reference passes)",
                _ => "FAIL",
            };
            println!("{tag} {}: {}", r.name, msg.chars().take(300).collect::<String>());
        }
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let count = |s: Status| results.iter().filter(|r| r.status == s).count();
    let selected_total = results.len();
    let skipped = cases.len() - selected_total + count(Status::Skip);
    if let Engine::Compiled(opts) = &engine {
        // Failures the reference interpreter does not share are compiler bugs.
        let regressions = results.iter().filter(|r| r.reference_passes == Some(true)).count();
        println!(
            "compiled for {} at -O{}: {regressions} failing cases pass on the reference",
            opts.target, opts.opt_level
        );
    }
    println!(
        "{} passed, {} failed, {} skipped",
        count(Status::Pass),
        count(Status::Fail),
        skipped
    );
    Ok(ExitCode::SUCCESS)
}
