//! Symbolic shapes: `models/symbolic/tiny_encoder.onnx` (a 2-layer
//! transformer encoder over symbolic `batch` and `seq`, made by
//! scripts/make_tiny_encoder.py) compiles once and the one artifact runs at
//! seq 1, 7, 32, 128 and batch 1, 3, each checked against onnxruntime's
//! outputs (committed in tiny_encoder.cases.npz) at the zoo tolerance
//! 1e-4·max(1, max|ort|).
//!
//! There is no recompilation to guard against: a compiled [`Module`] holds
//! no compiler at all. Its kernels take every extent as a run-time
//! parameter (`ParamExpr`), specialized only on dims the graph fixes, so
//! one library serves every bound size. The tests check that a new shape,
//! and the same shape again, run on the very same loaded kernels.

use carbide::compile::{compile_artifact, compile_with_report, CompileOptions};
use carbide::ir::{Tensor, Value};
use carbide::runtime::Step;
use carbide::Module;
use std::collections::HashMap;
use std::path::PathBuf;

const CASES: [(usize, usize); 8] = [(1, 1), (1, 7), (1, 32), (1, 128), (3, 1), (3, 7), (3, 32), (3, 128)];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/symbolic")
}

fn model() -> carbide::ir::Model {
    model_named("tiny_encoder")
}

fn model_named(name: &str) -> carbide::ir::Model {
    carbide::load_model(&dir().join(format!("{name}.onnx"))).unwrap_or_else(|e| panic!("{name}.onnx: {e}"))
}

/// The committed inputs and onnxruntime outputs, keyed "b{batch}_s{seq}.{name}".
fn cases() -> HashMap<String, Tensor> {
    cases_named("tiny_encoder")
}

fn cases_named(name: &str) -> HashMap<String, Tensor> {
    carbide::npy::read_npz(&dir().join(format!("{name}.cases.npz")))
        .unwrap_or_else(|e| panic!("{name}.cases.npz: {e}"))
        .into_iter()
        .collect()
}

fn attention_kernels(module: &Module) -> usize {
    module
        .steps()
        .iter()
        .filter(|s| matches!(s, Step::Kernel(k) if k.call.entry.starts_with("carbide_attention_")))
        .count()
}

fn run_case(module: &Module, cases: &HashMap<String, Tensor>, batch: usize, seq: usize) -> Tensor {
    let key = format!("b{batch}_s{seq}");
    let feeds = ["input_ids", "attention_mask"]
        .iter()
        .map(|n| (n.to_string(), Value::Tensor(cases[&format!("{key}.{n}")].clone())))
        .collect();
    let outs = module
        .run(feeds)
        .unwrap_or_else(|e| panic!("batch {batch}, seq {seq}: {e}"));
    assert_eq!(outs.len(), 1);
    outs[0].1.as_tensor().expect("a tensor output").clone()
}

fn assert_close(what: &str, ours: &Tensor, reference: &Tensor) {
    assert_eq!(ours.shape(), reference.shape(), "{what}: shapes differ");
    let a = ours.to_f64_vec().unwrap();
    let b = reference.to_f64_vec().unwrap();
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    let bound = 1e-4 * b.iter().map(|y| y.abs()).fold(0.0, f64::max).max(1.0);
    assert!(diff <= bound, "{what}: max|carbide - ort| = {diff:e} > {bound:e}");
}

#[test]
fn encoder_compiles_once_and_matches_onnxruntime_at_every_batch_and_seq() {
    let (module, report) = compile_with_report(&model(), &CompileOptions::default()).expect("compiles");
    // The symbolic dims must not push the work onto the host: every matmul,
    // layer norm, softmax and GELU is a generated kernel.
    assert!(report.kernels >= 20, "{report:?}");
    // Both layers' attention fuses (the sequence dim, unknown to shape
    // inference behind the position-table Slice, is proven to be `seq`) and
    // runs as the generated attention kernel.
    assert_eq!(attention_kernels(&module), 2, "{report:?}");
    let graph = &module.model().graph;
    for step in module.steps() {
        if let Step::Host { node } = step {
            let op = graph.nodes[*node].op.op_type();
            assert!(
                !["MatMul", "LayerNormalization", "Softmax", "Erf", "Add", "Mul"].contains(&op),
                "{op} node '{}' runs on the host",
                graph.nodes[*node].name
            );
        }
    }
    let cases = cases();
    for (batch, seq) in CASES {
        let want = &cases[&format!("b{batch}_s{seq}.last_hidden_state")];
        let got = run_case(&module, &cases, batch, seq);
        assert_close(&format!("batch {batch}, seq {seq}"), &got, want);
    }
    // Same shape again: the same kernels, the same numbers.
    let again = run_case(&module, &cases, 3, 7);
    assert_eq!(again, run_case(&module, &cases, 3, 7));
}

/// The same encoder as exporters write SDPA (`--prescaled` of
/// make_tiny_encoder.py): Q and Kᵀ each scaled by √scale before their
/// product, head split/merge targets computed from `Shape` at run time.
/// Both attentions still fuse, and the numbers match onnxruntime.
#[test]
fn prescaled_exporter_style_encoder_fuses_and_matches_onnxruntime() {
    let name = "tiny_encoder_prescaled";
    let module = carbide::compile(&model_named(name), &CompileOptions::default()).expect("compiles");
    assert_eq!(attention_kernels(&module), 2);
    let cases = cases_named(name);
    for (batch, seq) in CASES {
        let want = &cases[&format!("b{batch}_s{seq}.last_hidden_state")];
        let got = run_case(&module, &cases, batch, seq);
        assert_close(&format!("{name}: batch {batch}, seq {seq}"), &got, want);
    }
}

#[test]
fn one_artifact_serves_every_shape() {
    let (bytes, report) = compile_artifact(&model(), &CompileOptions::default()).expect("compiles");
    let module = Module::from_bytes(&bytes).expect("loads");
    let kernel_steps = module.steps().iter().filter(|s| matches!(s, Step::Kernel(_))).count();
    assert_eq!(kernel_steps, report.kernels);
    let cases = cases();
    for (batch, seq) in [(3, 128), (1, 1), (3, 32)] {
        let want = &cases[&format!("b{batch}_s{seq}.last_hidden_state")];
        assert_close(
            &format!("artifact, batch {batch}, seq {seq}"),
            &run_case(&module, &cases, batch, seq),
            want,
        );
    }
}

#[test]
fn a_dim_beyond_the_position_table_is_an_error_not_a_crash() {
    let module = carbide::compile(&model(), &CompileOptions::default()).expect("compiles");
    let ids = Tensor::from_i64s(vec![0; 129]).reshaped(&[1, 129]).unwrap();
    let mask = Tensor::from_i64s(vec![1; 129]).reshaped(&[1, 129]).unwrap();
    // The 128-row position table sliced to 129 rows gives 128, not `seq`
    // rows as compiled: the first kernel reading it says so.
    let err = module
        .run(vec![
            ("input_ids".into(), Value::Tensor(ids)),
            ("attention_mask".into(), Value::Tensor(mask)),
        ])
        .expect_err("seq 129 exceeds the position table");
    let msg = err.to_string();
    assert!(
        msg.contains("'pos'") && msg.contains("128") && msg.contains("129"),
        "{msg}"
    );
}
