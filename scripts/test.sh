#!/usr/bin/env bash
# Runs every test: set-up (idempotent), formatting and lints, the ONNX node
# conformance suite against its recorded floor, then the Rust test suites
# (unit, CLI, and the zoo models against onnxruntime), then the Python
# package's pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# The Python wheel is built with the dev profile here: it shares this script's cargo build.
CARBIDE_WHEEL_PROFILE=dev scripts/setup.sh

# One build profile (dev: our crates at opt-level 1, dependencies at 3) for
# everything, so CI compiles the workspace once for use and once for tests.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --quiet

# Conformance: the pass count must not fall below the floor in tests/conformance_floor.
# Its full table goes to target/conformance.txt; only a summary is printed here.
floor=$(grep -v '^#' tests/conformance_floor | head -n 1)
target/debug/carbide conformance .cache/onnx-node-tests --json target/conformance.json \
    --show-failures > target/conformance.txt
summary=$(tail -n 1 target/conformance.txt)
passed=${summary%% passed*}
echo "conformance: ${summary/passed,/passed (floor ${floor}),} -- table in target/conformance.txt" | sed 's/ failed,/ failing,/'
if [ "$passed" -lt "$floor" ]; then
    echo "conformance regressed: $passed cases pass, the floor is $floor" >&2
    exit 1
fi

# Compiled conformance: every case compiled for this machine (-O3) and run as
# a Module; its floor is tests/conformance_compiled_floor, and a case that the
# reference passes but the compiled module fails is listed as a compiler bug.
floor=$(grep -v '^#' tests/conformance_compiled_floor | head -n 1)
target/debug/carbide conformance .cache/onnx-node-tests --target native --json target/conformance_compiled.json \
    --show-failures > target/conformance_compiled.txt
summary=$(tail -n 1 target/conformance_compiled.txt)
passed=${summary%% passed*}
echo "compiled conformance: ${summary/passed,/passed (floor ${floor}),} -- table in target/conformance_compiled.txt" | sed 's/ failed,/ failing,/'
grep '^FAIL (reference passes)' target/conformance_compiled.txt >&2 || true
if [ "$passed" -lt "$floor" ]; then
    echo "compiled conformance regressed: $passed cases pass, the floor is $floor" >&2
    exit 1
fi

CARBIDE_REQUIRE_DATA=1 cargo test --workspace

# The Python package (installed by setup.sh): its pytest suite, zoo models included.
CARBIDE_REQUIRE_DATA=1 .venv/bin/python -m pytest -q python/tests
