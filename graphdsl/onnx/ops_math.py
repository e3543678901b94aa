"""Importers of ONNX math ops: elementwise, matmul/Gemm, softmax, normalization, reductions.

ONNX semantics that differ from ours are spelled out here: integer Div truncates toward zero
(ours floors), Pow may mix dtypes, MatMul accepts vectors, LayerNormalization may normalize over
several trailing axes. Integer arithmetic on shapes (a ``Sym``) is evaluated at import time.
"""
from __future__ import annotations

import math
import operator

import numpy as np

from graphdsl import ops
from graphdsl.errors import GraphError
from graphdsl.types import Dim, dim_div

from .table import IMPORT
from .values import Sym, axes_arg, known_all, normalize_axis


class _Unknown(Exception):
    """A symbolic dim expression whose value is not known at import time."""


def _sym_div(a, b):
    if isinstance(a, int) and isinstance(b, int):
        q = abs(a) // abs(b) if b else 0
        return q if (a >= 0) == (b >= 0) else -q
    q = dim_div(a, b)
    if q is None:
        raise _Unknown
    return q


def _sym_equal(a, b):
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if Dim.of(a) == Dim.of(b):
        return True
    if isinstance(a, int) and a < 0 or isinstance(b, int) and b < 0:
        return False   # a size is never negative
    raise _Unknown


def _sym_extremum(pick):
    def fn(a, b):
        if isinstance(a, int) and isinstance(b, int):
            return pick(a, b)
        if Dim.of(a) == Dim.of(b):
            return a
        raise _Unknown
    return fn


_SYMBOLIC = {"Add": operator.add, "Sub": operator.sub, "Mul": operator.mul, "Div": _sym_div,
             "Equal": _sym_equal, "Max": _sym_extremum(max), "Min": _sym_extremum(min)}


def _on_syms(imp, op_type: str, ins):
    """Evaluate integer shape arithmetic at import time; None when some entry is unknown."""
    known, symbolic = known_all(imp, ins)
    if known is None or not symbolic:
        return None
    fn = np.frompyfunc(lambda a, b: _SYMBOLIC[op_type](_py(a), _py(b)), 2, 1)
    try:
        out = known[0].astype(object)
        for k in known[1:]:
            out = fn(out, k.astype(object))
    except _Unknown:
        return None
    out = np.asarray(out, dtype=object)
    if op_type == "Equal":
        return imp.const(out.astype(bool))
    return imp.value(out, next(x.dtype for x in ins if isinstance(x, Sym)))


def _py(v):
    return int(v) if isinstance(v, (np.integer, bool, np.bool_)) else v


# -- elementwise ---------------------------------------------------------------------------------
_BINARY = {"Add": ops.add, "Sub": ops.sub, "Mul": ops.mul, "Equal": ops.equal, "Less": ops.less,
           "LessOrEqual": ops.less_equal, "Greater": ops.greater, "GreaterOrEqual": ops.greater_equal,
           "And": ops.logical_and, "Or": ops.logical_or, "Xor": ops.not_equal}


def _binary(op_type, op):
    def handler(imp, node, a, b):
        if op_type in _SYMBOLIC:
            done = _on_syms(imp, op_type, [a, b])
            if done is not None:
                return done
        return op(imp.tensor(a), imp.tensor(b))
    handler.__qualname__ = f"binary({op_type!r})"
    return handler


for _name, _op in _BINARY.items():
    IMPORT.register(_name, _binary(_name, _op))


@IMPORT.register("Div")
def _div(imp, node, a, b):
    done = _on_syms(imp, "Div", [a, b])
    if done is not None:
        return done
    a, b = imp.tensor(a), imp.tensor(b)
    q = a / b
    if not a.dtype.is_int:
        return q
    # ONNX integer division truncates toward zero; ours floors: step back up where they differ
    inexact = ops.not_equal(a - q * b, 0)
    signs_differ = ops.not_equal(ops.less(a, 0), ops.less(b, 0))
    return ops.where(ops.logical_and(inexact, signs_differ), q + 1, q)


@IMPORT.register(("Max", "Min", "Sum"))
def _variadic(imp, node, *xs):
    op_type = node.op_type
    if op_type != "Sum":
        done = _on_syms(imp, op_type, xs)
        if done is not None:
            return done
    op = {"Max": ops.maximum, "Min": ops.minimum, "Sum": ops.add}[op_type]
    out = imp.tensor(xs[0])
    for v in xs[1:]:
        out = op(out, imp.tensor(v))
    return out


@IMPORT.register("Pow")
def _pow(imp, node, base, exponent):
    """The result has the base's type (ONNX's T). An integer base is raised in float64 and the
    result truncated back, as C's pow cast to the integer type: exact while it fits in 2**53."""
    x, y = imp.tensor(base), imp.tensor(exponent)
    if not x.dtype.is_float:
        return ops.pow(x.astype("float64"), y.astype("float64")).astype(x.dtype)
    return ops.pow(x, y if y.dtype == x.dtype else y.astype(x.dtype))


_UNARY = {"Neg": ops.neg, "Abs": ops.abs, "Sqrt": ops.sqrt, "Exp": ops.exp, "Log": ops.log,
          "Tanh": ops.tanh, "Sigmoid": ops.sigmoid, "Relu": ops.relu, "Erf": ops.erf, "Sin": ops.sin,
          "Cos": ops.cos, "Not": ops.logical_not}


def _unary(op_type, op):
    def handler(imp, node, x):
        if op is ops.neg and isinstance(x, Sym):
            return imp.value(-x.value, x.dtype)
        return op(imp.tensor(x))
    handler.__qualname__ = f"unary({op_type!r})"
    return handler


for _name, _op in _UNARY.items():
    IMPORT.register(_name, _unary(_name, _op))


@IMPORT.register("Reciprocal")
def _reciprocal(imp, node, x):
    return 1.0 / imp.tensor(x)


@IMPORT.register("IsNaN")
def _isnan(imp, node, x):
    x = imp.tensor(x)
    return ops.not_equal(x, x)


@IMPORT.register("IsInf")
def _isinf(imp, node, x):
    x = imp.tensor(x)
    pos, neg = ops.equal(x, math.inf), ops.equal(x, -math.inf)
    want_pos, want_neg = imp.attrs.get("detect_positive", 1), imp.attrs.get("detect_negative", 1)
    if want_pos and want_neg:
        return ops.logical_or(pos, neg)
    return pos if want_pos else neg if want_neg else ops.logical_and(pos, neg)


@IMPORT.register("Gelu")
def _gelu(imp, node, x):
    return ops.gelu(imp.tensor(x), approximate=imp.attrs.get("approximate", "none"))


@IMPORT.register("LeakyRelu")
def _leaky_relu(imp, node, x):
    x = imp.tensor(x)
    return ops.where(ops.greater_equal(x, 0.0), x, x * imp.attrs.get("alpha", 0.01))


@IMPORT.register("Clip")
def _clip(imp, node, x, low=None, high=None):
    x = imp.tensor(x)
    if low is not None:
        x = ops.maximum(x, imp.tensor(low))
    if high is not None:
        x = ops.minimum(x, imp.tensor(high))
    return x


# -- matrix products -----------------------------------------------------------------------------
@IMPORT.register("MatMul")
def _matmul(imp, node, a, b):
    a, b = imp.tensor(a), imp.tensor(b)
    vec_a, vec_b = a.ndim == 1, b.ndim == 1
    out = (a.unsqueeze(0) if vec_a else a) @ (b.unsqueeze(-1) if vec_b else b)
    if vec_a and vec_b:
        return out.reshape(())          # [1, 1] -> the dot product, a scalar
    if vec_b:
        out = out.squeeze(-1)
    if vec_a:
        out = out.squeeze(-2)
    return out


@IMPORT.register("Gemm")
def _gemm(imp, node, a, b, c=None):
    attrs = imp.attrs
    a, b = imp.tensor(a), imp.tensor(b)
    a = a.mT if attrs.get("transA", 0) else a
    b = b.mT if attrs.get("transB", 0) else b
    out = a @ b
    if attrs.get("alpha", 1.0) != 1.0:
        out = out * attrs["alpha"]
    if c is not None:
        c = imp.tensor(c)
        out = out + (c * attrs["beta"] if attrs.get("beta", 1.0) != 1.0 else c)
    return out


# -- softmax and normalization ---------------------------------------------------------------------
@IMPORT.register(("Softmax", "LogSoftmax"))
def _softmax(imp, node, x):
    x = imp.tensor(x)
    axis = normalize_axis(imp.attrs.get("axis", -1), x.ndim)
    return ops.softmax(x, axis=axis) if node.op_type == "Softmax" else ops.log_softmax(x, axis=axis)


@IMPORT.register("LayerNormalization")
def _layer_norm(imp, node, x, scale, bias=None):
    """Over the axes from ``axis`` on. One trailing axis and no statistics asked for is our
    layer_norm op (the passes and kernels know it); otherwise it is written out, in float32 for a
    narrow float (ONNX's stash_type 1), with the optional Mean and InvStdDev outputs: the row
    statistics, shaped [d0, .., d(axis-1), 1, .., 1], in x's dtype as ONNX's reference gives them."""
    x = imp.tensor(x)
    scale = imp.tensor(scale)
    bias = imp.tensor(bias) if bias is not None else None
    axis, eps = normalize_axis(imp.attrs.get("axis", -1), x.ndim), imp.attrs.get("epsilon", 1e-5)
    if imp.attrs.get("stash_type", 1) != 1:
        raise GraphError(f"LayerNormalization with stash_type={imp.attrs['stash_type']} is not supported "
                         "(ONNX defines only 1: statistics in float32)")
    stats = any(node.output[1:])
    if axis == x.ndim - 1 and scale.ndim == 1 and not stats:
        return ops.layer_norm(x, scale, bias if bias is not None else ops.zeros_like(scale), eps=eps)
    axes = tuple(range(axis, x.ndim))
    narrow = x.dtype.name in ("float16", "bfloat16")
    xf = x.astype("float32") if narrow else x
    mean = xf.mean(axis=axes, keepdims=True)
    centered = xf - mean
    var = (centered * centered).mean(axis=axes, keepdims=True)
    inv_std = 1.0 / ops.sqrt(var + eps)
    out = centered * inv_std * (scale.astype("float32") if narrow else scale)
    if bias is not None:
        out = out + (bias.astype("float32") if narrow else bias)
    if narrow:
        out, mean, inv_std = (t.astype(x.dtype) for t in (out, mean, inv_std))
    return [out, mean, inv_std] if stats else out


@IMPORT.register("RMSNormalization")
def _rms_norm(imp, node, x, scale):
    """Over the axes from ``axis`` on: our rms_norm op for the last axis alone, else written out,
    in float32 for a narrow float (stash_type 1)."""
    x, scale = imp.tensor(x), imp.tensor(scale)
    axis, eps = normalize_axis(imp.attrs.get("axis", -1), x.ndim), imp.attrs.get("epsilon", 1e-5)
    if imp.attrs.get("stash_type", 1) != 1:
        raise GraphError(f"RMSNormalization with stash_type={imp.attrs['stash_type']} is not supported")
    if axis == x.ndim - 1 and scale.ndim == 1:
        return ops.rms_norm(x, scale, eps=eps)
    narrow = x.dtype.name in ("float16", "bfloat16")
    xf = x.astype("float32") if narrow else x
    ms = (xf * xf).mean(axis=tuple(range(axis, x.ndim)), keepdims=True)
    out = xf / ops.sqrt(ms + eps) * (scale.astype("float32") if narrow else scale)
    return out.astype(x.dtype) if narrow else out


@IMPORT.register("CumSum")
def _cumsum(imp, node, x, axis):
    x = imp.tensor(x)
    (ax,) = imp.ints(axis, "CumSum's axis")
    return ops.cumsum(x, axis=normalize_axis(int(ax), x.ndim), exclusive=bool(imp.attrs.get("exclusive", 0)),
                      reverse=bool(imp.attrs.get("reverse", 0)))


# -- losses -------------------------------------------------------------------------------------
_NO_IGNORE = -(2 ** 62)   # ONNX without ignore_index ignores no target: one no valid target equals


def _classes_last(t):
    """ONNX puts the classes on axis 1 ([N, C, d1, ...]); our losses on the last axis."""
    return t if t.ndim <= 2 else t.permute(0, *range(2, t.ndim), 1)


def _class_loss(imp, node, logp, target, weight):
    """-logp[target] per element, with ONNX's per-class ``weight``: the mean divides by the sum of
    the weights of the targets counted (ours without weights: by their number)."""
    reduction = imp.attrs.get("reduction", "mean")
    if reduction not in ("mean", "sum", "none"):
        raise GraphError(f"{node.op_type} reduction {reduction!r} is not one of mean, sum, none")
    ignore = imp.attrs.get("ignore_index", _NO_IGNORE)
    target = imp.tensor(target)
    if weight is None:
        return ops.nll(logp, target, ignore_index=ignore, reduction=reduction)
    weight = imp.tensor(weight)
    per = ops.nll(logp, target, ignore_index=ignore, reduction="none")
    counted = target != ignore
    w = ops.take(weight, ops.where(counted, target, 0), axis=0) * counted.astype(weight.dtype)
    per = per * w
    if reduction == "none":
        return per
    return per.sum() if reduction == "sum" else per.sum() / w.sum()


@IMPORT.register("NegativeLogLikelihoodLoss")
def _nll_loss(imp, node, logp, target, weight=None):
    return _class_loss(imp, node, _classes_last(imp.tensor(logp)), target, weight)


@IMPORT.register("SoftmaxCrossEntropyLoss")
def _softmax_cross_entropy(imp, node, scores, labels, weights=None):
    """The NLL of log_softmax over the classes; the optional second output is that log_softmax,
    in ONNX's layout."""
    logp = ops.log_softmax(imp.tensor(scores), axis=1)
    loss = _class_loss(imp, node, _classes_last(logp), labels, weights)
    return [loss, logp] if len(node.output) > 1 and node.output[1] else loss


# -- reductions ---------------------------------------------------------------------------------
_REDUCE = {"ReduceSum": ops.sum, "ReduceMean": ops.mean, "ReduceMax": ops.max, "ReduceMin": ops.min}


@IMPORT.register((*_REDUCE, "ReduceProd"))
def _reduce(imp, node, x, axes=None):
    """The reductions; ReduceProd of a shape value (a Sym, whose entries may be symbolic dims) is
    multiplied out at import, of a run-time tensor it is ``prod``."""
    axes = axes_arg(imp, axes)
    keepdims = bool(imp.attrs.get("keepdims", 1))
    if not axes:
        if imp.attrs.get("noop_with_empty_axes", 0):
            return x
        axes = None
    if node.op_type == "ReduceProd" and isinstance(x, Sym):
        return _prod_of_known(imp, x, axes, keepdims)
    t = imp.tensor(x)
    op = ops.prod if node.op_type == "ReduceProd" else _REDUCE[node.op_type]
    return op(t, axis=None if axes is None else tuple(axes), keepdims=keepdims)


def _prod_of_known(imp, x: Sym, axes, keepdims: bool):
    """The product of a Sym's entries over ``axes``, as ints and dims."""
    out = np.asarray(x.value, dtype=object)
    rank = out.ndim
    for a in sorted((normalize_axis(a, rank) for a in (axes if axes is not None else range(rank))), reverse=True):
        prod = np.ones(out.shape[:a] + out.shape[a + 1:], dtype=object)
        for i in range(out.shape[a]):
            prod = prod * np.take(out, i, axis=a)
        out = np.expand_dims(prod, a) if keepdims else prod
    return imp.value(np.asarray(out, dtype=object), x.dtype)


@IMPORT.register(("ArgMax", "ArgMin"))
def _argmax(imp, node, x):
    """ArgMin is the argmax of the order reversed: ``-x`` for a float (NaN stays NaN, so the first
    NaN's index wins as in np.argmin), ``-1 - x`` for an integer (which never overflows).
    ``select_last_index=1`` is the argmax of x reversed along the axis, read from the end."""
    x = imp.tensor(x)
    if node.op_type == "ArgMin":
        x = -x if x.dtype.is_float else -1 - x
    axis = normalize_axis(int(imp.attrs.get("axis", 0)), x.ndim)
    keepdims = bool(imp.attrs.get("keepdims", 1))
    if not imp.attrs.get("select_last_index", 0) or x.ndim == 0:
        return ops.argmax(x, axis=axis, keepdims=keepdims)
    n = x.shape[axis]
    last = n - 1 if isinstance(n, int) else ops.full(shape=(), value=n, dtype="int64") - 1
    backwards = ops.take(x, last - ops.arange(n), axis=axis)
    return last - ops.argmax(backwards, axis=axis, keepdims=keepdims)


@IMPORT.register("TopK")
def _topk(imp, node, x, k=None):
    """Values and indices of the K largest (largest=0: smallest) along ``axis``, sorted; equal
    values in index order and NaN larger than every number, as ONNX Runtime does. K must be known
    at import (graphdsl's shapes hold it); opset 1 gives it as an attribute."""
    x = imp.tensor(x)
    if k is None:
        if "k" not in imp.attrs:
            raise GraphError("TopK needs K: its second input (or, before opset 10, the k attribute)")
        count = int(imp.attrs["k"])
    else:
        values = imp.ints(k, "TopK's K")
        if len(values) != 1:
            raise GraphError(f"TopK's K must hold one value, got {len(values)}: {values}")
        (count,) = values
    if not isinstance(count, int):
        raise GraphError(f"TopK's K is the symbolic dim {count}; graphdsl needs it as a number",
                         hint="store K as a constant or an initializer")
    if x.ndim == 0:
        raise GraphError(f"TopK needs an input of rank >= 1, got {x.type}")
    axis = normalize_axis(int(imp.attrs.get("axis", -1)), x.ndim)
    values, indices = ops.topk(x, count, axis=axis, largest=bool(imp.attrs.get("largest", 1)),
                               sorted=bool(imp.attrs.get("sorted", 1)))
    return [values, indices]


@IMPORT.register("Mod")
def _mod(imp, node, a, b):
    """Mod: fmod=0 takes the divisor's sign (Python's %: a - floor(a / b) * b, our integer div
    floors), fmod=1 the dividend's (C's fmod: our fmod op on floats). The spec asks for fmod=1 on
    floats; ONNX's reference and cases give fmod=0 NumPy's float %: the fmod, plus b where it is
    nonzero and its sign differs from b's (exact, as NumPy computes it)."""
    a, b = imp.tensor(a), imp.tensor(b)
    if a.dtype.is_float:
        r = ops.fmod(a, b)
        if imp.attrs.get("fmod", 0):
            return r
        zero = ops.full(shape=(), value=0.0, dtype=a.dtype)
        off = ops.logical_and(r != zero, ops.not_equal(r < zero, b < zero))
        return ops.where(off, r + b, r)
    r = a - ops.div(a, b) * b
    if not imp.attrs.get("fmod", 0):
        return r
    wrong_sign = ops.logical_and(r != 0, ops.not_equal(r < 0, a < 0))
    return ops.where(wrong_sign, r - b, r)

