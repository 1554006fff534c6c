//! Errors of the reference runtime.

use thiserror::Error;

/// What a kernel reports; the interpreter adds the node and op.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum OpError {
    /// The inputs are wrong for this op (dtype, rank, shape, value).
    #[error("{0}")]
    Invalid(String),
    /// A valid case that Carbide does not implement (yet).
    #[error("not supported: {0}")]
    Unsupported(String),
}

/// Shorthand: `Err(invalid(format!(..)))`.
pub fn invalid(msg: impl Into<String>) -> OpError {
    OpError::Invalid(msg.into())
}

pub fn unsupported(msg: impl Into<String>) -> OpError {
    OpError::Unsupported(msg.into())
}

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("node '{node}' ({op}): {cause}")]
    Node {
        node: String,
        op: String,
        /// Shown in this error's message, so not chained as a `source()`.
        cause: OpError,
    },
    #[error("input '{name}': {reason}")]
    BadInput { name: String, reason: String },
    #[error("missing input '{0}'")]
    MissingInput(String),
    #[error("value '{0}' is used but never computed")]
    Undefined(String),
    /// A compiled kernel could not be called with the values at hand.
    #[error("kernel '{entry}': {reason}")]
    Kernel { entry: String, reason: String },
    #[error(transparent)]
    Ir(#[from] carbide_ir::IrError),
}

pub type OpResult<T> = Result<T, OpError>;
