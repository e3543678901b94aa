"""Losses: cross_entropy, nll, mse, margin ranking, cosine similarity.

Semantics follow PyTorch's functional losses, with classes on the LAST axis (logits [..., C],
targets [...]). ``reduction`` is "mean", "sum" or "none"; a mean over targets counts only those
that are not ``ignore_index``, and when every target is ignored the loss is 0, not NaN.
NaN in means NaN out (docs/semantics.md): a row of logits holding a NaN has a NaN loss, and so
has a sum or mean over it; a row whose target is ``ignore_index`` contributes 0 whatever it holds.
References compute in float32 (float64 for float64 inputs); gradients are graph code.
"""
from __future__ import annotations

import numpy as np

from graphdsl.errors import AttributeError_, InputError, ShapeError, TypeError_
from graphdsl.registry import defop
from graphdsl.types import TensorType, broadcast_shapes

from .common import axis_attr, require_float, same_dtype, sum_to, types_str
from .creation import iota
from .elementwise import cast, equal, greater, maximum, not_equal, sqrt, where
from .nn import acc_np, downcast, log_softmax_np, size_of, softmax, upcast
from .reduce import sum as _sum
from .shape import broadcast_to, reshape

REDUCTIONS = ("mean", "sum", "none")


def _reduction(op: str, reduction) -> str:
    if reduction not in REDUCTIONS:
        raise AttributeError_(f"unknown reduction {reduction!r}", op=op,
                              hint=f"use one of {', '.join(map(repr, REDUCTIONS))}")
    return reduction


def _reduced_type(t: TensorType, shape, reduction: str) -> TensorType:
    return TensorType(() if reduction != "none" else shape, t.dtype)


def _reduce_np(loss: np.ndarray, reduction: str, count=None) -> np.ndarray:
    """Reduce per-element losses; ``count`` (default: all elements) divides the mean."""
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    n = loss.size if count is None else count
    return total / max(n, 1)


def _scale_cotangent(g, reduction: str, count):
    """Graph code: the cotangent of each per-element loss (``count`` is an int or a scalar tensor)."""
    gf = upcast(g)
    if reduction != "mean":
        return gf
    return gf * (1.0 / count) if isinstance(count, int) else gf / count


# -- cross_entropy and nll ------------------------------------------------------------------------
def _class_normalize(op):
    def normalize(x, targets, *, reduction, ignore_index, **extra):
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
            raise AttributeError_(f"ignore_index must be an int, got {ignore_index!r}", op=op)
        out = {"ignore_index": int(ignore_index), "reduction": _reduction(op, reduction)}
        if "label_smoothing" in extra:
            eps = extra["label_smoothing"]
            if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= eps <= 1.0:
                raise AttributeError_(f"label_smoothing must be in [0, 1], got {eps!r}", op=op)
            out["label_smoothing"] = float(eps)
        return out
    return normalize


def _class_infer(op):
    def infer(x, targets, *, reduction, **_):
        require_float(op, x)
        if not targets.dtype.is_int:
            raise TypeError_(f"targets must be integer class indices, got {types_str(x, targets)}", op=op,
                             hint="cast them: targets.astype('int32'); probability targets are not supported")
        if x.rank < 1 or tuple(targets.shape) != tuple(x.shape[:-1]):
            raise ShapeError(f"targets must have the shape of the logits without the class axis: "
                             f"{types_str(x, targets)}", op=op,
                             hint="classes are on the last axis: logits [..., C], targets [...]")
        return _reduced_type(x, targets.shape, reduction)
    return infer


def _pick(op, logp: np.ndarray, targets: np.ndarray, ignore_index: int):
    """(logp at each target, the bool mask of non-ignored targets); rejects out-of-range targets."""
    valid = targets != ignore_index
    n_classes = logp.shape[-1]
    bad = valid & ((targets < 0) | (targets >= n_classes))
    if bad.any():
        raise InputError(f"target {targets[bad].flat[0]} is out of range for {n_classes} classes", op=op,
                         hint=f"targets are in [0, {n_classes}) or equal to ignore_index={ignore_index}")
    idx = np.where(valid, targets, 0).astype(np.int64)
    return np.take_along_axis(logp, idx[..., None], axis=-1)[..., 0], valid


def _cross_entropy_ref(logits, targets, ignore_index, label_smoothing, reduction):
    logp = log_softmax_np(logits, -1)
    picked, valid = _pick("cross_entropy", logp, targets, ignore_index)
    loss = -(1.0 - label_smoothing) * picked
    if label_smoothing:
        loss = loss - label_smoothing * logp.mean(axis=-1)
    loss = np.where(valid, loss, 0).astype(logp.dtype)
    return np.asarray(_reduce_np(loss, reduction, int(valid.sum())), dtype=logits.dtype)


def _nll_ref(logp, targets, ignore_index, reduction):
    picked, valid = _pick("nll", logp.astype(acc_np(logp.dtype)), targets, ignore_index)
    loss = np.where(valid, -picked, 0).astype(picked.dtype)
    return np.asarray(_reduce_np(loss, reduction, int(valid.sum())), dtype=logp.dtype)


def _class_weights(g, x, targets, ignore_index, reduction):
    """Graph code: (one-hot of targets, the cotangent of each row's loss, zero on ignored rows)."""
    col_shape = tuple(targets.shape) + (1,)
    classes = iota(shape=tuple(x.shape), axis=x.ndim - 1, dtype=targets.dtype)
    onehot = cast(equal(classes, reshape(targets, shape=col_shape)), dtype=x.dtype)
    valid = cast(not_equal(targets, ignore_index), dtype=x.dtype)
    count = maximum(_sum(valid), 1.0) if reduction == "mean" else None
    w = _scale_cotangent(g, reduction, count) * valid
    return onehot, reshape(w, shape=col_shape)


def _cross_entropy_vjp(g, out, logits, targets, ignore_index, label_smoothing, reduction):
    x = upcast(logits)
    onehot, w = _class_weights(g, x, targets, ignore_index, reduction)
    target_dist = onehot * (1.0 - label_smoothing)
    if label_smoothing:
        target_dist = target_dist + label_smoothing / size_of(x, -1)  # an int or a numel node
    return [downcast((softmax(x, axis=-1) - target_dist) * w, logits.dtype), None]


def _nll_vjp(g, out, logp, targets, ignore_index, reduction):
    onehot, w = _class_weights(g, upcast(logp), targets, ignore_index, reduction)
    return [downcast(-(onehot * w), logp.dtype), None]


cross_entropy = defop(
    "cross_entropy", attrs={"ignore_index": -100, "label_smoothing": 0.0, "reduction": "mean"}, arity=2,
    normalize=_class_normalize("cross_entropy"), infer=_class_infer("cross_entropy"),
    ref=_cross_entropy_ref, vjp=_cross_entropy_vjp,
    types="logits float; targets int → logits' dtype",
    doc="softmax cross-entropy of logits [..., C] against int targets [...] (PyTorch semantics)")
nll = defop(
    "nll", attrs={"ignore_index": -100, "reduction": "mean"}, arity=2,
    normalize=_class_normalize("nll"), infer=_class_infer("nll"), ref=_nll_ref, vjp=_nll_vjp,
    types="log-probabilities float; targets int → their dtype",
    doc="negative log-likelihood: -logp[..., target] for log-probabilities [..., C]")


# -- mse and margin ranking -----------------------------------------------------------------------
def _same_shape_infer(op):
    def infer(*types, reduction, **_):
        require_float(op, types[0])
        same_dtype(op, *types)
        if any(tuple(t.shape) != tuple(types[0].shape) for t in types[1:]):
            raise ShapeError(f"inputs must have the same shape: {types_str(*types)}", op=op)
        return _reduced_type(types[0], types[0].shape, reduction)
    return infer


def _mse_ref(pred, target, reduction):
    acc = acc_np(pred.dtype)
    d = pred.astype(acc) - target.astype(acc)
    return np.asarray(_reduce_np(d * d, reduction), dtype=pred.dtype)


def _mse_vjp(g, out, pred, target, reduction):
    p, t = upcast(pred), upcast(target)
    gd = (p - t) * 2.0 * _scale_cotangent(g, reduction, size_of(p))
    return [downcast(gd, pred.dtype), downcast(-gd, target.dtype)]


mse = defop("mse", attrs={"reduction": "mean"}, arity=2,
            normalize=lambda p, t, reduction: {"reduction": _reduction("mse", reduction)},
            infer=_same_shape_infer("mse"), ref=_mse_ref, vjp=_mse_vjp,
            doc="mean squared error (pred - target)^2")


def _margin_normalize(x1, x2, y, margin, reduction):
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise AttributeError_(f"margin must be a number, got {margin!r}", op="margin_ranking")
    return {"margin": float(margin), "reduction": _reduction("margin_ranking", reduction)}


def _margin_ref(x1, x2, y, margin, reduction):
    acc = acc_np(x1.dtype)
    z = -y.astype(acc) * (x1.astype(acc) - x2.astype(acc)) + acc(margin)
    return np.asarray(_reduce_np(np.maximum(z, acc(0)), reduction), dtype=x1.dtype)


def _margin_vjp(g, out, x1, x2, y, margin, reduction):
    a, b, yf = upcast(x1), upcast(x2), upcast(y)
    active = greater(-yf * (a - b) + margin, 0.0)
    ga = where(active, _scale_cotangent(g, reduction, size_of(a)), 0.0)  # has a's shape
    return [downcast(-yf * ga, x1.dtype), downcast(yf * ga, x2.dtype), downcast(-(a - b) * ga, y.dtype)]


margin_ranking = defop("margin_ranking", attrs={"margin": 0.0, "reduction": "mean"}, arity=3,
                       normalize=_margin_normalize, infer=_same_shape_infer("margin_ranking"),
                       ref=_margin_ref, vjp=_margin_vjp,
                       doc="max(0, -y * (x1 - x2) + margin), y in {1, -1}")


# -- cosine similarity ----------------------------------------------------------------------------
def _cosine_normalize(a, b, axis, eps):
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
        raise AttributeError_(f"eps must be a non-negative number, got {eps!r}", op="cosine_similarity")
    return {"axis": axis_attr(axis, max(a.rank, b.rank, 1), "cosine_similarity"), "eps": float(eps)}


def _cosine_infer(a, b, axis, eps):
    require_float("cosine_similarity", a)
    same_dtype("cosine_similarity", a, b)
    shape = broadcast_shapes(a.shape, b.shape)
    if shape is None or len(shape) == 0:
        raise ShapeError(f"inputs must broadcast to a shape of rank >= 1: {types_str(a, b)}",
                         op="cosine_similarity")
    return TensorType(tuple(d for i, d in enumerate(shape) if i != axis), a.dtype)


def _cosine_ref(a, b, axis, eps):
    acc = acc_np(a.dtype)
    af, bf = np.broadcast_arrays(a.astype(acc), b.astype(acc))
    na = np.maximum(np.sqrt((af * af).sum(axis)), acc(eps))
    nb = np.maximum(np.sqrt((bf * bf).sum(axis)), acc(eps))
    return ((af * bf).sum(axis) / (na * nb)).astype(a.dtype)


def _cosine_vjp(g, out, a, b, axis, eps):
    shape = tuple(broadcast_shapes(a.shape, b.shape))
    af, bf = (t if tuple(t.shape) == shape else broadcast_to(t, shape=shape) for t in (upcast(a), upcast(b)))
    keep = tuple(1 if i == axis else d for i, d in enumerate(shape))
    gk = reshape(upcast(g), shape=keep)
    ok = reshape(upcast(out), shape=keep)
    raw_a = sqrt(_sum(af * af, axis=axis, keepdims=True))
    raw_b = sqrt(_sum(bf * bf, axis=axis, keepdims=True))
    na, nb = maximum(raw_a, eps), maximum(raw_b, eps)
    # d out / d a = b / (|a| |b|) - out * a / |a|^2, the second term only where |a| > eps
    ga = gk * (bf / (na * nb) - where(greater(raw_a, eps), ok * af / (na * na), 0.0))
    gb = gk * (af / (na * nb) - where(greater(raw_b, eps), ok * bf / (nb * nb), 0.0))
    return [downcast(sum_to(ga, a.shape), a.dtype), downcast(sum_to(gb, b.shape), b.dtype)]


cosine_similarity = defop("cosine_similarity", attrs={"axis": -1, "eps": 1e-8}, arity=2,
                          normalize=_cosine_normalize, infer=_cosine_infer, ref=_cosine_ref,
                          vjp=_cosine_vjp,
                          doc="a . b / (max(|a|, eps) * max(|b|, eps)) along axis (PyTorch semantics)")


__all__ = ["cross_entropy", "nll", "mse", "margin_ranking", "cosine_similarity"]
