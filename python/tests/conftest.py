"""Shared fixtures: the materialized model zoo (scripts/zoo.py) and small
models built with onnx.helper."""
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZOO = os.path.join(ROOT, ".cache", "zoo")
ZOO_MODELS = ["mlp", "resnet18", "resnet50", "mobilenet_v2", "squeezenet1_1", "minilm_l6"]


def zoo_files(name):
    """(model path, inputs dict, onnxruntime outputs dict) of a zoo model, or
    a skip (a failure under CARBIDE_REQUIRE_DATA=1) when it is not materialized."""
    path = os.path.join(ZOO, name + ".onnx")
    if not os.path.exists(path):
        msg = f"{path} is missing: run scripts/zoo.py"
        if os.environ.get("CARBIDE_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    with np.load(os.path.join(ZOO, name + ".inputs.npz")) as f:
        inputs = {k: f[k] for k in f.files}
    with np.load(os.path.join(ZOO, name + ".ort.npz")) as f:
        expected = {k: f[k] for k in f.files}
    return path, inputs, expected


def assert_close_to_ort(name, out_name, ours, reference):
    """The zoo tolerance: max|carbide - ort| <= 1e-4 * max(1, max|ort|)."""
    assert ours.shape == reference.shape, f"{name}/{out_name}: shape {ours.shape} != {reference.shape}"
    ours64 = ours.astype(np.float64)
    ref64 = reference.astype(np.float64)
    diff = float(np.max(np.abs(ours64 - ref64))) if ours.size else 0.0
    bound = 1e-4 * max(1.0, float(np.max(np.abs(ref64))) if ref64.size else 0.0)
    assert diff <= bound, f"{name}/{out_name}: max|carbide - ort| = {diff:e} > {bound:e}"
