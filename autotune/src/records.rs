//! Tuning records: one JSON object per line, appended as trials finish, so
//! an interrupted run loses nothing and a re-run continues from the file.

use crate::TuneError;
use carbide_ir::kernel::{Schedule, WorkloadKey};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The Carbide version records are written by; records of other versions
/// are kept in the file but not replayed (codegen may have changed).
pub const CARBIDE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One measured trial of one schedule on one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuningRecord {
    /// [`WorkloadKey::hex`]: the lookup key.
    pub workload: String,
    /// [`WorkloadKey::canonical`], for people and for hash-collision checks.
    pub key: String,
    pub target: String,
    pub version: String,
    pub schedule: Schedule,
    /// Median latency; `None` when the trial failed (see `error`).
    pub median_us: Option<f64>,
    /// The default schedule's median measured in the same run, when known.
    pub default_us: Option<f64>,
    /// Why the trial was discarded (build failure, crash, timeout, wrong result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A re-measurement at the end of a run, of the default and the best
    /// schedules back to back (see [`Database::best`]), not a search trial.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verified: bool,
    /// Seconds since the Unix epoch.
    pub timestamp: u64,
}

impl TuningRecord {
    pub fn matches(&self, key: &WorkloadKey) -> bool {
        self.workload == key.hex() && self.key == key.canonical() && self.target == key.target
    }
}

/// The records of one file (or in memory when it has no path).
#[derive(Debug, Default)]
pub struct Database {
    path: Option<PathBuf>,
    pub records: Vec<TuningRecord>,
}

impl Database {
    /// An empty database that is not written anywhere.
    pub fn in_memory() -> Database {
        Database::default()
    }

    /// Reads `path` (JSON lines); a missing file is an empty database that
    /// [`Database::append`] creates.
    pub fn open(path: &Path) -> Result<Database, TuneError> {
        let mut db = Database {
            path: Some(path.to_path_buf()),
            records: Vec::new(),
        };
        if path.exists() {
            db.records = read_records(path)?;
        }
        Ok(db)
    }

    /// Reads an existing file; a missing one is an error (compile asks for it by name).
    pub fn load(path: &Path) -> Result<Database, TuneError> {
        Ok(Database {
            path: Some(path.to_path_buf()),
            records: read_records(path)?,
        })
    }

    /// Adds a record and appends it to the file.
    pub fn append(&mut self, record: TuningRecord) -> Result<(), TuneError> {
        if let Some(path) = &self.path {
            let io = |e: std::io::Error| TuneError::Db {
                path: path.display().to_string(),
                reason: e.to_string(),
            };
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(io)?;
            let line = serde_json::to_string(&record).map_err(|e| TuneError::Db {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            writeln!(f, "{line}").map_err(io)?;
        }
        self.records.push(record);
        Ok(())
    }

    /// Records of this workload written by this Carbide version.
    pub fn trials<'a>(&'a self, key: &'a WorkloadKey) -> impl Iterator<Item = &'a TuningRecord> + 'a {
        self.records
            .iter()
            .filter(move |r| r.matches(key) && r.version == CARBIDE_VERSION)
    }

    /// The fastest successful record of a workload. Verification records
    /// decide when there are any: a search trial's time may be a lucky
    /// one on a loaded machine, while verification measures the default
    /// and the best candidates side by side, so a candidate only beats the
    /// default when it still does there.
    pub fn best<'a>(&'a self, key: &'a WorkloadKey) -> Option<&'a TuningRecord> {
        let fastest = |verified_only: bool| {
            self.trials(key)
                .filter(|r| r.median_us.is_some_and(f64::is_finite) && (r.verified || !verified_only))
                .min_by(|a, b| {
                    a.median_us
                        .partial_cmp(&b.median_us)
                        .unwrap_or(std::cmp::Ordering::Equal)
                })
        };
        fastest(true).or_else(|| fastest(false))
    }
}

fn read_records(path: &Path) -> Result<Vec<TuningRecord>, TuneError> {
    let err = |reason: String| TuneError::Db {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: TuningRecord = serde_json::from_str(line).map_err(|e| err(format!("line {}: {e}", i + 1)))?;
        out.push(r);
    }
    Ok(out)
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
