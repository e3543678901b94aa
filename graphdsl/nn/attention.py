"""Multi-head attention, written out the textbook way.

This module never calls the fused ``attention`` op: it spells out the projections, the head split,
``softmax(q @ k^T * scale + mask) @ v`` and the head merge, exactly as users write it, and leaves it
to the graph passes to recognize the pattern and fuse it. That keeps the passes honest: the models
in this library are written the same way as the models they will meet.
"""
from __future__ import annotations

import math

from graphdsl import dtypes as _dt
from graphdsl.errors import GraphDSLError, ShapeError
from graphdsl.tracing import as_tensor, user_loc

from . import functional as F
from .layers import Dropout, Linear
from .module import Module


class MultiHeadAttention(Module):
    """``MultiHeadAttention(d_model, n_heads)``: self-attention, or cross-attention when given ``kv``.

    forward(x [B, Sq, D], kv [B, Sk, D] = x, *, mask=None, causal=False) -> [B, Sq, D]

    ``mask`` is a boolean tensor (True = attend) or a float bias added to the scores; either must
    broadcast to ``[B, H, Sq, Sk]``. ``causal=True`` lets query i see keys 0..i only.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True, *,
                 dtype=_dt.float32):
        super().__init__()
        if d_model % n_heads:
            raise GraphDSLError(f"d_model={d_model} is not divisible by n_heads={n_heads}",
                                loc=user_loc(), hint="each head gets d_model // n_heads features")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.q = Linear(d_model, d_model, bias, dtype=dtype)
        self.k = Linear(d_model, d_model, bias, dtype=dtype)
        self.v = Linear(d_model, d_model, bias, dtype=dtype)
        self.o = Linear(d_model, d_model, bias, dtype=dtype)
        self.drop = Dropout(dropout)

    def forward(self, x, kv=None, *, mask=None, causal: bool = False):
        x = self._check_input(x, "x")
        src = x if kv is None else self._check_input(kv, "kv")
        batch, q_len, k_len = x.shape[0], x.shape[1], src.shape[1]

        q = self._split_heads(self.q(x), q_len)
        k = self._split_heads(self.k(src), k_len)
        v = self._split_heads(self.v(src), k_len)

        scores = q @ k.transpose(-1, -2)
        scores = scores * (1.0 / math.sqrt(self.head_dim))
        if mask is not None:
            scores = F.apply_mask(scores, mask)
        if causal:
            scores = F.apply_mask(scores, F.causal_mask(q_len, k_len))
        probs = self.drop(scores.softmax(axis=-1))

        out = probs @ v
        out = out.transpose(1, 2).reshape(batch, q_len, self.d_model)
        return self.o(out)

    def _split_heads(self, t, length):
        """``[B, S, D] -> [B, H, S, Dh]``."""
        return t.reshape(t.shape[0], length, self.n_heads, self.head_dim).transpose(1, 2)

    def _check_input(self, t, what):
        t = as_tensor(t)
        if t.ndim != 3:
            raise ShapeError(f"MultiHeadAttention takes {what} as [batch, seq, {self.d_model}], "
                             f"got {t.type}", loc=user_loc())
        return t

    def extra_repr(self):
        return f"d_model={self.d_model}, n_heads={self.n_heads}, dropout={self.drop.p}"
