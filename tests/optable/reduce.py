"""Rows for the reductions of graphdsl/ops/reduce.py: sum, mean, max, min, argmax.

Expected values come from Python loops over the reduced axis. Inputs are random normals, so
max/min have no ties and their gradients are checked at points where they are smooth.
"""
import functools

import numpy as np

from graphdsl.errors import ShapeError, TypeError_
from tests.opinfo import ErrorCase, OpInfo, Sample, randn

X = randn(2, 3, 4, seed=21)
SUM_X = randn(2, 3, 4, seed=5)


def _fold(fn, x, axis):
    """Combine the slices of x along axis pairwise with fn (a loop, not NumPy's reduction)."""
    return functools.reduce(fn, [np.take(x, i, axis=axis) for i in range(x.shape[axis])])


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
