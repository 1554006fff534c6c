use anyhow::{Context, Result};
use carbide::inspect::{summarize, summary_text, to_dot};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct InspectArgs {
    /// The ONNX model.
    model: PathBuf,
    /// Print the summary as JSON (for scripts).
    #[arg(long)]
    json: bool,
    /// Write the graph as Graphviz DOT to this file.
    #[arg(long, value_name = "FILE")]
    dot: Option<PathBuf>,
    /// Print the IR text form of the graph.
    #[arg(long)]
    ir: bool,
}

pub fn run(a: InspectArgs) -> Result<ExitCode> {
    let model = carbide::load_model(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    let summary = summarize(&model);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary_text(&summary));
    }
    if a.ir {
        print!("{}", carbide::ir::print::graph_to_text(&model.graph));
    }
    if let Some(path) = a.dot {
        std::fs::write(&path, to_dot(&model)).with_context(|| format!("writing {}", path.display()))?;
        if !a.json {
            println!("wrote {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
