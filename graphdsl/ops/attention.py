"""The fused attention op: the passes rewrite textbook attention into it.

    attention(q, k, v, bias, seed) = dropout(softmax(scale * q @ k^T + bias + causal_mask)) @ v

q is [..., Sq, D], k [..., Sk, D], v [..., Sk, Dv]; leading (batch, head) dims broadcast. The
node's inputs are q, k, v, then bias when ``has_bias``, then seed when ``dropout_p > 0``. The causal
mask is bottom-right aligned (query i sees keys j <= i + Sk - Sq, as with a KV cache). A row whose
scores are all -inf gives a zero output row and zero gradients, never NaN. Dropout uses exactly
the mask rule of the ``dropout`` op, drawn over the full [..., Sq, Sk] probabilities.

The backward is an op too: ``attention_grad(q, k, v, [bias], [seed], g, wrt=...)`` is the gradient
with respect to one input (``wrt`` in q, k, v, bias; our nodes have one output), recomputing the
probabilities from q and k as FlashAttention's backward does, so a training graph keeps no
[Sq, Sk] tensor between the forward and the backward and has no softmax of its own. Both ops also
have a decomposition into softmax and matmuls, for backends without a lowering; attention_grad's
own gradient (second derivatives) is autodiff through that decomposition.
"""
from __future__ import annotations

import math

import numpy as np

from graphdsl import dtypes as _dt
from graphdsl.errors import AttributeError_, GraphDSLError, ShapeError
from graphdsl.registry import REQUIRED, defop
from graphdsl.types import TensorType, broadcast_shapes

from .common import require_float, same_dtype, sum_to, types_str
from .creation import iota
from .elementwise import greater, where
from .nn import acc_np, downcast, numel, softmax, softmax_np, upcast
from .random import check_seed, dropout, keep_mask_np, salt_attr, seed_tensor
from .reduce import sum as _sum
from .shape import broadcast_to


def _present(attrs) -> dict:
    """Which optional inputs a node has: bias with ``has_bias``, the seed when it drops out."""
    return {"bias": bool(attrs["has_bias"]), "seed": attrs["dropout_p"] > 0}


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


def scores_shape(q, k, v):
    """The probabilities' shape [..., Sq, Sk]: the batch dims of q, k and v broadcast (types in)."""
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
    scores = scores_shape(q, k, v)
    if bias is not None and broadcast_shapes(bias.shape, scores) != scores:
        raise ShapeError(f"bias {bias} does not broadcast to the scores [{','.join(map(str, scores))}]",
                         hint="the bias is added to q @ k^T of shape [..., Sq, Sk]")
    if seed is not None:
        check_seed("attention", seed)
    return TensorType(scores[:-1] + (v.shape[-1],), q.dtype)


def causal_mask_np(sq: int, sk: int) -> np.ndarray:
    """True where key j is hidden from query i: j > i + (sk - sq)."""
    return np.arange(sk)[None, :] > np.arange(sq)[:, None] + (sk - sq)


def _probabilities_np(q, k, bias, scale, causal, batch):
    """softmax(scale * q @ k^T + bias, causal-masked) in q's dtype, broadcast over ``batch``."""
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * q.dtype.type(scale)
    if bias is not None:
        s = s + bias.astype(q.dtype)
    if causal:
        s = np.where(causal_mask_np(q.shape[-2], k.shape[-2]), -np.inf, s)
    return np.broadcast_to(softmax_np(s, -1), tuple(batch) + s.shape[-2:])


def _ref(q, k, v, *rest, scale, causal, dropout_p, salt, has_bias):
    bias, seed = _split(rest, has_bias, dropout_p)
    acc = acc_np(q.dtype)
    qf, kf, vf = (a.astype(acc) for a in (q, k, v))
    p = _probabilities_np(qf, kf, bias, scale, causal, np.broadcast_shapes(q.shape[:-2], k.shape[:-2],
                                                                           v.shape[:-2]))
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


def _decompose(q, k, v, *rest, scale, causal, dropout_p, salt, has_bias):
    """Graph code: the op written with softmax and matmuls (for backends without a lowering)."""
    bias, seed = _split(rest, has_bias, dropout_p)
    p = probabilities(upcast(q), upcast(k), upcast(bias) if bias is not None else None, scale=scale,
                      causal=causal, full_shape=scores_shape(q.type, k.type, v.type))
    if dropout_p > 0:
        p = dropout(p, seed, p=dropout_p, salt=salt)
    return downcast(p @ upcast(v), q.dtype)


def _vjp(g, out, q, k, v, *rest, **attrs):
    """One ``attention_grad`` node per differentiable input (the backward recomputes the probabilities)."""
    bias, seed = _split(rest, attrs["has_bias"], attrs["dropout_p"])
    wrt = GRAD_WRT if bias is not None else GRAD_WRT[:3]
    grads = [attention_grad(q, k, v, *rest, g, wrt=w, **attrs) for w in wrt]
    return grads + ([None] if seed is not None else [])


attention_op = defop(
    "attention", attrs={"scale": None, "causal": False, "dropout_p": 0.0, "salt": 0, "has_bias": None},
    arity=(3, 5), inputs=("q", "k", "v", "bias?", "seed?"), present=_present, normalize=_normalize, infer=_infer, ref=_ref, vjp=_vjp, decompose=_decompose,
    types="q, k, v and bias one float dtype; seed int32[] → that dtype",
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


# -- the backward ------------------------------------------------------------------------------
GRAD_WRT = ("q", "k", "v", "bias")


def _grad_parts(rest, has_bias, dropout_p):
    """(bias, seed, g) from the inputs of attention_grad after q, k, v."""
    return (*_split(rest[:-1], has_bias, dropout_p), rest[-1])


def _grad_normalize(q, k, v, *rest, wrt, **attrs):
    if wrt not in GRAD_WRT:
        raise AttributeError_(f"wrt must be one of {', '.join(GRAD_WRT)}; got {wrt!r}")
    if not rest:
        raise GraphDSLError("takes q, k, v, [bias], [seed], g; got 3 inputs", hint="the last input is g")
    out = _normalize(q, k, v, *rest[:-1], **attrs)
    if wrt == "bias" and not out["has_bias"]:
        raise AttributeError_("wrt='bias' but the attention has no bias input")
    return {"wrt": wrt, **out}


def _grad_infer(q, k, v, *rest, wrt, **attrs):
    out = _infer(q, k, v, *rest[:-1], **attrs)
    bias, _, g = _grad_parts(rest, attrs["has_bias"], attrs["dropout_p"])
    if g != out:
        raise ShapeError(f"g must have the type of the attention output {out}, got {g}",
                         hint="g is the cotangent of attention(q, k, v, ...)")
    return {"q": q, "k": k, "v": v, "bias": bias}[wrt]


def _sum_to_np(x: np.ndarray, shape) -> np.ndarray:
    """Sum ``x`` down to the broadcast-compatible ``shape`` (the adjoint of broadcasting)."""
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(shape)
                                      if d == 1 and x.shape[lead + i] != 1)
    return np.sum(x, axis=axes, keepdims=True).reshape(shape) if axes else x


def _grad_ref(q, k, v, *rest, wrt, scale, causal, dropout_p, salt, has_bias):
    """dL/d(wrt) from the recomputed probabilities p:  dv = pd^T g,  dp = g v^T (dropped like p),
    ds = p * (dp - rowsum(dp * p)),  dbias = ds,  dq = scale ds k,  dk = scale ds^T q."""
    bias, seed, g = _grad_parts(rest, has_bias, dropout_p)
    acc = acc_np(q.dtype)
    qf, kf, vf, gf = (a.astype(acc) for a in (q, k, v, g))
    p = _probabilities_np(qf, kf, bias, scale, causal, g.shape[:-2])
    keep = keep_mask_np(p.shape, int(seed), dropout_p, salt) if dropout_p > 0 else None
    inv = acc(1.0 / (1.0 - dropout_p))
    if wrt == "v":
        pd = p if keep is None else np.where(keep, p * inv, acc(0))
        return _sum_to_np(np.swapaxes(pd, -1, -2) @ gf, v.shape).astype(v.dtype)
    dp = gf @ np.swapaxes(vf, -1, -2)
    if keep is not None:
        dp = np.where(keep, dp * inv, acc(0))
    ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True))   # zero wherever p is: masked keys and rows
    if wrt == "bias":
        return _sum_to_np(ds, bias.shape).astype(bias.dtype)
    ds = ds * acc(scale)
    if wrt == "q":
        return _sum_to_np(ds @ kf, q.shape).astype(q.dtype)
    return _sum_to_np(np.swapaxes(ds, -1, -2) @ qf, k.shape).astype(k.dtype)


def _grad_decompose(q, k, v, *rest, wrt, scale, causal, dropout_p, salt, has_bias):
    """Graph code: the same backward with softmax, matmuls and the dropout op."""
    bias, seed, g = _grad_parts(rest, has_bias, dropout_p)
    qf, kf, vf, gf = upcast(q), upcast(k), upcast(v), upcast(g)
    p = probabilities(qf, kf, upcast(bias) if bias is not None else None, scale=scale, causal=causal,
                      full_shape=tuple(g.shape[:-1]) + (k.shape[-2],))
    if wrt == "v":
        pd = dropout(p, seed, p=dropout_p, salt=salt) if dropout_p > 0 else p
        return downcast(sum_to(pd.mT @ gf, v.shape), v.dtype)
    dp = gf @ vf.mT
    if dropout_p > 0:
        dp = dropout(dp, seed, p=dropout_p, salt=salt)
    ds = p * (dp - _sum(dp * p, axis=-1, keepdims=True))
    if wrt == "bias":
        return downcast(sum_to(ds, bias.shape), bias.dtype)
    ds = ds * scale
    if wrt == "q":
        return downcast(sum_to(ds @ kf, q.shape), q.dtype)
    return downcast(sum_to(ds.mT @ qf, k.shape), k.dtype)


def _grad_vjp(gg, out, *inputs, **attrs):
    """Second derivatives: autodiff through the decomposition, inlined here."""
    from graphdsl.autodiff import grad
    from graphdsl.interpreter import inline
    from graphdsl.tracing import trace

    names = [f"x{i}" for i in range(len(inputs))]

    def loss(w, **xs):
        return {"loss": _sum(_grad_decompose(*[xs[n] for n in names], **attrs) * w)}

    sub = trace(loss, name="attention_grad", w=gg.type, **{n: t.type for n, t in zip(names, inputs)})
    wrt = [n for n, t in zip(names, inputs) if t.dtype.is_float]
    grads = inline(grad(sub, wrt=wrt, keep_outputs=False), dict(zip(names, inputs)), w=gg)
    return [grads.get(f"grad/{n}") for n in names]


attention_grad = defop(
    "attention_grad", attrs={"wrt": REQUIRED, "scale": None, "causal": False, "dropout_p": 0.0, "salt": 0,
                             "has_bias": None},
    arity=(4, 6), inputs=("q", "k", "v", "bias?", "seed?", "g"), present=_present,
    normalize=_grad_normalize, infer=_grad_infer, ref=_grad_ref, vjp=_grad_vjp,
    decompose=_grad_decompose,
    types="q, k, v, bias and g one float dtype; seed int32[] → that dtype (the type of the input wrt names)",
    doc="the gradient of attention(q, k, v, [bias], [seed]) w.r.t. one input (attr wrt), given the output "
        "cotangent g (the last input); recomputes the probabilities; fully masked rows give 0")


__all__ = ["attention", "attention_op", "attention_grad", "causal_mask_np"]
