//! Every zoo model compiled to an artifact, loaded back from its bytes and
//! run, matches onnxruntime (max|carbide − ort| ≤ 1e-4·max(1, max|ort|));
//! kernels, host steps and aliases mixed in one run.
//!
//! Models come from `scripts/zoo.py`; without them a test is skipped unless
//! CARBIDE_REQUIRE_DATA=1.

mod common;

use carbide::{CompileOptions, Module};

/// Compiles, writes the artifact to bytes and loads it back.
fn compile_round_trip(model: &carbide::ir::Model) -> Module {
    let module = carbide::compile(model, &CompileOptions::default()).expect("compile");
    let bytes = module.to_bytes().expect("to_bytes");
    Module::from_bytes(&bytes).expect("from_bytes")
}

fn check_model(name: &str) {
    let Some(case) = common::zoo_case(name) else { return };
    let module = compile_round_trip(&case.model);
    let outputs = module.run(case.feeds).unwrap_or_else(|e| panic!("running {name}: {e}"));
    common::assert_matches_ort(name, &outputs, &case.expected);
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
