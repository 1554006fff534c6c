"""carbide.compile / Module / carbide.load: every zoo model compiled, saved,
loaded and run matches onnxruntime; errors are CarbideErrors."""
import numpy as np
import pytest

import carbide
from conftest import ZOO_MODELS, assert_close_to_ort, zoo_files
from models import add_model


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_compiled_module_matches_onnxruntime(name, tmp_path):
    path, inputs, expected = zoo_files(name)
    module = carbide.compile(path)
    assert sorted(i.name for i in module.inputs) == sorted(inputs)
    assert [o.name for o in module.outputs] == list(expected)
    outputs = module.run(inputs)
    assert list(outputs) == list(expected)
    for out_name, reference in expected.items():
        assert_close_to_ort(name, out_name, outputs[out_name], reference)
    artifact = tmp_path / (name + ".carbide")
    module.save(str(artifact))
    loaded = carbide.load(artifact)
    again = loaded.run(inputs)
    for out_name, reference in expected.items():
        assert_close_to_ort(name, out_name, again[out_name], reference)


def test_compile_accepts_bytes_and_proto_and_options():
    onnx = pytest.importorskip("onnx")
    data = add_model()
    x = np.ones((2, 3), np.float32)
    for source in (data, onnx.load_from_string(data)):
        for level in (0, 3):
            module = carbide.compile(source, target="native", opt_level=level)
            np.testing.assert_array_equal(module.run({"x": x, "y": 2 * x})["z"], 3 * x)
    module = carbide.compile(data)
    assert carbide.load(module.to_bytes()).run({"x": x, "y": x})["z"].tolist() == (2 * x).tolist()
    assert "Module" in repr(module)


def test_compile_and_load_errors(tmp_path):
    data = add_model()
    with pytest.raises(carbide.InvalidArgument, match="target"):
        carbide.compile(data, target="no-such-cpu")
    with pytest.raises(carbide.InvalidArgument, match="opt_level"):
        carbide.compile(data, opt_level=7)
    with pytest.raises(carbide.InvalidArgument):
        carbide.compile(data, tuning_db=str(tmp_path / "missing.jsonl"))
    with pytest.raises(carbide.InvalidArgument, match="missing.carbide"):
        carbide.load(str(tmp_path / "missing.carbide"))
    corrupt = tmp_path / "corrupt.carbide"
    corrupt.write_bytes(b"definitely not an artifact" * 10)
    with pytest.raises(carbide.InvalidModel):
        carbide.load(corrupt)
    module = carbide.compile(data)
    with pytest.raises(carbide.InvalidArgument, match="'y'"):
        module.run({"x": np.ones((2, 3), np.float32)})
    with pytest.raises(carbide.InvalidArgument, match="tensor\\(double\\)"):
        module.run({"x": np.ones((2, 3)), "y": np.ones((2, 3), np.float32)})


def test_help_for_compile_has_an_example():
    doc = carbide.compile.__doc__
    assert "Example" in doc and "carbide.compile(" in doc and "module.run(" in doc
