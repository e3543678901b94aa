"""Matrix multiplication with NumPy's batch broadcasting rules."""
from __future__ import annotations

import numpy as np

from graphdsl.errors import ShapeError
from graphdsl.registry import defop
from graphdsl.types import TensorType, broadcast_shapes

from .common import same_dtype, sum_to, types_str


def _matmul_infer(a: TensorType, b: TensorType) -> TensorType:
    dt = same_dtype("matmul", a, b)
    if a.rank < 1 or b.rank < 1:
        raise ShapeError(f"needs inputs of rank >= 1, got {types_str(a, b)}", op="matmul")
    if a.rank == 1 or b.rank == 1:
        raise ShapeError(f"takes matrices or batches of them, got {types_str(a, b)}", op="matmul",
                         hint="unsqueeze the vector to a 1-row or 1-column matrix")
    if a.shape[-1] != b.shape[-2]:
        hint = None
        if b.rank >= 2 and a.shape[-1] == b.shape[-1]:
            hint = "did you mean k.transpose(-1, -2)?"
        raise ShapeError(f"inner dims differ: {a} @ {b}", op="matmul", hint=hint)
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    if batch is None:
        raise ShapeError(f"batch dims do not broadcast: {a} @ {b}", op="matmul")
    return TensorType(tuple(batch) + (a.shape[-2], b.shape[-1]), dt)


def _matmul_vjp(g, y, a, b):
    return [sum_to(g @ b.mT, a.shape), sum_to(a.mT @ g, b.shape)]


matmul = defop("matmul", arity=2, infer=_matmul_infer,
               ref=lambda a, b: np.matmul(a, b).astype(a.dtype, copy=False), vjp=_matmul_vjp,
               doc="a @ b over the last two axes; leading (batch) axes broadcast")
