"""fuse_softmax, fuse_layer_norm and fuse_add_layer_norm: normalizations written out become one op.

``e = exp(x - x.max(-1, keepdims=True)); e / e.sum(-1, keepdims=True)`` becomes ``softmax(x)``
(the same numbers, except that a row of all -inf, NaN as written, is zeros in the op).

A LayerNorm written with reductions (after canonicalize, so ``sum * (1/n)`` is ``mean`` and
``/ c`` is ``* (1/c)``, and after cse, so the ``x - mu`` written twice is one node)::

    mu = x.mean(-1, keepdims=True); xc = x - mu
    var = (xc * xc).mean(-1, keepdims=True)          # or xc ** 2
    y = xc * rsqrt(var + eps)                        # or xc / sqrt(var + eps), xc * (var + eps) ** -0.5

becomes ``layer_norm(x, ones, zeros)``; RMSNorm (``x * rsqrt(mean(x * x) + eps)``) becomes
``rms_norm(x, ones)``. The affine part then folds in one step at a time: ``layer_norm(x, 1, 0) * w``
-> ``layer_norm(x, w, 0)``, ``layer_norm(x, w, 0) + b`` -> ``layer_norm(x, w, b)`` (same for
rms_norm), so the pattern does not have to spell out every arrangement of the affine ops.
``fuse_add_layer_norm`` turns ``layer_norm(a + b, w, beta)`` into ``add_layer_norm`` when the sum
is used only by the LayerNorm (post-LN Transformers; in pre-LN the sum also feeds the next
residual, and stays); it runs after fuse_layer_norm, which makes the layer_norm it fuses.
"""
from __future__ import annotations

import numpy as np

from graphdsl import ops
from graphdsl.graph import Node
from graphdsl.ops import fused
from graphdsl.tracing import Tensor

from .manager import rule_pass
from .pattern import Pat, exactly, exp, layer_norm, max_, mean, rms_norm, rsqrt, scalar_value, sqrt, sum_
from .predicates import float_with_axes, reduces_last_axis
from .rewrite import Rule, constant

X = Pat.any("x", where=float_with_axes)
ANY, ONE, ZERO = Pat.any(), exactly(1.0), exactly(0.0)
EPS = Pat.const("eps", where=lambda v: 0 <= v < 1)
E = exp(X - max_(X, where=reduces_last_axis), name="e")               # exp(x - max(x))
XC = (X - mean(X, where=reduces_last_axis)).having(name="xc")         # x - mean(x)
VAR_EPS = mean(XC * XC | XC ** 2, where=reduces_last_axis) + EPS      # var(x) + eps
MS_EPS = mean(X * X | X ** 2, where=reduces_last_axis) + EPS          # mean(x^2) + eps
NORM = (layer_norm(ANY, ONE, ZERO, name="norm", one_use=True)
        | rms_norm(ANY, ONE, name="norm", one_use=True))               # a norm with w = 1 (b = 0)

SOFTMAX_RULES = [
    # e / sum(e), e = exp(x - max(x)), over the last axis  ->  softmax(x)
    Rule("softmax", E / sum_(E, where=reduces_last_axis), lambda m: softmax(m)),
]

LN_RULES = [
    # (x - mean) / sqrt(var + eps), also * rsqrt and * (...) ** -0.5  ->  layer_norm(x, 1, 0)
    Rule("layer_norm", XC * rsqrt(VAR_EPS) | XC / sqrt(VAR_EPS) | XC * VAR_EPS ** -0.5,
         lambda m: normalized(m, "layer_norm")),
    # x / sqrt(mean(x^2) + eps), same spellings  ->  rms_norm(x, 1)
    Rule("rms_norm", X * rsqrt(MS_EPS) | X / sqrt(MS_EPS) | X * MS_EPS ** -0.5,
         lambda m: normalized(m, "rms_norm")),
    # norm(x, 1, 0) * w  ->  norm(x, w, 0)
    Rule("norm_scale", NORM * Pat.any("w"), lambda m: scale_absorbed(m)),
    # layer_norm(x, w, 0) + b  ->  layer_norm(x, w, b)
    Rule("norm_shift", layer_norm(ANY, ANY, ZERO, name="norm", one_use=True) + Pat.any("b"),
         lambda m: shift_absorbed(m)),
]

ADD_LN_RULES = [
    # layer_norm(a + b), the sum used only here  ->  add_layer_norm(a, b)
    Rule("add_layer_norm", layer_norm((Pat.any("a") + Pat.any("b")).having(name="sum", one_use=True), ANY, ANY),
         lambda m: add_layer_norm(m)),
]


def softmax(m):
    return ops.softmax(m.t("x"), axis=-1) if m.contained() else None


def vector_of(node: Node, dim) -> bool:
    return node.type.rank == 1 and node.type.shape[0] == dim


def static_last_dim(x: Node):
    d = x.type.shape[-1]
    return d if isinstance(d, int) else None


def normalized(m, kind: str):
    """The norm of ``m["x"]`` with unit scale (and zero shift), as ``kind`` computes it."""
    x = m["x"]
    d = static_last_dim(x)
    if d is None or not m.contained():
        return None
    dt = x.type.dtype
    ones = constant(np.ones(d, dt.np), dt)
    eps = scalar_value(m["eps"])
    if kind == "layer_norm":
        return ops.layer_norm(m.t("x"), ones, constant(np.zeros(d, dt.np), dt), eps=eps)
    return ops.rms_norm(m.t("x"), ones, eps=eps)


def scale_absorbed(m):
    norm, w = m["norm"], m["w"]
    if not vector_of(w, norm.type.shape[-1]) or m.root.type != norm.type:
        return None
    ins = [Tensor(i) for i in norm.inputs]
    if norm.op == "layer_norm":
        return ops.layer_norm(ins[0], m.t("w"), ins[2], eps=norm.attrs["eps"])
    return ops.rms_norm(ins[0], m.t("w"), eps=norm.attrs["eps"])


def shift_absorbed(m):
    norm, b = m["norm"], m["b"]
    if not vector_of(b, norm.type.shape[-1]) or m.root.type != norm.type:
        return None
    x, w, _ = (Tensor(i) for i in norm.inputs)
    return ops.layer_norm(x, w, m.t("b"), eps=norm.attrs["eps"])


def add_layer_norm(m):
    a, b = m["a"], m["b"]
    if a.type != b.type or a.type != m["sum"].type:
        return None
    _, w, beta = (Tensor(i) for i in m.root.inputs)
    return fused.add_layer_norm(m.t("a"), m.t("b"), w, beta, eps=m.root.attrs["eps"])


FUSE_SOFTMAX = rule_pass("fuse_softmax", SOFTMAX_RULES, "written-out exp(x - max) / sum to softmax")
FUSE_LAYER_NORM = rule_pass("fuse_layer_norm", LN_RULES,
                            "written-out LayerNorm / RMSNorm to layer_norm / rms_norm",
                            requires=("canonicalize", "cse"))
FUSE_ADD_LAYER_NORM = rule_pass("fuse_add_layer_norm", ADD_LN_RULES, "layer_norm(a + b) to add_layer_norm",
                                requires=("fuse_layer_norm",))
