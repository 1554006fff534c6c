//! The autotuner end to end: `carbide tune` on the zoo MLP writes records
//! and resumes from them, and compiling with `--tuning-db` generates each
//! tuned kernel exactly as its record's schedule says, still matching
//! onnxruntime.
//!
//! Models come from `scripts/zoo.py`; without them a test is skipped unless
//! CARBIDE_REQUIRE_DATA=1.

mod common;

use carbide::compile::{compile_with_report, kernel_groups, CompileOptions};
use carbide::runtime::{Module, Step};
use carbide::tune::autotune::space::is_tunable;
use carbide::tune::autotune::{Database, TuningRecord, CARBIDE_VERSION};
use std::path::PathBuf;
use std::process::Command;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("carbide-tune-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn zoo(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".cache/zoo")
        .join(format!("{name}.onnx"))
}

#[test]
fn compile_applies_the_best_record_per_workload() {
    let Some(case) = common::zoo_case("mlp") else { return };
    let opts = CompileOptions::default();
    let (groups, target) = kernel_groups(&case.model, &opts).unwrap();
    let dir = temp_dir("apply");
    let db_path = dir.join("tune.jsonl");
    // One hand-made record per tunable workload with a schedule of the
    // backend's space unlike the default, plus a slower decoy.
    let mut db = Database::open(&db_path).unwrap();
    let mut expected = Vec::new();
    for g in &groups {
        let k = carbide_backend_cpu_lower(g, &target, None);
        if !is_tunable(&k.workload.op) {
            continue;
        }
        let space = carbide_backend_cpu::schedule_space(g, &target).unwrap();
        assert!(space.len() > 2, "a tunable kernel has a space");
        let (chosen, decoy) = (space[space.len() - 1].clone(), space[1].clone());
        assert!(chosen != k.schedule && decoy != k.schedule);
        for (s, us) in [(&decoy, 50.0), (&chosen, 10.0)] {
            db.append(TuningRecord {
                workload: k.workload.hex(),
                key: k.workload.canonical(),
                target: k.workload.target.clone(),
                version: CARBIDE_VERSION.into(),
                schedule: s.clone(),
                median_us: Some(us),
                default_us: Some(20.0),
                error: None,
                verified: false,
                timestamp: 0,
            })
            .unwrap();
        }
        expected.push((g.clone(), chosen));
    }
    assert!(!expected.is_empty(), "the MLP has GEMM kernels");
    let with_db = CompileOptions {
        tuning_db: Some(db_path.clone()),
        ..Default::default()
    };
    let (module, report) = compile_with_report(&case.model, &with_db).unwrap();
    assert_eq!(report.tuned.len(), expected.len());
    assert!(report.untuned.is_empty(), "{:?}", report.untuned);
    // The artifact's kernels are the ones lowered with the records' schedules.
    let module = Module::from_bytes(&module.to_bytes().unwrap()).unwrap();
    let calls: Vec<_> = module
        .steps()
        .iter()
        .filter_map(|s| match s {
            Step::Kernel(k) => Some(k.call.clone()),
            _ => None,
        })
        .collect();
    for (g, sched) in &expected {
        let tuned = carbide_backend_cpu_lower(g, &target, Some(sched));
        let default = carbide_backend_cpu_lower(g, &target, None);
        assert!(
            calls.contains(&tuned.call),
            "no kernel built with the recorded schedule"
        );
        assert!(!calls.contains(&default.call), "a default-schedule kernel remained");
        assert!(report.tuned.iter().any(|t| &t.schedule == sched));
    }
    let outputs = module.run(case.feeds).unwrap();
    common::assert_matches_ort("mlp", &outputs, &case.expected);

    // Without records for them, the kernels are reported as untuned.
    std::fs::write(&db_path, "").unwrap();
    let (_, report) = compile_with_report(&case.model, &with_db).unwrap();
    assert_eq!(report.tuned.len(), 0);
    assert_eq!(report.untuned.len(), expected.len());
    let _ = std::fs::remove_dir_all(&dir);
}

fn carbide_backend_cpu_lower(
    g: &carbide_backend_cpu::KernelGroup,
    target: &carbide_backend_cpu::Target,
    s: Option<&carbide::ir::kernel::Schedule>,
) -> carbide_backend_cpu::LoweredKernel {
    carbide_backend_cpu::lower(g, target, s)
        .unwrap()
        .expect("a generated kernel")
}

#[test]
fn cli_tune_writes_records_resumes_and_compiles_with_them() {
    if common::zoo_case("mlp").is_none() {
        return;
    }
    let dir = temp_dir("cli");
    let db = dir.join("tune.jsonl");
    let tune = |trials: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_carbide"))
            .args(["tune"])
            .arg(zoo("mlp"))
            .args(["--trials", trials, "--threads", "1", "--json", "--db"])
            .arg(&db)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = tune("8");
    assert_eq!(first["trials_run"], 8);
    assert_eq!(first["trials_resumed"], 0);
    // Candidates ran in one `carbide tune-worker` child that never crashed.
    assert_eq!(first["workers_started"], 1);
    assert_eq!(first["failed_trials"], 0);
    let tasks = first["tasks"].as_array().unwrap();
    assert!(!tasks.is_empty());
    for t in tasks {
        let (d, b) = (t["default_us"].as_f64(), t["best_us"].as_f64());
        if let (Some(d), Some(b)) = (d, b) {
            assert!(b <= d, "best {b} µs slower than the default {d} µs");
        }
    }
    let text = std::fs::read_to_string(&db).unwrap();
    let trials = text.lines().filter(|l| !l.contains("\"verified\":true")).count();
    assert_eq!(
        trials, 8,
        "one record per trial, plus the end-of-run verification records"
    );
    let again = tune("8");
    assert_eq!(again["trials_run"], 0);
    assert_eq!(again["trials_resumed"], 8);
    let out = Command::new(env!("CARGO_BIN_EXE_carbide"))
        .arg("compile")
        .arg(zoo("mlp"))
        .arg("--tuning-db")
        .arg(&db)
        .arg("-o")
        .arg(dir.join("mlp.carbide"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tuned = v["report"]["tuned"].as_array().unwrap().len();
    let untuned = v["report"]["untuned"].as_array().unwrap().len();
    // Every measured workload has a record now; the rest are reported.
    let measured: usize = tasks
        .iter()
        .filter(|t| t["best_us"].is_number())
        .map(|t| t["count"].as_u64().unwrap() as usize)
        .sum();
    assert_eq!(tuned, measured);
    let tunable: usize = tasks.iter().map(|t| t["count"].as_u64().unwrap() as usize).sum();
    assert_eq!(tuned + untuned, tunable);
    let _ = std::fs::remove_dir_all(&dir);
}
