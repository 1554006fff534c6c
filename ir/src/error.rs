//! Errors of the IR layer: parsing op attributes, inference and verification.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum IrError {
    #[error("unsupported op '{op_type}' in domain '{domain}' (opset {opset})")]
    UnsupportedOp {
        domain: String,
        op_type: String,
        opset: i64,
    },

    #[error("{op}: attribute '{attr}': {reason}")]
    BadAttribute { op: String, attr: String, reason: String },

    /// Wrong input count, dtype or rank mismatch, inconsistent shapes.
    #[error("{op}: {reason}")]
    Invalid { op: String, reason: String },

    #[error("graph is malformed: {0}")]
    Malformed(String),

    #[error("node '{node}' ({op}): {cause}")]
    AtNode {
        node: String,
        op: String,
        /// Shown in this error's message, so not chained as a `source()`.
        cause: Box<IrError>,
    },
}

impl IrError {
    pub fn invalid(op: impl Into<String>, reason: impl Into<String>) -> Self {
        IrError::Invalid {
            op: op.into(),
            reason: reason.into(),
        }
    }

    pub fn bad_attr(op: impl Into<String>, attr: impl Into<String>, reason: impl Into<String>) -> Self {
        IrError::BadAttribute {
            op: op.into(),
            attr: attr.into(),
            reason: reason.into(),
        }
    }

    /// Adds the node's name and op as context (once).
    pub fn at_node(self, node: &str, op: &str) -> Self {
        match self {
            e @ IrError::AtNode { .. } => e,
            e => IrError::AtNode {
                node: node.to_string(),
                op: op.to_string(),
                cause: Box::new(e),
            },
        }
    }
}

pub type IrResult<T> = Result<T, IrError>;
