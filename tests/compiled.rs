//! Every zoo model compiled to an artifact, loaded back from its bytes and
//! run, matches onnxruntime (max|carbide − ort| ≤ 1e-4·max(1, max|ort|));
//! kernels, host steps and aliases mixed in one run.
//!
//! Models come from `scripts/zoo.py`; without them a test is skipped unless
//! CARBIDE_REQUIRE_DATA=1.

use carbide::ir::{Tensor, Value};
use carbide::{CompileOptions, Module};
use std::path::PathBuf;

fn zoo_model(name: &str) -> Option<(carbide::ir::Model, PathBuf)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache").join("zoo");
    let path = dir.join(format!("{name}.onnx"));
    if !path.exists() {
        if std::env::var("CARBIDE_REQUIRE_DATA").is_ok_and(|v| v == "1") {
            panic!("{} is missing: run scripts/zoo.py", path.display());
        }
        eprintln!("skipping {name}: {} not found (run scripts/zoo.py)", path.display());
        return None;
    }
    Some((
        carbide::load_model(&path).unwrap_or_else(|e| panic!("loading {name}: {e}")),
        dir,
    ))
}

/// Compiles, writes the artifact to bytes and loads it back.
fn compile_round_trip(model: &carbide::ir::Model) -> Module {
    let module = carbide::compile(model, &CompileOptions::default()).expect("compile");
    let bytes = module.to_bytes().expect("to_bytes");
    Module::from_bytes(&bytes).expect("from_bytes")
}

fn max_abs_diff(ours: &Tensor, reference: &Tensor) -> (f64, f64) {
    assert_eq!(ours.shape(), reference.shape(), "shapes differ");
    let a = ours.to_f64_vec().expect("numeric output");
    let b = reference.to_f64_vec().expect("numeric reference");
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    let scale = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
    (diff, scale)
}

fn check_model(name: &str) {
    let Some((model, dir)) = zoo_model(name) else { return };
    let module = compile_round_trip(&model);
    let inputs = carbide::npy::read_npz(&dir.join(format!("{name}.inputs.npz"))).expect("inputs");
    let expected = carbide::npy::read_npz(&dir.join(format!("{name}.ort.npz"))).expect("ort outputs");
    let feeds = inputs.into_iter().map(|(n, t)| (n, Value::Tensor(t))).collect();
    let outputs = module.run(feeds).unwrap_or_else(|e| panic!("running {name}: {e}"));
    assert_eq!(outputs.len(), expected.len());
    for ((out_name, value), (ref_name, reference)) in outputs.iter().zip(&expected) {
        assert_eq!(out_name, ref_name);
        let (diff, scale) = max_abs_diff(value.as_tensor().expect("tensor output"), reference);
        let bound = 1e-4 * scale.max(1.0);
        assert!(
            diff <= bound,
            "{name}/{out_name}: max|carbide - ort| = {diff:e} > {bound:e}"
        );
    }
}

#[test]
fn compiled_mlp_matches_onnxruntime() {
    check_model("mlp");
}

#[test]
fn compiled_resnet18_matches_onnxruntime() {
    check_model("resnet18");
}

#[test]
fn compiled_resnet50_matches_onnxruntime() {
    check_model("resnet50");
}

#[test]
fn compiled_mobilenet_v2_matches_onnxruntime() {
    check_model("mobilenet_v2");
}

#[test]
fn compiled_squeezenet1_1_matches_onnxruntime() {
    check_model("squeezenet1_1");
}

#[test]
fn compiled_minilm_l6_matches_onnxruntime() {
    check_model("minilm_l6");
}
