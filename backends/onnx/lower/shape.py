"""ONNX rows of the shape ops (graphdsl/ops/shape.py): reshape, transpose, broadcast_to.

A target shape may hold symbolic dims; ``em.dims`` turns it into an int64 value read from the
input shapes at run time, so one exported model serves every batch size. Reshape is exported with
``allowzero=1``: a 0 in our shape is a size, never ONNX's "copy this dim".
"""
from __future__ import annotations

from ..table import EXPORT


@EXPORT.register("reshape")
def _reshape(em, node, x):
    return em.op("Reshape", [x, em.dims(node.attrs["shape"])], allowzero=1, hint="reshape")


@EXPORT.register("transpose")
def _transpose(em, node, x):
    return em.op("Transpose", [x], perm=list(node.attrs["perm"]), hint="transpose")


@EXPORT.register("broadcast_to")
def _broadcast_to(em, node, x):
    return em.op("Expand", [x, em.dims(node.attrs["shape"])], hint="expand")
