"""ONNX lowerings of elementwise ops, reductions, matmul and the creation ops (full, iota, numel).

Each mirrors the op's NumPy reference: where the reference computes a narrow float (f16/bf16) in
float32 and rounds once, the lowering casts to float32 around the computation (``widen``/``narrow``).
The edges follow the reference too (docs/semantics.md): ONNX Runtime's ReduceMax/ReduceMin and
ArgMax skip a NaN that is not the first element, so the float reductions test for one; its
Sigmoid has an absolute error of about 6e-8 (17% off at -15, 0 below -17.5), so it is used for
x >= 0 only, exp(x) / (1 + exp(x)) below; it casts float64 (and ints, to bf16) to f16/bf16
through float32, rounding twice, which ``round_once`` corrects. A ``full`` whose value is a
symbolic dim (a mean's 1/n in its gradient) reads the dim from the input shapes at run time.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from graphdsl.types import Dim

from .emitter import Emitter, np_dtype, onnx_dtype
from .table import lowers

F32 = TensorProto.FLOAT
I64 = TensorProto.INT64


# -- helpers shared by the lowering modules ------------------------------------------------------
def widen(em: Emitter, x: str) -> str:
    """f16/bf16 values to float32 (the references' accumulation type); others unchanged."""
    return em.cast(x, F32) if em.dtypes[x] in (TensorProto.FLOAT16, TensorProto.BFLOAT16) else x


def narrow(em: Emitter, x: str, dtype) -> str:
    """Cast back to the node's dtype."""
    return em.cast(x, onnx_dtype(dtype))


def scalar_like(em: Emitter, value, like: str) -> str:
    """A 0-d constant of ``like``'s dtype."""
    return em.const(np.array(value, np_dtype(em.dtypes[like])))


def axes(em: Emitter, values) -> str:
    return em.const(np.array(list(values), np.int64), hint="axes")


def reduce(em: Emitter, op_type: str, x: str, axis, keepdims: bool) -> str:
    """ReduceX over ``axis`` (None: every axis), axes given as an input (opset 18)."""
    return em.op(op_type, [x, None if axis is None else axes(em, axis)], keepdims=int(keepdims))


# -- elementwise ----------------------------------------------------------------------------------
_DIRECT = {
    "add": "Add", "sub": "Sub", "mul": "Mul", "pow": "Pow", "maximum": "Max", "minimum": "Min",
    "neg": "Neg", "abs": "Abs", "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "tanh": "Tanh",
    "sin": "Sin", "cos": "Cos", "erf": "Erf", "equal": "Equal",
    "less": "Less", "less_equal": "LessOrEqual", "greater": "Greater",
    "greater_equal": "GreaterOrEqual", "logical_and": "And", "logical_or": "Or",
    "logical_not": "Not", "matmul": "MatMul", "where": "Where",
}


def _direct(op_type: str):
    def lower(em, node, ins):
        return em.op(op_type, ins, hint=node.op)
    return lower


for _name, _op_type in _DIRECT.items():
    lowers(_name)(_direct(_op_type))


@lowers("not_equal")
def _not_equal(em, node, ins):
    return em.op("Not", [em.op("Equal", ins)])


@lowers("div")
def _div(em, node, ins):
    a, b = ins
    if not node.type.dtype.is_int:
        return em.op("Div", ins, hint="div")
    # floor division, with x // 0 defined as x // 1: (a - a mod b) / b is exact
    zero, one = scalar_like(em, 0, b), scalar_like(em, 1, b)
    safe = em.op("Where", [em.op("Equal", [b, zero]), one, b])
    rem = em.op("Mod", [a, safe], fmod=0)
    return em.op("Div", [em.op("Sub", [a, rem]), safe], hint="div")


@lowers("rsqrt")
def _rsqrt(em, node, ins):
    return em.op("Reciprocal", [em.op("Sqrt", ins)], hint="rsqrt")


@lowers("relu")
def _relu(em, node, ins):
    if node.type.dtype.is_float:
        return em.op("Relu", ins, hint="relu")
    return em.op("Max", [ins[0], scalar_like(em, 0, ins[0])], hint="relu")


def sigmoid(em: Emitter, x: str) -> str:
    """The reference's sigmoid: ONNX Sigmoid for x >= 0, exp(x) / (1 + exp(x)) below (NaN stays NaN)."""
    e = em.op("Exp", [x])
    tail = em.op("Div", [e, em.op("Add", [scalar_like(em, 1, x), e])])
    return em.op("Where", [em.op("Less", [x, scalar_like(em, 0, x)]), tail, em.op("Sigmoid", [x])],
                 hint="sigmoid")


@lowers("sigmoid")
def _sigmoid(em, node, ins):
    return narrow(em, sigmoid(em, widen(em, ins[0])), node.type.dtype)


@lowers("silu")
def _silu(em, node, ins):
    x = ins[0]   # x times its sigmoid rounded to x's dtype, as the reference
    return em.op("Mul", [x, narrow(em, sigmoid(em, widen(em, x)), node.type.dtype)], hint="silu")


@lowers("gelu")
def _gelu(em, node, ins):
    x = widen(em, ins[0])
    c = lambda v: scalar_like(em, v, x)  # noqa: E731
    if node.attrs["approximate"] == "tanh":
        cube = em.op("Mul", [em.op("Mul", [em.op("Mul", [c(0.044715), x]), x]), x])
        inner = em.op("Mul", [c(float(np.sqrt(2.0 / np.pi))), em.op("Add", [x, cube])])
        cdf = em.op("Add", [c(1.0), em.op("Tanh", [inner])])
    else:
        cdf = em.op("Add", [c(1.0), em.op("Erf", [em.op("Mul", [x, c(float(1.0 / np.sqrt(2.0)))])])])
    out = em.op("Mul", [em.op("Mul", [c(0.5), x]), cdf], hint="gelu")
    return narrow(em, out, node.type.dtype)


@lowers("cast")
def _cast(em, node, ins):
    to, have = onnx_dtype(node.attrs["dtype"]), em.dtypes[ins[0]]
    if to in _NARROW_MAX and have in _ROUNDED_TWICE[to]:
        return round_once(em, ins[0], to)
    return em.op("Cast", ins, to=to, hint="cast")


F16, BF16 = TensorProto.FLOAT16, TensorProto.BFLOAT16
# (the largest finite value, the tie between it and inf) of each narrow type
_NARROW_MAX = {F16: (65504.0, 65520.0), BF16: (3.3895313892515355e38, 3.39617752923046e38)}
# Casts ONNX Runtime makes through float32, rounding twice: a value that float32 rounds onto a tie
# of the narrow type then goes to the even side, which may be the wrong one.
_ROUNDED_TWICE = {F16: (TensorProto.DOUBLE,),
                  BF16: (TensorProto.DOUBLE, TensorProto.INT32, TensorProto.INT64, TensorProto.UINT32)}


def round_once(em: Emitter, x: str, to: int) -> str:
    """``x`` (float64 or int) cast to f16/bf16 with ONE rounding to nearest, ties to even (NumPy's).

    m = float32(x) can be wrong only as a tie of ``to`` that x is not: then x's side of m decides
    between m's two neighbours in ``to``, the even one b (Cast's choice) and o = m + (m - b) (exact;
    a tie is exactly the case where o is a value of ``to``)."""
    xd = em.cast(x, TensorProto.DOUBLE)
    m = em.cast(xd, F32)
    as_to = lambda v: em.cast(em.op("Cast", [v], to=to), F32)  # noqa: E731  (rounded, back in f32)
    b = as_to(m)
    top, edge = _NARROW_MAX[to]                       # past the largest value, the tie is with inf
    overflow = em.op("IsInf", [b])
    o = em.op("Where", [overflow, em.op("Mul", [em.op("Sign", [m]), em.const(np.float32(top))]),
                        em.op("Add", [m, em.op("Sub", [m, b])])])
    is_tie = em.op("Where", [overflow, em.op("Equal", [em.op("Abs", [m]), em.const(np.float32(edge))]),
                             em.op("Equal", [as_to(o), o])])
    tie = em.op("And", [em.op("Not", [em.op("Equal", [b, m])]), is_tie])
    md = em.cast(m, TensorProto.DOUBLE)
    wrong = em.op("And", [tie, em.op("Not", [em.op("Equal", [md, xd])])])
    side = em.op("Where", [em.op("Greater", [xd, md]), em.op("Max", [b, o]), em.op("Min", [b, o])])
    return em.op("Cast", [em.op("Where", [wrong, side, b])], to=to, hint="cast")


# -- reductions -----------------------------------------------------------------------------------
@lowers("sum")
def _sum(em, node, ins):
    return reduce(em, "ReduceSum", ins[0], node.attrs["axis"], node.attrs["keepdims"])


@lowers("mean")
def _mean(em, node, ins):
    out = reduce(em, "ReduceMean", widen(em, ins[0]), node.attrs["axis"], node.attrs["keepdims"])
    return narrow(em, out, node.type.dtype)


def _nans(em: Emitter, x: str) -> str:
    """1.0 where ``x`` is NaN, else 0.0 (float32)."""
    return em.cast(em.op("IsNaN", [x]), F32)


def _any_nan(em: Emitter, nans: str, axis, keepdims: bool) -> str:
    """bool: whether the slice reduced over ``axis`` holds a NaN (``nans``: ``_nans(x)``)."""
    return em.op("Greater", [reduce(em, "ReduceMax", nans, axis, keepdims), em.const(np.float32(0))])


@lowers("max", "min")
def _extremum(em, node, ins):
    op_type = "ReduceMax" if node.op == "max" else "ReduceMin"
    x, axis, keepdims = ins[0], node.attrs["axis"], node.attrs["keepdims"]
    out = reduce(em, op_type, x, axis, keepdims)
    if not node.type.dtype.is_float:
        return out
    return em.op("Where", [_any_nan(em, _nans(em, x), axis, keepdims), scalar_like(em, np.nan, out), out],
                 hint=node.op)


def _argmax_of(em: Emitter, x: str, axis: int, keepdims: bool) -> str:
    """ArgMax, but the index of the first NaN where there is one (np.argmax)."""
    out = em.op("ArgMax", [x], axis=axis, keepdims=int(keepdims))
    if em.dtypes[x] not in (F32, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16):
        return out
    nans = _nans(em, x)
    first_nan = em.op("ArgMax", [nans], axis=axis, keepdims=int(keepdims))
    return em.op("Where", [_any_nan(em, nans, [axis], keepdims), first_nan, out], hint="argmax")


@lowers("argmax")
def _argmax(em, node, ins):
    axis, keepdims = node.attrs["axis"], node.attrs["keepdims"]
    if axis is not None:
        return _argmax_of(em, ins[0], axis[0], keepdims)
    flat = em.op("Reshape", [ins[0], em.const(np.array([-1], np.int64))])
    out = _argmax_of(em, flat, 0, False)
    if keepdims:
        out = em.op("Reshape", [out, em.dims(node.type.shape)], hint="argmax")
    return out


# -- creation -------------------------------------------------------------------------------------
def full(em: Emitter, shape, value, dtype) -> str:
    """A tensor of ``shape`` (ints or dims) filled with ``value`` as ``dtype`` (an onnx type)."""
    from .emitter import to_tensor_proto
    fill = to_tensor_proto(np.array([value]).astype(np_dtype(dtype)), "value")
    return em.op("ConstantOfShape", [em.dims(shape)], value=fill, dtype=dtype, hint="full")


@lowers("full")
def _full(em, node, ins):
    a = node.attrs
    if isinstance(a["value"], Dim):   # a symbolic size as a value (the 1/n of a mean's gradient)
        value = em.scalar(a["value"], onnx_dtype(a["dtype"]))   # computed from the input shapes
        return value if not a["shape"] else em.op("Expand", [value, em.dims(a["shape"])], hint="full")
    return full(em, a["shape"], a["value"], onnx_dtype(a["dtype"]))


def arange(em: Emitter, n, dtype: int = I64, start=0) -> str:
    """``start, start+1, ..., n-1`` as a 1-D tensor of ``dtype`` (n an int or a dim)."""
    work = dtype if dtype in (I64, TensorProto.INT32, F32, TensorProto.DOUBLE) else I64
    one = em.const(np.array(1, np_dtype(work)))
    out = em.op("Range", [em.scalar(start, work), em.scalar(n, work), one], hint="arange")
    return em.cast(out, dtype)


@lowers("iota")
def _iota(em, node, ins):
    shape, axis = node.attrs["shape"], node.attrs["axis"]
    idx = arange(em, shape[axis], onnx_dtype(node.attrs["dtype"]))
    if len(shape) == 1:
        return idx
    view = [1] * len(shape)
    view[axis] = shape[axis]
    col = em.op("Reshape", [idx, em.dims(view)])
    return em.op("Expand", [col, em.dims(shape)], hint="iota")


@lowers("numel")
def _numel(em, node, ins):
    axis, to = node.attrs["axis"], onnx_dtype(node.attrs["dtype"])
    if axis is None:
        return em.cast(em.op("Size", ins), to)
    sizes = em.op("Gather", [em.op("Shape", ins), axes(em, axis)], axis=0)
    return em.cast(em.op("ReduceProd", [sizes], keepdims=0, hint="numel"), to)
