#!/usr/bin/env python3
"""Prepares the model zoo for tests and benchmarks.

The repo carries each zoo model as a *skeleton* (models/zoo/NAME.skeleton.onnx):
the whole graph, but large float weights replaced by their statistics in
metadata_props["zoo.stripped"]. This script

  1. materializes every skeleton into OUT/NAME.onnx, filling each stripped
     tensor deterministically (splitmix64 counter stream seeded by a hash of
     model and tensor name; uniform with the recorded mean/std, clipped to the
     recorded min/max), and copies OUT/NAME.inputs.npz;
  2. runs onnxruntime on each with its sample inputs and writes the outputs
     to OUT/NAME.ort.npz, the reference the Rust tests compare against.

Idempotent: finished files are kept.

    python scripts/zoo.py [OUT]        (default .cache/zoo)
"""
import hashlib
import json
import os
import shutil
import sys

import numpy as np
import onnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "models", "zoo")
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def stream(seed, n):
    """n doubles in [0, 1) from a splitmix64 counter stream."""
    with np.errstate(over="ignore"):
        z = np.arange(n, dtype=np.uint64) * GOLDEN + np.uint64(seed)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 2.0**53)


def fill_tensor(tensor, stats, model_name):
    count = int(np.prod(tensor.dims)) if tensor.dims else 1
    digest = hashlib.sha256(f"{model_name}/{tensor.name}".encode()).digest()
    u = stream(int.from_bytes(digest[:8], "little"), count)
    spread = np.sqrt(3.0) * stats["std"]
    values = np.clip(stats["mean"] + (2.0 * u - 1.0) * spread, stats["min"], stats["max"])
    np_type = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16,
               onnx.TensorProto.DOUBLE: np.float64}[tensor.data_type]
    tensor.raw_data = values.astype(np_type).reshape(tuple(tensor.dims)).tobytes()


def materialize(skeleton, out_dir):
    name = os.path.basename(skeleton)[: -len(".skeleton.onnx")]
    out = os.path.join(out_dir, name + ".onnx")
    if not os.path.exists(out):
        model = onnx.load(skeleton)
        meta = {p.key: p.value for p in model.metadata_props}
        stats = json.loads(meta.get("zoo.stripped", "{}"))
        for t in model.graph.initializer:
            if t.name in stats:
                fill_tensor(t, stats[t.name], name)
        kept = [p for p in model.metadata_props if p.key != "zoo.stripped"]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        onnx.checker.check_model(model)
        onnx.save(model, out + ".tmp")
        os.replace(out + ".tmp", out)
    inputs = os.path.join(SRC, name + ".inputs.npz")
    shutil.copyfile(inputs, os.path.join(out_dir, name + ".inputs.npz"))
    return name, out


def reference_outputs(name, model_path, out_dir):
    ref = os.path.join(out_dir, name + ".ort.npz")
    if os.path.exists(ref):
        return
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
    feeds = dict(np.load(os.path.join(out_dir, name + ".inputs.npz")))
    outs = sess.run(None, feeds)
    np.savez(ref + ".tmp.npz", **{o.name: v for o, v in zip(sess.get_outputs(), outs)})
    os.replace(ref + ".tmp.npz", ref)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".cache", "zoo")
    os.makedirs(out_dir, exist_ok=True)
    for f in sorted(os.listdir(SRC)):
        if f.endswith(".skeleton.onnx"):
            name, path = materialize(os.path.join(SRC, f), out_dir)
            reference_outputs(name, path, out_dir)
            print(f"{name}: {path}")


if __name__ == "__main__":
    main()
