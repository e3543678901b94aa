"""The fused attention op: the passes rewrite textbook attention into it.

    attention(q, k, v, bias, seed) = dropout(softmax(scale * q @ k^T + bias + causal_mask)) @ v

q is [..., Sq, D], k [..., Sk, D], v [..., Sk, Dv]; leading (batch, head) dims broadcast. The
node's inputs are q, k, v, then bias when ``has_bias``, then seed when ``dropout_p > 0``. The causal
mask is bottom-right aligned (query i sees keys j <= i + Sk - Sq, as with a KV cache). A row whose
scores are all -inf gives a zero output row and zero gradients, never NaN. Dropout uses exactly
the mask rule of the ``dropout`` op, drawn over the full [..., Sq, Sk] probabilities.
"""
from __future__ import annotations

import math

import numpy as np

from graphdsl import dtypes as _dt
from graphdsl.errors import AttributeError_, GraphDSLError, ShapeError
from graphdsl.registry import defop
from graphdsl.types import TensorType, broadcast_shapes

from ._common import require_float, same_dtype, sum_to, types_str
from .creation import iota
from .elementwise import greater, where
from .nn import acc_np, downcast, numel, softmax, softmax_np, upcast
from .random import check_seed, dropout, keep_mask_np, salt_attr, seed_tensor
from .reduce import sum as _sum
from .shape import broadcast_to


def _split(rest, has_bias, dropout_p):
    """(bias, seed) from the inputs after q, k, v (each None when absent)."""
    bias = rest[0] if has_bias else None
    seed = rest[-1] if dropout_p > 0 else None
    return bias, seed


def _normalize(q, k, v, *rest, scale, causal, dropout_p, salt, has_bias):
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or not 0 <= dropout_p < 1:
        raise AttributeError_(f"dropout_p must be a probability in [0, 1), got {dropout_p!r}")
    n_bias = len(rest) - (1 if dropout_p > 0 else 0)
    if n_bias not in (0, 1):
        raise GraphDSLError(f"with dropout_p={dropout_p} takes q, k, v, [bias]"
                            f"{', seed' if dropout_p > 0 else ''}; got {len(rest) + 3} inputs",
                            hint="pass seed=... when dropout_p > 0")
    if has_bias is not None and bool(has_bias) != bool(n_bias):
        raise AttributeError_(f"has_bias={has_bias} but {'a' if n_bias else 'no'} bias input was given")
    if q.rank < 2:
        raise ShapeError(f"q must be [..., Sq, D], got {q}")
    if scale is None:
        if not isinstance(q.shape[-1], int):
            raise ShapeError(f"cannot compute the default scale for symbolic head dim {q.shape[-1]}",
                             hint="pass scale=1/sqrt(head_dim) explicitly")
        scale = 1.0 / math.sqrt(q.shape[-1])
    return {"scale": float(scale), "causal": bool(causal), "dropout_p": float(dropout_p),
            "salt": salt_attr("attention", salt), "has_bias": bool(n_bias)}


def _scores_shape(q, k, v):
    batch = broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if batch is None:
        raise ShapeError(f"batch dims of q, k, v do not broadcast: {types_str(q, k, v)}")
    return tuple(batch) + (q.shape[-2], k.shape[-2])


def _infer(q, k, v, *rest, scale, causal, dropout_p, salt, has_bias):
    bias, seed = _split(rest, has_bias, dropout_p)
    require_float("attention", q)
    same_dtype("attention", q, k, v, *([bias] if bias is not None else []))
    for name, t in (("k", k), ("v", v)):
        if t.rank < 2:
            raise ShapeError(f"{name} must have rank >= 2, got {types_str(q, k, v)}")
    if q.shape[-1] != k.shape[-1]:
        raise ShapeError(f"head dims differ: q {q} and k {k} (last dims {q.shape[-1]} vs {k.shape[-1]})",
                         hint="q and k must share the last (head) dim")
    if k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"k and v have different key lengths: {k} and {v}",
                         hint="k is [..., Sk, D] and v is [..., Sk, Dv]")
    scores = _scores_shape(q, k, v)
    if bias is not None and broadcast_shapes(bias.shape, scores) != scores:
        raise ShapeError(f"bias {bias} does not broadcast to the scores [{','.join(map(str, scores))}]",
                         hint="the bias is added to q @ k^T of shape [..., Sq, Sk]")
    if seed is not None:
        check_seed("attention", seed)
    return TensorType(scores[:-1] + (v.shape[-1],), q.dtype)


def causal_mask_np(sq: int, sk: int) -> np.ndarray:
    """True where key j is hidden from query i: j > i + (sk - sq)."""
    return np.arange(sk)[None, :] > np.arange(sq)[:, None] + (sk - sq)


def _ref(q, k, v, *rest, scale, causal, dropout_p, salt, has_bias):
    bias, seed = _split(rest, has_bias, dropout_p)
    acc = acc_np(q.dtype)
    qf, kf, vf = (a.astype(acc) for a in (q, k, v))
    s = np.matmul(qf, np.swapaxes(kf, -1, -2)) * acc(scale)
    if bias is not None:
        s = s + bias.astype(acc)
    if causal:
        s = np.where(causal_mask_np(q.shape[-2], k.shape[-2]), -np.inf, s)
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    p = np.broadcast_to(softmax_np(s, -1), batch + s.shape[-2:])
    if dropout_p > 0:
        keep = keep_mask_np(p.shape, int(seed), dropout_p, salt)
        p = np.where(keep, p * acc(1.0 / (1.0 - dropout_p)), acc(0))
    return np.matmul(p, vf).astype(q.dtype)


def _causal_offset(q, k):
    """Sk - Sq: a Python int when known, else a graph value from the run-time sizes."""
    off = k.shape[-2] - q.shape[-2]
    if isinstance(off, int):
        return off
    return (numel(k, axis=k.ndim - 2, dtype=_dt.int64) - numel(q, axis=q.ndim - 2, dtype=_dt.int64))


def probabilities(q, k, bias, *, scale, causal, full_shape):
    """Graph code: softmax(scale * q @ k^T + bias, causal-masked), broadcast to ``full_shape``."""
    s = (q @ k.mT) * scale
    if bias is not None:
        s = s + bias
    if causal:
        sq, sk = q.shape[-2], k.shape[-2]
        rows = iota(shape=(sq, sk), axis=0, dtype=_dt.int64)
        cols = iota(shape=(sq, sk), axis=1, dtype=_dt.int64)
        s = where(greater(cols, rows + _causal_offset(q, k)), float("-inf"), s)
    p = softmax(s, axis=-1)
    return p if tuple(p.shape) == tuple(full_shape) else broadcast_to(p, shape=tuple(full_shape))


def _vjp(g, out, q, k, v, *rest, scale, causal, dropout_p, salt, has_bias):
    """Recompute the probabilities from q, k, v, bias, then the textbook backward."""
    bias, seed = _split(rest, has_bias, dropout_p)
    qf, kf, vf, gf = upcast(q), upcast(k), upcast(v), upcast(g)
    bf = upcast(bias) if bias is not None else None
    full = _scores_shape(q.type, k.type, v.type)
    p = probabilities(qf, kf, bf, scale=scale, causal=causal, full_shape=full)
    pd = dropout(p, seed, p=dropout_p, salt=salt) if dropout_p > 0 else p
    gv = sum_to(pd.mT @ gf, v.shape)
    gp = gf @ vf.mT  # g carries the full batch shape, so gp has the shape of p
    if dropout_p > 0:
        gp = dropout(gp, seed, p=dropout_p, salt=salt)
    gs = p * (gp - _sum(gp * p, axis=-1, keepdims=True))  # zero on masked entries and masked rows
    grads = []
    if bias is not None:
        grads.append(downcast(sum_to(gs, bias.shape), bias.dtype))
    gs = gs * scale
    gq = sum_to(gs @ kf, q.shape)
    gk = sum_to(gs.mT @ qf, k.shape)
    return ([downcast(gq, q.dtype), downcast(gk, k.dtype), downcast(gv, v.dtype)] + grads
            + ([None] if seed is not None else []))


attention_op = defop(
    "attention", attrs={"scale": None, "causal": False, "dropout_p": 0.0, "salt": 0, "has_bias": None},
    arity=(3, 5), normalize=_normalize, infer=_infer, ref=_ref, vjp=_vjp,
    doc="dropout(softmax(scale * q @ k^T + bias, causal-masked)) @ v; fully masked rows give 0")


def attention(q, k, v, bias=None, seed=None, *, scale=None, causal=False, dropout_p=0.0, salt=0):
    """Scaled dot-product attention; ``seed`` (an i32[] tensor or int) is needed when dropout_p > 0."""
    inputs = [q, k, v] + ([bias] if bias is not None else [])
    if dropout_p > 0:
        if seed is None:
            from graphdsl.tracing import user_loc
            raise AttributeError_(f"dropout_p={dropout_p} needs a seed", op="attention", loc=user_loc(),
                                  hint="pass seed=graphdsl.tracing.current_builder().seed()")
        inputs.append(seed_tensor(seed))
    return attention_op(*inputs, scale=scale, causal=causal, dropout_p=dropout_p, salt=salt,
                        has_bias=bias is not None)


__all__ = ["attention", "attention_op", "causal_mask_np"]
