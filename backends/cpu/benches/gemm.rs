//! f32 GEMM micro-benchmark: generated kernels at 512³ and 1024³ on 1 and
//! 2 threads, printed as GFLOP/s and as a share of the FMA peak that the
//! benchmark measures itself with an FMA loop compiled the same way.

use carbide_backend_cpu::{build_library, lower, GroupValue, KernelGroup, LoweredKernel, Target};
use carbide_ir::kernel::{BufferArg, KernelCall, Schedule};
use carbide_ir::ndarray::{ArrayD, IxDyn};
use carbide_ir::ops::linalg::LinalgOp;
use carbide_ir::{DType, Node, Op, Tensor, TensorType};
use criterion::{criterion_group, criterion_main, Criterion};
use std::ffi::c_void;
use std::time::Instant;

type Entry = unsafe extern "C" fn(*const *mut c_void, *const i64, i64, i64);

struct Loaded {
    _lib: libloading::Library,
    entry: Entry,
    _dir: std::path::PathBuf,
}

fn load(k: &LoweredKernel, target: &Target) -> Loaded {
    let so = build_library(std::slice::from_ref(k), target).expect("build");
    let dir = std::env::temp_dir().join(format!("carbide-bench-{}-{}", std::process::id(), k.call.entry));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("k.so");
    std::fs::write(&path, so).unwrap();
    unsafe {
        let lib = libloading::Library::new(&path).unwrap();
        let entry: Entry = *lib.get::<Entry>(k.call.entry.as_bytes()).unwrap();
        Loaded {
            _lib: lib,
            entry,
            _dir: dir,
        }
    }
}

/// Bound buffers of one kernel call; `run` calls every part on its own thread.
struct Bound {
    ptrs: Vec<usize>,
    params: Vec<i64>,
    _keep: Vec<Vec<u64>>,
}

fn bind(
    k: &LoweredKernel,
    inputs: &mut [Vec<f32>],
    in_shapes: &[&[usize]],
    out: &mut [f32],
    out_shape: &[usize],
    parts: i64,
) -> Bound {
    let mut keep: Vec<Vec<u64>> = Vec::new();
    let mut ptrs = Vec::new();
    for b in &k.call.buffers {
        let p = match b {
            BufferArg::Input(i) => inputs[*i].as_mut_ptr() as usize,
            BufferArg::Output(_) => out.as_mut_ptr() as usize,
            BufferArg::Packed(i) => {
                let bytes = &k.call.packed[*i];
                let mut v = vec![0u64; bytes.len().div_ceil(8)];
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr() as *mut u8, bytes.len()) };
                keep.push(v);
                keep.last_mut().unwrap().as_mut_ptr() as usize
            }
            BufferArg::Scratch { bytes, per_part } => {
                let n =
                    bytes.eval(in_shapes, &[out_shape]).unwrap() as usize * if *per_part { parts as usize } else { 1 };
                keep.push(vec![0u64; n.div_ceil(8) + 8]);
                keep.last_mut().unwrap().as_mut_ptr() as usize
            }
        };
        ptrs.push(p);
    }
    let params = k
        .call
        .params
        .iter()
        .map(|e| e.eval(in_shapes, &[out_shape]).unwrap())
        .collect();
    Bound {
        ptrs,
        params,
        _keep: keep,
    }
}

fn run(l: &Loaded, b: &Bound, parts: i64) {
    let ptrs: Vec<*mut c_void> = b.ptrs.iter().map(|&p| p as *mut c_void).collect();
    let (pp, prm) = (ptrs.as_ptr() as usize, b.params.as_ptr() as usize);
    let f = l.entry;
    std::thread::scope(|s| {
        for part in 1..parts {
            s.spawn(move || unsafe { f(pp as *const *mut c_void, prm as *const i64, part, parts) });
        }
        unsafe { f(pp as *const *mut c_void, prm as *const i64, 0, parts) };
    });
}

/// Measures the FMA peak in GFLOP/s with `parts` threads: 12 independent
/// vector FMA chains per thread (enough to cover FMA latency x throughput).
fn fma_peak(target: &Target, parts: i64) -> f64 {
    let src = r#"
void carbide_fma_peak(void *const *bufs, const int64_t *p, int64_t part, int64_t num_parts) {
    (void)num_parts;
    vf a0 = VSET1(1.0f), a1 = VSET1(1.01f), a2 = VSET1(1.02f), a3 = VSET1(1.03f), a4 = VSET1(1.04f), a5 = VSET1(1.05f), a6 = VSET1(1.06f), a7 = VSET1(1.07f), a8 = VSET1(1.08f), a9 = VSET1(1.09f), a10 = VSET1(1.1f), a11 = VSET1(1.11f);
    const vf m = VSET1(0.999999f), c = VSET1(1e-7f);
    for (int64_t i = 0; i < p[0]; i++) {
        a0 = VFMA(a0, m, c); a1 = VFMA(a1, m, c); a2 = VFMA(a2, m, c); a3 = VFMA(a3, m, c);
        a4 = VFMA(a4, m, c); a5 = VFMA(a5, m, c); a6 = VFMA(a6, m, c); a7 = VFMA(a7, m, c);
        a8 = VFMA(a8, m, c); a9 = VFMA(a9, m, c); a10 = VFMA(a10, m, c); a11 = VFMA(a11, m, c);
    }
    vf s = VADD(VADD(VADD(a0, a1), VADD(a2, a3)), VADD(VADD(a4, a5), VADD(a6, a7)));
    s = VADD(s, VADD(VADD(a8, a9), VADD(a10, a11)));
    ((float *)bufs[0])[part] = VHSUM(s);
}
"#;
    let k = LoweredKernel {
        call: KernelCall {
            entry: "carbide_fma_peak".into(),
            buffers: vec![BufferArg::Output(0)],
            params: vec![],
            packed: vec![],
            max_parts: None,
        },
        source: src.into(),
        schedule: serde_json::from_str::<Schedule>(&carbide_backend_cpu::schedule_to_json(
            &lower_gemm(64, target).0.schedule,
        ))
        .unwrap(),
        workload: lower_gemm(64, target).0.workload,
    };
    let l = load(&k, target);
    let iters: i64 = 50_000_000;
    let mut out = vec![0f32; 8];
    let b = Bound {
        ptrs: vec![out.as_mut_ptr() as usize],
        params: vec![iters],
        _keep: vec![],
    };
    run(&l, &b, parts);
    let t = Instant::now();
    run(&l, &b, parts);
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(&out);
    (iters * 12 * 2 * target.vector_width() as i64 * parts) as f64 / secs / 1e9
}

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
    let peaks = [fma_peak(&target, 1), fma_peak(&target, 2)];
    println!(
        "measured FMA peak ({}): {:.1} GFLOP/s on 1 thread, {:.1} on 2",
        target.name(),
        peaks[0],
        peaks[1]
    );
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
            let mut times: Vec<f64> = (0..9)
                .map(|_| {
                    let t = Instant::now();
                    run(&l, &b, parts);
                    t.elapsed().as_secs_f64()
                })
                .collect();
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let gf = flops / times[4] / 1e9;
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
