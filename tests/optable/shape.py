"""Rows for graphdsl/ops/shape.py: reshape, transpose, broadcast_to (expected by einsum and tile)."""
import numpy as np

from graphdsl.errors import AttributeError_, ShapeError
from tests.opinfo import ErrorCase, OpInfo, Sample, randn

X = randn(2, 3, 4, seed=5)

OPS = [
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
]
