"""Transformer encoder and decoder layers, and stacks of them.

Post-LN (``norm_first=False``, BERT and the original Transformer) normalizes after each residual
add; pre-LN (``norm_first=True``, GPT-2) normalizes each sublayer's input and leaves the residual
stream alone, so a pre-LN stack ends with one more LayerNorm (``norm``).

Dropout follows BERT: on the attention probabilities and on each sublayer's output before the
residual add; none inside the feed-forward block.

Generation with a key/value cache: ``forward_cached`` runs causal self-attention over the cached
keys/values plus the new positions and returns the grown cache (see nn/attention.py):

    h, cache = stack.forward_cached(x_prompt)             # prefill; cache: one (k, v) per layer
    h, cache = stack.forward_cached(x_new, past=cache)    # each later step, x_new [B, 1, D]

A decoder's cross-attention keys/values depend only on the memory; ``memory_keys_values`` computes
them once and ``forward_cached`` accepts them in place of the memory tensor.
"""
from __future__ import annotations

from graphdsl import dtypes as _dt
from graphdsl.errors import GraphDSLError
from graphdsl.tracing import user_loc

from .attention import MultiHeadAttention
from .layers import Dropout, FeedForward, LayerNorm
from .module import Module, ModuleList


class TransformerEncoderLayer(Module):
    """Self-attention then feed-forward, each with a residual connection and a LayerNorm.

    forward(x [B, S, D], *, mask=None, causal=False) -> [B, S, D]
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1,
                 activation: str = "gelu", norm_first: bool = False, eps: float = 1e-5, *,
                 dtype=_dt.float32):
        super().__init__()
        self.norm_first = norm_first
        self.attn = MultiHeadAttention(d_model, n_heads, dropout, dtype=dtype)
        self.norm1 = LayerNorm(d_model, eps, dtype=dtype)
        self.ffn = FeedForward(d_model, d_ff, activation, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps, dtype=dtype)
        self.drop = Dropout(dropout)

    def forward(self, x, *, mask=None, causal: bool = False):
        def attend(h):
            return self.attn(h, mask=mask, causal=causal)

        x = _residual(x, attend, self.norm1, self.drop, self.norm_first)
        return _residual(x, self.ffn, self.norm2, self.drop, self.norm_first)

    def forward_cached(self, x, past=None, *, mask=None):
        """Causal ``forward`` with a cache: ``(x [B, T, D], past (k, v) or None) -> (out, (k, v))``."""
        present = []

        def attend(h):
            out, kv = self.attn.forward_cached(h, past, mask=mask)
            present.append(kv)
            return out

        x = _residual(x, attend, self.norm1, self.drop, self.norm_first)
        return _residual(x, self.ffn, self.norm2, self.drop, self.norm_first), present[0]

    def extra_repr(self):
        return f"norm_first={self.norm_first}"


class TransformerDecoderLayer(Module):
    """Causal self-attention, cross-attention over ``memory``, feed-forward; each with residual + LN.

    forward(x [B, T, D], memory [B, S, D], *, self_mask=None, memory_mask=None) -> [B, T, D]
    ``self_mask`` (e.g. target padding) is applied on top of the causal mask.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1,
                 activation: str = "gelu", norm_first: bool = False, eps: float = 1e-5, *,
                 dtype=_dt.float32):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout, dtype=dtype)
        self.norm1 = LayerNorm(d_model, eps, dtype=dtype)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps, dtype=dtype)
        self.ffn = FeedForward(d_model, d_ff, activation, dtype=dtype)
        self.norm3 = LayerNorm(d_model, eps, dtype=dtype)
        self.drop = Dropout(dropout)

    def forward(self, x, memory, *, self_mask=None, memory_mask=None):
        def self_attend(h):
            return self.self_attn(h, mask=self_mask, causal=True)

        def cross_attend(h):
            return self.cross_attn(h, memory, mask=memory_mask)

        x = _residual(x, self_attend, self.norm1, self.drop, self.norm_first)
        x = _residual(x, cross_attend, self.norm2, self.drop, self.norm_first)
        return _residual(x, self.ffn, self.norm3, self.drop, self.norm_first)

    def forward_cached(self, x, memory, past=None, *, self_mask=None, memory_mask=None):
        """``forward`` with a self-attention cache: returns ``(out, (k, v))``.

        ``memory`` is the ``[B, S, D]`` tensor or its ``cross_attn.keys_values(memory)`` pair
        (computed once per sequence); ``past`` is the ``(k, v)`` of the previous call or None.
        """
        present = []

        def self_attend(h):
            out, kv = self.self_attn.forward_cached(h, past, mask=self_mask)
            present.append(kv)
            return out

        def cross_attend(h):
            if isinstance(memory, (tuple, list)):
                return self.cross_attn.attend(h, memory, mask=memory_mask)
            return self.cross_attn(h, memory, mask=memory_mask)

        x = _residual(x, self_attend, self.norm1, self.drop, self.norm_first)
        x = _residual(x, cross_attend, self.norm2, self.drop, self.norm_first)
        return _residual(x, self.ffn, self.norm3, self.drop, self.norm_first), present[0]

    def extra_repr(self):
        return f"norm_first={self.norm_first}"


def _residual(x, sublayer, norm, drop, norm_first: bool):
    """Post-LN: ``norm(x + drop(f(x)))``; pre-LN: ``x + drop(f(norm(x)))``."""
    if norm_first:
        return x + drop(sublayer(norm(x)))
    return norm(x + drop(sublayer(x)))


class _Stack(Module):
    """``n_layers`` layers of one kind (``layers.0`` ...), plus a final LayerNorm ``norm`` when pre-LN."""

    layer_type: type

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1,
                 activation: str = "gelu", norm_first: bool = False, eps: float = 1e-5, *,
                 dtype=_dt.float32):
        super().__init__()
        self.layers = ModuleList(
            self.layer_type(d_model, n_heads, d_ff, dropout, activation, norm_first, eps, dtype=dtype)
            for _ in range(n_layers))
        self.norm = LayerNorm(d_model, eps, dtype=dtype) if norm_first else None


class TransformerEncoder(_Stack):
    """``n_layers`` encoder layers (``layers.0`` ...), plus a final LayerNorm ``norm`` when pre-LN."""

    layer_type = TransformerEncoderLayer

    def forward(self, x, *, mask=None, causal: bool = False):
        for layer in self.layers:
            x = layer(x, mask=mask, causal=causal)
        return x if self.norm is None else self.norm(x)

    def forward_cached(self, x, past=None, *, mask=None):
        """Causal ``forward`` with a cache: ``past`` is None or one ``(k, v)`` per layer; returns
        ``(out, cache)`` with the grown cache, one ``(k, v)`` per layer."""
        past = _check_cache(past, len(self.layers))
        cache = []
        for layer, layer_past in zip(self.layers, past):
            x, kv = layer.forward_cached(x, layer_past, mask=mask)
            cache.append(kv)
        return (x if self.norm is None else self.norm(x)), cache


class TransformerDecoder(_Stack):
    """``n_layers`` decoder layers (``layers.0`` ...), plus a final LayerNorm ``norm`` when pre-LN."""

    layer_type = TransformerDecoderLayer

    def forward(self, x, memory, *, self_mask=None, memory_mask=None):
        for layer in self.layers:
            x = layer(x, memory, self_mask=self_mask, memory_mask=memory_mask)
        return x if self.norm is None else self.norm(x)

    def memory_keys_values(self, memory) -> list:
        """Each layer's cross-attention ``(k, v)`` of ``memory``: compute once, reuse every step."""
        return [layer.cross_attn.keys_values(memory) for layer in self.layers]

    def forward_cached(self, x, memory, past=None, *, self_mask=None, memory_mask=None):
        """``forward`` with a self-attention cache; returns ``(out, cache)``, one ``(k, v)`` per layer.

        ``memory`` is the ``[B, S, D]`` tensor or ``memory_keys_values(memory)``.
        """
        past = _check_cache(past, len(self.layers))
        mem = memory if isinstance(memory, (tuple, list)) else [memory] * len(self.layers)
        _check_cache(mem, len(self.layers), "memory keys/values")
        cache = []
        for layer, layer_mem, layer_past in zip(self.layers, mem, past):
            x, kv = layer.forward_cached(x, layer_mem, layer_past, self_mask=self_mask,
                                         memory_mask=memory_mask)
            cache.append(kv)
        return (x if self.norm is None else self.norm(x)), cache


def _check_cache(cache, n_layers: int, what: str = "cache") -> list:
    """None (no cache yet) becomes ``[None] * n_layers``; otherwise one entry per layer."""
    if cache is None:
        return [None] * n_layers
    if not isinstance(cache, (tuple, list)) or len(cache) != n_layers:
        got = f"{len(cache)} entries" if isinstance(cache, (tuple, list)) else type(cache).__name__
        raise GraphDSLError(f"the {what} holds one (k, v) pair per layer: expected {n_layers}, got {got}",
                            loc=user_loc())
    return list(cache)
