"""The API surface: introspection, dtypes in and out, layouts, inspect, errors."""
import os

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

import carbide
from models import add_model, identity, model_bytes


def test_node_args_describe_inputs_like_onnxruntime():
    sess = carbide.InferenceSession(add_model())
    x, y = sess.get_inputs()
    assert (x.name, x.shape, x.type) == ("x", [2, 3], "tensor(float)")
    assert (y.name, y.shape, y.type) == ("y", ["batch", 3], "tensor(float)")
    (z,) = sess.get_outputs()
    assert z.name == "z" and z.type == "tensor(float)"
    assert "NodeArg(name='x'" in repr(x)
    assert sess.get_modelmeta().producer_name == "carbide-tests"


def test_model_sources_path_bytes_proto(tmp_path):
    data = add_model()
    path = tmp_path / "add.onnx"
    path.write_bytes(data)
    x = np.ones((2, 3), np.float32)
    y = np.arange(6, dtype=np.float32).reshape(2, 3)
    for source in (str(path), path, data, bytearray(data), onnx.load_from_string(data)):
        (z,) = carbide.InferenceSession(source).run(None, {"x": x, "y": y})
        np.testing.assert_array_equal(z, x + y)


NUMERIC = [
    (TensorProto.FLOAT, np.float32),
    (TensorProto.DOUBLE, np.float64),
    (TensorProto.FLOAT16, np.float16),
    (TensorProto.INT8, np.int8),
    (TensorProto.INT16, np.int16),
    (TensorProto.INT32, np.int32),
    (TensorProto.INT64, np.int64),
    (TensorProto.UINT8, np.uint8),
    (TensorProto.UINT16, np.uint16),
    (TensorProto.UINT32, np.uint32),
    (TensorProto.UINT64, np.uint64),
    (TensorProto.BOOL, np.bool_),
]


@pytest.mark.parametrize("elem_type,np_type", NUMERIC)
def test_every_numpy_dtype_round_trips(elem_type, np_type):
    sess = carbide.InferenceSession(identity(elem_type))
    x = (np.arange(7) % 3).astype(np_type)
    (y,) = sess.run(None, {"x": x})
    assert y.dtype == np.dtype(np_type)
    np.testing.assert_array_equal(y, x)
    assert sess.get_inputs()[0].type == onnxruntime.InferenceSession(identity(elem_type)).get_inputs()[0].type


def test_strings_in_and_out():
    sess = carbide.InferenceSession(identity(TensorProto.STRING, shape=(2, 2)))
    for x in (np.array([["a", "bé"], ["", "xyz"]]), np.array([["a", "bé"], ["", "xyz"]], dtype=object)):
        (y,) = sess.run(None, {"x": x})
        assert y.dtype == object and y.shape == (2, 2)
        assert y.tolist() == [["a", "bé"], ["", "xyz"]]


def test_bfloat16_and_float8_through_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    for elem_type, dt in [(TensorProto.BFLOAT16, ml_dtypes.bfloat16), (TensorProto.FLOAT8E4M3FN, ml_dtypes.float8_e4m3fn)]:
        x = np.array([1.5, -2.0, 0.25], dtype=dt)
        (y,) = carbide.InferenceSession(identity(elem_type)).run(None, {"x": x})
        assert y.dtype == x.dtype
        np.testing.assert_array_equal(y.astype(np.float32), x.astype(np.float32))


def test_non_contiguous_and_byte_swapped_inputs_are_copied():
    sess = carbide.InferenceSession(add_model())
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    x = base[::2, ::2]  # strided view
    y = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    swapped = y.astype(y.dtype.newbyteorder(">"))
    assert not x.flags.c_contiguous and not y.flags.c_contiguous
    for y_in in (y, swapped, y.T.T):
        (z,) = sess.run(None, {"x": x, "y": y_in})
        np.testing.assert_array_equal(z, x + y)
    # Python lists are converted as np.asarray does; their dtype must still match.
    with pytest.raises(carbide.InvalidArgument, match="got tensor\\(double\\)"):
        sess.run(None, {"x": x.tolist(), "y": y})
    (d,) = carbide.InferenceSession(identity(TensorProto.DOUBLE)).run(None, {"x": [1.0, 2.5]})
    np.testing.assert_array_equal(d, [1.0, 2.5])


def test_outputs_own_their_memory():
    sess = carbide.InferenceSession(add_model())
    x = np.ones((2, 3), np.float32)
    (z,) = sess.run(None, {"x": x, "y": x})
    assert z.flags.owndata or z.base is not None and not isinstance(z.base, np.ndarray)
    z[0, 0] = 42.0  # writable, independent of the inputs
    assert x[0, 0] == 1.0
    (z2,) = sess.run(None, {"x": x, "y": x})
    assert z2[0, 0] == 2.0


def test_named_outputs_in_requested_order():
    data = model_bytes(
        [helper.make_node("Neg", ["x"], ["a"], name="neg"), helper.make_node("Abs", ["x"], ["b"], name="abs")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [3]), helper.make_tensor_value_info("b", TensorProto.FLOAT, [3])],
    )
    sess = carbide.InferenceSession(data)
    x = np.array([-1.0, 2.0, -3.0], np.float32)
    b, a, b2 = sess.run(["b", "a", "b"], {"x": x})
    np.testing.assert_array_equal(a, -x)
    np.testing.assert_array_equal(b, np.abs(x))
    np.testing.assert_array_equal(b2, np.abs(x))
    with pytest.raises(carbide.InvalidArgument, match="no output 'c'"):
        sess.run(["c"], {"x": x})


def test_inspect_matches_the_cli_summary():
    summary = carbide.inspect(add_model())
    assert summary["op_histogram"] == {"Add": 1}
    assert [i["name"] for i in summary["inputs"]] == ["x", "y"]
    assert summary["nodes"] == 1
    assert summary["producer"].startswith("carbide-tests")


def test_help_teaches_with_an_example():
    assert "Example" in carbide.InferenceSession.__doc__
    assert "Example" in carbide.inspect.__doc__


# ---- errors ---------------------------------------------------------------


def test_bad_path():
    with pytest.raises(carbide.InvalidArgument, match="no_such_model.onnx") as e:
        carbide.InferenceSession(os.path.join("nowhere", "no_such_model.onnx"))
    assert isinstance(e.value, carbide.CarbideError)


def test_corrupt_bytes():
    data = add_model()
    with pytest.raises(carbide.InvalidModel, match="protobuf"):
        carbide.InferenceSession(b"\xff\xfe this is not a model" + data[5:40])


def test_wrong_model_argument_type():
    with pytest.raises(carbide.InvalidArgument, match="path, bytes or an onnx.ModelProto"):
        carbide.InferenceSession(12345)


def test_unsupported_op_names_node_and_op():
    data = model_bytes(
        [helper.make_node("NoSuchOpAnywhere", ["x"], ["y"], name="mystery")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    with pytest.raises(carbide.UnsupportedOp, match="NoSuchOpAnywhere") as e:
        carbide.InferenceSession(data)
    assert e.value.op == "NoSuchOpAnywhere"
    assert e.value.node == "mystery"


def test_invalid_model_names_node():
    data = model_bytes(
        [helper.make_node("Add", ["x", "i"], ["y"], name="mixed_add")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]), helper.make_tensor_value_info("i", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    with pytest.raises(carbide.InvalidModel, match="mixed_add") as e:
        carbide.InferenceSession(data)
    assert e.value.node == "mixed_add" and e.value.op == "Add"


def test_wrong_dtype_names_input_expected_and_actual():
    sess = carbide.InferenceSession(add_model())
    with pytest.raises(carbide.InvalidArgument) as e:
        sess.run(None, {"x": np.ones((2, 3), np.float64), "y": np.ones((2, 3), np.float32)})
    msg = str(e.value)
    assert "'x'" in msg and "tensor(float)" in msg and "tensor(double)" in msg
    assert e.value.input == "x"


def test_wrong_shape_names_input_expected_and_actual():
    sess = carbide.InferenceSession(add_model())
    with pytest.raises(carbide.InvalidArgument) as e:
        sess.run(None, {"x": np.ones((3, 2), np.float32), "y": np.ones((2, 3), np.float32)})
    msg = str(e.value)
    assert "'x'" in msg and "[2,3]" in msg and "[3,2]" in msg
    with pytest.raises(carbide.InvalidArgument, match="'y'.*rank|'y'"):
        sess.run(None, {"x": np.ones((2, 3), np.float32), "y": np.ones(3, np.float32)})


def test_missing_and_unknown_inputs():
    sess = carbide.InferenceSession(add_model())
    x = np.ones((2, 3), np.float32)
    with pytest.raises(carbide.InvalidArgument, match="missing input 'y'") as e:
        sess.run(None, {"x": x})
    assert e.value.input == "y"
    with pytest.raises(carbide.InvalidArgument, match="no input 'q'"):
        sess.run(None, {"x": x, "y": x, "q": x})
    with pytest.raises(carbide.InvalidArgument, match="dict"):
        sess.run(None, [x, x])


def test_runtime_failure_names_node_and_op():
    data = model_bytes(
        [helper.make_node("Reshape", ["x", "s"], ["y"], name="bad_reshape")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"]), helper.make_tensor_value_info("s", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    sess = carbide.InferenceSession(data)
    with pytest.raises(carbide.CarbideError, match="bad_reshape") as e:
        sess.run(None, {"x": np.ones(6, np.float32), "s": np.array([4], np.int64)})
    assert e.value.node == "bad_reshape" and e.value.op == "Reshape"
