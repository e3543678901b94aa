"""ONNX row of the linear-algebra op (graphdsl/ops/linalg.py): ``matmul`` is one ONNX MatMul.

Both broadcast the leading (batch) dims and multiply the last two as matrices. A dtype that the
runtime's MatMul kernel lacks (bfloat16 on ONNX Runtime) is cast around it by the emitter.
"""
from __future__ import annotations

from ..table import EXPORT


@EXPORT.register("matmul")
def _matmul(em, node, a, b):
    return em.op("MatMul", [a, b], hint="matmul")
