#!/usr/bin/env python3
"""Builds the bundled example model, models/example/tiny_cnn.onnx: a small
image classifier (Conv-BatchNorm-Relu-MaxPool, Conv-Relu, global pooling,
Gemm, Softmax) over a symbolic batch dim, with fixed pseudo-random weights,
plus a sample input archive and onnxruntime's outputs for it.

    python scripts/make_example.py
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "example")


def main():
    rng = np.random.default_rng(7)
    w = lambda *s: (rng.standard_normal(s) * (2.0 / np.prod(s[1:])) ** 0.5).astype(np.float32)
    inits = {
        "conv1.w": w(8, 3, 3, 3), "conv1.b": np.zeros(8, np.float32),
        "bn.scale": (1 + 0.1 * rng.standard_normal(8)).astype(np.float32),
        "bn.bias": (0.1 * rng.standard_normal(8)).astype(np.float32),
        "bn.mean": (0.1 * rng.standard_normal(8)).astype(np.float32),
        "bn.var": (1 + 0.1 * rng.random(8)).astype(np.float32),
        "conv2.w": w(16, 8, 3, 3), "conv2.b": (0.01 * rng.standard_normal(16)).astype(np.float32),
        "fc.w": w(10, 16), "fc.b": np.zeros(10, np.float32),
        "flat": np.array([0, -1], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["image", "conv1.w", "conv1.b"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("BatchNormalization", ["c1", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["b1"], name="bn1"),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Conv", ["p1", "conv2.w", "conv2.b"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Reshape", ["g", "flat"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], transB=1, name="fc"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="carbide-example")
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "tiny_cnn.onnx")
    onnx.save(model, path)
    image = rng.random((2, 3, 32, 32), dtype=np.float32)
    np.savez(os.path.join(OUT, "tiny_cnn.inputs.npz"), image=image)
    try:
        import onnxruntime as ort
        probs = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"image": image})[0]
        np.savez(os.path.join(OUT, "tiny_cnn.ort.npz"), probs=probs)
    except ImportError:
        pass
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
