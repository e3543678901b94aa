"""Thin graph-code helpers the layers share: activations by name, dropout, attention masks.

Everything here is ordinary op calls, written the way a user would write them, so the graph
passes (mask folding, attention fusion) see the same patterns whether a model uses these helpers
or spells the code out.
"""
from __future__ import annotations

from typing import Callable

from graphdsl import dtypes as _dt
from graphdsl import ops
from graphdsl.errors import GraphDSLError, ShapeError, TypeError_
from graphdsl.ops.random import apply_dropout
from graphdsl.tracing import Tensor, as_tensor, user_loc

ACTIVATIONS: dict[str, Callable] = {
    "gelu": lambda x: ops.gelu(x, approximate="none"),
    "gelu_tanh": lambda x: ops.gelu(x, approximate="tanh"),
    "relu": ops.relu,
    "silu": ops.silu,
    "tanh": ops.tanh,
}


def check_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise GraphDSLError(f"unknown activation {name!r}", loc=user_loc(),
                            hint=f"use one of {', '.join(ACTIVATIONS)}")
    return name


def activation(x, name: str):
    return ACTIVATIONS[check_activation(name)](x)


def linear(x, weight, bias=None):
    """``x @ weight + bias`` with ``weight`` stored as ``[in, out]``."""
    y = x @ weight
    return y if bias is None else y + bias


def dropout(x, p: float, training: bool = True):
    """Zero each element with probability ``p`` and scale the rest by ``1/(1-p)``.

    Off (the identity, no op in the graph) when not training or ``p == 0``. Each call draws a new
    stream (salt) from the graph's ``seed`` input, so two dropout layers use different masks.
    """
    if not 0.0 <= p < 1.0:
        raise GraphDSLError(f"dropout probability must be in [0, 1), got {p}", loc=user_loc())
    return apply_dropout(x, p, training=training)


# -- attention masks ---------------------------------------------------------------------------
def causal_mask(q_len, k_len) -> Tensor:
    """Boolean ``[q_len, k_len]``: True where key index <= query index (aligned at the end)."""
    offset = 0
    if q_len != k_len:
        if not (isinstance(q_len, int) and isinstance(k_len, int)):
            raise ShapeError(f"causal attention with {q_len} queries and {k_len} keys: the offset "
                             f"between them is not known statically", loc=user_loc(),
                             hint="pass an explicit boolean mask instead of causal=True")
        offset = k_len - q_len
    shape = (q_len, k_len)
    q_idx = ops.iota(shape=shape, axis=0, dtype=_dt.int32)
    k_idx = ops.iota(shape=shape, axis=1, dtype=_dt.int32)
    if offset:
        q_idx = q_idx + offset
    return k_idx <= q_idx


def apply_mask(scores: Tensor, mask) -> Tensor:
    """A boolean mask (True = attend) selects scores, else the dtype's minimum; a float mask is added."""
    mask = as_tensor(mask, scores)
    if mask.dtype.is_bool:
        return ops.where(mask, scores, _dt.finfo_min(scores.dtype))
    if mask.dtype.is_float:
        if mask.dtype != scores.dtype:
            mask = mask.astype(scores.dtype)
        return scores + mask
    raise TypeError_(f"an attention mask must be bool (True = attend) or a float bias, got {mask.type}",
                     loc=user_loc(),
                     hint="for a 0/1 attention_mask use padding_mask(m) or padding_mask_bias(m)")


def padding_mask(attention_mask) -> Tensor:
    """Boolean ``[B, 1, 1, S]`` (True = a real token) from a ``[B, S]`` 0/1 attention mask."""
    m = _check_attention_mask(attention_mask)
    keep = m if m.dtype.is_bool else m != 0
    return keep.reshape(m.shape[0], 1, 1, m.shape[1])


def padding_mask_bias(attention_mask, dtype=_dt.float32) -> Tensor:
    """Additive ``[B, 1, 1, S]`` bias: 0 for real tokens, the dtype's minimum for padding."""
    m = _check_attention_mask(attention_mask)
    dtype = _dt.dtype(dtype)
    bias = (1.0 - m.astype(dtype)) * _dt.finfo_min(dtype)
    return bias.reshape(m.shape[0], 1, 1, m.shape[1])


def _check_attention_mask(m) -> Tensor:
    m = as_tensor(m)
    if m.ndim != 2:
        raise ShapeError(f"an attention_mask is [batch, seq] of 0/1, got {m.type}", loc=user_loc())
    return m
