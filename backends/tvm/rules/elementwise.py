"""Lowering rules for graphdsl/ops/elementwise.py: one Relax expression per op.

Transcendental functions of f16/bf16 inputs compute in f32 and cast back, as the references do.
Relax's FuseOps later merges chains of these into single loops.
"""
from __future__ import annotations

import math

from tvm.relax import op as R

from ._util import acc_dtype, cast, scalar, upcast, wide


def _binary(fn):
    return lambda cx, node, a, b: cx.emit(fn(a, b))


def _unary(fn):
    return lambda cx, node, x: cx.emit(fn(x))


def _div(cx, node, a, b):
    dt = node.type.dtype
    if dt.is_float:
        return cx.emit(R.divide(a, b))
    one, zero = scalar(1, dt.name), scalar(0, dt.name)
    return cx.emit(R.floor_divide(a, R.where(R.equal(b, zero), one, b)))  # x // 0 is x // 1


def _silu(cx, node, x):
    dt = node.type.dtype.name
    return cx.emit(R.multiply(x, cast(R.sigmoid(upcast(x)), dt)))


def _gelu(cx, node, x):
    w = upcast(x)
    wt = acc_dtype(node.type.dtype.name)
    c = lambda v: scalar(v, wt)  # noqa: E731
    if node.attrs["approximate"] == "tanh":
        inner = R.multiply(c(math.sqrt(2.0 / math.pi)),
                           R.add(w, R.multiply(c(0.044715), R.multiply(R.multiply(w, w), w))))
        y = R.multiply(R.multiply(c(0.5), w), R.add(c(1.0), R.tanh(inner)))
    else:
        y = R.multiply(R.multiply(c(0.5), w), R.add(c(1.0), R.erf(R.multiply(w, c(1.0 / math.sqrt(2.0))))))
    return cx.emit(cast(y, node.type.dtype.name))


def _cast(cx, node, x):
    to = node.attrs["dtype"]
    if to.is_bool:  # NumPy's astype(bool) is x != 0
        return cx.emit(R.not_equal(x, scalar(0, node.inputs[0].type.dtype.name)))
    return cx.emit(cast(x, to.name))  # float -> int truncates toward zero, as np.trunc + astype


def _relu(cx, node, x):
    return cx.emit(R.maximum(x, scalar(0, node.type.dtype.name)))


RULES = {
    "add": _binary(R.add),
    "sub": _binary(R.subtract),
    "mul": _binary(R.multiply),
    "div": _div,
    "pow": _binary(R.power),
    "maximum": _binary(R.maximum),
    "minimum": _binary(R.minimum),
    "neg": _unary(R.negative),
    "abs": _unary(R.abs),
    "exp": wide(R.exp),
    "log": wide(R.log),
    "sqrt": wide(R.sqrt),
    "rsqrt": wide(R.rsqrt),
    "tanh": wide(R.tanh),
    "sin": wide(R.sin),
    "cos": wide(R.cos),
    "erf": wide(R.erf),
    "sigmoid": wide(R.sigmoid),
    "relu": _relu,
    "silu": _silu,
    "gelu": _gelu,
    "equal": _binary(R.equal),
    "not_equal": _binary(R.not_equal),
    "less": _binary(R.less),
    "less_equal": _binary(R.less_equal),
    "greater": _binary(R.greater),
    "greater_equal": _binary(R.greater_equal),
    "logical_and": _binary(R.logical_and),
    "logical_or": _binary(R.logical_or),
    "logical_not": _unary(R.logical_not),
    "where": lambda cx, node, c, a, b: cx.emit(R.where(c, a, b)),
    "cast": _cast,
}
