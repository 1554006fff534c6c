//! Every zoo model runs on the reference runtime and matches onnxruntime:
//! max|carbide - ort| <= 1e-4 * max(1, max|ort|), per output.
//!
//! The models and onnxruntime's outputs are prepared by `scripts/zoo.py`
//! (the README's test command runs it). Without them a test is skipped,
//! unless CARBIDE_REQUIRE_DATA=1 (set by the test script), where it fails.

use carbide::ir::{Tensor, Value};
use std::path::PathBuf;

fn zoo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache").join("zoo")
}

/// The worst absolute difference and the reference's largest magnitude.
fn max_abs_diff(ours: &Tensor, reference: &Tensor) -> (f64, f64) {
    assert_eq!(ours.shape(), reference.shape(), "shapes differ");
    let a = ours.to_f64_vec().expect("numeric output");
    let b = reference.to_f64_vec().expect("numeric reference");
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    let scale = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
    (diff, scale)
}

fn check_model(name: &str) {
    let dir = zoo_dir();
    let model_path = dir.join(format!("{name}.onnx"));
    if !model_path.exists() {
        if std::env::var("CARBIDE_REQUIRE_DATA").is_ok_and(|v| v == "1") {
            panic!("{} is missing: run scripts/zoo.py", model_path.display());
        }
        eprintln!(
            "skipping {name}: {} not found (run scripts/zoo.py)",
            model_path.display()
        );
        return;
    }
    let model = carbide::load_model(&model_path).unwrap_or_else(|e| panic!("loading {name}: {e}"));
    let inputs = carbide::npy::read_npz(&dir.join(format!("{name}.inputs.npz"))).expect("inputs");
    let expected = carbide::npy::read_npz(&dir.join(format!("{name}.ort.npz"))).expect("ort outputs");
    let session = carbide::Session::new(model);
    let feeds = inputs.into_iter().map(|(n, t)| (n, Value::Tensor(t))).collect();
    let outputs = session.run(feeds).unwrap_or_else(|e| panic!("running {name}: {e}"));
    assert_eq!(outputs.len(), expected.len());
    for ((out_name, value), (ref_name, reference)) in outputs.iter().zip(&expected) {
        assert_eq!(out_name, ref_name);
        let ours = value.as_tensor().expect("tensor output");
        let (diff, scale) = max_abs_diff(ours, reference);
        let bound = 1e-4 * scale.max(1.0);
        assert!(
            diff <= bound,
            "{name}/{out_name}: max|carbide - ort| = {diff:e} > {bound:e}"
        );
    }
}

#[test]
fn zoo_mlp_matches_onnxruntime() {
    check_model("mlp");
}

#[test]
fn zoo_resnet18_matches_onnxruntime() {
    check_model("resnet18");
}

#[test]
fn zoo_resnet50_matches_onnxruntime() {
    check_model("resnet50");
}

#[test]
fn zoo_mobilenet_v2_matches_onnxruntime() {
    check_model("mobilenet_v2");
}

#[test]
fn zoo_squeezenet1_1_matches_onnxruntime() {
    check_model("squeezenet1_1");
}

#[test]
fn zoo_minilm_l6_matches_onnxruntime() {
    check_model("minilm_l6");
}
