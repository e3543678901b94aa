"""ONNX lowerings of shape and indexing ops: reshape, transpose, slices, concat, take, scatters.

Shapes and bounds may hold symbolic dims; ``em.dims``/``em.dim`` turn them into int64 values read
from the input shapes at run time, so one exported model serves every batch size.
"""
from __future__ import annotations

import numpy as np

from .emitter import INT64_MIN, Emitter, onnx_dtype
from .lower_math import I64, arange, axes, full
from .table import lowers


@lowers("reshape")
def _reshape(em, node, ins):
    return em.op("Reshape", [ins[0], em.dims(node.attrs["shape"])], allowzero=1, hint="reshape")


@lowers("transpose")
def _transpose(em, node, ins):
    return em.op("Transpose", ins, perm=list(node.attrs["perm"]), hint="transpose")


@lowers("broadcast_to")
def _broadcast_to(em, node, ins):
    return em.op("Expand", [ins[0], em.dims(node.attrs["shape"])], hint="expand")


@lowers("squeeze")
def _squeeze(em, node, ins):
    return em.op("Squeeze", [ins[0], axes(em, [node.attrs["axis"]])], hint="squeeze")


@lowers("unsqueeze")
def _unsqueeze(em, node, ins):
    return em.op("Unsqueeze", [ins[0], axes(em, [node.attrs["axis"]])], hint="unsqueeze")


@lowers("concat")
def _concat(em, node, ins):
    return em.op("Concat", ins, axis=node.attrs["axis"], hint="concat")


@lowers("slice")
def _slice(em, node, ins):
    a = node.attrs
    stop = INT64_MIN if a["stop"] is None else a["stop"]
    return em.op("Slice", [ins[0], em.dim(a["start"]), em.dim(stop), axes(em, [a["axis"]]),
                           em.dim(a["step"])], hint="slice")


@lowers("slice_grad")
def _slice_grad(em, node, ins):
    a = node.attrs
    rank = node.type.rank
    if a["step"] == 1:   # zero padding on both sides
        before, after = [0] * rank, [0] * rank
        before[a["axis"]] = a["start"]
        after[a["axis"]] = a["size"] - a["stop"]
        return em.op("Pad", [ins[0], em.dims(before + after)], mode="constant", hint="slice_grad")
    stop = -1 if a["stop"] is None else a["stop"]
    positions = em.op("Range", [em.scalar(a["start"]), em.scalar(stop), em.scalar(a["step"])])
    return scatter_rows(em, positions, ins[0], a["axis"], a["size"], node, reduction="none")


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


@lowers("index_add")
def _index_add(em, node, ins):
    indices, updates = ins
    return scatter_rows(em, indices, updates, node.attrs["axis"], node.attrs["size"], node, "add")


@lowers("take")
def _take(em, node, ins):
    return em.op("Gather", ins, axis=node.attrs["axis"], hint="take")


@lowers("gather")
def _gather(em, node, ins):
    return em.op("GatherElements", ins, axis=node.attrs["axis"], hint="gather")


@lowers("scatter_add")
def _scatter_add(em, node, ins):
    indices, updates = ins
    zeros = full(em, node.type.shape, 0, em.dtypes[updates])
    return em.op("ScatterElements", [zeros, indices, updates], axis=node.attrs["axis"],
                 reduction="add", hint="scatter_add")


@lowers("one_hot")
def _one_hot(em, node, ins):
    a = node.attrs
    rank = node.type.rank
    classes = arange(em, a["depth"], em.dtypes[ins[0]])
    view = [1] * rank
    view[a["axis"]] = a["depth"]
    classes = em.op("Reshape", [classes, em.dims(view)])
    hits = em.op("Equal", [em.op("Unsqueeze", [ins[0], axes(em, [a["axis"]])]), classes])
    return em.op("Cast", [hits], to=onnx_dtype(a["dtype"]), hint="one_hot")


@lowers("triu", "tril")
def _triangle(em, node, ins):
    k = em.const(np.array(node.attrs["k"], np.int64))
    return em.op("Trilu", [ins[0], k], upper=int(node.op == "triu"), hint=node.op)
