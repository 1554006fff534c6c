//! The CLI's contract: outputs written as .npy, summaries printed, and the
//! exit codes 0 (success), 1 (model or input error), 2 (usage error).

use std::path::{Path, PathBuf};
use std::process::Command;

fn carbide() -> Command {
    Command::new(env!("CARGO_BIN_EXE_carbide"))
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/example/tiny_cnn.onnx")
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("carbide-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn run_example_matches_onnxruntime_and_writes_npy() {
    let out = temp_dir("run");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/example");
    let status = carbide()
        .args(["run", example().to_str().unwrap(), "--inputs"])
        .arg(dir.join("tiny_cnn.inputs.npz"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let probs = carbide::npy::read_npy(&out.join("probs.npy")).unwrap();
    let reference = carbide::npy::read_npz(&dir.join("tiny_cnn.ort.npz")).unwrap();
    let (a, b) = (probs.to_f64_vec().unwrap(), reference[0].1.to_f64_vec().unwrap());
    assert_eq!(probs.shape(), &[2, 10]);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5, "{x} vs {y}");
    }
}

#[test]
fn run_with_random_inputs_binds_symbolic_dims() {
    let out = carbide()
        .args(["run", example().to_str().unwrap(), "--dim", "batch=3", "--seed", "5"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("probs") && text.contains("[3, 10]"), "{text}");
}

#[test]
fn inspect_reports_ops_params_and_json() {
    let out = carbide()
        .args(["inspect", example().to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["op_histogram"]["Conv"], 2);
    assert_eq!(v["inputs"][0]["ty"], "float[batch,3,32,32]");
    // 8*3*3*3 + 8 + 4*8 + 16*8*3*3 + 16 + 10*16 + 10 + 2
    assert_eq!(v["parameters"], 216 + 8 + 32 + 1152 + 16 + 160 + 10 + 2);
    assert!(v["flops"].as_u64().unwrap() > 2 * 32 * 32 * 8 * 27);
}

#[test]
fn inspect_writes_graphviz() {
    let dot = temp_dir("dot").join("g.dot");
    let out = carbide()
        .args(["inspect", example().to_str().unwrap(), "--dot"])
        .arg(&dot)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&dot).unwrap();
    assert!(text.starts_with("digraph") && text.contains("Conv"));
}

#[test]
fn missing_model_is_exit_code_1() {
    let out = carbide().args(["run", "/nonexistent/model.onnx"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model.onnx"));
}

#[test]
fn corrupt_model_is_exit_code_1() {
    let p = temp_dir("corrupt").join("bad.onnx");
    std::fs::write(&p, b"\x0a\xff\xff\xff\xff\x0fgarbage").unwrap();
    let out = carbide().arg("inspect").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn wrong_input_shape_is_exit_code_1() {
    let dir = temp_dir("shape");
    let npy = dir.join("x.npy");
    carbide::npy::write_npy(&npy, &carbide::ir::Tensor::from_f32s(vec![1.0; 7])).unwrap();
    let out = carbide()
        .args(["run", example().to_str().unwrap(), "--input"])
        .arg(format!("image={}", npy.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("image"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn usage_error_is_exit_code_2() {
    let out = carbide().args(["run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = carbide().args(["no-such-command"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn compile_then_run_inspect_and_bench_an_artifact() {
    let dir = temp_dir("compile");
    let artifact = dir.join("tiny_cnn.carbide");
    let out = carbide()
        .args([
            "compile",
            example().to_str().unwrap(),
            "--target",
            "native",
            "-O2",
            "--json",
            "-o",
        ])
        .arg(&artifact)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["artifact_bytes"].as_u64().unwrap() > 0, "{v}");
    assert!(v["report"]["nodes_in"].as_u64().unwrap() > 0, "{v}");

    let outdir = dir.join("out");
    let example_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/example");
    let run = carbide()
        .arg("run")
        .arg(&artifact)
        .arg("--inputs")
        .arg(example_dir.join("tiny_cnn.inputs.npz"))
        .args(["--threads", "2", "--out"])
        .arg(&outdir)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).contains("compiled"));
    let probs = carbide::npy::read_npy(&outdir.join("probs.npy")).unwrap();
    let reference = carbide::npy::read_npz(&example_dir.join("tiny_cnn.ort.npz")).unwrap();
    for (x, y) in probs
        .to_f64_vec()
        .unwrap()
        .iter()
        .zip(&reference[0].1.to_f64_vec().unwrap())
    {
        assert!((x - y).abs() <= 1e-5, "{x} vs {y}");
    }

    let inspect = carbide().arg("inspect").arg(&artifact).arg("--json").output().unwrap();
    assert!(inspect.status.success(), "{}", String::from_utf8_lossy(&inspect.stderr));
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert!(!v["steps"].as_array().unwrap().is_empty(), "{v}");
    // tiny_cnn's batch is symbolic: no single static plan to report.
    assert_eq!(v["memory_plan"]["planned"], "per shape at run time", "{v}");

    let bench = carbide()
        .arg("bench")
        .arg(&artifact)
        .args(["--warmup", "1", "--runs", "3", "--json", "--dim", "batch=2"])
        .output()
        .unwrap();
    assert!(bench.status.success(), "{}", String::from_utf8_lossy(&bench.stderr));
    let v: serde_json::Value = serde_json::from_slice(&bench.stdout).unwrap();
    let (p10, med, p90) = (
        v["p10_ms"].as_f64().unwrap(),
        v["median_ms"].as_f64().unwrap(),
        v["p90_ms"].as_f64().unwrap(),
    );
    assert!(p10 <= med && med <= p90, "{v}");
}

#[test]
fn bad_artifacts_and_targets_fail_with_exit_code_1_or_2() {
    let dir = temp_dir("badart");
    let bad = dir.join("bad.carbide");
    let mut bytes = b"CARBIDE\0".to_vec();
    bytes.extend_from_slice(&[1, 0, 0, 0, 128, 0, 0, 0]);
    bytes.extend_from_slice(&[0xAB; 200]);
    std::fs::write(&bad, bytes).unwrap();
    let out = carbide().arg("run").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("artifact"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = carbide()
        .args(["compile", example().to_str().unwrap(), "--target", "riscv-magic", "-o"])
        .arg(dir.join("x.carbide"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown target"));
    let out = carbide()
        .args(["compile", example().to_str().unwrap(), "-O7", "-o", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn compile_for_another_cpu_writes_the_artifact_and_run_refuses_it() {
    let have_cross_gcc = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("aarch64-linux-gnu-gcc").is_file()));
    if !have_cross_gcc || std::env::consts::ARCH == "aarch64" {
        eprintln!("skipping: needs an x86 host with aarch64-linux-gnu-gcc");
        return;
    }
    let dir = temp_dir("xcompile");
    let artifact = dir.join("tiny_cnn.neon.carbide");
    let out = carbide()
        .args([
            "compile",
            example().to_str().unwrap(),
            "--target",
            "aarch64-neon",
            "--json",
            "-o",
        ])
        .arg(&artifact)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["target"], "aarch64-neon", "{v}");
    assert!(v["report"]["kernels"].as_u64().unwrap() > 0, "{v}");
    let run = carbide().arg("run").arg(&artifact).output().unwrap();
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("aarch64") && err.contains("recompile"), "{err}");
    // Inspecting needs no matching CPU: it reads the manifest only.
    let inspect = carbide().arg("inspect").arg(&artifact).arg("--json").output().unwrap();
    assert!(inspect.status.success(), "{}", String::from_utf8_lossy(&inspect.stderr));
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["target"]["arch"], "aarch64", "{v}");
    assert!(v["kernel_steps"].as_u64().unwrap() > 0, "{v}");
}

#[test]
fn bench_profile_writes_a_chrome_trace_and_the_slowest_steps() {
    let dir = temp_dir("profile");
    let trace_path = dir.join("trace.json");
    let bench = carbide()
        .arg("bench")
        .arg(example())
        .args([
            "--warmup",
            "1",
            "--runs",
            "2",
            "--json",
            "--dim",
            "batch=2",
            "--profile",
        ])
        .arg(&trace_path)
        .output()
        .unwrap();
    assert!(bench.status.success(), "{}", String::from_utf8_lossy(&bench.stderr));
    let v: serde_json::Value = serde_json::from_slice(&bench.stdout).unwrap();
    let top = v["profile"]["top_steps"].as_array().unwrap();
    assert!(!top.is_empty() && top.len() <= 10, "{v}");
    let totals: Vec<f64> = top.iter().map(|t| t["total_us"].as_f64().unwrap()).collect();
    assert!(totals.windows(2).all(|w| w[0] >= w[1]), "not slowest first: {totals:?}");
    assert!(top.iter().any(|t| t["kind"] == "kernel"), "{v}");

    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace_path).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    // Every step of both timed runs is one complete event.
    assert_eq!(events.len() % 2, 0);
    assert!(!events.is_empty());
    let mut last_end = 0.0;
    for e in events {
        assert_eq!(e["ph"], "X", "{e}");
        assert!(["kernel", "host", "alias"].contains(&e["cat"].as_str().unwrap()), "{e}");
        assert!(e["name"].is_string() && e["args"]["nodes"].is_array(), "{e}");
        assert_eq!((e["pid"].as_u64(), e["tid"].as_u64()), (Some(1), Some(1)));
        let (ts, dur) = (e["ts"].as_f64().unwrap(), e["dur"].as_f64().unwrap());
        assert!(ts >= last_end && dur >= 0.0, "events overlap or go back in time: {e}");
        last_end = ts + dur;
        if e["cat"] == "kernel" {
            assert!(e["args"]["entry"].is_string(), "{e}");
        }
    }
}

#[test]
fn inspect_reports_the_memory_plan_of_a_static_artifact() {
    let mlp = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/zoo/mlp.onnx");
    if !mlp.exists() {
        assert!(
            std::env::var("CARBIDE_REQUIRE_DATA").map_or(true, |v| v != "1"),
            "{} missing",
            mlp.display()
        );
        eprintln!("skipping: {} not found (run scripts/zoo.py)", mlp.display());
        return;
    }
    let artifact = temp_dir("plan").join("mlp.carbide");
    let out = carbide()
        .arg("compile")
        .arg(&mlp)
        .arg("-o")
        .arg(&artifact)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let inspect = carbide().arg("inspect").arg(&artifact).arg("--json").output().unwrap();
    assert!(inspect.status.success(), "{}", String::from_utf8_lossy(&inspect.stderr));
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let p = &v["memory_plan"];
    assert_eq!(p["planned"], "static", "{v}");
    let (arena, peak, total) = (
        p["arena_bytes"].as_u64().unwrap(),
        p["peak_live_bytes"].as_u64().unwrap(),
        p["total_intermediate_bytes"].as_u64().unwrap(),
    );
    assert!(0 < peak && peak <= arena && arena <= total, "{p}");
    let text = carbide().arg("inspect").arg(&artifact).output().unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("arena"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
}

#[test]
fn inspect_optimizes_for_a_named_cost_target_and_rejects_unknown_ones() {
    let gpu = carbide()
        .args([
            "inspect",
            example().to_str().unwrap(),
            "--optimize",
            "--cost-target",
            "gpu",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(gpu.status.success(), "{}", String::from_utf8_lossy(&gpu.stderr));
    let v: serde_json::Value = serde_json::from_slice(&gpu.stdout).unwrap();
    assert!(
        v["optimization"]["passes"].as_array().is_some_and(|p| !p.is_empty()),
        "{v}"
    );
    let bad = carbide()
        .args([
            "inspect",
            example().to_str().unwrap(),
            "--optimize",
            "--cost-target",
            "tpu",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown cost target 'tpu'"));
}
