//! The verifier: structural invariants every pass and importer must keep.
//! Each value name is defined once; every use is defined earlier in the
//! graph (or in an enclosing graph); graph outputs are defined.

use crate::error::{IrError, IrResult};
use crate::graph::Graph;
use std::collections::BTreeSet;

/// Checks `graph`; `outer` lists names visible from enclosing graphs.
pub fn verify_graph(graph: &Graph, outer: &BTreeSet<String>) -> IrResult<()> {
    let mut defined: BTreeSet<String> = BTreeSet::new();
    let define = |name: &str, defined: &mut BTreeSet<String>| -> IrResult<()> {
        if !defined.insert(name.to_string()) {
            return Err(IrError::Malformed(format!("value '{name}' is defined more than once")));
        }
        Ok(())
    };
    for i in &graph.inputs {
        define(&i.name, &mut defined)?;
    }
    for name in graph.initializers.keys() {
        if !graph.inputs.iter().any(|i| &i.name == name) {
            define(name, &mut defined)?;
        }
    }
    for node in &graph.nodes {
        for inp in node.present_inputs() {
            if !defined.contains(inp) && !outer.contains(inp) {
                return Err(IrError::Malformed(format!(
                    "node '{}' ({}) uses '{inp}', which is not defined before it",
                    node.name,
                    node.op.op_type()
                )));
            }
        }
        let subgraphs = node.op.subgraphs();
        if !subgraphs.is_empty() {
            let visible: BTreeSet<String> = outer.union(&defined).cloned().collect();
            for g in subgraphs {
                verify_graph(g, &visible).map_err(|e| e.at_node(&node.name, node.op.op_type()))?;
            }
        }
        for out in node.outputs.iter().filter(|o| !o.is_empty()) {
            define(out, &mut defined)?;
        }
    }
    for o in &graph.outputs {
        if !defined.contains(&o.name) && !outer.contains(&o.name) {
            return Err(IrError::Malformed(format!(
                "graph output '{}' is never defined",
                o.name
            )));
        }
    }
    Ok(())
}
