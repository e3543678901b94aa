"""ONNX rows of the reductions (graphdsl/ops/reduce.py): sum, mean, prod, max, min, argmax,
topk_indices and cumsum.

The edges follow the reference (docs/semantics.md): ONNX Runtime's ReduceMax/ReduceMin and ArgMax
skip a NaN that is not the first element, so the float reductions also reduce ``IsNaN(x)`` and
pick NaN (argmax: the index of the first NaN) where the slice holds one. ``mean`` and ``prod`` of
a narrow float are computed in float32 and rounded once, as the reference does. ``topk_indices`` is
TopK's second output: ONNX's order (equal values in index order) is the reference's, and ONNX
Runtime counts NaN as larger than every number, as the reference does.
"""
from __future__ import annotations

import numpy as np
import onnx

from ..emitter import Emitter
from ..table import EXPORT
from .common import BF16, F16, F32, F64, I32, I64, narrow, reduce, scalar_like, widen


@EXPORT.register("sum")
def _sum(em, node, x):
    return reduce(em, "ReduceSum", x, node.attrs["axis"], node.attrs["keepdims"])


@EXPORT.register("mean")
def _mean(em, node, x):
    out = reduce(em, "ReduceMean", widen(em, x), node.attrs["axis"], node.attrs["keepdims"])
    return narrow(em, out, node.type.dtype)


# ReduceProd's integer types; a narrower integer multiplies as int32 and wraps back when cast
_PROD_INTS = (I32, I64, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64)


@EXPORT.register("prod")
def _prod(em, node, x):
    src = widen(em, x)
    if em.dtypes[src] not in (F32, F64, *_PROD_INTS):
        src = em.cast(src, I32)
    out = reduce(em, "ReduceProd", src, node.attrs["axis"], node.attrs["keepdims"])
    return narrow(em, out, node.type.dtype)


def _nans(em: Emitter, x: str) -> str:
    """1.0 where ``x`` is NaN, else 0.0 (float32)."""
    return em.cast(em.op("IsNaN", [x]), F32)


def _any_nan(em: Emitter, nans: str, axis, keepdims: bool) -> str:
    """bool: whether the slice reduced over ``axis`` holds a NaN (``nans``: ``_nans(x)``)."""
    return em.op("Greater", [reduce(em, "ReduceMax", nans, axis, keepdims), em.const(np.float32(0))])


@EXPORT.register(("max", "min"))
def _extremum(em, node, x):
    op_type = "ReduceMax" if node.op == "max" else "ReduceMin"
    axis, keepdims = node.attrs["axis"], node.attrs["keepdims"]
    if node.type.dtype.name == "bool":   # ReduceMax/Min take bool only from opset 20: reduce it as int32
        small = reduce(em, op_type, em.cast(x, onnx.TensorProto.INT32), axis, keepdims)
        return em.cast(small, onnx.TensorProto.BOOL)
    out = reduce(em, op_type, x, axis, keepdims)
    if not node.type.dtype.is_float:
        return out
    return em.op("Where", [_any_nan(em, _nans(em, x), axis, keepdims), scalar_like(em, np.nan, out), out],
                 hint=node.op)


def _argmax_of(em: Emitter, x: str, axis: int, keepdims: bool) -> str:
    """ArgMax, but the index of the first NaN where there is one (np.argmax)."""
    out = em.op("ArgMax", [x], axis=axis, keepdims=int(keepdims))
    if em.dtypes[x] not in (F32, F64, F16, BF16):
        return out
    nans = _nans(em, x)
    first_nan = em.op("ArgMax", [nans], axis=axis, keepdims=int(keepdims))
    return em.op("Where", [_any_nan(em, nans, [axis], keepdims), first_nan, out], hint="argmax")


@EXPORT.register("argmax")
def _argmax(em, node, x):
    axis, keepdims = node.attrs["axis"], node.attrs["keepdims"]
    if axis is not None:
        return _argmax_of(em, x, axis[0], keepdims)
    flat = em.op("Reshape", [x, em.const(np.array([-1], np.int64))])
    out = _argmax_of(em, flat, 0, False)
    if keepdims:
        out = em.op("Reshape", [out, em.dims(node.type.shape)], hint="argmax")
    return out


@EXPORT.register("topk_indices")
def _topk_indices(em, node, x):
    """TopK's indices, always sorted (ONNX leaves the order of ``sorted=0`` open): for
    ``sorted=False`` the k indices are then put in increasing order by a second TopK."""
    a = node.attrs
    if em.dtypes[x] == onnx.TensorProto.BOOL:    # TopK takes no bool; bfloat16 only from opset 24
        x = em.cast(x, I32)
    elif em.dtypes[x] == BF16:
        x = em.cast(x, F32)
    k = em.const(np.array([a["k"]], np.int64), hint="k")
    _, indices = em.op("TopK", [x, k], outputs=2, axis=a["axis"], largest=int(a["largest"]), sorted=1,
                       hint="topk")
    if not a["sorted"]:
        indices, _ = em.op("TopK", [indices, k], outputs=2, axis=a["axis"], largest=0, sorted=1,
                           hint="topk_in_order")
    return indices


@EXPORT.register("cumsum")
def _cumsum(em, node, x):
    """CumSum, in float32 for a narrow float (rounded once, as the reference)."""
    a = node.attrs
    axis = em.const(np.array(a["axis"], np.int64), hint="axis")
    out = em.op("CumSum", [widen(em, x), axis], exclusive=int(a["exclusive"]), reverse=int(a["reverse"]),
                hint="cumsum")
    return narrow(em, out, node.type.dtype)
