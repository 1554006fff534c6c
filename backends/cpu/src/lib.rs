//! Carbide's CPU backend: turns one kernel group (an anchor op and its fused
//! elementwise chain) into C with SIMD intrinsics for x86-64 (AVX2+FMA,
//! AVX-512) or aarch64 (NEON), and builds a model's kernels into one shared
//! object with the system C compiler.
//!
//! The generated entry points follow the ABI in [`carbide_ir::kernel`].

mod attention;
mod build;
mod cexpr;
mod conv;
mod depthwise;
mod elementwise;
mod fused;
mod gemm;
mod group;
mod peak;
mod pool;
mod prelude;
mod rows;
mod space;
mod target;
mod winograd;

#[cfg(test)]
mod testutil;

pub use build::{build_library, find_c_compiler};
pub use peak::{fma_peak_flops_per_iteration, fma_peak_kernel};
pub use space::{has_knobs, schedule_space};
pub use target::{Isa, Target};

use carbide_ir::kernel::{KernelCall, Schedule, WorkloadKey};
use carbide_ir::{Node, Tensor, TensorType};

/// A value entering or leaving a kernel group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupValue {
    pub name: String,
    pub ty: TensorType,
    /// The value when it is a constant (a weight the backend may pre-pack).
    pub constant: Option<Tensor>,
}

/// A group of graph nodes to become one kernel: an anchor op and its fused
/// elementwise chain, in topological order.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelGroup {
    pub nodes: Vec<Node>,
    pub inputs: Vec<GroupValue>,
    pub outputs: Vec<GroupValue>,
}

/// One generated kernel: how to call it, its C source, and the schedule and
/// workload it was generated for (the autotuner's record key).
#[derive(Debug, Clone, PartialEq)]
pub struct LoweredKernel {
    pub call: KernelCall,
    pub source: String,
    pub schedule: Schedule,
    pub workload: WorkloadKey,
}

#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("unknown target '{0}' (expected native, x86-64-avx2, x86-64-avx512 or aarch64-neon)")]
    UnknownTarget(String),
    #[error("the host CPU is not a supported target: {0}")]
    UnsupportedHost(String),
    #[error("kernel group is malformed: {0}")]
    BadGroup(String),
    #[error("schedule does not fit kernel '{kernel}': {why}")]
    BadSchedule { kernel: String, why: String },
    #[error("no C compiler found (tried {tried}); install gcc or clang, or set CC")]
    NoCompiler { tried: String },
    #[error("C compiler '{compiler}' failed for target {target}: {stderr}")]
    CompileFailed {
        compiler: String,
        target: String,
        stderr: String,
    },
    #[error("I/O error at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Generates the kernel for `group`, or `Ok(None)` when this backend does
/// not generate code for it (the caller then tries a smaller group or runs
/// the nodes on the host). `schedule`: replay a tuned schedule; `None`
/// takes the target's heuristic default.
pub fn lower(
    group: &KernelGroup,
    target: &Target,
    schedule: Option<&Schedule>,
) -> Result<Option<LoweredKernel>, CodegenError> {
    let anchor = match group.nodes.first() {
        Some(n) => n,
        None => return Err(CodegenError::BadGroup("a kernel group needs at least one node".into())),
    };
    if matches!(anchor.op, carbide_ir::Op::Fused(_)) {
        // A fused anchor is lowered as its unfused core with the rest in the epilogue.
        return match fused::expand(group) {
            Some(expanded) => lower(&expanded, target, schedule),
            None => Ok(None),
        };
    }
    if let Some(k) = gemm::lower(group, anchor, target, schedule)? {
        return Ok(Some(k));
    }
    if let Some(k) = conv::lower(group, anchor, target, schedule)? {
        return Ok(Some(k));
    }
    if let Some(k) = pool::lower(group, target, schedule)? {
        return Ok(Some(k));
    }
    if let Some(k) = attention::lower(group, target, schedule)? {
        return Ok(Some(k));
    }
    if let Some(k) = rows::lower(group, target, schedule)? {
        return Ok(Some(k));
    }
    elementwise::lower(group, target, schedule)
}

/// Default schedule for a group, as [`lower`] would pick it (for the autotuner
/// to start from).
pub fn default_schedule(group: &KernelGroup, target: &Target) -> Result<Option<Schedule>, CodegenError> {
    Ok(lower(group, target, None)?.map(|k| k.schedule))
}

/// Serializes a schedule to the JSON the tuning records hold.
pub fn schedule_to_json(s: &Schedule) -> String {
    serde_json::to_string(s).expect("a schedule always serializes")
}

pub fn schedule_from_json(s: &str) -> Result<Schedule, serde_json::Error> {
    serde_json::from_str(s)
}
