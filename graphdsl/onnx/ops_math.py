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

from .importer import Sym
from .ops_shape import _axes_arg, _axis, _known_all
from .table import handles


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
    known, symbolic = _known_all(imp, ins)
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
    def handler(imp, ins, attrs):
        if op_type in _SYMBOLIC:
            done = _on_syms(imp, op_type, ins)
            if done is not None:
                return done
        return op(imp.tensor(ins[0]), imp.tensor(ins[1]))
    return handler


for _name, _op in _BINARY.items():
    handles(_name)(_binary(_name, _op))


@handles("Div")
def _div(imp, ins, attrs):
    done = _on_syms(imp, "Div", ins)
    if done is not None:
        return done
    a, b = imp.tensor(ins[0]), imp.tensor(ins[1])
    q = a / b
    if not a.dtype.is_int:
        return q
    # ONNX integer division truncates toward zero; ours floors: step back up where they differ
    inexact = ops.not_equal(a - q * b, 0)
    signs_differ = ops.not_equal(ops.less(a, 0), ops.less(b, 0))
    return ops.where(ops.logical_and(inexact, signs_differ), q + 1, q)


@handles("Max", "Min", "Sum")
def _variadic(imp, ins, attrs):
    op_type = imp.node.op_type
    if op_type != "Sum":
        done = _on_syms(imp, op_type, ins)
        if done is not None:
            return done
    op = {"Max": ops.maximum, "Min": ops.minimum, "Sum": ops.add}[op_type]
    out = imp.tensor(ins[0])
    for v in ins[1:]:
        out = op(out, imp.tensor(v))
    return out


@handles("Pow")
def _pow(imp, ins, attrs):
    x, y = imp.tensor(ins[0]), imp.tensor(ins[1])
    return ops.pow(x, y if y.dtype == x.dtype else y.astype(x.dtype))


_UNARY = {"Neg": ops.neg, "Abs": ops.abs, "Sqrt": ops.sqrt, "Exp": ops.exp, "Log": ops.log,
          "Tanh": ops.tanh, "Sigmoid": ops.sigmoid, "Relu": ops.relu, "Erf": ops.erf, "Sin": ops.sin,
          "Cos": ops.cos, "Not": ops.logical_not}


def _unary(op):
    def handler(imp, ins, attrs):
        x = ins[0]
        if op is ops.neg and isinstance(x, Sym):
            return imp.value(-x.value, x.dtype)
        return op(imp.tensor(x))
    return handler


for _name, _op in _UNARY.items():
    handles(_name)(_unary(_op))


@handles("Reciprocal")
def _reciprocal(imp, ins, attrs):
    return 1.0 / imp.tensor(ins[0])


@handles("IsNaN")
def _isnan(imp, ins, attrs):
    x = imp.tensor(ins[0])
    return ops.not_equal(x, x)


@handles("IsInf")
def _isinf(imp, ins, attrs):
    x = imp.tensor(ins[0])
    pos, neg = ops.equal(x, math.inf), ops.equal(x, -math.inf)
    want_pos, want_neg = attrs.get("detect_positive", 1), attrs.get("detect_negative", 1)
    if want_pos and want_neg:
        return ops.logical_or(pos, neg)
    return pos if want_pos else neg if want_neg else ops.logical_and(pos, neg)


@handles("Gelu")
def _gelu(imp, ins, attrs):
    return ops.gelu(imp.tensor(ins[0]), approximate=attrs.get("approximate", "none"))


@handles("LeakyRelu")
def _leaky_relu(imp, ins, attrs):
    x = imp.tensor(ins[0])
    return ops.where(ops.greater_equal(x, 0.0), x, x * attrs.get("alpha", 0.01))


@handles("Clip")
def _clip(imp, ins, attrs):
    x = imp.tensor(ins[0])
    if len(ins) > 1 and ins[1] is not None:
        x = ops.maximum(x, imp.tensor(ins[1]))
    if len(ins) > 2 and ins[2] is not None:
        x = ops.minimum(x, imp.tensor(ins[2]))
    return x


# -- matrix products -----------------------------------------------------------------------------
@handles("MatMul")
def _matmul(imp, ins, attrs):
    a, b = imp.tensor(ins[0]), imp.tensor(ins[1])
    vec_a, vec_b = a.ndim == 1, b.ndim == 1
    out = (a.unsqueeze(0) if vec_a else a) @ (b.unsqueeze(-1) if vec_b else b)
    if vec_b:
        out = out.squeeze(-1)
    if vec_a:
        out = out.squeeze(-2)
    return out


@handles("Gemm")
def _gemm(imp, ins, attrs):
    a, b = imp.tensor(ins[0]), imp.tensor(ins[1])
    a = a.mT if attrs.get("transA", 0) else a
    b = b.mT if attrs.get("transB", 0) else b
    out = a @ b
    if attrs.get("alpha", 1.0) != 1.0:
        out = out * attrs["alpha"]
    if len(ins) > 2 and ins[2] is not None:
        c = imp.tensor(ins[2])
        out = out + (c * attrs["beta"] if attrs.get("beta", 1.0) != 1.0 else c)
    return out


# -- softmax and normalization ---------------------------------------------------------------------
@handles("Softmax", "LogSoftmax")
def _softmax(imp, ins, attrs):
    x = imp.tensor(ins[0])
    axis = _axis(attrs.get("axis", -1), x.ndim)
    return ops.softmax(x, axis=axis) if imp.node.op_type == "Softmax" else ops.log_softmax(x, axis=axis)


@handles("LayerNormalization")
def _layer_norm(imp, ins, attrs):
    if any(imp.node.output[1:]):
        raise GraphError("LayerNormalization's Mean and InvStdDev outputs are not supported")
    x = imp.tensor(ins[0])
    scale = imp.tensor(ins[1])
    bias = imp.tensor(ins[2]) if len(ins) > 2 and ins[2] is not None else None
    axis, eps = _axis(attrs.get("axis", -1), x.ndim), attrs.get("epsilon", 1e-5)
    if axis == x.ndim - 1 and scale.ndim == 1:
        return ops.layer_norm(x, scale, bias if bias is not None else ops.zeros_like(scale), eps=eps)
    axes = tuple(range(axis, x.ndim))   # normalize over several trailing axes, written out
    centered = x - x.mean(axis=axes, keepdims=True)
    var = (centered * centered).mean(axis=axes, keepdims=True)
    out = centered * ops.rsqrt(var + eps) * scale
    return out + bias if bias is not None else out


# -- reductions ---------------------------------------------------------------------------------
_REDUCE = {"ReduceSum": ops.sum, "ReduceMean": ops.mean, "ReduceMax": ops.max, "ReduceMin": ops.min}


@handles(*_REDUCE, "ReduceProd")
def _reduce(imp, ins, attrs):
    x = ins[0]
    axes = _axes_arg(imp, ins, attrs)
    keepdims = bool(attrs.get("keepdims", 1))
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            return x
        axes = None
    if imp.node.op_type == "ReduceProd":
        known = imp.known(x)
        if known is None:
            raise GraphError("ReduceProd is supported on shape values only, not on run-time tensors")
        out = np.asarray(known, dtype=object)
        rank = out.ndim
        for a in sorted((_axis(a, rank) for a in (axes if axes is not None else range(rank))), reverse=True):
            prod = np.ones(out.shape[:a] + out.shape[a + 1:], dtype=object)
            for i in range(out.shape[a]):
                prod = prod * np.take(out, i, axis=a)
            out = np.expand_dims(prod, a) if keepdims else prod
        dtype = x.dtype if isinstance(x, Sym) else imp.tensor(x).dtype
        return imp.value(np.asarray(out, dtype=object), dtype)
    t = imp.tensor(x)
    return _REDUCE[imp.node.op_type](t, axis=None if axes is None else tuple(axes), keepdims=keepdims)


@handles("ArgMax")
def _argmax(imp, ins, attrs):
    if attrs.get("select_last_index", 0):
        raise GraphError("ArgMax with select_last_index=1 is not supported")
    x = imp.tensor(ins[0])
    return ops.argmax(x, axis=attrs.get("axis", 0), keepdims=bool(attrs.get("keepdims", 1)))

