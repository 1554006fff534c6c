use carbide_ir::IrError;
use carbide_runtime::OpError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PassError {
    /// A pass left the graph structurally broken: a bug in that pass.
    #[error("after pass '{pass}': the graph no longer verifies: {source}")]
    Verify { pass: String, source: IrError },
    /// Shape/type inference failed on the graph a pass produced.
    #[error("after pass '{pass}': inference failed: {source}")]
    Infer { pass: String, source: IrError },
    /// The input graph did not verify or infer before optimization.
    #[error("the input graph is invalid: {0}")]
    Input(IrError),
    #[error("pass '{pass}': evaluating node '{node}' ({op}): {source}")]
    Eval {
        pass: String,
        node: String,
        op: String,
        source: OpError,
    },
    #[error("unknown pass '{0}' (see `carbide_passes::pass_names`)")]
    UnknownPass(String),
    #[error("unknown cost target '{0}' for the e-graph level (expected cpu or gpu)")]
    UnknownCostTarget(String),
    #[error("optimization level {0} is not one of 0..=3")]
    BadLevel(u8),
}
