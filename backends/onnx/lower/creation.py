"""ONNX rows of the creation ops (graphdsl/ops/creation.py): ``full`` and ``iota``.

Shapes may hold symbolic dims, read from the graph inputs' shapes at run time (``em.dims``). A
``full`` whose value is a symbolic dim (a mean's 1/n in its gradient) reads that dim the same way.
"""
from __future__ import annotations

from graphdsl.types import Dim

from ..emitter import onnx_dtype
from ..table import EXPORT
from .common import arange, full


@EXPORT.register("full")
def _full(em, node):
    a = node.attrs
    if isinstance(a["value"], Dim):   # a symbolic size as a value (the 1/n of a mean's gradient)
        value = em.scalar(a["value"], onnx_dtype(a["dtype"]))   # computed from the input shapes
        return value if not a["shape"] else em.op("Expand", [value, em.dims(a["shape"])], hint="full")
    return full(em, a["shape"], a["value"], onnx_dtype(a["dtype"]))


@EXPORT.register("iota")
def _iota(em, node):
    shape, axis = node.attrs["shape"], node.attrs["axis"]
    idx = arange(em, shape[axis], onnx_dtype(node.attrs["dtype"]))
    if len(shape) == 1:
        return idx
    view = [1] * len(shape)
    view[axis] = shape[axis]
    col = em.op("Reshape", [idx, em.dims(view)])
    return em.op("Expand", [col, em.dims(shape)], hint="iota")
