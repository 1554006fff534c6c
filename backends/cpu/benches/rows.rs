//! Row, pooling and attention kernels at the zoo's shapes (minilm's
//! LayerNorm, softmax and attention; squeezenet's and resnet's max pools;
//! mobilenet's global average pool), on 1 and 2 threads. Small kernels
//! take microseconds, so the second thread is a persistent spinning worker
//! rather than a thread spawned per call. Prints a median table
//! (`cargo bench -p carbide-backend-cpu --bench rows`).

#[allow(dead_code)] // the shared harness also serves the GEMM and conv benchmarks
mod common;

use carbide_backend_cpu::{lower, GroupValue, KernelGroup, LoweredKernel, Target};
use carbide_ir::ops::linalg::{AttentionAttrs, LinalgOp, SoftmaxAttrs, SoftmaxKind};
use carbide_ir::ops::nn::{AutoPad, NnOp, PoolAttrs};
use carbide_ir::{DType, Node, Op, TensorType};
use common::{bind, load, median_secs, Helper};
use criterion::{criterion_group, criterion_main, Criterion};
use std::ffi::c_void;

fn tt(shape: &[usize]) -> TensorType {
    TensorType::new(DType::F32, carbide_ir::types::shape_of(shape))
}

fn value(name: &str, shape: &[usize]) -> GroupValue {
    GroupValue {
        name: name.into(),
        ty: tt(shape),
        constant: None,
    }
}

/// A one-node group over inputs `ins` (name, shape) with output shape `out`.
fn group(op: Op, ins: &[(&str, &[usize])], out: &[usize]) -> KernelGroup {
    KernelGroup {
        nodes: vec![Node {
            name: "k".into(),
            op,
            inputs: ins.iter().map(|(n, _)| n.to_string()).collect(),
            outputs: vec!["y".into()],
        }],
        inputs: ins.iter().map(|(n, s)| value(n, s)).collect(),
        outputs: vec![value("y", out)],
    }
}

/// A k x k pool over a [1, C, S, S] input (`cs` = [C, S]) with output side `out`.
fn pool(max: bool, k: i64, s: i64, pad: i64, ceil: bool, cs: [usize; 2], out: usize) -> KernelGroup {
    let a = PoolAttrs {
        auto_pad: AutoPad::NotSet,
        ceil_mode: ceil,
        dilations: None,
        kernel_shape: vec![k, k],
        pads: Some(vec![pad; 4]),
        strides: Some(vec![s, s]),
        storage_order: 0,
        count_include_pad: false,
        p: 2.0,
    };
    let op = Op::Nn(if max { NnOp::MaxPool(a) } else { NnOp::AveragePool(a) });
    group(op, &[("x", &[1, cs[0], cs[1], cs[1]])], &[1, cs[0], out, out])
}

/// (name, group) at the zoo models' shapes.
fn cases() -> Vec<(&'static str, KernelGroup)> {
    let ln = Op::Nn(NnOp::LayerNormalization {
        axis: -1,
        epsilon: 1e-12,
        stash_type: 1,
    });
    let softmax = Op::Linalg(LinalgOp::Softmax(SoftmaxAttrs {
        kind: SoftmaxKind::Softmax,
        axis: -1,
        flatten: false,
    }));
    let attention = Op::Linalg(LinalgOp::Attention(AttentionAttrs {
        q_num_heads: Some(12),
        kv_num_heads: Some(12),
        ..Default::default()
    }));
    let s = [1usize, 128, 384];
    vec![
        (
            "layernorm_128x384",
            group(ln, &[("x", &s), ("g", &[384]), ("b", &[384])], &s),
        ),
        (
            "softmax_12x128x128",
            group(softmax, &[("x", &[12, 128, 128])], &[12, 128, 128]),
        ),
        ("maxpool3s2_64x111x111", pool(true, 3, 2, 0, true, [64, 111], 55)),
        ("maxpool3s2p1_64x112x112", pool(true, 3, 2, 1, false, [64, 112], 56)),
        ("avgpool3s1p1_32x28x28", pool(false, 3, 1, 1, false, [32, 28], 28)),
        (
            "globalavgpool_1280x7x7",
            group(
                Op::Nn(NnOp::GlobalAveragePool),
                &[("x", &[1, 1280, 7, 7])],
                &[1, 1280, 1, 1],
            ),
        ),
        (
            "attention_128x12x32",
            group(
                attention,
                &[("q", &s), ("k", &s), ("v", &s), ("m", &[1, 1, 1, 128])],
                &s,
            ),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let target = Target::host().expect("host target");
    let helper = Helper::new();
    // `cargo bench --bench rows -- NAME` measures only the cases whose name contains NAME.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    for (name, g) in cases() {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let k: LoweredKernel = lower(&g, &target, None)
            .expect("lower")
            .unwrap_or_else(|| panic!("{name}: not generated"));
        if let Some(dir) = std::env::var_os("CARBIDE_DUMP_SOURCE") {
            std::fs::write(std::path::Path::new(&dir).join(format!("{name}.c")), &k.source).unwrap();
        }
        let l = load(&k, &target);
        let shapes: Vec<Vec<usize>> = g
            .inputs
            .iter()
            .map(|v| {
                v.ty.shape
                    .as_ref()
                    .unwrap()
                    .iter()
                    .map(|d| d.known().unwrap())
                    .collect()
            })
            .collect();
        let mut inputs: Vec<Vec<f32>> = shapes
            .iter()
            .map(|s| {
                (0..s.iter().product::<usize>())
                    .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                    .collect()
            })
            .collect();
        let out_shape: Vec<usize> = g.outputs[0]
            .ty
            .shape
            .as_ref()
            .unwrap()
            .iter()
            .map(|d| d.known().unwrap())
            .collect();
        let mut out = vec![0f32; out_shape.iter().product()];
        let in_shapes: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
        let mut line = format!("{name:>26}:");
        for parts in [1i64, 2] {
            let b = bind(&k, &mut inputs, &in_shapes, &mut out, &out_shape, parts);
            let ptrs: Vec<*mut c_void> = b.ptrs.iter().map(|&p| p as *mut c_void).collect();
            for _ in 0..20 {
                helper.run(&l, &ptrs, &b, parts);
            }
            let us = median_secs(201, || helper.run(&l, &ptrs, &b, parts)) * 1e6;
            line.push_str(&format!("  {parts} thread(s) median {us:8.1} us"));
            c.bench_function(&format!("{name}_t{parts}"), |bch| {
                bch.iter(|| helper.run(&l, &ptrs, &b, parts))
            });
        }
        println!("{line}");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(1)).warm_up_time(std::time::Duration::from_millis(200));
    targets = bench
}
criterion_main!(benches);
