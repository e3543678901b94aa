"""TVM rows for graphdsl/ops/losses.py, following the references step by step.

Class targets are picked with the clipped gather kernel; a target outside [0, C) that is not
``ignore_index`` raises the reference's InputError after the call (a run-time check).
"""
from __future__ import annotations

from tvm import relax
from tvm.relax import op as R

from graphdsl.types import broadcast_shapes

from ..kernels import indexing as K
from ..table import TVM
from .common import acc_dtype, cast, check_range, maximum, scalar
from .nn import safe_log_softmax


def _reduce(loss: relax.Expr, reduction: str, acc: str, count: relax.Expr | None = None) -> relax.Expr:
    """The reference's reduction: a mean divides by ``count`` (at least 1) when given."""
    if reduction == "none":
        return loss
    total = R.sum(loss)
    if reduction == "sum":
        return total
    if count is None:
        return R.mean(loss)
    return R.divide(total, R.maximum(count, scalar(1, acc)))


def _picked(cx, node, logp: relax.Expr, targets: relax.Expr):
    """(logp at each target, the valid-target mask); registers the target range check."""
    ignore = node.attrs["ignore_index"]
    tdt = node.inputs[1].type.dtype.name
    valid = cx.emit(R.not_equal(targets, scalar(ignore, tdt)))
    idx = cx.emit(R.where(valid, targets, scalar(0, tdt)))
    check_range(cx, node, idx, node.inputs[0].type.shape[-1], node.inputs[0].type.rank - 1, "target", ignore)
    gathered = cx.te(K.gather, logp, cx.emit(R.expand_dims(idx, -1)), node.inputs[0].type.rank - 1)
    return R.squeeze(gathered, [-1]), valid


@TVM.register("cross_entropy")
def cross_entropy(cx, node, logits, targets):
    dt = node.type.dtype.name
    acc = acc_dtype(dt)
    logp = cx.emit(safe_log_softmax(cast(logits, acc), -1))
    picked, valid = _picked(cx, node, logp, targets)
    ls = node.attrs["label_smoothing"]
    loss = R.multiply(scalar(-(1.0 - ls), acc), picked)
    if ls:
        loss = R.subtract(loss, R.multiply(scalar(ls, acc), R.mean(logp, [-1])))
    loss = cx.emit(R.where(valid, loss, scalar(0, acc)))
    count = cx.emit(R.sum(R.astype(valid, acc)))
    return cx.emit(cast(_reduce(loss, node.attrs["reduction"], acc, count), dt))


@TVM.register("nll")
def nll(cx, node, logp, targets):
    dt = node.type.dtype.name
    acc = acc_dtype(dt)
    picked, valid = _picked(cx, node, cx.emit(cast(logp, acc)), targets)
    loss = cx.emit(R.where(valid, R.negative(picked), scalar(0, acc)))
    count = cx.emit(R.sum(R.astype(valid, acc)))
    return cx.emit(cast(_reduce(loss, node.attrs["reduction"], acc, count), dt))


@TVM.register("mse")
def mse(cx, node, pred, target):
    dt = node.type.dtype.name
    acc = acc_dtype(dt)
    d = cx.emit(R.subtract(cast(pred, acc), cast(target, acc)))
    return cx.emit(cast(_reduce(R.multiply(d, d), node.attrs["reduction"], acc), dt))


@TVM.register("margin_ranking")
def margin_ranking(cx, node, x1, x2, y):
    dt = node.type.dtype.name
    acc = acc_dtype(dt)
    diff = R.subtract(cast(x1, acc), cast(x2, acc))
    z = R.add(R.multiply(R.negative(cast(y, acc)), diff), scalar(node.attrs["margin"], acc))
    loss = cx.emit(maximum(z, scalar(0, acc)))   # NaN-propagating, as np.maximum
    return cx.emit(cast(_reduce(loss, node.attrs["reduction"], acc), dt))


@TVM.register("cosine_similarity")
def cosine_similarity(cx, node, a, b):
    dt = node.type.dtype.name
    acc = acc_dtype(dt)
    axis, eps = node.attrs["axis"], scalar(node.attrs["eps"], acc)
    shape = cx.shape(broadcast_shapes(node.inputs[0].type.shape, node.inputs[1].type.shape))
    af = cx.emit(R.broadcast_to(cast(a, acc), shape))
    bf = cx.emit(R.broadcast_to(cast(b, acc), shape))
    na = maximum(R.sqrt(R.sum(R.multiply(af, af), [axis])), eps)
    nb = maximum(R.sqrt(R.sum(R.multiply(bf, bf), [axis])), eps)
    out = R.divide(R.sum(R.multiply(af, bf), [axis]), R.multiply(na, nb))
    return cx.emit(cast(out, dt))
