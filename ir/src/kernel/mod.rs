//! The Kernel IR: what a backend compiles and what the runtime calls.
//!
//! This module holds the *call contract* between the compiler (which cuts a
//! graph into kernels and asks a backend to generate each one) and the
//! runtime (which binds buffers and runs the compiled code). The loop-nest
//! form and the schedule live in submodules owned by the backends' work;
//! the call contract is deliberately small and target-neutral so that the
//! CPU, GPU and FPGA backends share it.
//!
//! Every generated kernel has one C-ABI entry point:
//!
//! ```c
//! void entry(void *const *buffers, const int64_t *params, int64_t part, int64_t num_parts);
//! ```
//!
//! `buffers[i]` is bound as [`KernelCall::buffers`]`[i]` says, `params[j]` is
//! [`KernelCall::params`]`[j]` evaluated on the bound shapes, and the kernel
//! does the share `part` of `num_parts` of its work (it splits its parallel
//! axis itself), so the runtime's thread pool calls it once per part. A
//! kernel never allocates, keeps no global state, and is safe to call for
//! different parts concurrently.

pub mod loops;
pub mod schedule;

pub use loops::{Access, BinaryFn, Expr, Loop, LoopKind, LoopNest, UnaryFn};
pub use schedule::{MicroTile, Schedule, WeightLayout, WorkloadKey};

use serde::{Deserialize, Serialize};

/// Where one entry of a kernel's `buffers` array points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BufferArg {
    /// The kernel's `i`-th input value (dense, row-major, its own dtype).
    Input(usize),
    /// The kernel's `i`-th output value (dense, row-major).
    Output(usize),
    /// A weight the compiler already re-laid out; `index` is into
    /// [`KernelCall::packed`]. The bytes are stored in the artifact aligned
    /// to 64 bytes.
    Packed(usize),
    /// Scratch memory of `bytes` bytes (an expression, so it can grow with
    /// symbolic dims): one region per part when `per_part`, else one region
    /// shared by all parts. With `per_part`, the runtime binds one block of
    /// `bytes * num_parts` bytes (64-byte aligned) and part `p` uses bytes
    /// `[p * bytes, (p + 1) * bytes)`; generated kernels keep `bytes` a
    /// multiple of 64 so every region stays aligned.
    Scratch { bytes: ParamExpr, per_part: bool },
}

/// A runtime integer a kernel receives: shapes are only known when inputs
/// arrive, so kernels take their extents as parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParamExpr {
    Const(i64),
    /// Extent of axis `axis` of the kernel's input `input`.
    InputDim {
        input: usize,
        axis: usize,
    },
    /// Extent of axis `axis` of the kernel's output `output`.
    OutputDim {
        output: usize,
        axis: usize,
    },
    Mul(Box<ParamExpr>, Box<ParamExpr>),
    Add(Box<ParamExpr>, Box<ParamExpr>),
    /// Ceiling division.
    CeilDiv(Box<ParamExpr>, Box<ParamExpr>),
}

impl ParamExpr {
    /// Evaluates the expression on the bound shapes of the kernel's inputs
    /// and outputs. `None` when an axis is out of range or arithmetic
    /// overflows: the caller reports it as an invalid binding.
    pub fn eval(&self, inputs: &[&[usize]], outputs: &[&[usize]]) -> Option<i64> {
        Some(match self {
            ParamExpr::Const(c) => *c,
            ParamExpr::InputDim { input, axis } => i64::try_from(*inputs.get(*input)?.get(*axis)?).ok()?,
            ParamExpr::OutputDim { output, axis } => i64::try_from(*outputs.get(*output)?.get(*axis)?).ok()?,
            ParamExpr::Mul(a, b) => a.eval(inputs, outputs)?.checked_mul(b.eval(inputs, outputs)?)?,
            ParamExpr::Add(a, b) => a.eval(inputs, outputs)?.checked_add(b.eval(inputs, outputs)?)?,
            ParamExpr::CeilDiv(a, b) => {
                let (a, b) = (a.eval(inputs, outputs)?, b.eval(inputs, outputs)?);
                if b <= 0 || a < 0 {
                    return None;
                }
                (a + b - 1) / b
            }
        })
    }
}

/// How the runtime calls one compiled kernel: the symbol in the kernel
/// library, what each buffer slot binds to, and the integer parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelCall {
    /// Exported symbol of the entry point in the compiled library.
    pub entry: String,
    pub buffers: Vec<BufferArg>,
    pub params: Vec<ParamExpr>,
    /// Packed weights (see [`BufferArg::Packed`]), raw bytes in the layout
    /// the kernel's schedule chose.
    pub packed: Vec<Vec<u8>>,
    /// Upper bound on useful parallelism (e.g. the number of row tiles);
    /// the runtime calls at most this many parts. `None`: as many as threads.
    pub max_parts: Option<ParamExpr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_expr_evaluates_on_bound_shapes() {
        let e = ParamExpr::CeilDiv(
            Box::new(ParamExpr::Mul(
                Box::new(ParamExpr::InputDim { input: 0, axis: 1 }),
                Box::new(ParamExpr::OutputDim { output: 0, axis: 0 }),
            )),
            Box::new(ParamExpr::Const(4)),
        );
        assert_eq!(e.eval(&[&[2, 3]], &[&[5]]), Some(4));
        assert_eq!(ParamExpr::InputDim { input: 1, axis: 0 }.eval(&[&[2]], &[]), None);
        assert_eq!(
            ParamExpr::CeilDiv(Box::new(ParamExpr::Const(1)), Box::new(ParamExpr::Const(0))).eval(&[], &[]),
            None
        );
    }
}
