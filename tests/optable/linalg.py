"""Rows for graphdsl/ops/linalg.py: matmul, against an explicit triple loop."""
import numpy as np

from graphdsl.errors import ShapeError, TypeError_
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
]
