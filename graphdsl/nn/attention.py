"""Multi-head attention, written out the textbook way.

This module never calls the fused ``attention`` op: it spells out the projections, the head split,
``softmax(q @ k^T * scale + mask) @ v`` and the head merge, exactly as users write it, and leaves it
to the graph passes to recognize the pattern and fuse it. That keeps the passes honest: the models
in this library are written the same way as the models they will meet.

Key/value cache (for generation, one step per new token). A cache entry is the pair ``(k, v)`` of
one attention block, each ``[B, H, S, Dh]`` (heads split, before the scores):

    out, (k, v) = attn.forward_cached(x)                # prefill: causal over x, returns its k, v
    out, (k, v) = attn.forward_cached(x_new, (k, v))    # decode: new queries see past + themselves
    mem = attn.keys_values(memory)                      # cross-attention: project memory once ...
    out = attn.attend(x_new, mem)                       # ... and attend to it at every step

With a cache the causal mask is bottom-right aligned: new query ``i`` sits at position
``past + i`` and sees keys ``0 .. past + i``; ``past`` may be a symbolic dim.
"""
from __future__ import annotations

import math

from graphdsl import dtypes as _dt
from graphdsl import ops
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
        q = self._split_heads(self.q(x), x.shape[1])
        k, v = self.keys_values(src)
        causal_mask = F.causal_mask(x.shape[1], src.shape[1]) if causal else None
        return self._attend(q, k, v, mask, causal_mask)

    # -- key/value cache ------------------------------------------------------------------------
    def keys_values(self, src):
        """The keys and values of ``src [B, S, D]``, heads split: ``(k, v)``, each ``[B, H, S, Dh]``."""
        src = self._check_input(src, "kv")
        return self._split_heads(self.k(src), src.shape[1]), self._split_heads(self.v(src), src.shape[1])

    def forward_cached(self, x, past=None, *, mask=None):
        """Causal self-attention over ``past`` keys/values and ``x``: returns ``(out, (k, v))``.

        ``x`` is ``[B, T, D]`` (the new positions), ``past`` None (prefill) or the ``(k, v)`` this
        method returned before, each ``[B, H, P, Dh]``. The returned ``(k, v)`` are ``[B, H, P+T, Dh]``,
        the cache for the next call. ``mask`` (e.g. padding) must broadcast to ``[B, H, T, P+T]``.
        """
        x = self._check_input(x, "x")
        q_len = x.shape[1]
        q = self._split_heads(self.q(x), q_len)
        k, v = self.keys_values(x)
        if past is None:
            causal_mask = F.causal_mask(q_len, q_len)
        else:
            past_k, past_v = self._check_past(past, x)
            k = ops.concat([past_k, k], axis=2)
            v = ops.concat([past_v, v], axis=2)
            causal_mask = _cached_causal_mask(q_len, past_k)
        return self._attend(q, k, v, mask, causal_mask), (k, v)

    def attend(self, x, kv, *, mask=None):
        """Attention of ``x [B, T, D]`` to precomputed ``kv = keys_values(memory)``, no causal mask."""
        x = self._check_input(x, "x")
        k, v = self._check_past(kv, x)
        return self._attend(self._split_heads(self.q(x), x.shape[1]), k, v, mask, None)

    # -- the textbook attention, shared by every entry point ---------------------------------
    def _attend(self, q, k, v, mask, causal_mask):
        """``softmax(q @ k^T * scale + mask) @ v`` with heads merged and projected."""
        batch, q_len = q.shape[0], q.shape[2]
        scores = q @ k.transpose(-1, -2)
        scores = scores * (1.0 / math.sqrt(self.head_dim))
        if mask is not None:
            scores = F.apply_mask(scores, mask)
        if causal_mask is not None:
            scores = F.apply_mask(scores, causal_mask)
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

    def _check_past(self, past, x):
        """``past`` is a ``(k, v)`` pair of ``[B, H, S, Dh]`` tensors matching ``x``'s batch."""
        if not (isinstance(past, (tuple, list)) and len(past) == 2):
            raise GraphDSLError(f"a key/value cache entry is a (k, v) pair, got {type(past).__name__}",
                                loc=user_loc(), hint="pass what forward_cached or keys_values returned")
        k, v = (as_tensor(t) for t in past)
        want = f"[batch, {self.n_heads}, past, {self.head_dim}]"
        for name, t in (("k", k), ("v", v)):
            if (t.ndim != 4 or t.shape[1] != self.n_heads or t.shape[3] != self.head_dim
                    or t.shape[0] != x.shape[0] or t.dtype != x.dtype):
                raise ShapeError(f"cached {name} must be {x.dtype.short}{want} for x {x.type}, "
                                 f"got {t.type}", loc=user_loc())
        if k.shape[2] != v.shape[2]:
            raise ShapeError(f"cached k and v have different lengths: {k.type} and {v.type}",
                             loc=user_loc())
        return k, v

    def extra_repr(self):
        return f"d_model={self.d_model}, n_heads={self.n_heads}, dropout={self.drop.p}"


def _cached_causal_mask(q_len, past_k):
    """Boolean ``[T, P+T]``: new query ``i`` (at position ``P + i``) sees keys ``0 .. P + i``.

    ``P`` (the cached length, axis 2 of ``past_k``) may be symbolic; it then enters the graph as a
    ``numel`` of the cache, the offset of a bottom-right aligned causal mask.
    """
    past_len = past_k.shape[2]
    k_len = past_len + q_len
    if isinstance(q_len, int) and isinstance(k_len, int):
        return F.causal_mask(q_len, k_len)
    shape = (q_len, k_len)
    q_pos = ops.iota(shape=shape, axis=0, dtype=_dt.int32) + ops.numel(past_k, axis=2, dtype=_dt.int32)
    k_pos = ops.iota(shape=shape, axis=1, dtype=_dt.int32)
    return k_pos <= q_pos
