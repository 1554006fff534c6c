//! The readable text form of a graph, for `--dump-after`, tests and humans.
//!
//! ```text
//! graph main(%input: float[1,3,224,224]) -> (%out: float[1,1000]) {
//!   %conv0 = Conv{..}(%input, %w0, %b0)    # node name
//! }
//! ```

use crate::graph::Graph;
use std::fmt::Write;

pub fn graph_to_text(graph: &Graph) -> String {
    let mut s = String::new();
    write_graph(&mut s, graph, 0);
    s
}

fn write_graph(s: &mut String, g: &Graph, indent: usize) {
    let pad = "  ".repeat(indent);
    let ins: Vec<String> = g.inputs.iter().map(|i| format!("%{}: {}", i.name, i.ty)).collect();
    let outs: Vec<String> = g.outputs.iter().map(|i| format!("%{}: {}", i.name, i.ty)).collect();
    let _ = writeln!(
        s,
        "{pad}graph {}({}) -> ({}) {{",
        g.name,
        ins.join(", "),
        outs.join(", ")
    );
    for (name, t) in &g.initializers {
        let _ = writeln!(s, "{pad}  %{name} = initializer {}{:?}", t.dtype(), t.shape());
    }
    for n in &g.nodes {
        let outs: Vec<String> = n
            .outputs
            .iter()
            .map(|o| if o.is_empty() { "_".into() } else { format!("%{o}") })
            .collect();
        let ins: Vec<String> = n
            .inputs
            .iter()
            .map(|o| if o.is_empty() { "_".into() } else { format!("%{o}") })
            .collect();
        let _ = writeln!(
            s,
            "{pad}  {} = {}({})  # {}",
            outs.join(", "),
            op_text(&n.op),
            ins.join(", "),
            n.name
        );
        for sub in n.op.subgraphs() {
            write_graph(s, sub, indent + 2);
        }
    }
    let _ = writeln!(s, "{pad}}}");
}

/// The op's type and attributes on one line; subgraphs are printed separately.
pub fn op_text(op: &crate::Op) -> String {
    if !op.subgraphs().is_empty() {
        return op.op_type().to_string();
    }
    let dbg = format!("{op:?}");
    // `Family(Variant { attrs })` -> `Variant { attrs }`
    let inner = dbg
        .split_once('(')
        .map(|(_, r)| r.strip_suffix(')').unwrap_or(r))
        .unwrap_or(&dbg);
    inner.to_string()
}
