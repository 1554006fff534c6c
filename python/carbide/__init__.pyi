"""Type stubs for the carbide package (native part: carbide._carbide)."""

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

ModelLike = Union[str, "os.PathLike[str]", bytes, bytearray, Any]
"""A path to an .onnx file, serialized ONNX bytes, or an onnx.ModelProto."""

Dim = Union[int, str, None]
OutputValue = Union[np.ndarray, List[Any], None]

__version__: str

class CarbideError(Exception):
    """Base class of every error Carbide raises."""

    node: Optional[str]
    op: Optional[str]
    input: Optional[str]

class InvalidModel(CarbideError): ...
class UnsupportedOp(CarbideError): ...
class InvalidArgument(CarbideError): ...

class NodeArg:
    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> List[Dim]: ...
    @property
    def type(self) -> str: ...

class ModelMetadata:
    producer_name: str
    graph_name: str
    graph_description: str
    domain: str
    description: str
    version: int
    custom_metadata_map: Dict[str, str]

class InferenceSession:
    def __init__(
        self,
        path_or_bytes: ModelLike,
        sess_options: Optional[Any] = None,
        providers: Optional[Sequence[Union[str, Tuple[str, Dict[str, Any]]]]] = None,
        provider_options: Optional[Sequence[Dict[str, Any]]] = None,
        **kwargs: Any,
    ) -> None: ...
    def get_inputs(self) -> List[NodeArg]: ...
    def get_outputs(self) -> List[NodeArg]: ...
    def get_overridable_initializers(self) -> List[NodeArg]: ...
    def get_providers(self) -> List[str]: ...
    def get_provider_options(self) -> Dict[str, Dict[str, Any]]: ...
    def get_modelmeta(self) -> ModelMetadata: ...
    def set_providers(self, providers: Optional[Sequence[Any]] = None, provider_options: Optional[Any] = None) -> None: ...
    def run(
        self,
        output_names: Optional[Sequence[str]],
        input_feed: Dict[str, Any],
        run_options: Optional[Any] = None,
    ) -> List[OutputValue]: ...

class GraphOptimizationLevel:
    ORT_DISABLE_ALL: int
    ORT_ENABLE_BASIC: int
    ORT_ENABLE_EXTENDED: int
    ORT_ENABLE_LAYOUT: int
    ORT_ENABLE_ALL: int

class SessionOptions:
    graph_optimization_level: int
    intra_op_num_threads: int
    inter_op_num_threads: int
    log_severity_level: int
    enable_profiling: bool
    def __init__(self) -> None: ...
    def add_session_config_entry(self, key: str, value: str) -> None: ...
    def get_session_config_entry(self, key: str) -> str: ...

class RunOptions:
    log_severity_level: int
    run_tag: str
    terminate: bool
    def __init__(self) -> None: ...
    def add_run_config_entry(self, key: str, value: str) -> None: ...

class Module:
    """A compiled model: ``carbide.compile(model)`` or ``carbide.load(path)``."""

    @property
    def inputs(self) -> List[NodeArg]: ...
    @property
    def outputs(self) -> List[NodeArg]: ...
    def run(self, feeds: Dict[str, Any]) -> Dict[str, OutputValue]: ...
    def save(self, path: Union[str, "os.PathLike[str]"]) -> None: ...
    def to_bytes(self) -> bytes: ...

def compile(
    model: ModelLike,
    target: str = "native",
    opt_level: int = 3,
    tuning_db: Optional[Union[str, "os.PathLike[str]"]] = None,
    threads: Optional[int] = None,
) -> Module: ...
def load(artifact: Union[str, "os.PathLike[str]", bytes]) -> Module: ...
def tune(
    model: ModelLike,
    trials: int = 200,
    db: Union[str, "os.PathLike[str]"] = "tune.jsonl",
    target: str = "native",
    time_budget: Optional[Union[float, str]] = None,
    threads: Optional[int] = None,
    opt_level: int = 3,
    seed: int = 0,
) -> Dict[str, Any]: ...
def get_available_providers() -> List[str]: ...
def get_device() -> str: ...
def inspect(model: ModelLike) -> Dict[str, Any]: ...
