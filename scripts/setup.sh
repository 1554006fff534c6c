#!/usr/bin/env bash
# Sets up everything Carbide's tests and examples need, idempotently:
# a Python venv with numpy/onnx/onnxruntime, the ONNX node test suite on
# disk, and the materialized model zoo with onnxruntime reference outputs.
set -euo pipefail
cd "$(dirname "$0")/.."

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
