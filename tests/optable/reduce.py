"""Rows for the reductions of graphdsl/ops/reduce.py: sum, mean, prod, max, min, argmax,
topk_indices, cumsum.

Expected values come from Python loops over the reduced axis. Inputs are random normals, so
max/min have no ties and their gradients are checked at points where they are smooth. prod's
rows include slices with one zero and with two (its gradient is exact there); topk_indices's
include ties, NaN, infinities and -0.0, ordered by a Python sort on an explicit key.
"""
import functools
import math

import ml_dtypes
import numpy as np

from graphdsl.errors import ShapeError, TypeError_
from tests.opinfo import ErrorCase, OpInfo, Sample, randn, uniform

X = randn(2, 3, 4, seed=21)
SUM_X = randn(2, 3, 4, seed=5)


def _fold(fn, x, axis):
    """Combine the slices of x along axis pairwise with fn (a loop, not NumPy's reduction)."""
    return functools.reduce(fn, [np.take(x, i, axis=axis) for i in range(x.shape[axis])])


def _product(values):
    """The product of a list of Python numbers, one multiplication at a time."""
    out = 1
    for v in values:
        out = out * v
    return out


def _prod_axes(x, axes, keepdims=False):
    """prod over ``axes`` by looping over every output position (float64 or Python ints)."""
    keep = [a for a in range(x.ndim) if a not in axes]
    out = np.zeros([x.shape[a] for a in keep], dtype=np.float64 if x.dtype.kind == "f" else object)
    for idx in np.ndindex(*out.shape):
        full = [slice(None)] * x.ndim
        for a, i in zip(keep, idx):
            full[a] = i
        out[idx] = _product([v.item() if hasattr(v, "item") else v for v in np.asarray(x[tuple(full)]).ravel()])
    if keepdims:
        out = out.reshape([1 if a in axes else x.shape[a] for a in range(x.ndim)])
    return out


def _wrap32(v: int) -> int:
    """An integer as int32 arithmetic leaves it (two's complement wrap-around)."""
    return (v + 2 ** 31) % 2 ** 32 - 2 ** 31


def _order_key(v, i, largest):
    """The reference's order of element ``v`` at index ``i``: NaN above every number, equal values
    (-0.0 == 0.0) by index."""
    v = float(v)
    if math.isnan(v):
        return (0 if largest else 1, 0.0, i)
    return (1 if largest else 0, -v if largest else v, i)


def _topk_loop(x, k, axis=-1, largest=True, ordered=True):
    """topk_indices by sorting each slice's (key, index) pairs in Python."""
    x = np.moveaxis(np.asarray(x, np.float64 if x.dtype.kind in "fV" or x.dtype == ml_dtypes.bfloat16
                               else np.int64), axis, -1)
    out = np.zeros(x.shape[:-1] + (k,), dtype=np.int64)
    for idx in np.ndindex(*x.shape[:-1]):
        row = x[idx].tolist()
        picked = sorted(range(len(row)), key=lambda i: _order_key(row[i], i, largest))[:k]
        out[idx] = sorted(picked) if not ordered else picked
    return np.moveaxis(out, -1, axis)


TIES = np.array([[1.0, 5.0, 5.0, 2.0, 5.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
EDGES = np.array([[1.0, np.nan, np.inf, 2.0, np.nan, -np.inf, 2.0, -0.0, 0.0],
                  [0.0, -0.0, -np.inf, 3.0, np.inf, np.nan, 3.0, -1.0, np.inf]])
ZEROS = randn(3, 4, seed=8)
ZEROS[0, 1] = 0.0                     # one zero in row 0 (and in column 1)
ZEROS[2, 0] = ZEROS[2, 3] = 0.0       # two zeros in row 2


def _argmax_last(x):
    out = np.zeros(x.shape[:-1], dtype=np.int64)
    for idx in np.ndindex(*x.shape[:-1]):
        row = x[idx].tolist()
        out[idx] = row.index(max(row))
    return out


OPS = [
    OpInfo("sum", [
        Sample([SUM_X], {"axis": None}, expected=lambda x: np.array(x.ravel().tolist()).sum(), name="all"),
        Sample([SUM_X], {"axis": -1}, expected=lambda x: x[..., 0] + x[..., 1] + x[..., 2] + x[..., 3], name="last"),
        Sample([SUM_X], {"axis": (0, 2), "keepdims": True},
               expected=lambda x: np.einsum("abc->b", x).reshape(1, 3, 1), name="keepdims"),
    ], [ErrorCase(["f32[2,3]"], {"axis": 2}, ShapeError, r"axis 2 is out of range")]),
    OpInfo("mean", [
        Sample([X], expected=lambda x: sum(x.ravel().tolist()) / 24, name="all"),
        Sample([X], {"axis": 1}, expected=lambda x: _fold(np.add, x, 1) / 3, name="middle"),
        Sample([X], {"axis": (0, -1), "keepdims": True},
               expected=lambda x: (_fold(np.add, _fold(np.add, x, 2), 0) / 8).reshape(1, 3, 1),
               name="keepdims"),
        Sample([X.astype(np.float16)], {"axis": -1},
               expected=lambda x: _fold(np.add, x.astype(np.float64), 2) / 4,
               grad=False, atol=2e-3, rtol=2e-3, name="f16"),
    ], [
        ErrorCase(["i32[2,3]"], {"axis": 0}, TypeError_, r"floating-point", "int"),
        ErrorCase(["f32[2,3]"], {"axis": -3}, ShapeError, r"axis -3 is out of range", "axis"),
    ]),
    OpInfo("prod", [
        Sample([X], {"axis": -1}, expected=lambda x: _fold(np.multiply, x, 2), name="last"),
        Sample([X], {"axis": (0, 2), "keepdims": True}, expected=lambda x: _prod_axes(x, (0, 2), True),
               name="keepdims"),
        Sample([X[0, :2]], expected=lambda x: _product(x.ravel().tolist()), name="all"),
        Sample([ZEROS], {"axis": 1}, expected=lambda x: _prod_axes(x, (1,)), name="zeros_rows"),
        Sample([ZEROS], {"axis": 0}, expected=lambda x: _prod_axes(x, (0,)), name="zeros_columns"),
        Sample([ZEROS], expected=0.0, name="zeros_all"),
        Sample([np.array([[3, -7, 2], [1000, 1000, 1000], [0, 5, 9]], np.int32)], {"axis": 1},
               expected=np.array([-42, _wrap32(10 ** 9), 0], np.int32), name="int_wraps"),
        Sample([np.array([[3, -7, 2], [4, 5, -1]], np.int64)], {"axis": 0},
               expected=np.array([12, -35, -2]), name="int64"),
        Sample([np.zeros((2, 0, 3))], {"axis": 1}, expected=np.ones((2, 3)), grad=False, name="empty"),
        Sample([np.zeros((0, 3), np.int32)], {"axis": 0}, expected=np.ones(3), name="empty_int"),
        Sample([uniform(2, 8, seed=9).astype(np.float16)], {"axis": -1},
               expected=lambda x: _prod_axes(x.astype(np.float64), (1,)), grad=False, atol=1e-2, rtol=4e-3,
               name="f16"),
        Sample([np.array([[1.5, np.nan, 2.0], [np.inf, 0.0, 1.0], [np.inf, -2.0, 1.0]])], {"axis": 1},
               expected=np.array([np.nan, np.nan, -np.inf]), grad=False, name="nan_inf"),
    ], [ErrorCase(["bool[2,3]"], {"axis": 0}, TypeError_, r"does not take bool", "bool"),
        ErrorCase(["f32[2,3]"], {"axis": (0, 2)}, ShapeError, r"axis 2 is out of range", "axis")]),
    OpInfo("max", [
        Sample([X], {"axis": -1}, expected=lambda x: _fold(np.maximum, x, 2), name="last"),
        Sample([X], {"axis": (0, 2), "keepdims": True},
               expected=lambda x: _fold(np.maximum, _fold(np.maximum, x, 2), 0).reshape(1, 3, 1),
               name="two_axes"),
        Sample([X], expected=lambda x: max(x.ravel().tolist()), name="all"),
        Sample([np.array([[3, 7, 7], [-1, -5, 0]], dtype=np.int32)], {"axis": 1},
               expected=np.array([7, 0]), name="int"),
        Sample([np.zeros((2, 0, 3))], {"axis": 1}, expected=np.full((2, 3), -np.inf), grad=False, name="empty"),
        Sample([np.zeros((2, 0), np.int32)], {"axis": 1}, expected=np.full(2, np.iinfo(np.int32).min),
               name="empty_int"),
        Sample([np.array([[True, False], [False, False]])], {"axis": 1}, expected=np.array([True, False]),
               name="bool"),
    ], [ErrorCase(["f32[2,3]"], {"axis": 2}, ShapeError, r"axis 2 is out of range")]),
    OpInfo("min", [
        Sample([X], {"axis": 0}, expected=lambda x: _fold(np.minimum, x, 0), name="first"),
        Sample([X], {"axis": 1, "keepdims": True},
               expected=lambda x: _fold(np.minimum, x, 1).reshape(2, 1, 4), name="keepdims"),
        Sample([X], expected=lambda x: min(x.ravel().tolist()), name="all"),
        Sample([np.zeros((0, 3))], {"axis": 0}, expected=np.full(3, np.inf), grad=False, name="empty"),
        Sample([np.array([[True, False], [True, True]])], {"axis": 1}, expected=np.array([False, True]),
               name="bool"),
    ], [ErrorCase(["f32[2,3]"], {"axis": (0, 5)}, ShapeError, r"axis 5 is out of range")]),
    OpInfo("argmax", [
        Sample([X], expected=_argmax_last, name="default_last"),
        Sample([X], {"axis": 1, "keepdims": True},
               expected=lambda x: _argmax_last(np.swapaxes(x, 1, 2))[:, None, :], name="keepdims"),
        Sample([np.array([[1.0, 5.0, 5.0], [2.0, 2.0, 0.0]])], {"axis": -1},
               expected=np.array([1, 0]), name="first_of_ties"),
        Sample([X], {"axis": None}, expected=lambda x: x.ravel().tolist().index(max(x.ravel().tolist())),
               name="flat"),
    ], [ErrorCase(["f32[2,3]"], {"axis": (0, 1)}, ShapeError, r"takes one axis or None")]),
    OpInfo("topk_indices", [
        Sample([X], {"k": 2}, expected=lambda x: _topk_loop(x, 2), name="largest"),
        Sample([X], {"k": 3, "axis": 1, "largest": False}, expected=lambda x: _topk_loop(x, 3, 1, False),
               name="smallest_middle"),
        Sample([X], {"k": 2, "axis": 0, "sorted": False}, expected=lambda x: _topk_loop(x, 2, 0, ordered=False),
               name="unsorted"),
        Sample([TIES], {"k": 4}, expected=np.array([[1, 2, 4, 3], [0, 1, 2, 3]]), name="ties"),
        Sample([TIES], {"k": 3, "largest": False}, expected=np.array([[0, 5, 3], [0, 1, 2]]), name="ties_smallest"),
        Sample([EDGES], {"k": 9}, expected=lambda x: _topk_loop(x, 9), name="nan_inf"),
        Sample([EDGES], {"k": 9, "largest": False}, expected=lambda x: _topk_loop(x, 9, largest=False),
               name="nan_inf_smallest"),
        Sample([EDGES], {"k": 5, "sorted": False}, expected=lambda x: _topk_loop(x, 5, ordered=False),
               name="nan_inf_unsorted"),
        Sample([EDGES.astype(ml_dtypes.bfloat16)], {"k": 4}, expected=lambda x: _topk_loop(x, 4), name="bf16"),
        Sample([EDGES.astype(np.float16)], {"k": 4, "largest": False},
               expected=lambda x: _topk_loop(x, 4, largest=False), name="f16"),
        Sample([np.array([[3, 1, 3, 2, 1, 3], [-5, 7, 7, 0, -5, 2]], np.int32)], {"k": 4},
               expected=np.array([[0, 2, 5, 3], [1, 2, 5, 3]]), name="int"),
        Sample([np.array([[True, False, True], [False, False, True]])], {"k": 2, "largest": False},
               expected=np.array([[1, 0], [0, 1]]), name="bool"),
        Sample([X], {"k": 0}, expected=np.zeros((2, 3, 0), np.int64), name="k0"),
    ], [ErrorCase(["f32[2,3]"], {"k": 4}, ShapeError, r"k=4 is more than the 3 elements along axis 1", "k_too_big"),
        ErrorCase(["f32[]"], {"k": 1}, ShapeError, r"rank >= 1", "scalar"),
        ErrorCase(["f32[2,3]"], {"k": -1}, ShapeError, r"k must be an int >= 0", "k_negative"),
        ErrorCase(["f32[2,3]"], {"k": 1, "axis": 2}, ShapeError, r"axis 2 is out of range", "axis")]),
    OpInfo("cumsum", [
        Sample([X], {"axis": 1}, expected=lambda x: _running(x, 1), name="inclusive"),
        Sample([X], {"axis": -1, "exclusive": True}, expected=lambda x: _running(x, 2) - x, name="exclusive"),
        Sample([X], {"axis": 0, "reverse": True}, expected=lambda x: _running(x[::-1], 0)[::-1], name="reverse"),
        Sample([X], {"axis": 2, "exclusive": True, "reverse": True},
               expected=lambda x: _running(x[..., ::-1], 2)[..., ::-1] - x, name="exclusive_reverse"),
        Sample([np.array([[3, -7, 8], [2, 9, 5]], np.int32)], {"axis": 1},
               expected=np.array([[3, -4, 4], [2, 11, 16]], np.int32), name="int"),
        Sample([X.astype(np.float32)], {"axis": 1}, expected=lambda x: _running(x, 1), grad=False,
               atol=1e-5, rtol=1e-5, name="f32"),
    ], [ErrorCase(["f32[]"], {}, ShapeError, r"rank >= 1"),
        ErrorCase(["bool[3]"], {}, ShapeError, r"does not take bool"),
        ErrorCase(["f32[2,3]"], {"axis": 2}, ShapeError, r"axis 2 is out of range")]),
]


def _running(x, axis):
    """The running sum written as a loop: element k is the sum of elements 0..k along ``axis``."""
    x = np.moveaxis(np.asarray(x, np.float64 if x.dtype.kind == "f" else x.dtype), axis, 0)
    out = np.zeros_like(x)
    total = np.zeros_like(x[0])
    for k in range(x.shape[0]):
        total = total + x[k]
        out[k] = total
    return np.moveaxis(out, 0, axis).astype(x.dtype)
