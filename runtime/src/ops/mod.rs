//! Host kernels: the reference semantics of every op, one module per op
//! family (mirroring `carbide_ir::ops`).

use crate::error::{invalid, OpError, OpResult};
use carbide_ir::{Graph, Op, Tensor, Value};

pub mod control;
pub mod elementwise;
pub mod fused;
pub mod image;
pub mod linalg;
pub mod misc;
pub mod nn;
pub mod reduce;
pub mod tensor;

/// Runs a subgraph (If branch, Loop/Scan body) in the scope of the node
/// that holds it; implemented by the interpreter.
pub trait SubgraphRunner {
    /// Binds `inputs` to the graph's declared inputs in order and returns
    /// its outputs in order. Names not bound are looked up in the enclosing
    /// scopes.
    fn run_subgraph(&self, graph: &Graph, inputs: Vec<Value>) -> OpResult<Vec<Value>>;
}

/// What a kernel may know about the node besides its inputs.
pub struct EvalCtx<'a> {
    /// Number of output slots of the node (absent ones included).
    pub num_outputs: usize,
    pub runner: &'a dyn SubgraphRunner,
    /// Seed for ops that draw random numbers without a `seed` attribute.
    pub seed: u64,
}

/// Evaluates one op. `inputs[i]` is `None` for an absent optional input.
/// Returns the outputs in order (at least as many as the node names).
pub fn eval(op: &Op, inputs: &[Option<&Value>], cx: &EvalCtx) -> OpResult<Vec<Value>> {
    match op {
        Op::Elementwise(o) => elementwise::eval(o, inputs, cx),
        Op::Tensor(o) => tensor::eval(o, inputs, cx),
        Op::Nn(o) => nn::eval(o, inputs, cx),
        Op::Linalg(o) => linalg::eval(o, inputs, cx),
        Op::Reduce(o) => reduce::eval(o, inputs, cx),
        Op::Control(o) => control::eval(o, inputs, cx),
        Op::Misc(o) => misc::eval(o, inputs, cx),
        Op::Image(o) => image::eval(o, inputs, cx),
        Op::Fused(o) => fused::eval(o, inputs, cx),
    }
}

/// Input `i` as a tensor; an error if absent or not a tensor.
pub fn tensor_in<'a>(inputs: &[Option<&'a Value>], i: usize) -> OpResult<&'a Tensor> {
    match inputs.get(i).copied().flatten() {
        Some(Value::Tensor(t)) => Ok(t),
        Some(_) => Err(invalid(format!("input {i} must be a tensor"))),
        None => Err(invalid(format!("input {i} is required"))),
    }
}

/// Optional input `i` as a tensor.
pub fn opt_tensor_in<'a>(inputs: &[Option<&'a Value>], i: usize) -> OpResult<Option<&'a Tensor>> {
    match inputs.get(i).copied().flatten() {
        Some(Value::Tensor(t)) => Ok(Some(t)),
        Some(_) => Err(invalid(format!("input {i} must be a tensor"))),
        None => Ok(None),
    }
}

/// Wraps output tensors as values.
pub fn tensors_out(ts: Vec<Tensor>) -> Vec<Value> {
    ts.into_iter().map(Value::Tensor).collect()
}

/// The error for a dtype a kernel does not handle.
pub fn dtype_unsupported(op: &str, t: &Tensor) -> OpError {
    OpError::Unsupported(format!("{op} on {} tensors", t.dtype()))
}

/// Largest element count a kernel allocates from input-controlled shapes.
pub const MAX_ELEMS: usize = 1 << 31;

/// Element count of `shape`; an error on overflow or above [`MAX_ELEMS`].
/// Kernels check output shapes that input values control before allocating.
pub fn check_elems(shape: &[usize]) -> OpResult<usize> {
    let mut n: usize = 1;
    for &d in shape {
        n = n
            .checked_mul(d)
            .filter(|&n| n <= MAX_ELEMS)
            .ok_or_else(|| invalid(format!("output shape {shape:?} has more than {MAX_ELEMS} elements")))?;
    }
    Ok(n)
}
