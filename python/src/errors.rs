//! Carbide's Python exceptions and the mapping from the Rust error types.
//!
//! Every failure reaches Python as a `carbide.CarbideError` subclass whose
//! message names what is wrong; where a node or an input is involved, the
//! exception also carries it as attributes (`node`, `op`, `input`), so
//! callers can react without parsing messages.

use carbide_frontend::FrontendError;
use carbide_ir::IrError;
use carbide_runtime::{OpError, RuntimeError};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

pyo3::create_exception!(
    _carbide,
    CarbideError,
    PyException,
    "Base class of every error Carbide raises. Attributes `node`, `op` and `input` name where it happened (None when not applicable)."
);
pyo3::create_exception!(
    _carbide,
    InvalidModel,
    CarbideError,
    "The model is malformed: bad protobuf, inconsistent types or shapes, an op with invalid attributes."
);
pyo3::create_exception!(
    _carbide,
    UnsupportedOp,
    CarbideError,
    "The model is valid but uses an op, a dtype or a feature that Carbide does not implement."
);
pyo3::create_exception!(
    _carbide,
    InvalidArgument,
    CarbideError,
    "An argument is wrong: a missing or unknown input, a wrong dtype or shape, a path that cannot be read."
);

/// Which exception class to raise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A failure that is neither the model's nor the caller's fault as far as
    /// Carbide can tell (e.g. an op rejecting the values it was given).
    Generic,
    InvalidModel,
    UnsupportedOp,
    InvalidArgument,
}

/// An error on its way to Python: its class, message and context.
#[derive(Debug)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
    pub node: Option<String>,
    pub op: Option<String>,
    pub input: Option<String>,
}

impl Failure {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
            node: None,
            op: None,
            input: None,
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Failure::new(Kind::InvalidArgument, message)
    }

    /// An invalid-argument failure about one named input.
    pub fn bad_input(input: &str, message: impl Into<String>) -> Self {
        Failure {
            input: Some(input.to_string()),
            ..Failure::invalid_argument(message)
        }
    }

    fn at_node(mut self, node: &str, op: &str) -> Self {
        self.node.get_or_insert_with(|| node.to_string());
        self.op.get_or_insert_with(|| op.to_string());
        self
    }

    /// Builds the Python exception (with its context attributes).
    pub fn into_pyerr(self, py: Python<'_>) -> PyErr {
        let err = match self.kind {
            Kind::Generic => CarbideError::new_err(self.message),
            Kind::InvalidModel => InvalidModel::new_err(self.message),
            Kind::UnsupportedOp => UnsupportedOp::new_err(self.message),
            Kind::InvalidArgument => InvalidArgument::new_err(self.message),
        };
        let value = err.value(py);
        for (attr, v) in [("node", self.node), ("op", self.op), ("input", self.input)] {
            // Setting an attribute on a fresh exception instance cannot fail in practice; if it
            // did, the exception is still raised, only without that attribute.
            let _ = value.setattr(attr, v);
        }
        err
    }
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> PyErr {
        Python::attach(|py| f.into_pyerr(py))
    }
}

/// Classifies an IR error (import-time op parsing, inference, verification).
pub fn from_ir(e: &IrError) -> Failure {
    let message = e.to_string();
    match e {
        IrError::UnsupportedOp { op_type, .. } => Failure {
            op: Some(op_type.clone()),
            ..Failure::new(Kind::UnsupportedOp, message)
        },
        IrError::AtNode { node, op, cause } => {
            let inner = from_ir(cause);
            Failure { message, ..inner }.at_node(node, op)
        }
        IrError::BadAttribute { op, .. } | IrError::Invalid { op, .. } => Failure {
            op: Some(op.clone()),
            ..Failure::new(Kind::InvalidModel, message)
        },
        IrError::Malformed(_) => Failure::new(Kind::InvalidModel, message),
    }
}

/// Classifies an import error; `source` describes where the model came from.
pub fn from_frontend(e: &FrontendError, source: &str) -> Failure {
    let message = format!("{source}: {e}");
    match e {
        FrontendError::Io { .. } => Failure::invalid_argument(format!("cannot read model {e}")),
        FrontendError::Decode { .. } | FrontendError::Invalid(_) => Failure::new(Kind::InvalidModel, message),
        FrontendError::Unsupported(_) => Failure::new(Kind::UnsupportedOp, message),
        FrontendError::Ir(ir) => Failure { message, ..from_ir(ir) },
    }
}

/// Classifies a run-time error.
pub fn from_runtime(e: &RuntimeError) -> Failure {
    let message = e.to_string();
    match e {
        RuntimeError::Node { node, op, cause } => {
            let kind = match cause {
                OpError::Unsupported(_) => Kind::UnsupportedOp,
                OpError::Invalid(_) => Kind::Generic,
            };
            Failure::new(kind, message).at_node(node, op)
        }
        RuntimeError::BadInput { name, .. } | RuntimeError::MissingInput(name) => Failure::bad_input(name, message),
        RuntimeError::Undefined(_) => Failure::new(Kind::InvalidModel, message),
        RuntimeError::Kernel { .. } => Failure::new(Kind::Generic, message),
        RuntimeError::Ir(ir) => Failure { message, ..from_ir(ir) },
    }
}

/// Registers the exception classes on the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("CarbideError", py.get_type::<CarbideError>())?;
    m.add("InvalidModel", py.get_type::<InvalidModel>())?;
    m.add("UnsupportedOp", py.get_type::<UnsupportedOp>())?;
    m.add("InvalidArgument", py.get_type::<InvalidArgument>())?;
    Ok(())
}
