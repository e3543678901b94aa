"""The import table: ONNX op type -> handler building our ops (filled by ops_math and ops_shape).

A handler is ``fn(imp, ins, attrs) -> value or list of values``: ``imp`` is the Importer (its
helpers turn values into tensors or known ints), ``ins`` the input values (None for an omitted
optional input), ``attrs`` the node's attributes as Python values. ``imp.node`` is the ONNX node.
"""
from __future__ import annotations

from typing import Callable

HANDLERS: dict[str, Callable] = {}


def handles(*op_types: str):
    """Register the decorated function as the importer of each ONNX op type in ``op_types``."""
    def register(fn):
        for op_type in op_types:
            if op_type in HANDLERS:
                raise ValueError(f"ONNX op {op_type!r} has two import handlers")
            HANDLERS[op_type] = fn
        return fn
    return register


def handlers() -> dict[str, Callable]:
    from . import ops_math, ops_shape  # noqa: F401  (fill the table)
    return HANDLERS
