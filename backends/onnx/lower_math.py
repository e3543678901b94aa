"""ONNX lowerings of elementwise ops, reductions, matmul and the creation ops (full, iota, numel).

Each mirrors the op's NumPy reference: where the reference computes a narrow float (f16/bf16) in
float32 and rounds once, the lowering casts to float32 around the computation (``widen``/``narrow``).
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

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
    "sin": "Sin", "cos": "Cos", "erf": "Erf", "sigmoid": "Sigmoid", "equal": "Equal",
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


@lowers("silu")
def _silu(em, node, ins):
    x = ins[0]
    return em.op("Mul", [x, em.op("Sigmoid", [x])], hint="silu")


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
    return em.op("Cast", ins, to=onnx_dtype(node.attrs["dtype"]), hint="cast")


# -- reductions -----------------------------------------------------------------------------------
@lowers("sum")
def _sum(em, node, ins):
    return reduce(em, "ReduceSum", ins[0], node.attrs["axis"], node.attrs["keepdims"])


@lowers("mean")
def _mean(em, node, ins):
    out = reduce(em, "ReduceMean", widen(em, ins[0]), node.attrs["axis"], node.attrs["keepdims"])
    return narrow(em, out, node.type.dtype)


@lowers("max", "min")
def _extremum(em, node, ins):
    op_type = "ReduceMax" if node.op == "max" else "ReduceMin"
    return reduce(em, op_type, ins[0], node.attrs["axis"], node.attrs["keepdims"])


@lowers("argmax")
def _argmax(em, node, ins):
    axis, keepdims = node.attrs["axis"], node.attrs["keepdims"]
    if axis is not None:
        return em.op("ArgMax", ins, axis=axis[0], keepdims=int(keepdims), hint="argmax")
    flat = em.op("Reshape", [ins[0], em.const(np.array([-1], np.int64))])
    out = em.op("ArgMax", [flat], axis=0, keepdims=0)
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
