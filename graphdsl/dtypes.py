"""Element types. Each DType knows its printed short name and its NumPy counterpart.

bfloat16 has no NumPy dtype of its own; ``ml_dtypes`` provides one, the same one JAX and TVM use.

The *storage* types (float8 in five formats, float4_e2m1fn, int4/uint4/int2/uint2; ml_dtypes
again, one element per byte) are values a graph can take in, give back, hold as a constant and
cast to and from, and nothing else: every other op refuses them (``registry.defop``). Their
formats (``Minifloat``) are what the casts of every backend are written from.
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
    storage: bool = False   # only cast takes it (see the module docstring)

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

float8_e4m3fn = DType("float8_e4m3fn", "f8e4m3fn", "float", 8, storage=True)
float8_e4m3fnuz = DType("float8_e4m3fnuz", "f8e4m3fnuz", "float", 8, storage=True)
float8_e5m2 = DType("float8_e5m2", "f8e5m2", "float", 8, storage=True)
float8_e5m2fnuz = DType("float8_e5m2fnuz", "f8e5m2fnuz", "float", 8, storage=True)
float8_e8m0fnu = DType("float8_e8m0fnu", "f8e8m0fnu", "float", 8, storage=True)
float4_e2m1fn = DType("float4_e2m1fn", "f4e2m1fn", "float", 4, storage=True)
int4 = DType("int4", "i4", "int", 4, storage=True)
uint4 = DType("uint4", "u4", "int", 4, storage=True)
int2 = DType("int2", "i2", "int", 2, storage=True)
uint2 = DType("uint2", "u2", "int", 2, storage=True)

ALL = (float64, float32, float16, bfloat16, int64, int32, int16, int8, uint64, uint32, uint16, uint8,
       bool_)   # the dtypes ops compute in
STORAGE = (float8_e4m3fn, float8_e4m3fnuz, float8_e5m2, float8_e5m2fnuz, float8_e8m0fnu, float4_e2m1fn,
           int4, uint4, int2, uint2)
_BY_NAME = {d.name: d for d in ALL + STORAGE} | {d.short: d for d in ALL + STORAGE}
_NUMPY = {
    "float64": np.dtype(np.float64), "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "int64": np.dtype(np.int64), "int32": np.dtype(np.int32), "int16": np.dtype(np.int16),
    "int8": np.dtype(np.int8), "uint64": np.dtype(np.uint64), "uint32": np.dtype(np.uint32),
    "uint16": np.dtype(np.uint16), "uint8": np.dtype(np.uint8), "bool": np.dtype(np.bool_),
} | {d.name: np.dtype(getattr(ml_dtypes, d.name)) for d in STORAGE}
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
        names = ", ".join(d.name for d in ALL + STORAGE)
        raise TypeError_(f"unknown dtype {x!r}", hint=f"use one of {names}") from None


def finfo_min(dt: DType) -> float:
    """The most negative finite value of a float dtype: the fill value for masked scores."""
    return float(ml_dtypes.finfo(dt.np).min) if dt.is_float else float(np.iinfo(dt.np).min)


@dataclass(frozen=True)
class Minifloat:
    """A float storage format: a sign bit (the top one of ``bits``), ``ebits`` exponent bits biased
    by ``bias`` (exponent field 0: subnormal, value ``m * 2**(1 - bias - mbits)``), ``mbits``
    mantissa bits. ``nan`` is how NaN is spelled: "ieee" (exponent all ones, mantissa nonzero; all
    ones with mantissa 0 is inf), "ones" (every bit but the sign set; no inf), "uz" (the negative
    zero's bits, 0x80: the fnuz formats, which have no -0 and no inf) or "none" (float4: neither).
    ``max_code`` is the magnitude bits of the largest finite value."""

    bits: int
    ebits: int
    mbits: int
    bias: int
    nan: str
    max_code: int

    @property
    def has_inf(self) -> bool:
        return self.nan == "ieee"

    @property
    def inf_code(self) -> int:
        return ((1 << self.ebits) - 1) << self.mbits

    def nan_code(self, negative: bool) -> int:
        """The bits a NaN cast to this format gets (the quiet one ml_dtypes writes; sign kept where
        the format has a signed NaN)."""
        sign = (1 << (self.bits - 1)) if negative else 0
        if self.nan == "ieee":
            return sign | self.inf_code | (1 << (self.mbits - 1))
        if self.nan == "ones":
            return sign | ((1 << (self.bits - 1)) - 1)
        if self.nan == "uz":
            return 1 << (self.bits - 1)
        return 0   # float4_e2m1fn has no NaN: a NaN becomes +0

    @property
    def max_value(self) -> float:
        e, m = self.max_code >> self.mbits, self.max_code & ((1 << self.mbits) - 1)
        return float(((1 << self.mbits) + m) * 2.0 ** (e - self.bias - self.mbits))


MINIFLOAT = {
    "float8_e4m3fn": Minifloat(8, 4, 3, 7, "ones", 0x7E),        # max 448
    "float8_e4m3fnuz": Minifloat(8, 4, 3, 8, "uz", 0x7F),        # max 240
    "float8_e5m2": Minifloat(8, 5, 2, 15, "ieee", 0x7B),         # max 57344
    "float8_e5m2fnuz": Minifloat(8, 5, 2, 16, "uz", 0x7F),       # max 57344
    "float4_e2m1fn": Minifloat(4, 2, 1, 1, "none", 0x7),         # max 6
}
E8M0_BIAS = 127      # float8_e8m0fnu: 8 exponent bits, value 2**(bits - 127), 0xFF is NaN
ROUND_MODES = ("up", "down", "nearest")   # float8_e8m0fnu's rounding (ONNX Cast's round_mode)


def int_range(dt: DType) -> tuple[int, int]:
    """The values of an integer storage type: int4 [-8, 7], uint2 [0, 3], ..."""
    return (0, (1 << dt.bits) - 1) if dt.is_unsigned else (-(1 << (dt.bits - 1)), (1 << (dt.bits - 1)) - 1)
