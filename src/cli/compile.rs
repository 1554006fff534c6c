use anyhow::{Context, Result};
use carbide::compile::{compile_artifact, CompileOptions};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args)]
pub struct CompileArgs {
    /// The ONNX model.
    model: PathBuf,
    /// Code generation target: native, x86-64-avx2, x86-64-avx512 or aarch64-neon.
    #[arg(long, default_value = "native")]
    target: String,
    /// Optimization level: -O0 (none) to -O3.
    #[arg(short = 'O', default_value_t = 3, value_parser = clap::value_parser!(u8).range(0..=3))]
    opt_level: u8,
    /// Accepted for symmetry with `run`; not stored (the loader picks its threads).
    #[arg(long)]
    threads: Option<usize>,
    /// Tuning records to replay (JSON lines written by `carbide tune`).
    #[arg(long, value_name = "FILE")]
    tuning_db: Option<PathBuf>,
    /// The artifact to write.
    #[arg(short = 'o', long = "output", value_name = "OUT.carbide")]
    output: PathBuf,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: CompileArgs) -> Result<ExitCode> {
    let start = Instant::now();
    let model = carbide::load_model(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    let opts = CompileOptions {
        target: a.target.clone(),
        opt_level: a.opt_level,
        tuning_db: a.tuning_db.clone(),
        threads: a.threads,
    };
    let spinner = (!a.json && model.graph.nodes.len() > 50).then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_message(format!("compiling {} nodes for {}", model.graph.nodes.len(), a.target));
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        pb
    });
    // Never loads the kernels, so a cross target (aarch64-neon on x86) works too.
    let result = compile_artifact(&model, &opts);
    if let Some(pb) = spinner {
        pb.finish_and_clear();
    }
    let (bytes, report) = result.with_context(|| format!("compiling {}", a.model.display()))?;
    std::fs::write(&a.output, &bytes).with_context(|| format!("writing {}", a.output.display()))?;
    let secs = start.elapsed().as_secs_f64();
    if a.json {
        let v = serde_json::json!({
            "model": a.model,
            "output": a.output,
            "target": report.target,
            "opt_level": a.opt_level,
            "artifact_bytes": bytes.len(),
            "seconds": secs,
            "report": report,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{} → {} ({} bytes, target {}, -O{}) in {secs:.2} s",
            a.model.display(),
            a.output.display(),
            bytes.len(),
            report.target,
            a.opt_level
        );
        println!(
            "{} nodes: {} folded, {} in {} kernels, {} on the host, {} aliases",
            report.nodes_in,
            report.nodes_folded,
            report.nodes_in_kernels,
            report.kernels,
            report.host_steps,
            report.alias_steps
        );
        if a.tuning_db.is_some() {
            println!(
                "tuning records applied to {} kernel(s); {} tunable kernel(s) had none{}",
                report.tuned.len(),
                report.untuned.len(),
                if report.untuned.is_empty() {
                    String::new()
                } else {
                    format!(": {}", report.untuned.join(", "))
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
