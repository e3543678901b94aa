"""The TVM lowering rows, one module per op group: rules/<group>.py holds the rows of the ops in
graphdsl/ops/<group>.py, so every row for an op is found by the op's group. Importing this package
imports them all, which fills backends/tvm/table.TVM; common.py holds what they share.
"""
from . import (attention, creation, elementwise, fused, indexing, linalg, losses, nn,  # noqa: F401
               random, reduce, shape)
