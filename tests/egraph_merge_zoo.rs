//! The e-graph's parallel Conv merge on SqueezeNet: each fire module's
//! 1×1 and 3×3 expand convs read the same squeeze output and are
//! concatenated. For the GPU cost model (launches dominate) they become one
//! 3×3 conv with the 1×1 weights zero-padded, the Concat cancelled; for the
//! CPU model the zero taps cost more than they save and the graph stays.
//! Outputs are compared before and after on the reference runtime.
//!
//! Data comes from `scripts/zoo.py`; without it the test is skipped with a
//! message, unless CARBIDE_REQUIRE_DATA=1.

use carbide::compare::{compare_values, Tolerance};
use carbide::ir::Value;
use carbide::passes::{optimize, PassOptions};
use std::path::PathBuf;

fn zoo_model(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".cache/zoo")
        .join(format!("{name}.onnx"));
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("CARBIDE_REQUIRE_DATA").is_ok_and(|v| v == "1") {
        panic!("{} is missing", p.display());
    }
    eprintln!("skipping: {} not found", p.display());
    None
}

fn count(g: &carbide::ir::Graph, op: &str) -> usize {
    g.nodes.iter().filter(|n| n.op.op_type() == op).count()
}

#[test]
fn squeezenet_expand_convs_merge_for_the_gpu_cost_model_only() {
    let Some(path) = zoo_model("squeezenet1_1") else { return };
    let model = carbide::load_model(&path).expect("loads");
    let inputs = carbide::npy::read_npz(&path.with_file_name("squeezenet1_1.inputs.npz")).expect("inputs");
    let feeds: Vec<(String, Value)> = inputs.into_iter().map(|(n, t)| (n, Value::Tensor(t))).collect();
    let expected = carbide::Session::new(model.clone()).run(feeds.clone()).expect("runs");

    let optimized = |target: &str| {
        let mut m = model.clone();
        let opts = PassOptions {
            level: 3,
            verify_each: true,
            cost_target: target.into(),
            ..Default::default()
        };
        let report = optimize(&mut m, &opts).expect("optimizes");
        (m, report)
    };

    let (cpu, _) = optimized("cpu");
    assert_eq!(
        count(&cpu.graph, "Concat"),
        8,
        "the CPU model keeps the fire modules' Concats"
    );

    let (gpu, report) = optimized("gpu");
    let merges = report
        .egraph
        .iter()
        .map(|s| s.rules_applied.get("merge-parallel-conv").copied().unwrap_or(0))
        .sum::<usize>();
    assert!(merges > 0, "{:?}", report.egraph);
    assert_eq!(count(&gpu.graph, "Concat"), 0, "every fire module's Concat cancels");
    assert_eq!(count(&gpu.graph, "Split"), 0);
    assert_eq!(
        gpu.graph.nodes.len(),
        cpu.graph.nodes.len() - 16,
        "two convs and a Concat become one conv in each of the 8 fire modules"
    );
    eprintln!(
        "squeezenet1_1 -O3: cpu {} nodes, gpu {} nodes",
        cpu.graph.nodes.len(),
        gpu.graph.nodes.len()
    );
    let got = carbide::Session::new(gpu).run(feeds).expect("optimized model runs");
    for ((name, e), (_, a)) in expected.iter().zip(&got) {
        compare_values(e, a, Tolerance::default()).unwrap_or_else(|m| panic!("output '{name}': {m}"));
    }
}
