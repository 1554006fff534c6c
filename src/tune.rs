//! Tuning a whole model: partition it like compilation does, tune the
//! distinct kernel workloads with `carbide_autotune`, keep the records.

use crate::compile::{kernel_groups, CompileError, CompileOptions};
use carbide_autotune::{extract_tasks, Database, Progress, TuneOptions, TuneSummary};
use carbide_ir::Model;
use thiserror::Error;

pub use carbide_autotune as autotune;

#[derive(Debug, Error)]
pub enum TuneModelError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Tune(#[from] carbide_autotune::TuneError),
}

/// Tunes the kernels `carbide::compile(model, compile)` would generate,
/// appending every trial to `db`.
pub fn tune_model(
    model: &Model,
    compile: &CompileOptions,
    db: &mut Database,
    opts: &TuneOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<TuneSummary, TuneModelError> {
    let (groups, target) = kernel_groups(model, compile)?;
    let tasks = extract_tasks(&groups, &target)?;
    Ok(carbide_autotune::tune(&tasks, &target, db, opts, progress)?)
}

/// Parses a duration like `90s`, `10m`, `1h` or `1.5m` (plain numbers are seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 90s, 10m, 1h)"))?;
    let secs = match unit {
        "s" => v,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        other => return Err(format!("unknown unit '{other}' in '{s}' (use s, m or h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("'{s}' is not a duration"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
