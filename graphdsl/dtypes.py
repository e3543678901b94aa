"""Element types. Each DType knows its printed short name and its NumPy counterpart.

bfloat16 has no NumPy dtype of its own; ``ml_dtypes`` provides one, the same one JAX and TVM use.
"""
from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np


@dataclass(frozen=True)
class DType:
    name: str
    short: str
    kind: str  # "float", "int", "bool"
    bits: int

    @property
    def np(self) -> np.dtype:
        return _NUMPY[self.name]

    @property
    def is_float(self) -> bool:
        return self.kind == "float"

    @property
    def is_int(self) -> bool:
        return self.kind == "int"

    @property
    def is_unsigned(self) -> bool:
        return self.kind == "int" and self.name.startswith("u")

    @property
    def is_bool(self) -> bool:
        return self.kind == "bool"

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__


float64 = DType("float64", "f64", "float", 64)
float32 = DType("float32", "f32", "float", 32)
float16 = DType("float16", "f16", "float", 16)
bfloat16 = DType("bfloat16", "bf16", "float", 16)
int64 = DType("int64", "i64", "int", 64)
int32 = DType("int32", "i32", "int", 32)
int16 = DType("int16", "i16", "int", 16)
int8 = DType("int8", "i8", "int", 8)
uint64 = DType("uint64", "u64", "int", 64)
uint32 = DType("uint32", "u32", "int", 32)
uint16 = DType("uint16", "u16", "int", 16)
uint8 = DType("uint8", "u8", "int", 8)
bool_ = DType("bool", "bool", "bool", 8)

ALL = (float64, float32, float16, bfloat16, int64, int32, int16, int8, uint64, uint32, uint16, uint8,
       bool_)
_BY_NAME = {d.name: d for d in ALL} | {d.short: d for d in ALL}
_NUMPY = {
    "float64": np.dtype(np.float64), "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "int64": np.dtype(np.int64), "int32": np.dtype(np.int32), "int16": np.dtype(np.int16),
    "int8": np.dtype(np.int8), "uint64": np.dtype(np.uint64), "uint32": np.dtype(np.uint32),
    "uint16": np.dtype(np.uint16), "uint8": np.dtype(np.uint8), "bool": np.dtype(np.bool_),
}
_FROM_NUMPY = {v: _BY_NAME[k] for k, v in _NUMPY.items()}


def dtype(x) -> DType:
    """Coerce a DType, its name ("float32"/"f32"), or a NumPy dtype to a DType."""
    if isinstance(x, DType):
        return x
    if isinstance(x, str) and x in _BY_NAME:
        return _BY_NAME[x]
    if x is float:
        return float32
    if x is int:
        return int64
    if x is bool:
        return bool_
    try:
        return _FROM_NUMPY[np.dtype(x)]
    except (TypeError, KeyError):
        from .errors import TypeError_
        names = ", ".join(d.name for d in ALL)
        raise TypeError_(f"unknown dtype {x!r}", hint=f"use one of {names}") from None


def finfo_min(dt: DType) -> float:
    """The most negative finite value of a float dtype: the fill value for masked scores."""
    return float(ml_dtypes.finfo(dt.np).min) if dt.is_float else float(np.iinfo(dt.np).min)
