//! Carbide's graph optimizer. [`optimize`] runs the pipeline of an
//! optimization level over a model: classic cleanups (-O1: constant and
//! shape folding, no-op removal, CSE, DCE, BatchNorm and scale folding,
//! transpose cancellation, MatMul+Add to Gemm), then fusions into ONNX's
//! fused ops (incl. scaled dot-product attention into `Attention`) and
//! Carbide's own (-O2). Every rewrite keeps the reference
//! runtime's results: the tests check each pass's numbers against it.

pub mod algebra;
pub mod attention;
pub mod cleanup;
pub mod egraph;
pub mod error;
pub mod fold;
pub mod fusion;
pub mod manager;
pub mod util;

#[cfg(test)]
pub(crate) mod testutil;

pub use error::PassError;
pub use manager::{optimize, pass_names, Dump, Pass, PassCtx, PassOptions, PassReport, PassStat};
