"""Import ONNX models as graphs: ``graphdsl.from_onnx("model.onnx")``.

The common ops of Transformer exports (PyTorch's legacy and dynamo exporters) are supported; shape
arithmetic is folded at import time and dynamic axes become symbolic dims. Loading is safe: see
load.py. This package imports onnx, so ``import graphdsl`` does not import it (``graphdsl.from_onnx``
does, on first use).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from graphdsl.graph import Graph

from .importer import Importer
from .load import MIN_OPSET, load_model


def from_onnx(source, *, dims: Mapping[str, int] | None = None,
              constants: Mapping[str, np.ndarray] | None = None) -> Graph:
    """The Graph of an ONNX model (a path, bytes or a ModelProto), its weights as constants.

    ``dims`` fixes named dynamic axes to sizes (``{"batch": 1}``); the others stay symbolic.
    ``constants`` fixes graph inputs to values (``{"axes": np.array([1])}``): they become constants
    of the graph, for inputs whose values the importer must know (axes, shapes, k) that a model
    exports as inputs.
    """
    model, label = load_model(source)
    return Importer(model, label, dims=dims, constants=constants).run().verify()   # verified before any backend sees it


def import_onnx(source, *, dims: Mapping[str, int] | None = None,
                constants: Mapping[str, np.ndarray] | None = None) -> tuple[Graph, dict[str, np.ndarray]]:
    """``(graph, params)``: the model with its float weights as named parameters, and their values."""
    model, label = load_model(source)
    imp = Importer(model, label, weights="params", dims=dims, constants=constants)
    graph = imp.run().verify()
    return graph, {k: v for k, v in imp.params.items() if k in graph.params}


__all__ = ["MIN_OPSET", "from_onnx", "import_onnx", "load_model"]
