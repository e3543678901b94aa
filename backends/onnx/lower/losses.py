"""ONNX rows of the losses (graphdsl/ops/losses.py): cross_entropy, nll, mse, margin_ranking,
cosine_similarity.

They follow the references' steps (docs/semantics.md). For cross_entropy and nll a row holding a
NaN has a NaN loss, a target equal to ``ignore_index`` contributes 0 whatever its row holds, and
the ``mean`` divides by the number of valid targets. Narrow floats are computed in float32 and
rounded once.
"""
from __future__ import annotations

from graphdsl.types import broadcast_shapes

from ..emitter import Emitter
from ..table import EXPORT
from .common import I64, axes, narrow, reduce, scalar_like, widen
from .nn import softmax


def reduce_loss(em: Emitter, loss: str, reduction: str, count: str | None = None) -> str:
    """'none', 'sum', or 'mean' (over ``count`` when given: a 0-d value of loss's dtype)."""
    if reduction == "none":
        return loss
    total = reduce(em, "ReduceSum", loss, None, keepdims=False)
    if reduction == "sum":
        return total
    if count is None:
        return reduce(em, "ReduceMean", loss, None, keepdims=False)
    return em.op("Div", [total, em.op("Max", [count, scalar_like(em, 1, count)])])


def _picked(em: Emitter, logp: str, targets: str, ignore_index: int):
    """(logp at each target, the valid-target mask, the count of valid targets as logp's dtype)."""
    valid = em.op("Not", [em.op("Equal", [targets, scalar_like(em, ignore_index, targets)])])
    safe = em.op("Where", [valid, targets, scalar_like(em, 0, targets)])
    idx = em.op("Unsqueeze", [em.cast(safe, I64), axes(em, [-1])])
    picked = em.op("Squeeze", [em.op("GatherElements", [logp, idx], axis=-1), axes(em, [-1])])
    count = em.cast(reduce(em, "ReduceSum", em.cast(valid, I64), None, keepdims=False), em.dtypes[logp])
    return picked, valid, count


@EXPORT.register("cross_entropy")
def _cross_entropy(em, node, logits, targets):
    a = node.attrs
    logp = softmax(em, widen(em, logits), -1, log=True)
    picked, valid, count = _picked(em, logp, targets, a["ignore_index"])
    loss = em.op("Mul", [picked, scalar_like(em, -(1.0 - a["label_smoothing"]), logp)])
    if a["label_smoothing"]:
        smooth = reduce(em, "ReduceMean", logp, [-1], keepdims=False)
        loss = em.op("Sub", [loss, em.op("Mul", [smooth, scalar_like(em, a["label_smoothing"], logp)])])
    loss = em.op("Where", [valid, loss, scalar_like(em, 0, loss)])
    return narrow(em, reduce_loss(em, loss, a["reduction"], count), node.type.dtype)


@EXPORT.register("nll")
def _nll(em, node, logp, targets):
    a = node.attrs
    picked, valid, count = _picked(em, widen(em, logp), targets, a["ignore_index"])
    loss = em.op("Where", [valid, em.op("Neg", [picked]), scalar_like(em, 0, picked)])
    return narrow(em, reduce_loss(em, loss, a["reduction"], count), node.type.dtype)


@EXPORT.register("mse")
def _mse(em, node, pred, target):
    d = em.op("Sub", [widen(em, pred), widen(em, target)])
    loss = em.op("Mul", [d, d])
    return narrow(em, reduce_loss(em, loss, node.attrs["reduction"]), node.type.dtype)


@EXPORT.register("margin_ranking")
def _margin_ranking(em, node, x1, x2, y):
    x1, x2, y = widen(em, x1), widen(em, x2), widen(em, y)
    z = em.op("Add", [em.op("Mul", [em.op("Neg", [y]), em.op("Sub", [x1, x2])]),
                      scalar_like(em, node.attrs["margin"], x1)])
    loss = em.op("Max", [z, scalar_like(em, 0, z)])
    return narrow(em, reduce_loss(em, loss, node.attrs["reduction"]), node.type.dtype)


@EXPORT.register("cosine_similarity")
def _cosine_similarity(em, node, x1, x2):
    axis, eps = node.attrs["axis"], node.attrs["eps"]
    shape = broadcast_shapes(node.inputs[0].type.shape, node.inputs[1].type.shape)
    a, b = (em.op("Expand", [widen(em, i), em.dims(shape)]) for i in (x1, x2))

    def norm(t):
        length = em.op("Sqrt", [reduce(em, "ReduceSum", em.op("Mul", [t, t]), [axis], keepdims=False)])
        return em.op("Max", [length, scalar_like(em, eps, length)])

    dot = reduce(em, "ReduceSum", em.op("Mul", [a, b]), [axis], keepdims=False)
    out = em.op("Div", [dot, em.op("Mul", [norm(a), norm(b)])], hint="cosine_similarity")
    return narrow(em, out, node.type.dtype)
