"""Rows for graphdsl/ops/creation.py: full and iota, whose values are written out by hand."""
import numpy as np

from graphdsl.errors import ShapeError, TypeError_
from tests.opinfo import ErrorCase, OpInfo, Sample

OPS = [
    OpInfo("full", [Sample([], {"shape": (2, 3), "value": 1.5}, expected=np.full((2, 3), 1.5))],
           [ErrorCase([], {"shape": (2,), "dtype": "complex"}, TypeError_, r"unknown dtype")]),
    OpInfo("iota", [Sample([], {"shape": (2, 3), "axis": 1}, expected=np.array([[0, 1, 2], [0, 1, 2]]))],
           [ErrorCase([], {"shape": (2, 3), "axis": 2}, ShapeError, r"axis 2 out of range")]),
]
