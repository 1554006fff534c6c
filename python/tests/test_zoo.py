"""Every zoo model through both Python APIs matches onnxruntime's recorded outputs."""
import numpy as np
import pytest

import carbide
from conftest import ZOO_MODELS, assert_close_to_ort, zoo_files


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_inference_session_matches_onnxruntime(name):
    path, inputs, expected = zoo_files(name)
    sess = carbide.InferenceSession(path)
    assert sorted(i.name for i in sess.get_inputs()) == sorted(inputs)
    output_names = [o.name for o in sess.get_outputs()]
    assert output_names == list(expected)
    outputs = sess.run(None, inputs)
    assert len(outputs) == len(expected)
    for out_name, ours in zip(output_names, outputs):
        assert isinstance(ours, np.ndarray)
        assert ours.dtype == expected[out_name].dtype
        assert_close_to_ort(name, out_name, ours, expected[out_name])
