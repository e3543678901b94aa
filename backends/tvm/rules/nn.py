"""Lowering rules for graphdsl/ops/nn.py and random.py: softmax family, norms, RNG and dropout.

Softmax is written out (not Relax's nn.softmax) because ours defines fully masked rows: a row of
-inf gives zeros, never NaN; and a row holding a NaN (or +inf) is NaN throughout, as in the
reference. The row's max only shifts the row; a row is "fully masked" when its sum of exponentials
is 0, which a NaN anywhere in the row makes NaN (TVM's max reduction may skip a NaN, the sum never
does). Norms use the reference's two-pass mean/variance in f32 (f64 for f64).
"""
from __future__ import annotations

from tvm import relax
from tvm.relax import op as R

from ..kernels import random as RNG
from ._util import acc_dtype, cast, dtype_of, scalar


def _shifted(x: relax.Expr, axis: int):
    """(x - max, its exp, the sum of the exp) over ``axis``; a fully masked row (max -inf) is
    shifted by 0, so its sum is 0."""
    dt = dtype_of(x)
    m = R.max(x, [axis], keepdims=True)
    shifted = R.subtract(x, R.where(R.equal(m, scalar(float("-inf"), dt)), scalar(0, dt), m))
    e = R.exp(shifted)
    return shifted, e, R.sum(e, [axis], keepdims=True)


def safe_softmax(x: relax.Expr, axis: int) -> relax.Expr:
    """exp(x - max) / sum over ``axis``, with all -inf rows giving zeros and NaN rows NaN."""
    dt = dtype_of(x)
    zero, one = scalar(0, dt), scalar(1, dt)
    _, e, s = _shifted(x, axis)
    dead = R.equal(s, zero)
    return R.where(dead, zero, R.divide(e, R.where(dead, one, s)))


def safe_log_softmax(x: relax.Expr, axis: int) -> relax.Expr:
    """x - max - log(sum(exp(x - max))) over ``axis``; all -inf rows stay -inf, NaN rows are NaN."""
    dt = dtype_of(x)
    zero, one = scalar(0, dt), scalar(1, dt)
    shifted, _, s = _shifted(x, axis)
    return R.subtract(shifted, R.log(R.where(R.equal(s, zero), one, s)))


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
