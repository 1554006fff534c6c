"""Small ONNX models built in memory for the API and error tests."""
import numpy as np
import onnx
from onnx import TensorProto, helper


def model_bytes(nodes, inputs, outputs, initializers=(), opset=17, name="g"):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="carbide-tests")
    return model.SerializeToString()


def identity(elem_type, shape=("n",)):
    """y = Identity(x) for one element type."""
    return model_bytes(
        [helper.make_node("Identity", ["x"], ["y"], name="id")],
        [helper.make_tensor_value_info("x", elem_type, list(shape))],
        [helper.make_tensor_value_info("y", elem_type, list(shape))],
    )


def add_model():
    """z = x + y with x: float[2,3], y: float[batch,3]."""
    return model_bytes(
        [helper.make_node("Add", ["x", "y"], ["z"], name="add0")],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
        ],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])],
    )


def matmul_chain(n=384, steps=24):
    """A model long enough to observe a run in progress: y = x @ W applied `steps` times."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
    nodes, prev = [], "x"
    for i in range(steps):
        out = "y" if i == steps - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, "w"], [out], name=f"mm{i}"))
        prev = out
    return model_bytes(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])],
        [onnx.numpy_helper.from_array(w, "w")],
    )
