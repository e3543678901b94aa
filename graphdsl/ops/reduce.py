"""Reductions: sum, mean, max, min, argmax, each over one axis, several, or all, with keepdims."""
from __future__ import annotations

import numpy as np

from graphdsl.registry import defop
from graphdsl.types import TensorType

from ._common import axes_attr


def _reduce_normalize(name):
    def normalize(x, axis, keepdims):
        return {"axis": axes_attr(axis, x.rank, name), "keepdims": bool(keepdims)}
    return normalize


def _reduced_shape(x: TensorType, axis, keepdims):
    axes = range(x.rank) if axis is None else axis
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    return tuple(d for i, d in enumerate(x.shape) if i not in axes)


def _reduce_infer(x, axis, keepdims):
    return x.with_shape(_reduced_shape(x, axis, keepdims))


def _restore(g, x, axis, keepdims):
    """Broadcast a reduction's cotangent back to the input's shape."""
    from .shape import broadcast_to, reshape
    if not keepdims:
        g = reshape(g, shape=_reduced_shape(x.type, axis, True))
    return broadcast_to(g, shape=tuple(x.shape))


def _sum_ref(x, axis, keepdims):
    return np.asarray(np.sum(x, axis=axis, keepdims=keepdims), dtype=x.dtype)


sum = defop("sum", attrs={"axis": None, "keepdims": False}, normalize=_reduce_normalize("sum"),
            infer=_reduce_infer, ref=_sum_ref,
            vjp=lambda g, y, x, axis, keepdims: [_restore(g, x, axis, keepdims)],
            doc="sum over axis (None: all axes)", tags=("reduction",))
