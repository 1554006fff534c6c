//! Carbide: an ML model compiler. ONNX in, fast kernels out.
//!
//! This facade ties the layers together for the CLI and for embedders:
//! [`load_model`] imports an ONNX file into the Graph IR ([`ir`]), and
//! [`runtime::Session`] runs it on the reference runtime.

pub mod compare;
pub mod compile;
pub mod conformance;
pub mod inspect;
pub mod npy;
pub mod tune;

pub use carbide_frontend as frontend;
pub use carbide_ir as ir;
pub use carbide_passes as passes;
pub use carbide_runtime as runtime;

pub use carbide_frontend::{load_model, FrontendError};
pub use carbide_runtime::{ArtifactError, Module, Session};
pub use compile::{compile, compile_artifact, CompileError, CompileOptions, CompileReport};
