//! f32 GEMM micro-benchmark: generated kernels at 512³ and 1024³ on 1 and
//! 2 threads, printed as GFLOP/s and as a share of the FMA peak that the
//! benchmark measures itself with an FMA loop compiled the same way.

#[allow(dead_code)] // the shared harness serves several benchmarks
mod common;

use carbide_backend_cpu::{lower, GroupValue, KernelGroup, LoweredKernel, Target};
use carbide_ir::ndarray::{ArrayD, IxDyn};
use carbide_ir::ops::linalg::LinalgOp;
use carbide_ir::{DType, Node, Op, Tensor, TensorType};
use common::{bind, load, median_secs, print_fma_peaks, run};
use criterion::{criterion_group, criterion_main, Criterion};

fn lower_gemm(n: usize, target: &Target) -> (LoweredKernel, Vec<Vec<f32>>) {
    let shape = vec![n, n];
    let ty = TensorType::new(DType::F32, carbide_ir::types::shape_of(&shape));
    let data: Vec<f32> = (0..n * n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    let w = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&shape), data.clone()).unwrap());
    let g = KernelGroup {
        nodes: vec![Node {
            name: "mm".into(),
            op: Op::Linalg(LinalgOp::MatMul),
            inputs: vec!["a".into(), "w".into()],
            outputs: vec!["y".into()],
        }],
        inputs: vec![
            GroupValue {
                name: "a".into(),
                ty: ty.clone(),
                constant: None,
            },
            GroupValue {
                name: "w".into(),
                ty: ty.clone(),
                constant: Some(w),
            },
        ],
        outputs: vec![GroupValue {
            name: "y".into(),
            ty,
            constant: None,
        }],
    };
    (lower(&g, target, None).unwrap().unwrap(), vec![data.clone(), data])
}

fn bench(c: &mut Criterion) {
    let target = Target::host().expect("host target");
    let peaks = print_fma_peaks(&target);
    for n in [512usize, 1024] {
        let (k, mut inputs) = lower_gemm(n, &target);
        if let Some(dir) = std::env::var_os("CARBIDE_DUMP_SOURCE") {
            std::fs::write(std::path::Path::new(&dir).join(format!("gemm{n}.c")), &k.source).unwrap();
        }
        let l = load(&k, &target);
        let mut out = vec![0f32; n * n];
        for (ti, parts) in [1i64, 2].into_iter().enumerate() {
            let shape = [n, n];
            let b = bind(&k, &mut inputs, &[&shape, &shape], &mut out, &shape, parts);
            let flops = 2.0 * (n * n * n) as f64;
            // A direct measurement to print GFLOP/s (median of 9 runs) next to criterion's timing.
            let gf = flops / median_secs(9, || run(&l, &b, parts)) / 1e9;
            println!(
                "gemm {n}^3, {parts} thread(s): {gf:.1} GFLOP/s = {:.0}% of measured peak {:.1} ({:.0}% of the nominal {:.1})",
                100.0 * gf / peaks[ti],
                peaks[ti],
                100.0 * gf / (116.8 * parts as f64),
                116.8 * parts as f64
            );
            c.bench_function(&format!("gemm_{n}_t{parts}"), |bch| bch.iter(|| run(&l, &b, parts)));
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(300));
    targets = bench
}
criterion_main!(benches);
