#!/usr/bin/env python3
"""Per zoo model: the e-graph level's runs at -O3 (region size, e-graph
classes and e-nodes, iterations, saturation time, the bound that stopped it,
cost before/after extraction, whether the result was kept), the node counts
at -O2 and -O3, and the whole -O3 optimization time.

Usage: scripts/egraph_table.py [--zoo .cache/zoo] [--carbide target/release/carbide] [--json OUT]
"""
import argparse
import json
import pathlib
import subprocess
import sys


def inspect(carbide: str, model: pathlib.Path, level: str) -> dict:
    res = subprocess.run(
        [carbide, "inspect", str(model), "--optimize", level, "--json"],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        sys.exit(f"{model.name}: carbide inspect failed: {res.stderr.strip()}")
    return json.loads(res.stdout)["optimization"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default=".cache/zoo")
    ap.add_argument("--carbide", default="target/release/carbide")
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    models = sorted(
        p for p in pathlib.Path(a.zoo).glob("*.onnx") if not p.name.endswith(".ort_extended.onnx")
    )
    if not models:
        sys.exit(f"no models in {a.zoo} (run scripts/zoo.py)")
    rows = []
    head = (
        f"{'model':<15}{'run':>4}{'region':>8}{'classes':>9}{'e-nodes':>9}{'iters':>7}"
        f"{'sat ms':>9}  {'stop':<22}{'cost before':>13}{'cost after':>13}  {'kept':<5}"
        f"{'O2 nodes':>9}{'O3 nodes':>9}{'O3 ms':>9}"
    )
    print(head)
    print("-" * len(head))
    for m in models:
        o2 = inspect(a.carbide, m, "-O2")
        o3 = inspect(a.carbide, m, "-O3")
        runs = o3.get("egraph", [])
        for i, e in enumerate(runs or [{}]):
            last = i == max(len(runs), 1) - 1
            print(
                f"{m.stem if i == 0 else '':<15}{i + 1:>4}{e.get('region_nodes', 0):>8}{e.get('classes', 0):>9}"
                f"{e.get('enodes', 0):>9}{e.get('iterations', 0):>7}{e.get('saturation_ms', 0.0):>9.2f}  "
                f"{e.get('stop_reason', '-'):<22}{e.get('cost_before', 0.0):>13.4g}{e.get('cost_after', 0.0):>13.4g}  "
                f"{'yes' if e.get('accepted') else 'no':<5}"
                + (f"{o2['nodes_after']:>9}{o3['nodes_after']:>9}{o3['total_ms']:>9.1f}" if last else "")
            )
        rows.append(
            {
                "model": m.stem,
                "o2_nodes": o2["nodes_after"],
                "o3_nodes": o3["nodes_after"],
                "o3_ms": o3["total_ms"],
                "egraph": runs,
            }
        )
        if o3["nodes_after"] > o2["nodes_after"]:
            print(f"  warning: -O3 has more nodes than -O2 on {m.stem}")
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
