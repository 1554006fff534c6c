#!/usr/bin/env bash
# Sets up everything Carbide's tests and examples need, idempotently:
# a Python venv with numpy/onnx/onnxruntime, the ONNX node test suite on
# disk, and the materialized model zoo with onnxruntime reference outputs.
set -euo pipefail
cd "$(dirname "$0")/.."

# Cross tools for the aarch64 NEON backend tests (cross gcc + qemu-user), when missing.
if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || ! command -v qemu-aarch64 >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu qemu-user >/dev/null
    else
        echo "note: install gcc-aarch64-linux-gnu and qemu-user to run the NEON backend tests" >&2
    fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import numpy, onnx, onnxruntime" 2>/dev/null \
    || [ requirements.txt -nt .venv/.requirements-installed ]; then
    .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
    touch .venv/.requirements-installed
fi

.venv/bin/python scripts/gen_node_tests.py .cache/onnx-node-tests
.venv/bin/python scripts/zoo.py .cache/zoo > /dev/null
echo "setup done"
