"""Rows for matmul, reshape, transpose, broadcast_to, sum, full and iota."""
import numpy as np

from graphdsl.errors import AttributeError_, ShapeError, TypeError_
from tests.opinfo import ErrorCase, OpInfo, Sample, randn


def _loop_matmul(a, b):
    """Independent of np.matmul: an explicit triple loop over broadcast batches."""
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = np.broadcast_to(a, batch + a.shape[-2:])
    b = np.broadcast_to(b, batch + b.shape[-2:])
    out = np.zeros(batch + (a.shape[-2], b.shape[-1]))
    for idx in np.ndindex(*batch):
        for i in range(a.shape[-2]):
            for j in range(b.shape[-1]):
                out[idx + (i, j)] = sum(a[idx + (i, k)] * b[idx + (k, j)] for k in range(a.shape[-1]))
    return out


X = randn(2, 3, 4, seed=5)

OPS = [
    OpInfo("matmul", [
        Sample([randn(3, 4, seed=1), randn(4, 2, seed=2)], expected=_loop_matmul, name="2d"),
        Sample([randn(2, 3, 4, seed=1), randn(2, 4, 5, seed=2)], expected=_loop_matmul, name="batched"),
        Sample([randn(2, 1, 3, 4, seed=1), randn(3, 4, 2, seed=2)], expected=_loop_matmul, name="broadcast"),
    ], [
        ErrorCase(["f32[8,128,64]", "f32[128,64]"], {}, ShapeError, r"inner dims differ.*transpose\(-1, -2\)",
                  "inner"),
        ErrorCase(["f32[3,4]", "f16[4,2]"], {}, TypeError_, r"dtypes differ", "dtype"),
        ErrorCase(["f32[4]", "f32[4,2]"], {}, ShapeError, r"matrices", "vector"),
    ]),
    OpInfo("reshape", [
        Sample([X], {"shape": (6, 4)}, expected=lambda x: x.reshape(6, 4), name="merge"),
        Sample([X], {"shape": (2, -1)}, expected=lambda x: x.reshape(2, 12), name="infer"),
    ], [ErrorCase(["f32[2,3]"], {"shape": (4, 2)}, ShapeError, r"cannot reshape f32\[2,3\]"),
        ErrorCase(["f32[2,3]"], {}, AttributeError_, r"missing required attribute 'shape'")]),
    OpInfo("transpose", [
        Sample([X], {"perm": (0, 2, 1)}, expected=lambda x: np.einsum("abc->acb", x), name="last2"),
        Sample([X], {"perm": (2, 0, 1)}, expected=lambda x: np.einsum("abc->cab", x), name="cycle"),
    ], [ErrorCase(["f32[2,3]"], {"perm": (0, 0)}, ShapeError, r"not a permutation")]),
    OpInfo("broadcast_to", [
        Sample([randn(3, 1, seed=2)], {"shape": (2, 3, 4)}, expected=lambda x: np.tile(x, (2, 1, 4))),
    ], [ErrorCase(["f32[3,2]"], {"shape": (3, 4)}, ShapeError, r"cannot broadcast")]),
    OpInfo("sum", [
        Sample([X], {"axis": None}, expected=lambda x: np.array(x.ravel().tolist()).sum(), name="all"),
        Sample([X], {"axis": -1}, expected=lambda x: x[..., 0] + x[..., 1] + x[..., 2] + x[..., 3], name="last"),
        Sample([X], {"axis": (0, 2), "keepdims": True},
               expected=lambda x: np.einsum("abc->b", x).reshape(1, 3, 1), name="keepdims"),
    ], [ErrorCase(["f32[2,3]"], {"axis": 2}, ShapeError, r"axis 2 is out of range")]),
    OpInfo("full", [Sample([], {"shape": (2, 3), "value": 1.5}, expected=np.full((2, 3), 1.5))],
           [ErrorCase([], {"shape": (2,), "dtype": "complex"}, TypeError_, r"unknown dtype")]),
    OpInfo("iota", [Sample([], {"shape": (2, 3), "axis": 1}, expected=np.array([[0, 1, 2], [0, 1, 2]]))],
           [ErrorCase([], {"shape": (2, 3), "axis": 2}, ShapeError, r"axis 2 out of range")]),
]
