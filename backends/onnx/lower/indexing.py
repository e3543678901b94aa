"""ONNX rows of the indexing ops (graphdsl/ops/indexing.py): slices, concat, squeezes, take,
gather, the scatters, one_hot, triu/tril.

Bounds may hold symbolic dims (``em.dim``). The indices are used as they are: ONNX wraps negative
ones where the reference raises, so the onnxruntime backend's own model clips them and checks
their range after the call (export.py, ``export_checked``); a file for users has no such checks.
"""
from __future__ import annotations

import numpy as np

from ..emitter import INT64_MIN, Emitter, onnx_dtype
from ..table import EXPORT
from .common import I64, arange, axes, full


@EXPORT.register("squeeze")
def _squeeze(em, node, x):
    return em.op("Squeeze", [x, axes(em, [node.attrs["axis"]])], hint="squeeze")


@EXPORT.register("unsqueeze")
def _unsqueeze(em, node, x):
    return em.op("Unsqueeze", [x, axes(em, [node.attrs["axis"]])], hint="unsqueeze")


@EXPORT.register("concat")
def _concat(em, node, *xs):
    return em.op("Concat", xs, axis=node.attrs["axis"], hint="concat")


@EXPORT.register("slice")
def _slice(em, node, x):
    a = node.attrs
    stop = INT64_MIN if a["stop"] is None else a["stop"]
    return em.op("Slice", [x, em.dim(a["start"]), em.dim(stop), axes(em, [a["axis"]]),
                           em.dim(a["step"])], hint="slice")


@EXPORT.register("slice_grad")
def _slice_grad(em, node, g):
    a = node.attrs
    rank = node.type.rank
    if a["step"] == 1:   # zero padding on both sides
        before, after = [0] * rank, [0] * rank
        before[a["axis"]] = a["start"]
        after[a["axis"]] = a["size"] - a["stop"]
        return em.op("Pad", [g, em.dims(before + after)], mode="constant", hint="slice_grad")
    stop = -1 if a["stop"] is None else a["stop"]
    positions = em.op("Range", [em.scalar(a["start"]), em.scalar(stop), em.scalar(a["step"])])
    return scatter_rows(em, positions, g, a["axis"], a["size"], node, reduction="none")


def scatter_rows(em: Emitter, indices: str, updates: str, axis: int, size, node, reduction: str) -> str:
    """Zeros with ``size`` entries on ``axis``; ``updates`` (the indices' shape at ``axis``) put
    (or added) at the indices: ScatterND on a layout with ``axis`` moved to the front."""
    out_shape = tuple(node.type.shape)
    rank, k = len(out_shape), len(node.inputs[0].type.shape) if node.op == "index_add" else 1
    front = (out_shape[axis],) + out_shape[:axis] + out_shape[axis + 1:]
    data = full(em, front, 0, em.dtypes[updates])
    urank = rank - 1 + k
    perm = list(range(axis, axis + k)) + list(range(axis)) + list(range(axis + k, urank))
    moved = em.op("Transpose", [updates], perm=perm) if perm != list(range(urank)) else updates
    idx = em.op("Unsqueeze", [em.cast(indices, I64), axes(em, [-1])])
    out = em.op("ScatterND", [data, idx, moved], reduction=reduction)
    back = list(range(1, axis + 1)) + [0] + list(range(axis + 1, rank))
    return em.op("Transpose", [out], perm=back, hint=node.op) if back != list(range(rank)) else out


@EXPORT.register("index_add")
def _index_add(em, node, indices, updates):
    return scatter_rows(em, indices, updates, node.attrs["axis"], node.attrs["size"], node, "add")


@EXPORT.register("take")
def _take(em, node, table, indices):
    return em.op("Gather", [table, indices], axis=node.attrs["axis"], hint="take")


@EXPORT.register("gather")
def _gather(em, node, x, indices):
    return em.op("GatherElements", [x, indices], axis=node.attrs["axis"], hint="gather")


@EXPORT.register("scatter_add")
def _scatter_add(em, node, indices, updates):
    zeros = full(em, node.type.shape, 0, em.dtypes[updates])
    return em.op("ScatterElements", [zeros, indices, updates], axis=node.attrs["axis"],
                 reduction="add", hint="scatter_add")


@EXPORT.register("one_hot")
def _one_hot(em, node, indices):
    a = node.attrs
    rank = node.type.rank
    classes = arange(em, a["depth"], em.dtypes[indices])
    view = [1] * rank
    view[a["axis"]] = a["depth"]
    classes = em.op("Reshape", [classes, em.dims(view)])
    hits = em.op("Equal", [em.op("Unsqueeze", [indices, axes(em, [a["axis"]])]), classes])
    return em.op("Cast", [hits], to=onnx_dtype(a["dtype"]), hint="one_hot")


@EXPORT.register(("triu", "tril"))
def _triangle(em, node, x):
    k = em.const(np.array(node.attrs["k"], np.int64))
    return em.op("Trilu", [x, k], upper=int(node.op == "triu"), hint=node.op)
