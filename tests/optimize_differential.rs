//! Proof of no harm: every zoo model and every conformance case that runs
//! on the reference runtime gives the same outputs before and after the
//! full -O3 pipeline (tolerance of the conformance suite: rtol 1e-3, atol 1e-5).
//!
//! Data comes from `scripts/zoo.py` and `scripts/gen_node_tests.py`; without
//! it a test is skipped with a message, unless CARBIDE_REQUIRE_DATA=1.

use carbide::compare::{compare_values, Tolerance};
use carbide::ir::{Model, Value, ValueType};
use carbide::passes::{optimize, PassOptions};
use std::path::{Path, PathBuf};

fn cache(dir: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache").join(dir);
    if p.is_dir() {
        return Some(p);
    }
    if std::env::var("CARBIDE_REQUIRE_DATA").is_ok_and(|v| v == "1") {
        panic!("{} is missing", p.display());
    }
    eprintln!("skipping: {} not found", p.display());
    None
}

fn o3(model: &Model) -> Result<Model, String> {
    let mut m = model.clone();
    let opts = PassOptions {
        level: 3,
        verify_each: true,
        ..Default::default()
    };
    optimize(&mut m, &opts).map_err(|e| e.to_string())?;
    Ok(m)
}

/// Runs `model` before and after -O3 on `feeds`; `Ok(None)` when the
/// unoptimized model does not run (nothing to compare).
fn differential(model: &Model, feeds: Vec<(String, Value)>) -> Result<Option<usize>, String> {
    let Ok(before) = carbide::Session::new(model.clone()).run(feeds.clone()) else {
        return Ok(None);
    };
    let optimized = o3(model)?;
    let nodes = optimized.graph.nodes.len();
    let after = carbide::Session::new(optimized)
        .run(feeds)
        .map_err(|e| format!("optimized model fails: {e}"))?;
    for ((name, e), (_, a)) in before.iter().zip(&after) {
        compare_values(e, a, Tolerance::default()).map_err(|m| format!("output '{name}': {m}"))?;
    }
    Ok(Some(nodes))
}

#[test]
fn zoo_models_are_unchanged_by_o3() {
    let Some(dir) = cache("zoo") else { return };
    let mut failures = Vec::new();
    let mut models: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "onnx") && !p.to_string_lossy().ends_with(".ort_extended.onnx"))
        .collect();
    models.sort();
    for path in models {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let model = carbide::load_model(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let inputs = carbide::npy::read_npz(&dir.join(format!("{name}.inputs.npz"))).expect("inputs");
        let feeds = inputs.into_iter().map(|(n, t)| (n, Value::Tensor(t))).collect();
        let before = model.graph.nodes.len();
        match differential(&model, feeds) {
            Ok(Some(after)) => eprintln!("{name}: {before} -> {after} nodes, outputs unchanged"),
            Ok(None) => failures.push(format!("{name}: does not run before optimization")),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The symbolic-shape encoders (models/symbolic, made by
/// scripts/make_tiny_encoder.py, plain and `--prescaled`): -O3 fuses both
/// layers' attention although shape inference cannot name their sequence
/// dim, and the outputs stay the same at every committed batch and sequence
/// length (seq 1 included, where a mask could broadcast).
#[test]
fn tiny_encoder_attention_fuses_and_is_unchanged_by_o3() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/symbolic");
    for name in ["tiny_encoder", "tiny_encoder_prescaled"] {
        let model = carbide::load_model(&dir.join(format!("{name}.onnx"))).expect("loads");
        let optimized = o3(&model).expect("optimizes");
        let attention = optimized
            .graph
            .nodes
            .iter()
            .filter(|n| n.op.op_type() == "Attention")
            .count();
        assert_eq!(attention, 2, "{name}: both layers' attention fuses");
        let cases = carbide::npy::read_npz(&dir.join(format!("{name}.cases.npz"))).expect("cases");
        let mut keys: Vec<&str> = cases.iter().filter_map(|(k, _)| k.strip_suffix(".input_ids")).collect();
        keys.sort();
        assert!(!keys.is_empty());
        for key in keys {
            let feeds = ["input_ids", "attention_mask"]
                .iter()
                .map(|n| {
                    let t = cases
                        .iter()
                        .find(|(k, _)| *k == format!("{key}.{n}"))
                        .expect("input")
                        .1
                        .clone();
                    (n.to_string(), Value::Tensor(t))
                })
                .collect();
            match differential(&model, feeds) {
                Ok(Some(_)) => {}
                Ok(None) => panic!("{name} {key}: does not run before optimization"),
                Err(e) => panic!("{name} {key}: {e}"),
            }
        }
    }
}

fn read_inputs(case: &Path, model: &Model) -> Option<Vec<(String, Value)>> {
    let set = case.join("test_data_set_0");
    let mut feeds = Vec::new();
    let inputs: Vec<(String, ValueType)> = model
        .graph
        .required_inputs()
        .map(|i| (i.name.clone(), i.ty.clone()))
        .collect();
    for (k, (name, ty)) in inputs.iter().enumerate() {
        let p = set.join(format!("input_{k}.pb"));
        if !p.exists() {
            continue;
        }
        let bytes = std::fs::read(&p).ok()?;
        feeds.push((name.clone(), carbide::frontend::decode_value(&bytes, ty).ok()?));
    }
    Some(feeds)
}

/// Ops whose outputs are random: runs before and after cannot be compared.
fn random(model: &Model) -> bool {
    model.graph.nodes.iter().any(|n| {
        matches!(
            n.op.op_type(),
            "RandomNormal"
                | "RandomUniform"
                | "RandomNormalLike"
                | "RandomUniformLike"
                | "Multinomial"
                | "Bernoulli"
                | "Dropout"
        )
    })
}

#[test]
fn conformance_cases_are_unchanged_by_o3() {
    let Some(dir) = cache("onnx-node-tests") else { return };
    let cases = carbide::conformance::list_cases(&dir).expect("listing cases");
    let (mut compared, mut failures) = (0, Vec::new());
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let Ok(model) = carbide::load_model(&case.join("model.onnx")) else {
            continue;
        };
        if random(&model) {
            continue;
        }
        let Some(feeds) = read_inputs(&case, &model) else {
            continue;
        };
        let result = std::panic::catch_unwind(|| differential(&model, feeds));
        match result {
            Ok(Ok(Some(_))) => compared += 1,
            Ok(Ok(None)) => {}
            Ok(Err(e)) => failures.push(format!("{name}: {e}")),
            Err(_) => failures.push(format!("{name}: panicked")),
        }
    }
    eprintln!("{compared} conformance cases compared before and after -O3");
    assert!(
        failures.is_empty(),
        "{} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Optimizes zoo model `name` at -O3 for the cpu and the gpu cost models,
/// checks that the gpu graph still gives the reference outputs, and returns
/// (cpu graph, gpu graph, times the e-graph rule `rule` fired for the gpu).
fn cpu_and_gpu(dir: &Path, name: &str, rule: &str) -> (Model, Model, usize) {
    let model = carbide::load_model(&dir.join(format!("{name}.onnx"))).expect("loads");
    let inputs = carbide::npy::read_npz(&dir.join(format!("{name}.inputs.npz"))).expect("inputs");
    let feeds: Vec<(String, Value)> = inputs.into_iter().map(|(n, t)| (n, Value::Tensor(t))).collect();
    let optimized = |target: &str| {
        let mut m = model.clone();
        let opts = PassOptions {
            level: 3,
            verify_each: true,
            cost_target: target.into(),
            ..Default::default()
        };
        let report = optimize(&mut m, &opts).expect("optimizes");
        let fired = report.egraph.iter().filter_map(|s| s.rules_applied.get(rule)).sum();
        (m, fired)
    };
    let (cpu, _) = optimized("cpu");
    let (gpu, fired) = optimized("gpu");
    eprintln!(
        "{name} -O3: {} nodes for the cpu cost model, {} for the gpu one",
        cpu.graph.nodes.len(),
        gpu.graph.nodes.len()
    );
    let expected = carbide::Session::new(model.clone()).run(feeds.clone()).expect("runs");
    let got = carbide::Session::new(gpu.clone())
        .run(feeds)
        .expect("optimized model runs");
    for ((out, e), (_, a)) in expected.iter().zip(&got) {
        compare_values(e, a, Tolerance::default()).unwrap_or_else(|m| panic!("{name} output '{out}': {m}"));
    }
    (cpu, gpu, fired)
}

fn count(m: &Model, op: &str) -> usize {
    m.graph.nodes.iter().filter(|n| n.op.op_type() == op).count()
}

/// The e-graph's parallel Conv merge on SqueezeNet: each fire module's 1×1
/// and 3×3 expand convs read the same squeeze output and are concatenated.
/// For the GPU cost model (launches dominate) they become one 3×3 conv with
/// the 1×1 weights zero-padded, the Concat cancelled; for the CPU model the
/// zero taps cost more than they save and the fire modules stay.
#[test]
fn squeezenet_expand_convs_merge_for_the_gpu_cost_model_only() {
    let Some(dir) = cache("zoo") else { return };
    let (cpu, gpu, fired) = cpu_and_gpu(&dir, "squeezenet1_1", "merge-parallel-conv");
    assert!(fired > 0);
    assert_eq!(
        count(&cpu, "Concat"),
        8,
        "the CPU model keeps the fire modules' Concats"
    );
    assert_eq!((count(&gpu, "Concat"), count(&gpu, "Split")), (0, 0));
    // Two convs and a Concat become one conv in each of the 8 fire modules.
    assert_eq!(gpu.graph.nodes.len(), cpu.graph.nodes.len() - 16);
}

/// MiniLM's Q, K, V projections (FusedMatMul with bias after fusion) merge
/// into one wider FusedMatMul and a Split per layer for the GPU cost model;
/// on the CPU model the Split's copies outweigh the saved launches.
#[test]
fn minilm_qkv_projections_merge_for_the_gpu_cost_model_only() {
    let Some(dir) = cache("zoo") else { return };
    let (cpu, gpu, fired) = cpu_and_gpu(&dir, "minilm_l6", "merge-parallel-matmul");
    assert!(fired > 0);
    assert_eq!(count(&cpu, "Split"), 0);
    assert_eq!(count(&gpu, "Split"), 6, "one Split per layer");
    assert_eq!(gpu.graph.nodes.len(), cpu.graph.nodes.len() - 6);
}
