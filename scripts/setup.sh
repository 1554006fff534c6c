#!/usr/bin/env bash
# Sets up everything Carbide's tests and examples need, idempotently:
# a Python venv with numpy/onnx/onnxruntime, the ONNX node test suite on
# disk, the materialized model zoo with onnxruntime reference outputs, and
# the Python package (python/) built as a wheel and installed into the venv.
# CARBIDE_WHEEL_PROFILE picks the cargo profile of the wheel: release (the
# default, for use) or dev (what scripts/test.sh uses: it shares the test
# build's artifacts).
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
if ! .venv/bin/python -c "import numpy, onnx, onnxruntime, pytest" 2>/dev/null \
    || [ ! -x .venv/bin/maturin ] \
    || [ requirements.txt -nt .venv/.requirements-installed ]; then
    .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
    touch .venv/.requirements-installed
fi

.venv/bin/python scripts/gen_node_tests.py .cache/onnx-node-tests
.venv/bin/python scripts/zoo.py .cache/zoo > /dev/null
# The Python package: maturin builds the wheel from the workspace's target/ (incremental), pip
# installs it over any previous build.
profile=${CARBIDE_WHEEL_PROFILE:-release}
rm -f target/wheels/carbide-*.whl
.venv/bin/maturin build --quiet --strip --profile "$profile" --manifest-path python/Cargo.toml \
    --interpreter .venv/bin/python --out target/wheels
.venv/bin/pip install --quiet --disable-pip-version-check --force-reinstall --no-deps target/wheels/carbide-*.whl
echo "setup done"
