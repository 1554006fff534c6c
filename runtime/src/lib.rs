//! Carbide's reference runtime: a host implementation of every supported op
//! on `ndarray`, and an interpreter that runs a Graph IR model with them.
//! It is the semantic ground truth every optimization and backend is tested
//! against. It depends only on `carbide-ir`.

pub mod artifact;
pub mod error;
pub mod interpreter;
pub mod module;
pub mod ops;

pub use artifact::ArtifactError;
pub use error::{OpError, RuntimeError};
pub use interpreter::Session;
pub use module::{KernelStep, Module, ModuleParts, PlanStats, Step, TensorMut, TensorRef};
