//! Model summaries for `carbide inspect`: inputs and outputs, op histogram,
//! parameter count, a FLOPs estimate, and Graphviz export.

use carbide_ir::{Graph, Model};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Debug, Serialize)]
pub struct IoInfo {
    pub name: String,
    /// e.g. `float[batch,3,224,224]`.
    pub ty: String,
}

#[derive(Debug, Serialize)]
pub struct ModelSummary {
    pub producer: String,
    pub ir_version: i64,
    pub opsets: BTreeMap<String, i64>,
    pub inputs: Vec<IoInfo>,
    pub outputs: Vec<IoInfo>,
    pub nodes: usize,
    /// Node count including subgraphs.
    pub nodes_deep: usize,
    pub op_histogram: BTreeMap<String, usize>,
    pub parameters: u64,
    pub parameter_bytes: u64,
    /// Estimated floating-point operations of one run (2 per multiply-add);
    /// dims that are symbolic count as 1.
    pub flops: u64,
}

pub fn summarize(model: &Model) -> ModelSummary {
    let g = &model.graph;
    let mut hist = BTreeMap::new();
    count_ops(g, &mut hist);
    let (mut params, mut bytes) = (0u64, 0u64);
    for t in g.initializers.values() {
        params += t.len() as u64;
        bytes += (t.len() * t.dtype().bit_width()).div_ceil(8) as u64;
    }
    ModelSummary {
        producer: format!("{} {}", model.producer_name, model.producer_version)
            .trim()
            .to_string(),
        ir_version: model.ir_version,
        opsets: model.opsets.clone(),
        inputs: g
            .required_inputs()
            .map(|i| IoInfo {
                name: i.name.clone(),
                ty: i.ty.to_string(),
            })
            .collect(),
        outputs: g
            .outputs
            .iter()
            .map(|i| IoInfo {
                name: i.name.clone(),
                ty: i.ty.to_string(),
            })
            .collect(),
        nodes: g.nodes.len(),
        nodes_deep: g.node_count_deep(),
        op_histogram: hist,
        parameters: params,
        parameter_bytes: bytes,
        flops: carbide_ir::cost::graph_flops(g),
    }
}

fn count_ops(g: &Graph, hist: &mut BTreeMap<String, usize>) {
    for n in &g.nodes {
        *hist.entry(n.op.op_type().to_string()).or_insert(0) += 1;
        for s in n.op.subgraphs() {
            count_ops(s, hist);
        }
    }
}

/// The FLOPs estimator lives in the IR so the optimizer reports the same numbers.
pub use carbide_ir::cost::node_flops;

/// Prints the summary as aligned text.
pub fn summary_text(s: &ModelSummary) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "producer:    {}",
        if s.producer.is_empty() { "-" } else { &s.producer }
    );
    let opsets: Vec<String> = s
        .opsets
        .iter()
        .map(|(d, v)| format!("{}={v}", if d.is_empty() { "ai.onnx" } else { d }))
        .collect();
    let _ = writeln!(o, "ir version:  {}   opsets: {}", s.ir_version, opsets.join(", "));
    let _ = writeln!(o, "inputs:");
    for i in &s.inputs {
        let _ = writeln!(o, "  {:<24} {}", i.name, i.ty);
    }
    let _ = writeln!(o, "outputs:");
    for i in &s.outputs {
        let _ = writeln!(o, "  {:<24} {}", i.name, i.ty);
    }
    let _ = writeln!(
        o,
        "parameters:  {} ({:.2} MB)",
        group_digits(s.parameters),
        s.parameter_bytes as f64 / 1e6
    );
    let _ = writeln!(o, "flops:       {:.3} GFLOP (estimate)", s.flops as f64 / 1e9);
    let _ = writeln!(o, "nodes:       {} ({} including subgraphs)", s.nodes, s.nodes_deep);
    let mut hist: Vec<(&String, &usize)> = s.op_histogram.iter().collect();
    hist.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (op, n) in hist {
        let _ = writeln!(o, "  {op:<28} {n:>6}");
    }
    o
}

fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The graph in Graphviz DOT: ops as boxes, values as edges labelled with
/// their types.
pub fn to_dot(model: &Model) -> String {
    let g = &model.graph;
    let mut o = String::from("digraph model {\n  rankdir=TB;\n  node [shape=box, style=\"rounded,filled\", fillcolor=\"#eef3fb\", fontname=\"Helvetica\"];\n");
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut producer: BTreeMap<&str, String> = BTreeMap::new();
    for (i, inp) in g.required_inputs().enumerate() {
        let id = format!("in{i}");
        let _ = writeln!(
            o,
            "  {id} [label=\"{}\", shape=ellipse, fillcolor=\"#d9f2d9\"];",
            esc(&inp.name)
        );
        producer.insert(&inp.name, id);
    }
    for (i, n) in g.nodes.iter().enumerate() {
        let id = format!("n{i}");
        let _ = writeln!(o, "  {id} [label=\"{}\\n{}\"];", n.op.op_type(), esc(&n.name));
        for inp in n.present_inputs() {
            if let Some(src) = producer.get(inp) {
                let label = g.type_of(inp).map(|t| t.to_string()).unwrap_or_default();
                let _ = writeln!(o, "  {src} -> {id} [label=\"{}\", fontsize=9];", esc(&label));
            }
        }
        for out in n.outputs.iter().filter(|s| !s.is_empty()) {
            producer.insert(out, id.clone());
        }
    }
    for (i, out) in g.outputs.iter().enumerate() {
        let id = format!("out{i}");
        let _ = writeln!(
            o,
            "  {id} [label=\"{}\", shape=ellipse, fillcolor=\"#fde2cf\"];",
            esc(&out.name)
        );
        if let Some(src) = producer.get(out.name.as_str()) {
            let _ = writeln!(
                o,
                "  {src} -> {id} [label=\"{}\", fontsize=9];",
                esc(&out.ty.to_string())
            );
        }
    }
    o.push_str("}\n");
    o
}
