"""Ops that create tensors from attributes alone: full (zeros, ones) and iota (arange)."""
from __future__ import annotations

import numpy as np

from graphdsl import dtypes as _dt
from graphdsl.errors import ShapeError
from graphdsl.registry import REQUIRED, defop
from graphdsl.types import Shape, TensorType

from .common import sizes_attr


def _full_normalize(shape, value, dtype):
    return {"shape": sizes_attr(shape, "full"), "value": value, "dtype": _dt.dtype(dtype)}


def _full_infer(shape, value, dtype):
    return TensorType(Shape(shape), dtype)


full = defop("full", attrs={"shape": (), "value": 0.0, "dtype": _dt.float32}, arity=0,
             normalize=_full_normalize, infer=_full_infer,
             ref=lambda shape, value, dtype: np.full(shape, value, dtype=dtype.np),
             differentiable=False, types="no inputs → the dtype attribute",
             doc="a tensor of the given shape filled with one value")


def zeros(shape, dtype=_dt.float32):
    return full(shape=tuple(shape), value=0, dtype=dtype)


def ones(shape, dtype=_dt.float32):
    return full(shape=tuple(shape), value=1, dtype=dtype)


def zeros_like(x):
    return full(shape=tuple(x.shape), value=0, dtype=x.dtype)


def ones_like(x):
    return full(shape=tuple(x.shape), value=1, dtype=x.dtype)


def _iota_normalize(shape, axis, dtype):
    shape = sizes_attr(shape, "iota")
    if not -len(shape) <= axis < len(shape):
        raise ShapeError(f"axis {axis} out of range for shape {Shape(shape)}", op="iota")
    return {"shape": shape, "axis": axis % len(shape), "dtype": _dt.dtype(dtype)}


def _iota_ref(shape, axis, dtype):
    idx = np.arange(shape[axis], dtype=dtype.np)
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return np.array(np.broadcast_to(idx.reshape(view), shape))


iota = defop("iota", attrs={"shape": REQUIRED, "axis": 0, "dtype": _dt.int64},
             arity=0, normalize=_iota_normalize, infer=lambda shape, axis, dtype: TensorType(shape, dtype),
             ref=_iota_ref, differentiable=False,
             types="no inputs → the dtype attribute",
             doc="0, 1, 2, ... along one axis of the given shape (iota(shape=(n,)) is arange(n))")


def arange(n, dtype=_dt.int64):
    """0 .. n-1 as a 1-D tensor (n may be a symbolic dim)."""
    return iota(shape=(n,), axis=0, dtype=dtype)


__all__ = ["full", "zeros", "ones", "zeros_like", "ones_like", "iota", "arange"]
