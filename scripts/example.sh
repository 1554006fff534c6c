#!/usr/bin/env bash
# The main job: set up, then load and run the bundled example model
# (models/example/tiny_cnn.onnx) on the reference runtime, compile it to a
# native .carbide artifact and run that, writing outputs under out/example/
# and checking both against onnxruntime's recorded outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# --workspace: the same features as the Python wheel's build, so the two share artifacts.
cargo build --release --workspace
target/release/carbide inspect models/example/tiny_cnn.onnx
target/release/carbide run models/example/tiny_cnn.onnx \
    --inputs models/example/tiny_cnn.inputs.npz --out out/example
# Compile it to native code (generated SIMD kernels in a .carbide artifact) and run that.
target/release/carbide compile models/example/tiny_cnn.onnx --target native -o out/example/tiny_cnn.carbide
target/release/carbide run out/example/tiny_cnn.carbide \
    --inputs models/example/tiny_cnn.inputs.npz --out out/example/compiled
# Both must match onnxruntime's outputs recorded next to the model.
.venv/bin/python - <<'PY'
import numpy as np
ref = np.load("models/example/tiny_cnn.ort.npz")
for run in ("out/example", "out/example/compiled"):
    for name in ref.files:
        got = np.load(f"{run}/{name}.npy")
        diff = float(np.max(np.abs(got - ref[name])))
        bound = 1e-4 * max(1.0, float(np.max(np.abs(ref[name]))))
        assert diff <= bound, f"{run}/{name}: max |carbide - ort| = {diff} > {bound}"
        print(f"{run}/{name}.npy matches onnxruntime (max diff {diff:.2e})")
PY
