"""graphdsl: declare Transformer models in a small symbolic DSL, optimize the graph, compile it."""
from __future__ import annotations

from . import dtypes, interpreter, nn, ops, optim  # noqa: F401  (interpreter binds graph(x=...))
from .autodiff import grad
from .dtypes import bfloat16, bool_, float16, float32, float64, int32, int64
from .errors import GraphDSLError, ShapeError, TypeError_
from .graph import Graph, Node
from .tracing import Parameter, Tensor, trace
from .types import Dim, Shape, TensorType

__version__ = "0.1.0"


def from_onnx(source, **options) -> Graph:
    """Import an ONNX model (path, bytes or ModelProto) as a Graph; see graphdsl.onnx.from_onnx.
    onnx is imported on first use, so ``import graphdsl`` stays fast."""
    from .onnx import from_onnx as _from_onnx
    return _from_onnx(source, **options)


__all__ = ["Dim", "Graph", "GraphDSLError", "Node", "Parameter", "Shape", "ShapeError", "Tensor",
           "TensorType", "TypeError_", "bfloat16", "bool_", "dtypes", "float16", "float32", "float64",
           "from_onnx", "grad", "int32", "int64", "nn", "ops", "optim", "trace"]
