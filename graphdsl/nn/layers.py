"""The basic layers: Linear, Embedding, LayerNorm, RMSNorm, Dropout, FeedForward.

Weights are stored ``[in, out]`` (``y = x @ W + b``), so no transpose sits between an activation
and its matmul. Every layer takes ``dtype`` for its parameters (float64 for gradient checks).
"""
from __future__ import annotations

from graphdsl import dtypes as _dt
from graphdsl import ops
from graphdsl.errors import ShapeError
from graphdsl.tracing import Parameter, as_tensor, user_loc

from . import functional as F
from .module import Module


class Linear(Module):
    """``y = x @ weight + bias`` over the last axis; weight ``[in_features, out_features]``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 dtype=_dt.float32, init="normal"):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter((in_features, out_features), dtype, init=init)
        self.bias = Parameter((out_features,), dtype, init="zeros") if bias else None

    def forward(self, x):
        x = as_tensor(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ShapeError(f"Linear({self.in_features} -> {self.out_features}) takes inputs whose "
                             f"last dim is {self.in_features}, got {x.type}", loc=user_loc())
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Embedding(Module):
    """A ``[num_embeddings, dim]`` table looked up by integer ids: ``[...] -> [..., dim]``."""

    def __init__(self, num_embeddings: int, dim: int, *, dtype=_dt.float32, init="normal"):
        super().__init__()
        self.num_embeddings, self.dim = num_embeddings, dim
        self.weight = Parameter((num_embeddings, dim), dtype, init=init)

    def forward(self, ids):
        return ops.take(self.weight, ids, axis=0)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.dim}"


class LayerNorm(Module):
    """Normalize over the last axis, then scale by ``weight`` and shift by ``bias``."""

    def __init__(self, dim: int, eps: float = 1e-5, *, dtype=_dt.float32):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = Parameter((dim,), dtype, init="ones")
        self.bias = Parameter((dim,), dtype, init="zeros")

    def forward(self, x):
        return ops.layer_norm(x, self.weight, self.bias, eps=self.eps)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"


class RMSNorm(Module):
    """Scale by the reciprocal root-mean-square over the last axis, then by ``weight``."""

    def __init__(self, dim: int, eps: float = 1e-6, *, dtype=_dt.float32):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = Parameter((dim,), dtype, init="ones")

    def forward(self, x):
        return ops.rms_norm(x, self.weight, eps=self.eps)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"


class Dropout(Module):
    """Dropout with probability ``p`` while training; the identity in eval mode or when p == 0."""

    def __init__(self, p: float = 0.1):
        super().__init__()
        self.p = float(p)

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class FeedForward(Module):
    """The position-wise MLP: ``fc2(dropout(activation(fc1(x))))``, d_model -> d_ff -> d_model."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", dropout: float = 0.0, *,
                 bias: bool = True, dtype=_dt.float32):
        super().__init__()
        self.activation = F.check_activation(activation)
        self.fc1 = Linear(d_model, d_ff, bias, dtype=dtype)
        self.drop = Dropout(dropout)
        self.fc2 = Linear(d_ff, d_model, bias, dtype=dtype)

    def forward(self, x):
        return self.fc2(self.drop(F.activation(self.fc1(x), self.activation)))

    def extra_repr(self):
        return f"activation={self.activation!r}"
