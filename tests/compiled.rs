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

/// Its fire modules end in a Concat of two conv kernels' outputs: the plan
/// has both convs write into their halves of the result (no copy), and the
/// outputs must still match.
#[test]
fn compiled_squeezenet1_1_matches_onnxruntime() {
    check_model("squeezenet1_1");
    let Some(case) = common::zoo_case("squeezenet1_1") else {
        return;
    };
    let module = compile_round_trip(&case.model);
    let shapes: Vec<Vec<usize>> = case
        .feeds
        .iter()
        .map(|(_, v)| v.as_tensor().unwrap().shape().to_vec())
        .collect();
    let stats = module
        .plan_stats(&shapes)
        .unwrap()
        .expect("squeezenet plans statically");
    assert_eq!(stats.in_place_concats, 8, "{stats:?}");
    assert_eq!(stats.host_steps, 0, "{stats:?}");
}

#[test]
fn compiled_minilm_l6_matches_onnxruntime() {
    check_model("minilm_l6");
}

fn tiny_cnn() -> carbide::ir::Model {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/example/tiny_cnn.onnx");
    carbide::load_model(&path).expect("tiny_cnn")
}

/// Deterministic pseudo-random image batch for tiny_cnn.
fn image(batch: usize, seed: u64) -> Vec<(String, carbide::ir::Value)> {
    let mut x = seed;
    let data: Vec<f32> = (0..batch * 3 * 32 * 32)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    let t = carbide::ir::Tensor::from_f32s(data)
        .reshaped(&[batch, 3, 32, 32])
        .unwrap();
    vec![("image".to_string(), carbide::ir::Value::Tensor(t))]
}

fn assert_close(a: &[(String, carbide::ir::Value)], b: &[(String, carbide::ir::Value)], what: &str) {
    for ((n, x), (_, y)) in a.iter().zip(b) {
        let (x, y) = (x.as_tensor().unwrap(), y.as_tensor().unwrap());
        assert_eq!(x.shape(), y.shape(), "{what}/{n}");
        let d = (x.to_f64_vec().unwrap().iter())
            .zip(y.to_f64_vec().unwrap())
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f64::max);
        assert!(d <= 1e-5, "{what}/{n}: differs by {d:e}");
    }
}

/// A symbolic batch gets one memory plan per bound size: switching sizes
/// back and forth, and through more sizes than the plan cache keeps (so
/// plans are evicted and rebuilt), keeps matching the reference.
#[test]
fn planned_runs_at_changing_batch_sizes_match_the_reference() {
    let model = tiny_cnn();
    let module = compile_round_trip(&model);
    let reference = carbide::Session::new(model);
    let sizes = [1, 3, 2, 1, 3, 4, 2].into_iter().chain(5..=13).chain([1, 2]);
    for (i, batch) in sizes.enumerate() {
        let feeds = image(batch, i as u64);
        let ours = module.run(feeds.clone()).unwrap();
        assert_close(&ours, &reference.run(feeds).unwrap(), &format!("batch {batch}"));
    }
}

/// Concurrent runs each get their own arena.
#[test]
fn concurrent_planned_runs_do_not_share_memory() {
    let model = tiny_cnn();
    let module = compile_round_trip(&model);
    let reference = carbide::Session::new(model);
    let expected: Vec<_> = (0..4).map(|s| reference.run(image(2, s)).unwrap()).collect();
    std::thread::scope(|scope| {
        for (s, want) in expected.iter().enumerate() {
            let module = &module;
            scope.spawn(move || {
                for _ in 0..20 {
                    let got = module.run(image(2, s as u64)).unwrap();
                    assert_close(&got, want, &format!("thread {s}"));
                }
            });
        }
    });
}
