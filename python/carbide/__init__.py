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
    NodeArg,
    UnsupportedOp,
    __version__,
    inspect,
)

__all__ = [
    "CarbideError",
    "GraphOptimizationLevel",
    "InferenceSession",
    "InvalidArgument",
    "InvalidModel",
    "ModelMetadata",
    "NodeArg",
    "RunOptions",
    "SessionOptions",
    "UnsupportedOp",
    "__version__",
    "get_available_providers",
    "get_device",
    "inspect",
]

# Context attributes every Carbide exception has; the native code sets them
# on the instance where it knows them.
for _cls in (CarbideError, InvalidModel, UnsupportedOp, InvalidArgument):
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
