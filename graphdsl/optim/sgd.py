"""Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay.

PyTorch ``torch.optim.SGD`` semantics (dampening 0)::

    g = grad + weight_decay * p
    buf = momentum * buf + g                    (buf starts at 0, so the first buf is g)
    d = g + momentum * buf  if nesterov  else  buf
    p = p - lr * d
"""
from __future__ import annotations

from graphdsl.errors import GraphDSLError

from .base import Optimizer


class SGD(Optimizer):
    def __init__(self, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, *, lr_scale=None):
        super().__init__(lr, lr_scale=lr_scale)
        if momentum < 0 or weight_decay < 0:
            raise GraphDSLError(f"SGD: momentum and weight_decay must be >= 0, got {momentum}, {weight_decay}")
        if nesterov and momentum == 0:
            raise GraphDSLError("SGD: nesterov momentum needs momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)
        self.slots = ("momentum",) if momentum else ()

    def update_one(self, p, g, slots, lr, scalars):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if not self.momentum:
            return p - lr * g, {}
        buf = self.momentum * slots["momentum"] + g
        d = g + self.momentum * buf if self.nesterov else buf
        return p - lr * d, {"momentum": buf}

    def __repr__(self):
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, nesterov={self.nesterov}, "
                f"weight_decay={self.weight_decay})")
