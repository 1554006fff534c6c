//! The machine's FP32 FMA peak, measured with an FMA loop kernel built like
//! every other kernel (same compiler, flags and vector layer), so "% of
//! peak" in the tuning report is relative to what this machine really does.

use carbide_backend_cpu::{build_library, LoweredKernel, Target};
use carbide_ir::kernel::{BufferArg, KernelCall, ParamExpr, Schedule, WeightLayout, WorkloadKey};
use std::ffi::c_void;
use std::time::Instant;

const ENTRY: &str = "carbide_autotune_fma_peak";
/// Independent accumulator chains: enough to cover FMA latency x throughput.
const CHAINS: usize = 12;

fn fma_kernel(target: &Target) -> LoweredKernel {
    let mut src = String::new();
    src.push_str(&format!(
        "void {ENTRY}(void *const *bufs, const int64_t *p, int64_t part, int64_t num_parts) {{\n"
    ));
    src.push_str("    (void)part; (void)num_parts;\n    int64_t iters = p[0];\n");
    for c in 0..CHAINS {
        src.push_str(&format!("    vf a{c} = VSET1({}.0f);\n", c + 1));
    }
    src.push_str("    vf b = VSET1(0.999999f), d = VSET1(1e-7f);\n");
    src.push_str("    for (int64_t i = 0; i < iters; i++) {\n");
    for c in 0..CHAINS {
        src.push_str(&format!("        a{c} = VFMA(a{c}, b, d);\n"));
    }
    // Keeps the compiler from hoisting or vectorizing the loop away.
    src.push_str("        __asm__ volatile(\"\" ::: \"memory\");\n    }\n");
    let sum: Vec<String> = (0..CHAINS).map(|c| format!("a{c}")).collect();
    let mut acc = sum[0].clone();
    for s in &sum[1..] {
        acc = format!("VADD({acc}, {s})");
    }
    src.push_str(&format!("    VSTORE((float *)bufs[0], {acc});\n}}\n"));
    LoweredKernel {
        call: KernelCall {
            entry: ENTRY.into(),
            buffers: vec![BufferArg::Output(0)],
            params: vec![ParamExpr::Const(0)],
            packed: vec![],
            max_parts: None,
        },
        source: src,
        schedule: Schedule {
            tiles: Default::default(),
            loop_order: vec![],
            vector_axis: None,
            vector_width: target.vector_width(),
            unroll: Default::default(),
            parallel_axis: None,
            weight_layout: WeightLayout::RowMajor,
            microkernel: None,
        },
        workload: WorkloadKey {
            op: "fma_peak".into(),
            shapes: vec![],
            dtypes: vec!["f32".into()],
            epilogue: vec![],
            attrs: vec![],
            target: target.name().into(),
        },
    }
}

type KernelFn = unsafe extern "C" fn(*const *mut c_void, *const i64, i64, i64);

/// Peak FP32 GFLOP/s of `threads` cores (the single-core peak times `threads`).
pub fn measure_fma_peak(target: &Target, threads: usize) -> Result<f64, String> {
    if !target.runs_on_host() {
        return Err(format!("target {} does not run on this machine", target.name()));
    }
    let lib = build_library(&[fma_kernel(target)], target).map_err(|e| e.to_string())?;
    let path = std::env::temp_dir().join(format!(
        "carbide-fma-peak-{}-{}.so",
        std::process::id(),
        crate::records::now_secs()
    ));
    std::fs::write(&path, &lib).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: the library is the FMA loop generated above.
    let loaded = unsafe { libloading::Library::new(&path) };
    let _ = std::fs::remove_file(&path);
    let loaded = loaded.map_err(|e| e.to_string())?;
    // SAFETY: the symbol has the kernel ABI's signature (see fma_kernel).
    let f: KernelFn = unsafe { *loaded.get::<KernelFn>(ENTRY.as_bytes()).map_err(|e| e.to_string())? };
    let vw = target.vector_width();
    let run = |iters: i64| -> f64 {
        let mut out = vec![0f32; vw];
        let bufs = [out.as_mut_ptr() as *mut c_void];
        let params = [iters];
        let t = Instant::now();
        // SAFETY: bufs[0] holds vw floats, params[0] is the loop count.
        unsafe { f(bufs.as_ptr(), params.as_ptr(), 0, 1) };
        std::hint::black_box(&out);
        t.elapsed().as_secs_f64()
    };
    // Short runs (~2 ms, within one scheduler time slice), best of many:
    // on a shared machine most runs lose the core for a while, and the
    // fastest one is the undisturbed one. Long runs would all be disturbed
    // and understate the peak (the kernels are timed the same way).
    let mut iters: i64 = 1 << 10;
    while run(iters) < 0.0005 && iters < 1 << 34 {
        iters *= 2;
    }
    let iters = (iters as f64 * 0.002 / run(iters).max(1e-7)).max(1.0) as i64;
    let flops_per_run = (iters as f64) * (CHAINS * vw * 2) as f64;
    // One core at a time: cores are alike.
    let best_secs = (0..200).map(|_| run(iters)).fold(f64::INFINITY, f64::min);
    let best = flops_per_run / best_secs / 1e9 * threads.max(1) as f64;
    Ok(best)
}
