"""fuse_gelu and fuse_bias_activation.

GELU written out, in the forms in circulation (after canonicalize: constants on the right,
``x / sqrt(2)`` as ``x * 0.7071...``), with constants matched to a relative tolerance of
``GELU_RTOL`` (people write 0.7071, 0.79788, 1.4142)::

    0.5 * x * (1 + erf(x / sqrt(2)))                                  -> gelu(x)
    0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3)))          -> gelu(x, approximate="tanh")

The product ``x * 0.5 * (1 + ...)`` may be grouped any way; ``x**3`` may be ``pow(x, 3)``,
``x * x * x`` or ``0.044715 * x * x * x``; the tanh argument may be distributed
(``c * x + c * 0.044715 * x**3``).

``fuse_bias_activation``: ``act(x + b)`` with ``b`` a bias over the last axis becomes
``bias_activation(x, b, activation=...)`` when the sum has no other user.
"""
from __future__ import annotations

import math

from graphdsl.ops import fused

from .pattern import Pat
from .rewrite import Rule

GELU_RTOL = 1e-4
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
CUBIC = 0.044715

_X = Pat.any("x", where=lambda n: n.type.dtype.is_float)


def _c(value: float) -> Pat:
    return Pat.const(value=value, rtol=GELU_RTOL)


def _half_x_times(inner: Pat) -> Pat:
    """``x * 0.5 * inner`` grouped any way (mul is commutative, so operand order is free)."""
    return (Pat("mul", Pat("mul", _X, _c(0.5)), inner) | Pat("mul", Pat("mul", _X, inner), _c(0.5))
            | Pat("mul", _X, Pat("mul", inner, _c(0.5))))


_CUBE = (Pat("pow", _X, _c(3.0)) | Pat("mul", Pat("mul", _X, _X), _X))
_CUBIC_TERM = Pat("mul", _CUBE, _c(CUBIC)) | Pat("mul", Pat("mul", Pat("mul", _X, _c(CUBIC)), _X), _X)
_TANH_ARG = (Pat("mul", Pat("add", _X, _CUBIC_TERM), _c(SQRT_2_OVER_PI))
             | Pat("add", Pat("mul", _X, _c(SQRT_2_OVER_PI)), Pat("mul", _CUBE, _c(SQRT_2_OVER_PI * CUBIC))))
GELU_ERF = _half_x_times(Pat("add", Pat("erf", Pat("mul", _X, _c(1 / math.sqrt(2.0)))), _c(1.0)))
GELU_TANH = _half_x_times(Pat("add", Pat("tanh", _TANH_ARG), _c(1.0)))


def _gelu(approximate: str):
    def fn(m):
        if not m.contained():
            return None
        from graphdsl import ops
        return ops.gelu(m.t("x"), approximate=approximate)
    return fn


GELU_RULES = [
    Rule("gelu", GELU_ERF, _gelu("none")),
    Rule("gelu_tanh", GELU_TANH, _gelu("tanh")),
]


# -- bias + activation -----------------------------------------------------------------------------
def _activation_name(node) -> str | None:
    if node.op == "gelu":
        return "gelu" if node.attrs["approximate"] == "none" else "gelu_tanh"
    return node.op if node.op in fused.ACTIVATIONS else None


def _bias_activation(m):
    x, b = m["x"], m["b"]
    name = _activation_name(m.root)
    if name is None or x.type != m["sum"].type or b.type.rank != 1 or x.type.rank == 0:
        return None
    if b.type.shape[0] != x.type.shape[-1] or x.type.dtype != b.type.dtype or not x.type.dtype.is_float:
        return None
    return fused.bias_activation(m.t("x"), m.t("b"), activation=name)


BIAS_RULES = [
    Rule("bias_activation", Pat(("gelu", "relu", "silu", "tanh", "sigmoid"),
                                Pat("add", Pat.any("x"), Pat.any("b"), name="sum", one_use=True)),
         _bias_activation),
]
