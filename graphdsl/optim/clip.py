"""Gradient clipping by global norm, as graph code (PyTorch ``clip_grad_norm_`` semantics).

    norm = sqrt(sum over all gradients of sum(g * g))
    g = g * min(1, max_norm / (norm + 1e-6))

The norm is accumulated in float32, or float64 when any gradient is float64, so float16
gradients cannot overflow while squaring.
"""
from __future__ import annotations

from typing import Mapping

from graphdsl import dtypes as _dt
from graphdsl.errors import GraphDSLError
from graphdsl.ops import minimum
from graphdsl.tracing import Tensor

from .base import cast_like


def global_norm(grads: Mapping[str, Tensor]) -> Tensor:
    """The L2 norm of all gradients taken together, as a float scalar."""
    if not grads:
        raise GraphDSLError("global_norm: no gradients given")
    acc = _dt.float64 if any(g.dtype == _dt.float64 for g in grads.values()) else _dt.float32
    total = None
    for g in grads.values():
        g = g.astype(acc) if g.dtype != acc else g
        sq = (g * g).sum()
        total = sq if total is None else total + sq
    return total.sqrt()


def clip_by_global_norm(grads: Mapping[str, Tensor], max_norm: float) -> tuple[dict[str, Tensor], Tensor]:
    """``(clipped grads, norm before clipping)``; gradients are scaled only when the norm exceeds ``max_norm``."""
    if not max_norm > 0:
        raise GraphDSLError(f"clip_by_global_norm: max_norm must be positive, got {max_norm!r}")
    norm = global_norm(grads)
    scale = minimum(float(max_norm) / (norm + 1e-6), 1.0)
    return {k: g * cast_like(scale, g) for k, g in grads.items()}, norm
