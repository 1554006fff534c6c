//! Every zoo model runs on the reference runtime and matches onnxruntime:
//! max|carbide - ort| <= 1e-4 * max(1, max|ort|), per output.
//!
//! The models and onnxruntime's outputs are prepared by `scripts/zoo.py`
//! (the README's test command runs it). Without them a test is skipped,
//! unless CARBIDE_REQUIRE_DATA=1 (set by the test script), where it fails.

mod common;

fn check_model(name: &str) {
    let Some(case) = common::zoo_case(name) else { return };
    let session = carbide::Session::new(case.model);
    let outputs = session
        .run(case.feeds)
        .unwrap_or_else(|e| panic!("running {name}: {e}"));
    common::assert_matches_ort(name, &outputs, &case.expected);
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
