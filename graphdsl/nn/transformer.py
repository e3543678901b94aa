"""Transformer encoder and decoder layers, and stacks of them.

Post-LN (``norm_first=False``, BERT and the original Transformer) normalizes after each residual
add; pre-LN (``norm_first=True``, GPT-2) normalizes each sublayer's input and leaves the residual
stream alone, so a pre-LN stack ends with one more LayerNorm (``norm``).

Dropout follows BERT: on the attention probabilities and on each sublayer's output before the
residual add; none inside the feed-forward block.
"""
from __future__ import annotations

from graphdsl import dtypes as _dt

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

    def extra_repr(self):
        return f"norm_first={self.norm_first}"


def _residual(x, sublayer, norm, drop, norm_first: bool):
    """Post-LN: ``norm(x + drop(f(x)))``; pre-LN: ``x + drop(f(norm(x)))``."""
    if norm_first:
        return x + drop(sublayer(norm(x)))
    return norm(x + drop(sublayer(x)))


class TransformerEncoder(Module):
    """``n_layers`` encoder layers (``layers.0`` ...), plus a final LayerNorm ``norm`` when pre-LN."""

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1,
                 activation: str = "gelu", norm_first: bool = False, eps: float = 1e-5, *,
                 dtype=_dt.float32):
        super().__init__()
        self.layers = ModuleList(
            TransformerEncoderLayer(d_model, n_heads, d_ff, dropout, activation, norm_first, eps,
                                    dtype=dtype)
            for _ in range(n_layers))
        self.norm = LayerNorm(d_model, eps, dtype=dtype) if norm_first else None

    def forward(self, x, *, mask=None, causal: bool = False):
        for layer in self.layers:
            x = layer(x, mask=mask, causal=causal)
        return x if self.norm is None else self.norm(x)


class TransformerDecoder(Module):
    """``n_layers`` decoder layers (``layers.0`` ...), plus a final LayerNorm ``norm`` when pre-LN."""

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1,
                 activation: str = "gelu", norm_first: bool = False, eps: float = 1e-5, *,
                 dtype=_dt.float32):
        super().__init__()
        self.layers = ModuleList(
            TransformerDecoderLayer(d_model, n_heads, d_ff, dropout, activation, norm_first, eps,
                                    dtype=dtype)
            for _ in range(n_layers))
        self.norm = LayerNorm(d_model, eps, dtype=dtype) if norm_first else None

    def forward(self, x, memory, *, self_mask=None, memory_mask=None):
        for layer in self.layers:
            x = layer(x, memory, self_mask=self_mask, memory_mask=memory_mask)
        return x if self.norm is None else self.norm(x)
