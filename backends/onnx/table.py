"""The ONNX lowering table: registry op name -> function emitting the op as standard ONNX nodes.

A lowering is ``fn(em, node, ins) -> str``: ``em`` is the Emitter, ``node`` the graph node (its
attrs and types), ``ins`` the ONNX names of its inputs; it returns the ONNX name of the result,
which must have the node's dtype. The lowering modules (lower_math, lower_array, lower_nn) fill the
table with ``@lowers("op")``; an op that has no row must have a decomposition (tests check this).
"""
from __future__ import annotations

from typing import Callable

LOWERINGS: dict[str, Callable] = {}


def lowers(*names: str):
    """Register the decorated function as the lowering of each op in ``names``."""
    def register(fn):
        for name in names:
            if name in LOWERINGS:
                raise ValueError(f"op {name!r} has two ONNX lowerings")
            LOWERINGS[name] = fn
        return fn
    return register


def table() -> dict[str, Callable]:
    """The full table (importing the lowering modules fills it)."""
    from . import lower_array, lower_math, lower_nn  # noqa: F401
    return LOWERINGS
