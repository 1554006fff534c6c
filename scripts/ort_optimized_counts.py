#!/usr/bin/env python3
"""Node counts of each zoo model: original, onnxruntime's ORT_ENABLE_EXTENDED
optimized graph (saved next to the model as NAME.ort_extended.onnx), and
Carbide's -O3 optimized graph (from `carbide inspect --optimize --json`).

Usage: scripts/ort_optimized_counts.py [--zoo .cache/zoo] [--carbide target/release/carbide] [--json OUT]
"""
import argparse
import json
import pathlib
import subprocess
import sys

import onnx
import onnxruntime as ort


def ort_extended_count(model: pathlib.Path) -> int:
    out = model.with_suffix(".ort_extended.onnx")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(out)
    ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    return len(onnx.load(str(out), load_external_data=False).graph.node)


def carbide_counts(carbide: str, model: pathlib.Path, level: str) -> dict:
    res = subprocess.run(
        [carbide, "inspect", str(model), "--optimize", level, "--json"],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"}
    return json.loads(res.stdout)["optimization"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", default=".cache/zoo")
    ap.add_argument("--carbide", default="target/debug/carbide")
    ap.add_argument("--level", default="-O3")
    ap.add_argument("--json", help="write the table as JSON here")
    a = ap.parse_args()
    models = sorted(p for p in pathlib.Path(a.zoo).glob("*.onnx") if not p.name.endswith(".ort_extended.onnx"))
    if not models:
        print(f"no models in {a.zoo} (run scripts/zoo.py)", file=sys.stderr)
        return 1
    rows = []
    print(f"{'model':<16}{'original':>10}{'ort-ext':>10}{'carbide':>10}  {'ok':<4}{'opt time':>10}")
    for m in models:
        original = len(onnx.load(str(m), load_external_data=False).graph.node)
        ort_n = ort_extended_count(m)
        c = carbide_counts(a.carbide, m, a.level)
        carb = c.get("nodes_after")
        ok = carb is not None and carb <= ort_n
        t = c.get("total_ms")
        print(
            f"{m.stem:<16}{original:>10}{ort_n:>10}{carb if carb is not None else 'ERR':>10}  "
            f"{'yes' if ok else 'NO':<4}{(f'{t:.1f} ms') if t is not None else c.get('error', ''):>10}"
        )
        rows.append({"model": m.stem, "original": original, "ort_extended": ort_n, "carbide": carb, "ok": ok, "carbide_report": c})
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0 if all(r["ok"] for r in rows) else 2


if __name__ == "__main__":
    sys.exit(main())
