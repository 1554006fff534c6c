//! Command-line interface: argument parsing and the exit-code policy
//! (0 success, 1 model or input error, 2 usage error).

mod bench;
mod compile;
mod conformance;
mod inspect;
mod run;
mod tune;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Carbide compiles ONNX models into fast native code and runs them.
///
/// Start with `carbide inspect model.onnx` to see what a model holds, and
/// `carbide run model.onnx` to run it (random inputs unless you give some).
#[derive(Parser)]
#[command(name = "carbide", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// More logging: -v info, -vv debug, -vvv trace (or set RUST_LOG).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's inputs, outputs, op histogram, parameters and FLOPs.
    ///
    /// Example: carbide inspect resnet50.onnx --dot resnet50.dot && dot -Tsvg resnet50.dot -o r.svg
    Inspect(inspect::InspectArgs),
    /// Run a model (ONNX on the reference runtime, or a .carbide artifact) and write its outputs as .npy.
    ///
    /// Inputs come from an .npz archive (--inputs), single .npy files
    /// (--input NAME=FILE.npy), or are drawn at random (--seed).
    ///
    /// Example: carbide run model.onnx --inputs sample.npz --out outputs/
    Run(run::RunArgs),
    /// Compile a model to a .carbide artifact (native kernels + weights).
    ///
    /// Example: carbide compile resnet50.onnx --target native -O3 -o resnet50.carbide
    Compile(compile::CompileArgs),
    /// Search faster kernel schedules for a model and record them (JSON lines).
    ///
    /// Resumable: re-running with the same --db continues from its records.
    /// Example: carbide tune resnet50.onnx --trials 400 --db tune.jsonl --time-budget 10m
    ///          carbide compile resnet50.onnx --tuning-db tune.jsonl -o resnet50.carbide
    Tune(tune::TuneArgs),
    /// Measure a model's latency: median, p10 and p90 in ms.
    ///
    /// Example: carbide bench resnet50.carbide --threads 2 --warmup 3 --runs 20
    Bench(bench::BenchArgs),
    /// Run the ONNX backend node tests and report a per-op table.
    ///
    /// DIR holds one folder per case (model.onnx + test_data_set_*/); write
    /// it with `python scripts/gen_node_tests.py DIR`. Ends with the line
    /// `N passed, M failed, K skipped`.
    Conformance(conformance::ConformanceArgs),
    /// Run a single conformance case in this process (used by `conformance`).
    #[command(hide = true)]
    ConformanceCase(conformance::CaseArgs),
    /// Measure tuning candidates sent on stdin (used by `tune`, which runs
    /// them in this child process so a crashing candidate cannot kill it).
    #[command(hide = true)]
    TuneWorker,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Run(a) => run::run(a),
        Command::Compile(a) => compile::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Tune(a) => tune::run(a),
        Command::Conformance(a) => conformance::run(a),
        Command::ConformanceCase(a) => conformance::run_case(a),
        Command::TuneWorker => tune::worker(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
