#!/usr/bin/env python3
"""Writes the ONNX backend node test suite to disk for `carbide conformance`.

onnx >= 1.19 generates the cases in Python instead of shipping them; this
writes each as DIR/<case>/model.onnx + test_data_set_N/{input,output}_K.pb,
the layout onnx used to ship. Idempotent: a finished DIR (with .complete)
is left alone.

    python scripts/gen_node_tests.py .cache/onnx-node-tests
"""
import json
import os
import shutil
import sys

import onnx
from onnx import TensorProto, numpy_helper
from onnx.backend.test.loader import load_model_tests


def serialize(value, vtype, name):
    if vtype.HasField("map_type"):
        return numpy_helper.from_dict(value, name).SerializeToString()
    if vtype.HasField("sequence_type"):
        return numpy_helper.from_list(value, name).SerializeToString()
    if vtype.HasField("optional_type"):
        return numpy_helper.from_optional(value, name).SerializeToString()
    if isinstance(value, TensorProto):
        return value.SerializeToString()
    return numpy_helper.from_array(value, name).SerializeToString()


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else ".cache/onnx-node-tests"
    marker = os.path.join(out, ".complete")
    if os.path.exists(marker) and open(marker).read().strip() == onnx.__version__:
        print(f"{out}: node tests for onnx {onnx.__version__} already written")
        return
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    cases = load_model_tests(kind="node")
    for case in cases:
        d = os.path.join(out, case.name)
        os.makedirs(d)
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        with open(os.path.join(d, "data.json"), "w") as f:
            json.dump({"rtol": case.rtol, "atol": case.atol}, f)
        graph = case.model.graph
        for i, (inputs, outputs) in enumerate(case.data_sets):
            ds = os.path.join(d, f"test_data_set_{i}")
            os.makedirs(ds)
            for j, v in enumerate(inputs):
                with open(os.path.join(ds, f"input_{j}.pb"), "wb") as f:
                    f.write(serialize(v, graph.input[j].type, graph.input[j].name))
            for j, v in enumerate(outputs):
                with open(os.path.join(ds, f"output_{j}.pb"), "wb") as f:
                    f.write(serialize(v, graph.output[j].type, graph.output[j].name))
    with open(marker, "w") as f:
        f.write(onnx.__version__)
    print(f"{out}: wrote {len(cases)} node test cases (onnx {onnx.__version__})")


if __name__ == "__main__":
    main()
