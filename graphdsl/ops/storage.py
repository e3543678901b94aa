"""The NumPy reference of casts to and from the storage dtypes (graphdsl/dtypes.py): ONNX's Cast.

``encode`` is written from the formats, not from ml_dtypes' ``astype`` (which does not saturate,
and whose NaN and out-of-range results are its own), so that it states the rule every backend
follows (docs/semantics.md, "Casts"); ml_dtypes only reinterprets the bytes it produces.

- float8 / float4: round to nearest, ties to even, from the exact value (float64 holds every
  source value exactly, integers up to 2**53). With ``saturate`` (ONNX's default) a value that
  rounds past the largest finite one, and +-inf, become +-max; without it they become +-inf
  (e5m2) or NaN. float4_e2m1fn has neither inf nor NaN: it always saturates, and NaN becomes +0.
  The fnuz formats have no -0: a negative value that rounds to zero is +0.
- float8_e8m0fnu (a power of two, 2**-127 to 2**127): the magnitude (the sign is ignored) rounds
  to a power of two by ``round_mode`` ("up" by default, "down", "nearest": the upper power from
  1.5 times the lower); a result above 2**127 (or inf) is 2**127 when saturating, else NaN; one
  below 2**-127 (or 0) is 2**-127 when saturating, else NaN.
- int4 / uint4 / int2 / uint2 from a float: truncated toward zero; a value outside the type's
  range (and NaN, inf) becomes 0. From an integer: the low bits, two's complement (ONNX's rule
  for integer narrowing). One element per byte, in its low bits, as ml_dtypes stores them.

``decode`` gives float32 for the float formats (exact for all of them) and int32 for the integer
ones; a cast from a storage type is ``decode`` followed by the ordinary cast of that.
"""
from __future__ import annotations

import numpy as np

from graphdsl import dtypes as _dt


def encode(x: np.ndarray, to: _dt.DType, saturate: bool = True, round_mode: str = "up") -> np.ndarray:
    """``x`` (any non-storage dtype) cast to the storage dtype ``to``."""
    x = np.asarray(x)
    if to.is_int:
        bits = _encode_int(x, to)
    elif to.name == "float8_e8m0fnu":
        bits = _encode_e8m0(_as_f64(x), saturate, round_mode)
    else:
        bits = _encode_minifloat(_as_f64(x), _dt.MINIFLOAT[to.name], saturate)
    return bits.astype(np.uint8).view(to.np)


def decode(x: np.ndarray, have: _dt.DType) -> np.ndarray:
    """The values of ``x`` (an array of storage dtype ``have``): float32, or int32 for the ints."""
    b = np.asarray(x).view(np.uint8).astype(np.int64)
    if have.is_int:
        b &= (1 << have.bits) - 1
        if not have.is_unsigned:
            top = 1 << (have.bits - 1)
            b = (b ^ top) - top
        return b.astype(np.int32)
    if have.name == "float8_e8m0fnu":
        with np.errstate(invalid="ignore"):
            out = np.where(b == 0xFF, np.nan, np.ldexp(1.0, b - _dt.E8M0_BIAS))
        return out.astype(np.float32)
    f = _dt.MINIFLOAT[have.name]
    b &= (1 << f.bits) - 1
    sign, mag = b >> (f.bits - 1), b & ((1 << (f.bits - 1)) - 1)
    e, m = mag >> f.mbits, mag & ((1 << f.mbits) - 1)
    value = np.where(e == 0, m * 2.0 ** (1 - f.bias - f.mbits),
                     np.ldexp(((1 << f.mbits) + m).astype(np.float64), e - f.bias - f.mbits))
    value = np.where(sign == 1, -value, value)
    if f.nan == "ieee":
        value = np.where(e == (1 << f.ebits) - 1, np.where(m == 0, np.inf, np.nan) * np.where(sign == 1, -1.0, 1.0),
                         value)
    elif f.nan == "ones":
        value = np.where(mag == (1 << (f.bits - 1)) - 1, np.where(sign == 1, -np.nan, np.nan), value)
    elif f.nan == "uz":
        value = np.where(b == 1 << (f.bits - 1), np.nan, value)
    return value.astype(np.float32)


def _as_f64(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64)   # exact for every float source; integers exact up to 2**53


def _encode_minifloat(v: np.ndarray, f: _dt.Minifloat, saturate: bool) -> np.ndarray:
    negative, a = np.signbit(v), np.abs(v)
    nan, finite = np.isnan(v), np.isfinite(v)
    a = np.where(finite, a, 0.0)
    _, k = np.frexp(a)                                        # a = frac * 2**k, frac in [0.5, 1)
    e = np.where(a > 0, np.maximum(k - 1, 1 - f.bias), 1 - f.bias)   # the leading digit's exponent, >= the normal minimum
    n = np.rint(np.ldexp(a, f.mbits - e)).astype(np.int64)     # a in units of the last place, ties to even
    code = (np.maximum(e + f.bias, 1) << f.mbits) + n - (1 << f.mbits)   # a carry moves into the exponent
    over = (code > f.max_code) | (~finite & ~nan)
    sign = np.where(negative, 1 << (f.bits - 1), 0)
    if saturate or f.nan == "none":
        big = sign | f.max_code
    elif f.has_inf:
        big = sign | f.inf_code
    else:
        big = np.where(negative, f.nan_code(True), f.nan_code(False))
    if f.nan == "uz":
        sign = np.where(code == 0, 0, sign)                    # no -0: 0x80 is the NaN
    out = np.where(over, big, sign | np.minimum(code, f.max_code))
    return np.where(nan, np.where(negative, f.nan_code(True), f.nan_code(False)), out)


def _encode_e8m0(v: np.ndarray, saturate: bool, round_mode: str) -> np.ndarray:
    a = np.abs(v)
    nan, finite = np.isnan(v), np.isfinite(v)
    frac, k = np.frexp(np.where(finite, a, 1.0))               # a = (2 frac) * 2**(k - 1)
    p = (k - 1).astype(np.int64)
    if round_mode == "up":
        p = p + (frac > 0.5)
    elif round_mode == "nearest":
        p = p + (frac >= 0.75)
    code = p + _dt.E8M0_BIAS
    over = ~finite | (code > 0xFE)
    under = finite & ((a == 0) | (code < 0))
    out = np.where(over, 0xFE if saturate else 0xFF, np.where(under, 0 if saturate else 0xFF, code))
    return np.where(nan, 0xFF, out)


def _encode_int(x: np.ndarray, to: _dt.DType) -> np.ndarray:
    mask = (1 << to.bits) - 1
    if x.dtype.kind == "f" or x.dtype == _dt.bfloat16.np:
        lo, hi = _dt.int_range(to)
        with np.errstate(invalid="ignore"):
            t = np.trunc(x.astype(np.float64))
            fits = (t >= lo) & (t <= hi)
            value = np.where(fits, t, 0).astype(np.int64)
    else:
        value = x.astype(np.int64)    # (uint64 wraps to int64: the low bits are kept)
    return value & mask
