"""Adam (L2 weight decay added to the gradient) and AdamW (decoupled weight decay).

PyTorch ``torch.optim.Adam`` / ``AdamW`` semantics, with ``t`` the 1-based update count::

    AdamW only:  p = p * (1 - lr * weight_decay)
    Adam only:   g = grad + weight_decay * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    p = p - (lr / (1 - b1**t)) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)

The bias corrections are computed in float64 from the step counter (``1 - 0.999**t`` loses
most of its digits in float32) and cast to each parameter's dtype.
"""
from __future__ import annotations

from graphdsl import dtypes as _dt
from graphdsl.errors import GraphDSLError

from .base import Optimizer


class Adam(Optimizer):
    slots = ("m", "v")
    decoupled = False

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, lr_scale=None):
        super().__init__(lr, lr_scale=lr_scale)
        b1, b2 = (float(b) for b in betas)
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise GraphDSLError(f"{type(self).__name__}: betas must lie in [0, 1), got {betas}")
        if eps < 0 or weight_decay < 0:
            raise GraphDSLError(f"{type(self).__name__}: eps and weight_decay must be >= 0, "
                                f"got {eps}, {weight_decay}")
        self.betas = (b1, b2)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)

    def step_scalars(self, step):
        t = (step + 1).astype(_dt.float64)
        b1, b2 = self.betas
        return {"bc1": 1.0 - b1 ** t, "sqrt_bc2": (1.0 - b2 ** t).sqrt()}

    def update_one(self, p, g, slots, lr, scalars):
        b1, b2 = self.betas
        bc1, sqrt_bc2 = scalars["bc1"], scalars["sqrt_bc2"]
        if self.weight_decay and self.decoupled:
            p = p * (1.0 - lr * self.weight_decay)
        elif self.weight_decay:
            g = g + self.weight_decay * p
        m = b1 * slots["m"] + (1.0 - b1) * g
        v = b2 * slots["v"] + (1.0 - b2) * (g * g)
        denom = v.sqrt() / sqrt_bc2 + self.eps
        return p - (lr / bc1) * (m / denom), {"m": m, "v": v}

    def __repr__(self):
        return (f"{type(self).__name__}(lr={self.lr}, betas={self.betas}, eps={self.eps}, "
                f"weight_decay={self.weight_decay})")


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): the decay skips the moments."""

    decoupled = True

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, *, lr_scale=None):
        super().__init__(lr, betas, eps, weight_decay, lr_scale=lr_scale)
