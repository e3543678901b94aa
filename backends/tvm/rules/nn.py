"""Lowering rules for graphdsl/ops/nn.py and random.py: softmax family, norms, RNG and dropout.

Softmax is written out (not Relax's nn.softmax) because ours defines fully masked rows: a row of
-inf gives zeros, never NaN. Norms use the reference's two-pass mean/variance in f32 (f64 for f64).
"""
from __future__ import annotations

from tvm import relax
from tvm.relax import op as R

from ..kernels import random as RNG
from ._util import acc_dtype, cast, dtype_of, scalar


def safe_softmax(x: relax.Expr, axis: int) -> relax.Expr:
    """exp(x - max) / sum over ``axis``, with all -inf rows giving zeros."""
    dt = dtype_of(x)
    zero, one = scalar(0, dt), scalar(1, dt)
    m = R.max(x, [axis], keepdims=True)
    e = R.exp(R.subtract(x, R.where(R.isfinite(m), m, zero)))
    s = R.sum(e, [axis], keepdims=True)
    positive = R.greater(s, zero)
    return R.where(positive, R.divide(e, R.where(positive, s, one)), zero)


def safe_log_softmax(x: relax.Expr, axis: int) -> relax.Expr:
    """x - max - log(sum(exp(x - max))) over ``axis``; all -inf rows stay -inf."""
    dt = dtype_of(x)
    zero, one = scalar(0, dt), scalar(1, dt)
    m = R.max(x, [axis], keepdims=True)
    shifted = R.subtract(x, R.where(R.isfinite(m), m, zero))
    s = R.sum(R.exp(shifted), [axis], keepdims=True)
    return R.subtract(shifted, R.log(R.where(R.greater(s, zero), s, one)))


def _softmax(fn):
    def rule(cx, node, x):
        dt = node.type.dtype.name
        return cx.emit(cast(fn(cast(x, acc_dtype(dt)), node.attrs["axis"]), dt))
    return rule


def _layer_norm(cx, node, x, w, b):
    dt = node.type.dtype.name
    acc = acc_dtype(dt)
    xf = cast(x, acc)
    xc = cx.emit(R.subtract(xf, R.mean(xf, [-1], keepdims=True)))
    var = R.mean(R.multiply(xc, xc), [-1], keepdims=True)
    y = R.divide(xc, R.sqrt(R.add(var, scalar(node.attrs["eps"], acc))))
    return cx.emit(cast(R.add(R.multiply(y, cast(w, acc)), cast(b, acc)), dt))


def _rms_norm(cx, node, x, w):
    dt = node.type.dtype.name
    acc = acc_dtype(dt)
    xf = cast(x, acc)
    ms = R.mean(R.multiply(xf, xf), [-1], keepdims=True)
    y = R.divide(xf, R.sqrt(R.add(ms, scalar(node.attrs["eps"], acc))))
    return cx.emit(cast(R.multiply(y, cast(w, acc)), dt))


def _random_uniform(cx, node, seed):
    return cx.te(RNG.uniform, seed, cx.shape(node.attrs["shape"]), node.attrs["salt"])


def _dropout(cx, node, x, seed):
    p = node.attrs["p"]
    if p == 0:
        return x
    return cx.te(RNG.dropout, x, seed, p, node.attrs["salt"], acc_dtype(node.type.dtype.name))


RULES = {
    "softmax": _softmax(safe_softmax),
    "log_softmax": _softmax(safe_log_softmax),
    "layer_norm": _layer_norm,
    "rms_norm": _rms_norm,
    "random_uniform": _random_uniform,
    "dropout": _dropout,
}
