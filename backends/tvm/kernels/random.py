"""The counter-based RNG of graphdsl/ops/random.py as TE kernels, bit for bit.

Element i's bits are a hash of (flat index mod 2**32, seed, salt) in uint32 arithmetic, so the
kernels draw exactly the NumPy reference's numbers and masks, on any target, in any loop order.

The arithmetic is done on 32-bit values held in uint64 and masked after every multiply and add:
TVM emits unsigned multiplies and adds with LLVM's no-unsigned-wrap flag, so uint32 arithmetic
that relies on wrapping around is miscompiled; in uint64, a product of two 32-bit values never wraps.
"""
from __future__ import annotations

from tvm import te, tirx

from graphdsl.ops.random import GOLDEN, MIX1, MIX2, keep_threshold

_MASK = 0xFFFFFFFF


def _c(v: int):
    return tirx.const(v & _MASK, "uint64")


def _wrap(x):
    """x mod 2**32."""
    return x & _c(_MASK)


def _flat_index(shape, idx):
    """The row-major flat index (int64), reduced mod 2**32."""
    flat = tirx.const(0, "int64")
    for d, i in zip(shape, idx):
        flat = flat * d + i.astype("int64")
    return _wrap(flat.astype("uint64"))


def mix(flat, seed, salt: int):
    """The 32-bit hash ``x`` (as uint64) of one element: its flat index (uint64, already mod 2**32)
    under an int32 ``seed`` value and ``salt``."""
    key = _wrap(_wrap(seed.astype("uint32").astype("uint64") * _c(MIX1)) + _c(salt * MIX2))
    x = _wrap(flat * _c(GOLDEN)) ^ key
    x = x ^ (x >> _c(16))
    x = _wrap(x * _c(MIX1))
    x = x ^ (x >> _c(13))
    x = _wrap(x * _c(MIX2))
    return x ^ (x >> _c(16))


def kept(flat, seed, p: float, salt: int):
    """Whether dropout keeps the element at ``flat`` (int64 flat index) - the reference's mask."""
    bits = mix(_wrap(flat.astype("uint64")), seed, salt)
    return (bits >> _c(8)).astype("int32") >= tirx.const(keep_threshold(p), "int32")


def hash_bits(seed: te.Tensor, shape, salt: int):
    """A function of an element's indices giving its 32-bit hash ``x`` (see random.py) as uint64."""
    return lambda *idx: mix(_flat_index(shape, idx), seed(), salt)


def top24(bits):
    """A function of indices giving ``x >> 8`` (24 bits) as a non-negative int32."""
    return lambda *i: (bits(*i) >> _c(8)).astype("int32")


def uniform(seed: te.Tensor, shape, salt: int) -> te.Tensor:
    high = top24(hash_bits(seed, shape, salt))
    scale = tirx.const(2.0 ** -24, "float32")
    return te.compute(shape, lambda *i: high(*i).astype("float32") * scale, name="uniform")


def dropout(x: te.Tensor, seed: te.Tensor, p: float, salt: int, acc: str) -> te.Tensor:
    """x * keep / (1 - p) in ``acc`` precision, keep = (bits >> 8) >= keep_threshold(p)."""
    high = top24(hash_bits(seed, x.shape, salt))
    threshold = tirx.const(keep_threshold(p), "int32")
    scale = tirx.const(1.0 / (1.0 - p), acc)

    def f(*i):
        kept = (x(*i).astype(acc) * scale).astype(x.dtype)
        return tirx.Select(high(*i) >= threshold, kept, tirx.const(0, x.dtype))
    return te.compute(x.shape, f, name="dropout")
