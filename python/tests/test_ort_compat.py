"""A script written for onnxruntime runs unchanged against Carbide, with only
the session class (or the whole module) swapped."""
import sys
import types

import numpy as np
import onnxruntime
import pytest

import carbide
from conftest import ZOO_MODELS, assert_close_to_ort, zoo_files

# Written for onnxruntime, as people write it: options, providers, metadata,
# introspection of inputs (symbolic dims filled in), named outputs, run options.
ORT_SCRIPT = """
import numpy as np
import onnxruntime as ort

opts = ort.SessionOptions()
opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
opts.intra_op_num_threads = 2
sess = ort.InferenceSession(MODEL_PATH, sess_options=opts, providers=["CPUExecutionProvider"])
assert "CPUExecutionProvider" in sess.get_providers()
meta = sess.get_modelmeta()
producer = meta.producer_name
feed = {}
for inp in sess.get_inputs():
    assert inp.type.startswith("tensor(")
    dims = [d if isinstance(d, int) else SAMPLE[inp.name].shape[i] for i, d in enumerate(inp.shape)]
    assert list(SAMPLE[inp.name].shape) == dims
    feed[inp.name] = SAMPLE[inp.name]
names = [o.name for o in sess.get_outputs()]
results = sess.run(names, feed, ort.RunOptions())
first_only = sess.run(names[:1], feed)[0]
RESULT = dict(zip(names, results))
FIRST = first_only
"""


def run_script(model_path, sample):
    scope = {"MODEL_PATH": model_path, "SAMPLE": sample}
    exec(compile(ORT_SCRIPT, "ort_script.py", "exec"), scope)
    return scope


@pytest.mark.parametrize("name", ["mlp", "squeezenet1_1", "minilm_l6"])
def test_session_class_swapped(name, monkeypatch):
    path, inputs, _ = zoo_files(name)
    with_ort = run_script(path, inputs)
    monkeypatch.setattr(onnxruntime, "InferenceSession", carbide.InferenceSession)
    with_carbide = run_script(path, inputs)
    assert list(with_carbide["RESULT"]) == list(with_ort["RESULT"])
    for out_name, reference in with_ort["RESULT"].items():
        assert_close_to_ort(name, out_name, with_carbide["RESULT"][out_name], reference)
    assert with_carbide["producer"] == with_ort["producer"]
    first = next(iter(with_ort["RESULT"]))
    assert_close_to_ort(name, first, with_carbide["FIRST"], with_ort["FIRST"])


def test_import_carbide_as_ort(monkeypatch):
    """`import carbide as ort`: the module-level names the script uses exist in carbide."""
    path, inputs, expected = zoo_files("mlp")
    monkeypatch.setitem(sys.modules, "onnxruntime", carbide)
    scope = run_script(path, inputs)
    for out_name, reference in expected.items():
        assert_close_to_ort("mlp", out_name, scope["RESULT"][out_name], reference)


def test_metadata_and_introspection_match_onnxruntime():
    path, _, _ = zoo_files("minilm_l6")
    ours = carbide.InferenceSession(path)
    theirs = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    for a, b in zip(ours.get_inputs(), theirs.get_inputs()):
        assert (a.name, a.type, a.shape) == (b.name, b.type, b.shape)
    for a, b in zip(ours.get_outputs(), theirs.get_outputs()):
        assert (a.name, a.type) == (b.name, b.type)
    m, n = ours.get_modelmeta(), theirs.get_modelmeta()
    # (version differs on purpose: onnxruntime reports INT64_MAX for an unset model_version, Carbide 0.)
    for attr in ("producer_name", "graph_name", "domain", "custom_metadata_map"):
        assert getattr(m, attr) == getattr(n, attr), attr
    assert ours.get_providers() == ["CPUExecutionProvider"]
    assert carbide.get_available_providers() == ["CPUExecutionProvider"]
