//! The FMA loop that measures the machine's FP32 peak, built like every
//! other kernel (same compiler, flags and vector layer), so "% of peak" in
//! the benchmarks and the tuning report is relative to what this machine
//! really does.

use crate::{LoweredKernel, Target};
use carbide_ir::kernel::{BufferArg, KernelCall, Schedule, WeightLayout, WorkloadKey};

/// Independent accumulator chains: enough to cover FMA latency x throughput.
const CHAINS: usize = 12;

/// FLOPs of one loop iteration of [`fma_peak_kernel`] on one part.
pub fn fma_peak_flops_per_iteration(target: &Target) -> f64 {
    (CHAINS * 2 * target.vector_width()) as f64
}

/// The kernel: `p[0]` iterations of [`CHAINS`] independent vector FMAs per
/// part; part `i` stores its (meaningless) sum to `((float *)bufs[0])[i]`
/// so the loop is not optimized away.
pub fn fma_peak_kernel(target: &Target) -> LoweredKernel {
    const ENTRY: &str = "carbide_fma_peak";
    let mut src = format!("void {ENTRY}(void *const *bufs, const int64_t *p, int64_t part, int64_t num_parts) {{\n");
    src.push_str("    (void)num_parts;\n    int64_t iters = p[0];\n");
    for c in 0..CHAINS {
        src.push_str(&format!("    vf a{c} = VSET1({}.0f);\n", c + 1));
    }
    src.push_str("    const vf m = VSET1(0.999999f), d = VSET1(1e-7f);\n");
    src.push_str("    for (int64_t i = 0; i < iters; i++) {\n");
    for c in 0..CHAINS {
        src.push_str(&format!("        a{c} = VFMA(a{c}, m, d);\n"));
    }
    // Keeps the compiler from hoisting or vectorizing the loop away.
    src.push_str("        __asm__ volatile(\"\" ::: \"memory\");\n    }\n");
    let acc = (1..CHAINS).fold("a0".to_string(), |acc, c| format!("VADD({acc}, a{c})"));
    src.push_str(&format!("    ((float *)bufs[0])[part] = VHSUM({acc});\n}}\n"));
    LoweredKernel {
        call: KernelCall {
            entry: ENTRY.into(),
            buffers: vec![BufferArg::Output(0)],
            params: vec![],
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
