//! A compiled model run through `Module::run_into` on its memory plan makes
//! no heap allocation once warm: a counting global allocator (this test
//! binary's own) counts every allocation over ten runs. The planned runs
//! still match the reference runtime and onnxruntime.
//!
//! One test function, so no other test of this binary allocates meanwhile.

mod common;

use carbide::ir::{Tensor, Value};
use carbide::runtime::Step;
use carbide::runtime::{TensorMut, TensorRef};
use carbide::{CompileOptions, Module};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

struct CountingAllocator;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Checks `run` against the reference runtime, then counts the allocations
/// of ten warm `run_into` calls (and that they reproduce `run`'s outputs).
fn check(name: &str, model: &carbide::ir::Model, feeds: Vec<(String, Value)>) -> Vec<(String, Value)> {
    let module = carbide::compile(
        model,
        &CompileOptions {
            threads: Some(2),
            ..CompileOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("compiling {name}: {e}"));
    // Through the artifact bytes, as a deployed model would run.
    let mut module = Module::from_bytes(&module.to_bytes().unwrap()).unwrap();
    module.set_threads(2).unwrap();
    assert!(
        module.steps().iter().all(|s| !matches!(s, Step::Host { .. })),
        "{name}: a host step would allocate by design; pick a model of kernels and aliases"
    );
    let shapes: Vec<Vec<usize>> = module
        .inputs()
        .iter()
        .map(|i| {
            feeds
                .iter()
                .find(|(n, _)| *n == i.name)
                .unwrap()
                .1
                .as_tensor()
                .unwrap()
                .shape()
                .to_vec()
        })
        .collect();
    let stats = module.plan_stats(&shapes).unwrap().expect("the model is planned");
    assert!(
        stats.arena_bytes < stats.total_intermediate_bytes && stats.peak_live_bytes <= stats.arena_bytes,
        "{name}: {stats:?}"
    );
    let reference = carbide::Session::new(model.clone()).run(feeds.clone()).unwrap();
    let planned = module.run(feeds.clone()).unwrap();
    for ((n, r), (_, p)) in reference.iter().zip(&planned) {
        let (r, p) = (r.as_tensor().unwrap(), p.as_tensor().unwrap());
        let bound = 1e-4 * r.to_f64_vec().unwrap().iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let d = max_abs_diff(r, p);
        assert!(
            d <= bound,
            "{name}/{n}: planned run differs from the reference by {d:e}"
        );
    }

    let feed_tensors: Vec<Tensor> = module
        .inputs()
        .iter()
        .map(|i| {
            let (_, v) = feeds.iter().find(|(n, _)| *n == i.name).expect("feed");
            v.as_tensor().unwrap().clone()
        })
        .collect();
    let mut outs: Vec<Tensor> = planned.iter().map(|(_, v)| v.as_tensor().unwrap().clone()).collect();
    for t in &mut outs {
        // So a run that writes nothing cannot pass.
        *t = Tensor::zeros(t.dtype(), t.shape()).unwrap();
    }
    let shapes: Vec<Vec<usize>> = outs.iter().map(|t| t.shape().to_vec()).collect();
    let inputs: Vec<TensorRef<'_>> = feed_tensors
        .iter()
        .map(|t| TensorRef::from_tensor(t).unwrap())
        .collect();
    let mut bufs: Vec<Vec<u8>> = outs.iter().map(|t| t.to_le_bytes().unwrap()).collect();
    let mut outputs: Vec<TensorMut<'_>> = bufs
        .iter_mut()
        .zip(&outs)
        .zip(&shapes)
        .map(|((b, t), s)| TensorMut {
            dtype: t.dtype(),
            shape: s,
            bytes: b.as_mut_slice(),
        })
        .collect();
    for _ in 0..3 {
        module.run_into(&inputs, &mut outputs).unwrap();
    }
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..10 {
        module.run_into(&inputs, &mut outputs).unwrap();
    }
    let allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;
    assert_eq!(
        allocations, 0,
        "{name}: 10 warm run_into calls allocated {allocations} times"
    );
    drop(outputs);

    // The counter does count: `run` allocates its outputs.
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    module.run(feeds).unwrap();
    assert!(ALLOCATIONS.load(Ordering::SeqCst) > before);

    for ((b, t), (n, p)) in bufs.iter().zip(&outs).zip(&planned) {
        let got = Tensor::from_le_bytes(t.dtype(), t.shape(), b).unwrap();
        let d = max_abs_diff(&got, p.as_tensor().unwrap());
        assert!(d == 0.0, "{name}/{n}: run_into differs from run by {d:e}");
    }
    planned
}

#[test]
fn warm_planned_runs_do_not_allocate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/example");
    let model = carbide::load_model(&dir.join("tiny_cnn.onnx")).unwrap();
    let inputs = carbide::npy::read_npz(&dir.join("tiny_cnn.inputs.npz")).unwrap();
    let feeds: Vec<(String, Value)> = inputs.into_iter().map(|(n, t)| (n, Value::Tensor(t))).collect();
    check("tiny_cnn", &model, feeds);

    if let Some(case) = common::zoo_case("mlp") {
        let outputs = check("mlp", &case.model, case.feeds);
        common::assert_matches_ort("mlp", &outputs, &case.expected);
    }
}
