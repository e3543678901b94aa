"""fuse_softmax, fuse_layer_norm and fuse_add_layer_norm: normalizations written out become one op.

``e = exp(x - x.max(-1, keepdims=True)); e / e.sum(-1, keepdims=True)`` becomes ``softmax(x)``
(the same numbers, except that a row of all -inf, NaN as written, is zeros in the op).

A LayerNorm written with reductions (after canonicalize, so ``sum * (1/n)`` is ``mean`` and
``/ c`` is ``* (1/c)``)::

    mu = x.mean(-1, keepdims=True); xc = x - mu
    var = (xc * xc).mean(-1, keepdims=True)          # or xc ** 2
    y = xc * rsqrt(var + eps)                        # or xc / sqrt(var + eps), xc * (var + eps) ** -0.5

becomes ``layer_norm(x, ones, zeros)``; RMSNorm (``x * rsqrt(mean(x * x) + eps)``) becomes
``rms_norm(x, ones)``. The affine part then folds in one step at a time: ``layer_norm(x, 1, 0) * w``
-> ``layer_norm(x, w, 0)``, ``layer_norm(x, w, 0) + b`` -> ``layer_norm(x, w, b)`` (same for
rms_norm), so the pattern does not have to spell out every arrangement of the affine ops.
``fuse_add_layer_norm`` turns ``layer_norm(a + b, w, beta)`` into ``add_layer_norm`` when the sum
is used only by the LayerNorm (post-LN Transformers; in pre-LN the sum also feeds the next
residual, and stays).
"""
from __future__ import annotations

import numpy as np

from graphdsl import ops
from graphdsl.graph import Node
from graphdsl.ops import fused
from graphdsl.tracing import Tensor

from .pattern import Pat, scalar_value
from .rewrite import Rule, constant


def _reduce_last(node: Node) -> bool:
    return node.attrs["keepdims"] and node.attrs["axis"] == (node.type.rank - 1,)


def _eps(v: float) -> bool:
    return 0 <= v < 1


def _square(x: Pat) -> Pat:
    return Pat("mul", x, x) | Pat("pow", x, Pat.const(value=2.0))


def _inv_sqrt_times(x: Pat, var: Pat) -> Pat:
    plus_eps = Pat("add", var, Pat.const("eps", where=_eps))
    return (Pat("mul", x, Pat("rsqrt", plus_eps)) | Pat("div", x, Pat("sqrt", plus_eps))
            | Pat("mul", x, Pat("pow", plus_eps, Pat.const(value=-0.5))))


_X = Pat.any("x", where=lambda n: n.type.dtype.is_float and n.type.rank >= 1)
XC = Pat("sub", _X, Pat("mean", _X, where=_reduce_last), name="xc")
LAYER_NORM = _inv_sqrt_times(XC, Pat("mean", _square(XC), where=_reduce_last))
RMS_NORM = _inv_sqrt_times(_X, Pat("mean", _square(_X), where=_reduce_last))


def _vector(node: Node, dim) -> bool:
    return node.type.rank == 1 and node.type.shape[0] == dim


def _static_dim(x: Node):
    d = x.type.shape[-1]
    return d if isinstance(d, int) else None


def _fuse_norm(kind):
    def fn(m):
        x = m["x"]
        d = _static_dim(x)
        if d is None or not m.contained():
            return None
        dt = x.type.dtype
        ones = constant(np.ones(d, dt.np), dt)
        eps = scalar_value(m["eps"])
        if kind == "layer_norm":
            return ops.layer_norm(m.t("x"), ones, constant(np.zeros(d, dt.np), dt), eps=eps)
        return ops.rms_norm(m.t("x"), ones, eps=eps)
    return fn


def _is_const(value: float):
    return lambda n: (scalar_value(n) == value)


def _absorb_scale(m):
    norm, w = m["norm"], m["w"]
    if not _vector(w, norm.type.shape[-1]) or m.root.type != norm.type:
        return None
    ins = [Tensor(i) for i in norm.inputs]
    if norm.op == "layer_norm":
        return ops.layer_norm(ins[0], m.t("w"), ins[2], eps=norm.attrs["eps"])
    return ops.rms_norm(ins[0], m.t("w"), eps=norm.attrs["eps"])


def _absorb_shift(m):
    norm, b = m["norm"], m["b"]
    if not _vector(b, norm.type.shape[-1]) or m.root.type != norm.type:
        return None
    x, w, _ = (Tensor(i) for i in norm.inputs)
    return ops.layer_norm(x, w, m.t("b"), eps=norm.attrs["eps"])


def _add_layer_norm(m):
    a, b = m["a"], m["b"]
    if a.type != b.type or a.type != m["sum"].type:
        return None
    _, w, beta = (Tensor(i) for i in m.root.inputs)
    return fused.add_layer_norm(m.t("a"), m.t("b"), w, beta, eps=m.root.attrs["eps"])


_E = Pat("exp", Pat("sub", _X, Pat("max", _X, where=_reduce_last)), name="e")
SOFTMAX_RULES = [
    Rule("softmax", Pat("div", _E, Pat("sum", _E, where=_reduce_last)),
         lambda m: ops.softmax(m.t("x"), axis=-1) if m.contained() else None),
]

_ONES = Pat("constant", where=_is_const(1.0))
_ZEROS = Pat("constant", where=_is_const(0.0))
_ANY = Pat.any()
LN_RULES = [
    Rule("layer_norm", LAYER_NORM, _fuse_norm("layer_norm")),
    Rule("rms_norm", RMS_NORM, _fuse_norm("rms_norm")),
    Rule("norm_scale", Pat("mul", Pat("layer_norm", _ANY, _ONES, _ZEROS, name="norm", one_use=True)
                           | Pat("rms_norm", _ANY, _ONES, name="norm", one_use=True), Pat.any("w")),
         _absorb_scale),
    Rule("norm_shift", Pat("add", Pat("layer_norm", _ANY, _ANY, _ZEROS, name="norm", one_use=True),
                           Pat.any("b")), _absorb_shift),
]
ADD_LN_RULES = [
    Rule("add_layer_norm", Pat("layer_norm", Pat("add", Pat.any("a"), Pat.any("b"), name="sum",
                                                 one_use=True), Pat.any(), Pat.any()),
         _add_layer_norm),
]
