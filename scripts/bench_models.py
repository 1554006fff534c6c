#!/usr/bin/env python3
"""Model benchmark: Carbide next to onnxruntime and OpenVINO, in one run.

The machine is shared and noisy, so absolute numbers drift from run to run;
the ratios against the peers measured in the same run are what to read.

    scripts/bench_models.py [--models resnet50,mlp] [--threads 1,2] [--runs 20] [--json out.json]

Columns: median latency in ms of onnxruntime (ORT_ENABLE_ALL), OpenVINO
(CPU plugin, latency hint), Carbide's reference interpreter, Carbide
compiled (`carbide compile`, default schedules) and, when --tuning-db is
given, Carbide compiled with those tuning records. Ratios are
peer_time / carbide_time, so > 1 means Carbide is faster.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ZOO = ["mlp", "resnet18", "resnet50", "mobilenet_v2", "squeezenet1_1", "minilm_l6"]


def timed_runs(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def bench_ort(model, feeds, threads, warmup, runs):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    return timed_runs(lambda: sess.run(None, feeds), warmup, runs)


def bench_openvino(model, feeds, threads, warmup, runs):
    try:
        import openvino as ov
    except ImportError:
        return None
    core = ov.Core()
    compiled = core.compile_model(
        str(model), "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                         "INFERENCE_PRECISION_HINT": "f32"}
    )
    request = compiled.create_infer_request()
    return timed_runs(lambda: request.infer(feeds), warmup, runs)


def bench_carbide(binary, target, inputs, threads, warmup, runs, reference=False):
    """Runs `carbide bench --json` and returns its median in ms."""
    cmd = [str(binary), "bench", str(target), "--threads", str(threads),
           "--warmup", str(warmup), "--runs", str(runs), "--json"]
    if reference:
        cmd.append("--reference")
    if inputs is not None:
        cmd += ["--inputs", str(inputs)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"  carbide bench {target.name} failed: {out.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    report = json.loads(out.stdout)
    return float(report["median_ms"])


def compile_carbide(binary, model, out_path, tuning_db=None):
    cmd = [str(binary), "compile", str(model), "--target", "native", "-o", str(out_path)]
    if tuning_db:
        cmd += ["--tuning-db", str(tuning_db)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"  carbide compile {model.name} failed: {out.stderr.strip()[-300:]}", file=sys.stderr)
        return False
    return True


def fmt(v):
    return "-" if v is None else f"{v:.2f}"


def ratio(peer, ours):
    return None if peer is None or ours is None or ours == 0 else peer / ours


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(ZOO))
    ap.add_argument("--zoo", default=str(ROOT / ".cache" / "zoo"))
    ap.add_argument("--carbide", default=str(ROOT / "target" / "release" / "carbide"))
    ap.add_argument("--threads", default=f"1,{os.cpu_count() or 1}",
                    help="comma-separated thread counts, each measured for every runtime in turn (default: 1 and all cores)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--tuning-db", default=None)
    ap.add_argument("--skip-reference", action="store_true", help="skip the (slow) reference interpreter")
    ap.add_argument("--json", default=None, help="also write the table as JSON")
    args = ap.parse_args()

    zoo = Path(args.zoo)
    thread_counts = [int(t) for t in str(args.threads).split(",") if t.strip()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model = zoo / f"{name}.onnx"
            inputs = zoo / f"{name}.inputs.npz"
            if not model.exists():
                print(f"{name}: {model} missing (run scripts/setup.sh)", file=sys.stderr)
                continue
            feeds = dict(np.load(inputs)) if inputs.exists() else {}
            artifact = Path(tmp) / f"{name}.carbide"
            compiled = compile_carbide(args.carbide, model, artifact)
            tuned = Path(tmp) / f"{name}.tuned.carbide"
            tuned_ok = bool(args.tuning_db) and compile_carbide(args.carbide, model, tuned, args.tuning_db)
            for threads in thread_counts:
                print(f"{name} threads={threads} ...", file=sys.stderr)
                row = {"model": name, "threads": threads}
                # Peers and Carbide alternate per model and thread count, so load drift hits all alike.
                row["ort_ms"] = bench_ort(model, feeds, threads, args.warmup, args.runs)
                row["openvino_ms"] = bench_openvino(model, feeds, threads, args.warmup, args.runs)
                row["reference_ms"] = None if args.skip_reference else bench_carbide(
                    args.carbide, model, inputs, threads, 1, max(3, args.runs // 4), reference=True)
                row["compiled_ms"] = bench_carbide(args.carbide, artifact, inputs, threads, args.warmup,
                                                   args.runs) if compiled else None
                row["tuned_ms"] = bench_carbide(args.carbide, tuned, inputs, threads, args.warmup,
                                                args.runs) if tuned_ok else None
                best = row["tuned_ms"] if row["tuned_ms"] is not None else row["compiled_ms"]
                row["ort_over_carbide"] = ratio(row["ort_ms"], best)
                row["openvino_over_carbide"] = ratio(row["openvino_ms"], best)
                rows.append(row)

    cols = ["model", "threads", "ort_ms", "openvino_ms", "reference_ms", "compiled_ms", "tuned_ms",
            "ort_over_carbide", "openvino_over_carbide"]
    print(f"runs={args.runs} (ratios > 1: Carbide faster)")
    print(" | ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r[c]:>14}" if c in ("model", "threads") else f"{fmt(r[c]):>14}" for c in cols))
    geomean = lambda xs: math.exp(sum(map(math.log, xs)) / len(xs))
    for threads in thread_counts:
        at = [r for r in rows if r["threads"] == threads]
        geo = [r["ort_over_carbide"] for r in at if r["ort_over_carbide"]]
        if geo:
            print(f"threads={threads}: geomean ort/carbide {geomean(geo):.2f}, worst {min(geo):.2f}")
        tuned = [r["tuned_ms"] / r["compiled_ms"] for r in at if r["tuned_ms"] and r["compiled_ms"]]
        if tuned:
            print(f"threads={threads}: geomean tuned/untuned {geomean(tuned):.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
