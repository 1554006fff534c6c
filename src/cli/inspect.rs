use anyhow::{Context, Result};
use carbide::inspect::{summarize, summary_text, to_dot};
use carbide::passes::{optimize, PassOptions, PassReport};
use clap::Args;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct InspectArgs {
    /// The ONNX model or a compiled .carbide artifact.
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
    /// Optimize the graph first (at -O LEVEL) and report what each pass did.
    #[arg(long)]
    optimize: bool,
    /// Optimization level for --optimize: -O0 nothing, -O1 cleanups, -O2 + fusions, -O3 + everything.
    #[arg(short = 'O', value_name = "LEVEL", default_value_t = 3, value_parser = clap::value_parser!(u8).range(0..=3))]
    opt_level: u8,
    /// Verify the IR after every pass (always on in debug builds).
    #[arg(long)]
    verify_each: bool,
    /// Print the IR text after this pass (repeatable; in the JSON under optimization.dumps).
    #[arg(long, value_name = "PASS")]
    dump_after: Vec<String>,
    /// The cost model the e-graph level (-O3) extracts for: `cpu` (memory
    /// traffic and launches weigh little next to FLOPs) or `gpu` (launches and
    /// bytes weigh more, so merging parallel convs/matmuls pays sooner).
    #[arg(long, value_name = "TARGET", default_value = "cpu")]
    cost_target: String,
}

pub fn run(a: InspectArgs) -> Result<ExitCode> {
    if super::run::is_artifact(&a.model) {
        return inspect_artifact(&a);
    }
    let mut model = carbide::load_model(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    let optimize_requested = a.optimize || !a.dump_after.is_empty() || a.verify_each;
    let report = if optimize_requested {
        let opts = PassOptions {
            level: a.opt_level,
            verify_each: a.verify_each,
            dump_after: a.dump_after.clone(),
            cost_target: a.cost_target.clone(),
            ..Default::default()
        };
        Some(optimize(&mut model, &opts).with_context(|| format!("optimizing {}", a.model.display()))?)
    } else {
        None
    };
    let summary = summarize(&model);
    if a.json {
        let mut v = serde_json::to_value(&summary)?;
        if let (Some(r), Some(obj)) = (&report, v.as_object_mut()) {
            obj.insert("optimization".into(), serde_json::to_value(r)?);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", summary_text(&summary));
        if let Some(r) = &report {
            print!("{}", report_text(r));
        }
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

/// The optimization report as aligned text: totals, then each pass run
/// that changed the graph.
fn report_text(r: &PassReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "optimized:   -O{}  nodes {} -> {}  flops {} -> {}  in {:.1} ms",
        r.level, r.nodes_before, r.nodes_after, r.flops_before, r.flops_after, r.total_ms
    );
    let _ = writeln!(o, "  {:<26}{:>10}{:>16}{:>18}", "pass", "ms", "nodes", "flops delta");
    for p in r.passes.iter().filter(|p| p.changed) {
        let _ = writeln!(
            o,
            "  {:<26}{:>10.2}{:>16}{:>18}",
            p.name,
            p.ms,
            format!("{} -> {}", p.nodes_before, p.nodes_after),
            p.flops_after as i128 - p.flops_before as i128
        );
    }
    let unchanged: f64 = r.passes.iter().filter(|p| !p.changed).map(|p| p.ms).sum();
    let _ = writeln!(o, "  (passes that changed nothing: {unchanged:.2} ms)");
    for e in &r.egraph {
        let _ = writeln!(
            o,
            "  e-graph ({}): region {} nodes, {} classes / {} e-nodes, {} iterations, {:.1} ms ({}), cost {:.3e} -> {:.3e}, {}",
            e.target,
            e.region_nodes,
            e.classes,
            e.enodes,
            e.iterations,
            e.saturation_ms,
            e.stop_reason,
            e.cost_before,
            e.cost_after,
            if e.accepted {
                format!("kept ({} -> {} nodes)", e.region_nodes, e.extracted_nodes)
            } else {
                "not kept".to_string()
            }
        );
    }
    for d in &r.dumps {
        let _ = writeln!(o, "--- IR after {} (round {}) ---\n{}", d.pass, d.round, d.text);
    }
    o
}

/// Target, steps (kernel, host or alias, with the graph nodes each covers)
/// and weights of a compiled artifact. Reads the manifest only (checksums
/// checked, the kernels not loaded), so an artifact for another CPU (e.g.
/// aarch64-neon on x86) inspects too.
fn inspect_artifact(a: &InspectArgs) -> Result<ExitCode> {
    use carbide::runtime::{artifact, Step};
    let bytes = std::fs::read(&a.model).with_context(|| format!("reading {}", a.model.display()))?;
    let sections = artifact::decode(&bytes).with_context(|| format!("loading {}", a.model.display()))?;
    let manifest = &sections.manifest;
    let g = &manifest.model.graph;
    if let Some((i, bad)) = manifest.steps.iter().enumerate().find_map(|(i, s)| match s {
        Step::Host { node } | Step::Alias { node } => (*node >= g.nodes.len()).then_some((i, *node)),
        Step::Kernel(k) => k.nodes.iter().find(|&&n| n >= g.nodes.len()).map(|&n| (i, n)),
    }) {
        anyhow::bail!(
            "{}: artifact is corrupt: step {i} names node {bad}, the graph has {}",
            a.model.display(),
            g.nodes.len()
        );
    }
    let node_desc = |i: usize| format!("{} ({})", g.nodes[i].name, g.nodes[i].op.op_type());
    let steps: Vec<serde_json::Value> = manifest
        .steps
        .iter()
        .map(|s| match s {
            Step::Host { node } => serde_json::json!({"kind": "host", "nodes": [node_desc(*node)]}),
            Step::Alias { node } => serde_json::json!({"kind": "alias", "nodes": [node_desc(*node)]}),
            Step::Kernel(k) => serde_json::json!({
                "kind": "kernel",
                "entry": k.call.entry,
                "nodes": k.nodes.iter().map(|&n| node_desc(n)).collect::<Vec<_>>(),
                "inputs": k.inputs,
                "outputs": k.outputs,
            }),
        })
        .collect();
    let count = |kind: &str| steps.iter().filter(|s| s["kind"] == kind).count();
    let weight_bytes: u64 = manifest.weights.iter().map(|w| w.blob.len).sum();
    let weight_names: std::collections::HashSet<&str> = (manifest.weights.iter().map(|w| w.name.as_str()))
        .chain(manifest.string_weights.iter().map(|(n, _)| n.as_str()))
        .collect();
    let inputs: Vec<&carbide::ir::ValueInfo> = g
        .inputs
        .iter()
        .filter(|i| !weight_names.contains(i.name.as_str()))
        .collect();
    let target = &manifest.target;
    let library_len = sections.library.len();
    let summary = serde_json::json!({
        "target": target,
        "library_bytes": library_len,
        "memory_plan": plan_report(&a.model, &manifest.target)?,
        "weight_bytes": weight_bytes,
        "inputs": inputs.iter().map(|i| format!("{}: {}", i.name, i.ty)).collect::<Vec<_>>(),
        "outputs": g.outputs.iter().map(|i| format!("{}: {}", i.name, i.ty)).collect::<Vec<_>>(),
        "kernel_steps": count("kernel"),
        "host_steps": count("host"),
        "alias_steps": count("alias"),
        "steps": steps,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("artifact  {}", a.model.display());
    println!(
        "target    {} ({}; needs {})",
        target.name,
        target.arch,
        if target.required_features.is_empty() {
            "no special CPU features".to_string()
        } else {
            target.required_features.join(", ")
        }
    );
    println!("library   {} bytes; weights {} bytes", library_len, weight_bytes);
    for i in &inputs {
        println!("input     {}: {}", i.name, i.ty);
    }
    for o in &g.outputs {
        println!("output    {}: {}", o.name, o.ty);
    }
    print!("{}", plan_text(&summary["memory_plan"]));
    println!(
        "steps     {} kernels, {} host, {} aliases",
        count("kernel"),
        count("host"),
        count("alias")
    );
    for (i, s) in summary["steps"].as_array().into_iter().flatten().enumerate() {
        let nodes: Vec<&str> = s["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str())
            .collect();
        let entry = s["entry"].as_str().map(|e| format!(" {e}:")).unwrap_or_default();
        println!(
            "  {i:>4} {:<6}{entry} {}",
            s["kind"].as_str().unwrap_or(""),
            nodes.join(" + ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The memory plan for the artifact's declared input shapes: arena size,
/// peak live bytes against the sum of all intermediates, in-place reuses
/// and zero-copy aliases. Symbolic dims get a plan per shape at run time.
/// Planning loads the module, so an artifact for another CPU reports none.
fn plan_report(path: &std::path::Path, target: &carbide::runtime::artifact::TargetInfo) -> Result<serde_json::Value> {
    use carbide::ir::{Dim, ValueType};
    if let Err(e) = target.check_host() {
        return Ok(serde_json::json!({"planned": "not on this machine", "reason": e.to_string()}));
    }
    let m = &carbide::Module::load(path).with_context(|| format!("loading {}", path.display()))?;
    let mut shapes = Vec::new();
    for i in m.inputs() {
        let dims = match &i.ty {
            ValueType::Tensor(t) => t.shape.as_ref(),
            _ => None,
        };
        let known: Option<Vec<usize>> = dims.and_then(|d| {
            d.iter()
                .map(|d| if let Dim::Known(n) = d { Some(*n) } else { None })
                .collect()
        });
        match known {
            Some(s) => shapes.push(s),
            None => {
                return Ok(serde_json::json!({
                    "planned": "per shape at run time",
                    "reason": format!("input '{}' has symbolic dims ({})", i.name, i.ty),
                }))
            }
        }
    }
    Ok(match m.plan_stats(&shapes).context("planning memory")? {
        Some(stats) => {
            let mut v = serde_json::to_value(&stats)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("planned".into(), "static".into());
                o.insert("input_shapes".into(), serde_json::to_value(&shapes)?);
            }
            v
        }
        None => serde_json::json!({
            "planned": "no",
            "reason": "a kernel's shapes depend on data; the model runs unplanned",
        }),
    })
}

fn plan_text(p: &serde_json::Value) -> String {
    let mib = |k: &str| p[k].as_u64().unwrap_or(0) as f64 / (1024.0 * 1024.0);
    match p["planned"].as_str() {
        Some("static") => format!(
            "memory    arena {:.2} MiB (peak live {:.2} MiB, all intermediates {:.2} MiB); {} in-place, {} zero-copy aliases, {} in-place concats, {} copied aliases\n",
            mib("arena_bytes"),
            mib("peak_live_bytes"),
            mib("total_intermediate_bytes"),
            p["in_place"],
            p["zero_copy_aliases"],
            p["in_place_concats"],
            p["copied_aliases"],
        ),
        Some("per shape at run time") => format!(
            "memory    plan built per shape at run time: {}\n",
            p["reason"].as_str().unwrap_or("")
        ),
        Some("not on this machine") => format!(
            "memory    plan not computed here: {}\n",
            p["reason"].as_str().unwrap_or("")
        ),
        _ => format!("memory    not planned: {}\n", p["reason"].as_str().unwrap_or("")),
    }
}
