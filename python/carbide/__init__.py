"""Carbide: an ML model compiler. ONNX in, fast kernels out.

Two ways to run a model from Python:

* ``carbide.InferenceSession`` has onnxruntime's API: code written for
  onnxruntime runs unchanged after swapping the session class (or
  ``import carbide as ort``)::

      sess = carbide.InferenceSession("model.onnx")
      (y,) = sess.run(None, {"x": x})

* ``carbide.compile`` turns a model into a ``carbide.Module`` that can be
  saved as a ``.carbide`` artifact and loaded again with ``carbide.load``::

      module = carbide.compile("model.onnx")
      outputs = module.run({"x": x})        # dict name -> numpy array
      module.save("model.carbide")

``carbide.inspect(model)`` summarizes a model as a dict. Every error is a
``carbide.CarbideError`` (``InvalidModel``, ``UnsupportedOp``,
``InvalidArgument``) naming the node, op or input concerned.
"""

from ._carbide import (
    CarbideError,
    InferenceSession,
    InvalidArgument,
    InvalidModel,
    ModelMetadata,
    Module,
    NodeArg,
    UnsupportedOp,
    __version__,
    inspect,
)
from ._carbide import compile as _native_compile
from ._carbide import load as _native_load
from ._carbide import tune as _native_tune

__all__ = [
    "CarbideError",
    "GraphOptimizationLevel",
    "InferenceSession",
    "InvalidArgument",
    "InvalidModel",
    "ModelMetadata",
    "Module",
    "NodeArg",
    "RunOptions",
    "SessionOptions",
    "UnsupportedOp",
    "__version__",
    "compile",
    "get_available_providers",
    "get_device",
    "inspect",
    "load",
    "tune",
]

# Context attributes every Carbide exception has; the native code sets them
# on the instance where it knows them.
for _cls in (CarbideError, InvalidModel, UnsupportedOp, InvalidArgument, InferenceSession, NodeArg, ModelMetadata, Module):
    _cls.__module__ = "carbide"
CarbideError.node = None
CarbideError.op = None
CarbideError.input = None
del _cls


class GraphOptimizationLevel:
    """onnxruntime's optimization levels, accepted for compatibility."""

    ORT_DISABLE_ALL = 0
    ORT_ENABLE_BASIC = 1
    ORT_ENABLE_EXTENDED = 2
    ORT_ENABLE_LAYOUT = 3
    ORT_ENABLE_ALL = 99


class SessionOptions:
    """onnxruntime's ``SessionOptions``: any attribute may be set; Carbide's
    session accepts the object and ignores the settings (results do not depend
    on them)."""

    def __init__(self):
        self.graph_optimization_level = GraphOptimizationLevel.ORT_ENABLE_ALL
        self.intra_op_num_threads = 0
        self.inter_op_num_threads = 0
        self.log_severity_level = 2
        self.enable_profiling = False

    def add_session_config_entry(self, key, value):
        self.__dict__.setdefault("_config", {})[key] = value

    def get_session_config_entry(self, key):
        return self.__dict__.get("_config", {})[key]


class RunOptions:
    """onnxruntime's ``RunOptions``, accepted by ``InferenceSession.run`` and ignored."""

    def __init__(self):
        self.log_severity_level = 2
        self.run_tag = ""
        self.terminate = False

    def add_run_config_entry(self, key, value):
        self.__dict__.setdefault("_config", {})[key] = value


def get_available_providers():
    """The execution providers Carbide's session offers: the host CPU."""
    return ["CPUExecutionProvider"]


def get_device():
    """The device Carbide's session runs on."""
    return "CPU"


def compile(model, target="native", opt_level=3, tuning_db=None, threads=None):
    """Compiles an ONNX model into a ``carbide.Module``.

    ``model`` is a path to an .onnx file, its serialized bytes, or an
    ``onnx.ModelProto``. ``target`` is "native" (this machine), "x86-64-avx2",
    "x86-64-avx512" or "aarch64-neon"; ``opt_level`` 0..3 chooses how much
    graph optimization runs; ``tuning_db`` is a file of tuning records (JSON
    lines) to replay; ``threads`` sizes the module's worker pool (default: all
    cores).

    The module runs with dicts of numpy arrays, can be saved as a ``.carbide``
    artifact, and loaded again (without the compiler) by ``carbide.load``.

    Example::

        import numpy as np
        import carbide

        module = carbide.compile("resnet18.onnx", opt_level=3)
        print(module.inputs[0].name, module.inputs[0].shape)   # input [1, 3, 224, 224]
        x = np.random.rand(1, 3, 224, 224).astype(np.float32)
        outputs = module.run({"input": x})                      # {"logits": array(...)}
        module.save("resnet18.carbide")
        same = carbide.load("resnet18.carbide")

    Raises ``carbide.InvalidArgument`` for a bad target, level or path,
    ``carbide.InvalidModel`` / ``carbide.UnsupportedOp`` for models Carbide
    cannot compile (naming the node and op).
    """
    return _native_compile(model, target, opt_level, tuning_db, threads)


def load(artifact):
    """Loads a ``.carbide`` artifact written by ``Module.save`` (a path, or
    the artifact's bytes) into a ``carbide.Module``; no compiler is needed.

    Example::

        module = carbide.load("resnet18.carbide")
        outputs = module.run({"input": x})
    """
    return _native_load(artifact)


def tune(model, trials=200, db="tune.jsonl", target="native", time_budget=None, threads=None, opt_level=3, seed=0):
    """Searches faster schedules for a model's kernels and records them.

    Every trial is appended to ``db`` (JSON lines), so calling ``tune`` again
    with the same ``db`` resumes: records already there count towards
    ``trials``. ``time_budget`` is seconds or a string like ``"10m"``;
    ``threads`` is how many cores each kernel is measured with (default: all).
    Pass the same file to ``carbide.compile(model, tuning_db=db)`` to build
    with the best schedule per kernel.

    Returns a summary dict: ``trials_run``, ``trials_resumed``, ``seconds``,
    ``peak_gflops`` and ``tasks``, one per distinct kernel workload with
    ``default_us``, ``best_us``, ``speedup``, ``peak_pct`` and ``schedule``.

    Example::

        summary = carbide.tune("resnet50.onnx", trials=400, db="r50.jsonl", time_budget="10m")
        module = carbide.compile("resnet50.onnx", tuning_db="r50.jsonl")
    """
    return _native_tune(model, trials, db, target, time_budget, threads, opt_level, seed)
