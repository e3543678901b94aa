"""Normalization ops over an axis: softmax, log_softmax, layer_norm, rms_norm.

References compute in float32 (float64 for float64 inputs) and cast back, so f16/bf16 results stay
accurate; gradient rules do the same by casting in the graph. ``numel`` is the run-time element
count a gradient divides by when a dim is symbolic (``size_of`` gives a Python int when it is not).
Softmax of a row that is entirely -inf is zeros, and its gradient is zero: a fully masked row is
defined, never NaN. A row holding a NaN (or a +inf, whose exp(x - max) is exp(inf - inf)) is NaN
throughout, in softmax and log_softmax alike: NaN in a row means NaN out of that row
(docs/semantics.md).
"""
from __future__ import annotations

import numpy as np

from graphdsl import dtypes as _dt
from graphdsl.errors import ShapeError, TypeError_
from graphdsl.registry import defop
from graphdsl.types import TensorType

from .common import axes_attr, axis_attr, require_float, same_dtype, sum_to, types_str
from .elementwise import cast, exp, rsqrt
from .reduce import sum as _sum


# -- helpers shared by nn, attention and losses ----------------------------------------------------
def acc_np(dtype: np.dtype) -> type:
    """The NumPy type references accumulate in: float64 for float64, float32 otherwise."""
    return np.float64 if dtype == np.float64 else np.float32


def upcast(t):
    """Graph code: f16/bf16 tensors to f32 (gradient math in full precision); others unchanged."""
    return cast(t, dtype=_dt.float32) if t.dtype.is_float and t.dtype.bits < 32 else t


def downcast(t, dtype):
    """Graph code: cast back to ``dtype`` when ``upcast`` widened it."""
    return t if t.dtype == dtype else cast(t, dtype=dtype)


def _numel_normalize(x, axis, dtype):
    return {"axis": axes_attr(axis, x.rank, "numel"), "dtype": _dt.dtype(dtype)}


def _numel_ref(x, axis, dtype):
    axes = range(x.ndim) if axis is None else axis
    n = 1
    for a in axes:
        n *= x.shape[a]
    return np.asarray(n, dtype=dtype.np)


numel = defop("numel", attrs={"axis": None, "dtype": _dt.float32}, normalize=_numel_normalize,
              infer=lambda x, axis, dtype: TensorType((), dtype), ref=_numel_ref, differentiable=False,
              types="any dtype → a scalar of the dtype attribute",
              doc="the number of elements of x over axis (None: all) as a scalar of dtype; "
                  "lets graphs divide by symbolic sizes")


def size_of(x, axis=None, dtype=None):
    """Elements of tensor ``x`` over ``axis``: a Python int when static, else a ``numel`` node."""
    axes = range(x.ndim) if axis is None else ((axis,) if isinstance(axis, int) else tuple(axis))
    n = 1
    for a in axes:
        n = n * x.shape[a]
    if isinstance(n, int):
        return n
    return numel(x, axis=axis, dtype=dtype or x.dtype)


def mean_over(t, axis=-1, keepdims=True):
    """Graph code: the mean of ``t`` over ``axis`` as sum * (1/n), n possibly symbolic."""
    total = _sum(t, axis=axis, keepdims=keepdims)
    n = size_of(t, axis, t.dtype)
    return total * (1.0 / n) if isinstance(n, int) else total / n


def _shifted_np(x: np.ndarray, axis: int):
    """(x - max, its exp, the sum of the exp) over ``axis`` in the accumulation dtype. A fully
    masked row (max -inf) is shifted by 0, so its sum is 0; a row holding a NaN or +inf sums to NaN."""
    x = x.astype(acc_np(x.dtype), copy=False)
    m = np.max(x, axis=axis, keepdims=True)
    shifted = x - np.where(m == -np.inf, 0, m)
    e = np.exp(shifted)
    return shifted, e, np.sum(e, axis=axis, keepdims=True)


def softmax_np(x: np.ndarray, axis: int) -> np.ndarray:
    """Max-subtracted softmax in the accumulation dtype; rows that are all -inf give zeros, rows
    holding a NaN (or +inf) are NaN."""
    _, e, s = _shifted_np(x, axis)
    dead = s == 0   # only a fully masked row sums to 0: the max's own term is exp(0) = 1
    return np.where(dead, 0, e / np.where(dead, 1, s)).astype(e.dtype, copy=False)


def log_softmax_np(x: np.ndarray, axis: int) -> np.ndarray:
    """Max-subtracted log-softmax in the accumulation dtype; rows that are all -inf stay -inf,
    rows holding a NaN (or +inf) are NaN."""
    shifted, _, s = _shifted_np(x, axis)
    return shifted - np.log(np.where(s == 0, 1, s))


# -- softmax and log_softmax ----------------------------------------------------------------------
def _axis_normalize(name):
    def normalize(x, axis):
        if x.rank == 0:
            raise ShapeError(f"needs an input of rank >= 1, got {x}", op=name)
        return {"axis": axis_attr(axis, x.rank, name)}
    return normalize


def _float_infer(name):
    def infer(x, axis):
        require_float(name, x)
        return x
    return infer


def _softmax_vjp(g, y, x, axis):
    gf, yf = upcast(g), upcast(y)
    gx = yf * (gf - _sum(gf * yf, axis=axis, keepdims=True))
    return [downcast(gx, x.dtype)]


def _log_softmax_vjp(g, y, x, axis):
    gf, yf = upcast(g), upcast(y)
    gx = gf - exp(yf) * _sum(gf, axis=axis, keepdims=True)
    return [downcast(gx, x.dtype)]


softmax = defop("softmax", attrs={"axis": -1}, normalize=_axis_normalize("softmax"),
                infer=_float_infer("softmax"),
                ref=lambda x, axis: softmax_np(x, axis).astype(x.dtype), vjp=_softmax_vjp,
                doc="exp(x - max) / sum(exp(x - max)) over axis; an all -inf row gives zeros, "
                    "a row holding a NaN is NaN")
log_softmax = defop("log_softmax", attrs={"axis": -1}, normalize=_axis_normalize("log_softmax"),
                    infer=_float_infer("log_softmax"),
                    ref=lambda x, axis: log_softmax_np(x, axis).astype(x.dtype), vjp=_log_softmax_vjp,
                    doc="x - max - log(sum(exp(x - max))) over axis; an all -inf row stays -inf, "
                        "a row holding a NaN is NaN")


# -- layer_norm and rms_norm ----------------------------------------------------------------------
def _norm_infer(name, x, *params):
    require_float(name, x)
    same_dtype(name, x, *params)
    if x.rank == 0:
        raise ShapeError(f"needs an input of rank >= 1, got {x}", op=name)
    want = (x.shape[-1],)
    for label, p in zip(("weight", "bias"), params):
        if tuple(p.shape) != want:
            raise ShapeError(f"{label} {p} does not match the last dim of x: {types_str(x, *params)}",
                             op=name, hint=f"{label} must have shape [{x.shape[-1]}]")
    return x


def _eps_normalize(name):
    def normalize(*types, eps):
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps < 0:
            raise TypeError_(f"eps must be a non-negative number, got {eps!r}", op=name)
        return {"eps": float(eps)}
    return normalize


def _layer_norm_ref(x, weight, bias, eps):
    acc = acc_np(x.dtype)
    xf = x.astype(acc)
    xc = xf - xf.mean(axis=-1, keepdims=True)
    var = (xc * xc).mean(axis=-1, keepdims=True)
    y = xc / np.sqrt(var + acc(eps)) * weight.astype(acc) + bias.astype(acc)
    return y.astype(x.dtype)


def _layer_norm_vjp(g, y, x, weight, bias, eps):
    xf, wf, gf = upcast(x), upcast(weight), upcast(g)
    xc = xf - mean_over(xf)
    rstd = rsqrt(mean_over(xc * xc) + eps)
    xhat = xc * rstd
    gxhat = gf * wf
    gx = rstd * (gxhat - mean_over(gxhat) - xhat * mean_over(gxhat * xhat))
    return [downcast(gx, x.dtype), downcast(sum_to(gf * xhat, weight.shape), weight.dtype),
            downcast(sum_to(gf, bias.shape), bias.dtype)]


layer_norm = defop("layer_norm", attrs={"eps": 1e-5}, arity=3, normalize=_eps_normalize("layer_norm"),
                   infer=lambda x, w, b, eps: _norm_infer("layer_norm", x, w, b),
                   ref=_layer_norm_ref, vjp=_layer_norm_vjp,
                   types="x, weight, bias one float dtype → same dtype",
                   doc="(x - mean) / sqrt(var + eps) * weight + bias over the last axis")


def _rms_norm_ref(x, weight, eps):
    acc = acc_np(x.dtype)
    xf = x.astype(acc)
    ms = (xf * xf).mean(axis=-1, keepdims=True)
    return (xf / np.sqrt(ms + acc(eps)) * weight.astype(acc)).astype(x.dtype)


def _rms_norm_vjp(g, y, x, weight, eps):
    xf, wf, gf = upcast(x), upcast(weight), upcast(g)
    r = rsqrt(mean_over(xf * xf) + eps)
    xhat = xf * r
    gxhat = gf * wf
    gx = r * (gxhat - xhat * mean_over(gxhat * xhat))
    return [downcast(gx, x.dtype), downcast(sum_to(gf * xhat, weight.shape), weight.dtype)]


rms_norm = defop("rms_norm", attrs={"eps": 1e-6}, arity=2, normalize=_eps_normalize("rms_norm"),
                 infer=lambda x, w, eps: _norm_infer("rms_norm", x, w),
                 ref=_rms_norm_ref, vjp=_rms_norm_vjp,
                 types="x and weight one float dtype → same dtype",
                 doc="x / sqrt(mean(x^2) + eps) * weight over the last axis")


__all__ = ["softmax", "log_softmax", "layer_norm", "rms_norm", "numel", "size_of"]
