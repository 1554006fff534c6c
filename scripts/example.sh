#!/usr/bin/env bash
# The main job: set up, then load and run the bundled example model
# (models/example/tiny_cnn.onnx), writing its outputs to out/example/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# --workspace: the same features as the Python wheel's build, so the two share artifacts.
cargo build --release --workspace
target/release/carbide inspect models/example/tiny_cnn.onnx
target/release/carbide run models/example/tiny_cnn.onnx \
    --inputs models/example/tiny_cnn.inputs.npz --out out/example
