"""The ONNX export rows, one module per op group: lower/<group>.py holds the rows of the ops of
graphdsl/ops/<group>.py. Importing this package fills ``EXPORT`` (backends/onnx/table.py).

common.py is what the modules share (widen/narrow, axes, reduce, full, arange).
"""
from ..table import EXPORT
from . import (attention, creation, elementwise, fused, indexing, linalg, losses,  # noqa: F401
               nn, random, reduce, shape)

__all__ = ["EXPORT"]
