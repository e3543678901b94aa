"""What the ONNX lowering modules share: element types, widening and narrowing, small constants.

Each lowering mirrors the op's NumPy reference: where the reference computes a narrow float
(f16/bf16) in float32 and rounds once, the lowering casts to float32 around the computation
(``widen``/``narrow``). Reductions take their axes as an input (opset 18); ``full`` and ``arange``
take ints or symbolic dims (read from the input shapes at run time).
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ..emitter import Emitter, np_dtype, onnx_dtype, to_tensor_proto

F32 = TensorProto.FLOAT
F64 = TensorProto.DOUBLE
F16 = TensorProto.FLOAT16
BF16 = TensorProto.BFLOAT16
I32 = TensorProto.INT32
I64 = TensorProto.INT64
U32 = TensorProto.UINT32


def widen(em: Emitter, x: str) -> str:
    """f16/bf16 values to float32 (the references' accumulation type); others unchanged."""
    return em.cast(x, F32) if em.dtypes[x] in (F16, BF16) else x


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


def full(em: Emitter, shape, value, dtype) -> str:
    """A tensor of ``shape`` (ints or dims) filled with ``value`` as ``dtype`` (an onnx type)."""
    fill = to_tensor_proto(np.array([value]).astype(np_dtype(dtype)), "value")
    return em.op("ConstantOfShape", [em.dims(shape)], value=fill, dtype=dtype, hint="full")


def arange(em: Emitter, n, dtype: int = I64, start=0) -> str:
    """``start, start+1, ..., n-1`` as a 1-D tensor of ``dtype`` (n an int or a dim)."""
    work = dtype if dtype in (I64, I32, F32, F64) else I64
    one = em.const(np.array(1, np_dtype(work)))
    out = em.op("Range", [em.scalar(start, work), em.scalar(n, work), one], hint="arange")
    return em.cast(out, dtype)
