"""The values an ONNX import works with, and the small readers every handler module shares.

An ONNX value is either a graph ``Tensor`` or a ``Sym``: an integer tensor known at import time
whose entries may be symbolic dims (what Shape -> Gather -> Concat computes in a Transformer
export). ``dtype_of`` maps ONNX element types to ours. ``normalize_axis``, ``known_all`` and
``axes_arg`` read axes and known inputs the way every handler needs them. The importer and the
handler modules (ops_math, ops_shape) both import this module, and it imports neither.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from graphdsl import dtypes as _dt
from graphdsl.errors import GraphError, ShapeError
from graphdsl.types import Dim

DTYPES = {
    onnx.TensorProto.FLOAT: _dt.float32, onnx.TensorProto.DOUBLE: _dt.float64,
    onnx.TensorProto.FLOAT16: _dt.float16, onnx.TensorProto.BFLOAT16: _dt.bfloat16,
    onnx.TensorProto.INT64: _dt.int64, onnx.TensorProto.INT32: _dt.int32,
    onnx.TensorProto.INT16: _dt.int16, onnx.TensorProto.INT8: _dt.int8,
    onnx.TensorProto.UINT64: _dt.uint64, onnx.TensorProto.UINT32: _dt.uint32,
    onnx.TensorProto.UINT16: _dt.uint16, onnx.TensorProto.UINT8: _dt.uint8,
    onnx.TensorProto.BOOL: _dt.bool_,
    # storage types: only Cast/CastLike (and graph inputs, outputs, initializers) take them
    onnx.TensorProto.FLOAT8E4M3FN: _dt.float8_e4m3fn, onnx.TensorProto.FLOAT8E4M3FNUZ: _dt.float8_e4m3fnuz,
    onnx.TensorProto.FLOAT8E5M2: _dt.float8_e5m2, onnx.TensorProto.FLOAT8E5M2FNUZ: _dt.float8_e5m2fnuz,
    onnx.TensorProto.FLOAT8E8M0: _dt.float8_e8m0fnu, onnx.TensorProto.FLOAT4E2M1: _dt.float4_e2m1fn,
    onnx.TensorProto.INT4: _dt.int4, onnx.TensorProto.UINT4: _dt.uint4,
    onnx.TensorProto.INT2: _dt.int2, onnx.TensorProto.UINT2: _dt.uint2,
}


def dtype_of(elem_type: int, what: str) -> _dt.DType:
    """Our dtype for an ONNX element type; ``what`` names the value in the error."""
    if elem_type not in DTYPES:
        name = onnx.TensorProto.DataType.Name(elem_type) if elem_type in onnx.TensorProto.DataType.values() \
            else str(elem_type)
        raise GraphError(f"{what} has element type {name}, which graphdsl does not support",
                         hint="supported: " + ", ".join(d.name for d in DTYPES.values()))
    return DTYPES[elem_type]


@dataclass(frozen=True)
class Sym:
    """An integer tensor known at import time whose entries may be symbolic dims."""

    value: np.ndarray      # dtype object: ints and Dims
    dtype: _dt.DType


def has_dim(arr: np.ndarray) -> bool:
    return arr.dtype == object and any(isinstance(v, Dim) for v in arr.flat)


def simplify(v):
    """A known entry as a plain int or a simplified Dim."""
    if isinstance(v, Dim):
        return v.simplify()
    if isinstance(v, (np.integer, int)):
        return int(v)
    return v


def normalize_axis(axis: int, rank: int) -> int:
    """ONNX's axis in [-rank, rank) as an index in [0, rank)."""
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def known_all(imp, ins):
    """The known values of every input (None if one is not known), and whether any is a Sym."""
    vals = [imp.known(v) for v in ins]
    if any(v is None for v in vals):
        return None, False
    return [np.asarray(v, dtype=object) if isinstance(x, Sym) else np.asarray(v)
            for v, x in zip(vals, ins)], any(isinstance(x, Sym) for x in ins)


def axes_arg(imp, axes) -> list[int] | None:
    """Axes from the ``axes`` input (opset 13/18 on) or, when it is omitted, the attribute (before)."""
    if axes is not None:
        return [int(a) for a in imp.ints(axes, "axes")]
    return list(imp.attrs["axes"]) if "axes" in imp.attrs else None
