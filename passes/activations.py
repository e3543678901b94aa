"""fuse_gelu and fuse_bias_activation.

GELU written out, in the forms in circulation (after canonicalize: ``x / sqrt(2)`` is
``x * 0.7071...``), with constants matched to a relative tolerance of ``GELU_RTOL`` (people write
0.7071, 0.79788, 1.4142). The product ``x * 0.5 * (1 + ...)`` may be grouped any way (mul is
commutative, so the operand order is free); ``x**3`` may be ``pow(x, 3)``, ``x * x * x`` or
``0.044715 * x * x * x``; the tanh argument may be distributed (``c * x + c * 0.044715 * x**3``).

``fuse_bias_activation``: ``act(x + b)`` with ``b`` a bias over the last axis becomes
``bias_activation(x, b, activation=...)`` when the sum has no other user. It runs after fuse_gelu,
which makes the ``gelu`` it fuses.
"""
from __future__ import annotations

import math

from graphdsl.ops import fused

from .manager import rule_pass
from .pattern import Pat, erf, tanh
from .predicates import is_float
from .rewrite import Rule

GELU_RTOL = 1e-4
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
CUBIC = 0.044715


def near(value: float) -> Pat:
    """A constant within GELU_RTOL of ``value``."""
    return Pat.const(value=value, rtol=GELU_RTOL)


X = Pat.any("x", where=is_float)
HALF, ONE, THREE = near(0.5), near(1.0), near(3.0)
INV_SQRT2, K, A, KA = (near(c) for c in (1 / math.sqrt(2.0), SQRT_2_OVER_PI, CUBIC, SQRT_2_OVER_PI * CUBIC))
CUBE = X ** THREE | X * X * X
CUBIC_TERM = CUBE * A | X * A * X * X                  # 0.044715 x^3
TANH_ARG = (X + CUBIC_TERM) * K | X * K + CUBE * KA    # sqrt(2/pi) (x + 0.044715 x^3), also distributed
ERF_TERM = erf(X * INV_SQRT2) + ONE
TANH_TERM = tanh(TANH_ARG) + ONE

GELU_RULES = [
    # x * 0.5 * (1 + erf(x / sqrt(2)))  ->  gelu(x), grouped any way
    Rule("gelu", X * HALF * ERF_TERM | X * ERF_TERM * HALF | X * (ERF_TERM * HALF),
         lambda m: gelu(m, "none")),
    # x * 0.5 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))  ->  gelu(x, approximate="tanh")
    Rule("gelu_tanh", X * HALF * TANH_TERM | X * TANH_TERM * HALF | X * (TANH_TERM * HALF),
         lambda m: gelu(m, "tanh")),
]

BIAS_RULES = [
    # act(x + b), b a vector over the last axis, the sum used only here  ->  bias_activation(x, b)
    Rule("bias_activation", Pat(("gelu", "relu", "silu", "tanh", "sigmoid"),
                                (Pat.any("x") + Pat.any("b")).having(name="sum", one_use=True)),
         lambda m: bias_activation(m)),
]


def gelu(m, approximate: str):
    if not m.contained():
        return None
    from graphdsl import ops
    return ops.gelu(m.t("x"), approximate=approximate)


def activation_name(node) -> str | None:
    """The ``activation`` attribute of bias_activation for the op ``node`` computes."""
    if node.op == "gelu":
        return "gelu" if node.attrs["approximate"] == "none" else "gelu_tanh"
    return node.op if node.op in fused.ACTIVATIONS else None


def bias_activation(m):
    x, b = m["x"], m["b"]
    name = activation_name(m.root)
    if name is None or x.type != m["sum"].type or b.type.rank != 1 or x.type.rank == 0:
        return None
    if b.type.shape[0] != x.type.shape[-1] or x.type.dtype != b.type.dtype or not x.type.dtype.is_float:
        return None
    return fused.bias_activation(m.t("x"), m.t("b"), activation=name)


FUSE_GELU = rule_pass("fuse_gelu", GELU_RULES, "written-out GELU (erf and tanh forms) to gelu",
                      requires=("canonicalize",))
FUSE_BIAS_ACTIVATION = rule_pass("fuse_bias_activation", BIAS_RULES, "act(x + bias) to bias_activation",
                                 requires=("fuse_gelu",))
