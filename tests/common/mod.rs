//! Shared by the zoo tests: loading a materialized zoo model with its inputs
//! and onnxruntime's outputs, and the tolerance every run is held to:
//! max|carbide − ort| ≤ 1e-4·max(1, max|ort|), per output.
//!
//! The data comes from `scripts/zoo.py`; without it a test is skipped,
//! unless CARBIDE_REQUIRE_DATA=1 (set by scripts/test.sh), where it fails.

use carbide::ir::{Model, Tensor, Value};
use std::path::PathBuf;

/// A zoo model, its sample inputs as feeds, and onnxruntime's outputs.
pub struct ZooCase {
    pub model: Model,
    pub feeds: Vec<(String, Value)>,
    pub expected: Vec<(String, Tensor)>,
}

/// Loads `.cache/zoo/NAME.*`; `None` (after saying why) when it is missing.
pub fn zoo_case(name: &str) -> Option<ZooCase> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache").join("zoo");
    let path = dir.join(format!("{name}.onnx"));
    if !path.exists() {
        if std::env::var("CARBIDE_REQUIRE_DATA").is_ok_and(|v| v == "1") {
            panic!("{} is missing: run scripts/zoo.py", path.display());
        }
        eprintln!("skipping {name}: {} not found (run scripts/zoo.py)", path.display());
        return None;
    }
    let model = carbide::load_model(&path).unwrap_or_else(|e| panic!("loading {name}: {e}"));
    let inputs = carbide::npy::read_npz(&dir.join(format!("{name}.inputs.npz"))).expect("inputs");
    let expected = carbide::npy::read_npz(&dir.join(format!("{name}.ort.npz"))).expect("ort outputs");
    let feeds = inputs.into_iter().map(|(n, t)| (n, Value::Tensor(t))).collect();
    Some(ZooCase { model, feeds, expected })
}

/// Asserts that `outputs` match onnxruntime's within the zoo tolerance.
pub fn assert_matches_ort(name: &str, outputs: &[(String, Value)], expected: &[(String, Tensor)]) {
    assert_eq!(outputs.len(), expected.len());
    for ((out_name, value), (ref_name, reference)) in outputs.iter().zip(expected) {
        assert_eq!(out_name, ref_name);
        let ours = value.as_tensor().expect("tensor output");
        assert_eq!(ours.shape(), reference.shape(), "{name}/{out_name}: shapes differ");
        let a = ours.to_f64_vec().expect("numeric output");
        let b = reference.to_f64_vec().expect("numeric reference");
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        let bound = 1e-4 * b.iter().map(|y| y.abs()).fold(0.0, f64::max).max(1.0);
        assert!(
            diff <= bound,
            "{name}/{out_name}: max|carbide - ort| = {diff:e} > {bound:e}"
        );
    }
}
