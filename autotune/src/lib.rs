//! Carbide's autotuner: for each distinct kernel workload of a model,
//! searches the kernel's schedule space (evolutionary moves over the
//! schedule's knobs, ranked by a cost model of gradient-boosted trees that
//! is refitted on every measurement), measures the most promising
//! candidates in batches, and keeps every trial as a tuning record. The
//! search always measures the default schedule first, so the best record of
//! a workload is never slower than the default as measured. Candidates run
//! in a separate worker process ([`worker`]), so one that crashes or hangs
//! is discarded without taking the tuner down.
//!
//! The caller (the `carbide` crate) partitions the model and hands over its
//! kernel groups; [`extract_tasks`] dedupes them into [`Task`]s and
//! [`tune`] spends the trial budget across them.

pub mod cost;
pub mod measure;
pub mod peak;
pub mod records;
pub mod space;
mod tuner;
pub mod worker;

pub use measure::MeasureConfig;
pub use records::{Database, TuningRecord, CARBIDE_VERSION};
pub use tuner::{extract_tasks, tune, Progress, Task, TaskSummary, TuneOptions, TuneSummary};
pub use worker::WorkerCommand;

#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error("tuning database {path}: {reason}")]
    Db { path: String, reason: String },
    #[error("kernel group at node '{node}': {reason}")]
    Codegen { node: String, reason: String },
    #[error("tuning worker: {reason}")]
    Worker { reason: String },
}
