"""Counter-based random numbers (a hash of seed and element index) and dropout built on them.

There is no random state: element ``i`` (row-major flat index) of a draw is a pure function of
``(i, seed, salt)``, so every backend reproduces the same bits, a gradient graph redraws exactly
the forward mask, and two dropout layers differ by their salt. In uint32 arithmetic mod 2**32:

    x = (i * 0x9E3779B1) ^ (seed * 0x85EBCA6B + salt * 0xC2B2AE35)
    x ^= x >> 16; x *= 0x85EBCA6B; x ^= x >> 13; x *= 0xC2B2AE35; x ^= x >> 16
    u = float32(x >> 8) * 2**-24                      # in [0, 1), exact in float32

Dropout keeps an element where ``u >= p`` (compared exactly: ``x >> 8 >= keep_threshold(p)``)
and scales kept elements by ``1 / (1 - p)``.
"""
from __future__ import annotations

import math

import numpy as np

from graphdsl import dtypes as _dt
from graphdsl.errors import AttributeError_, TypeError_
from graphdsl.registry import REQUIRED, defop
from graphdsl.types import Shape, TensorType, as_dim

from .common import require_float

GOLDEN = 0x9E3779B1
MIX1 = 0x85EBCA6B
MIX2 = 0xC2B2AE35
_MASK = 0xFFFFFFFF


def hash_bits(shape, seed: int, salt: int) -> np.ndarray:
    """The uint32 hash ``x`` of every element of ``shape`` (NumPy; the reference for all backends)."""
    n = math.prod(shape)
    i = np.arange(n, dtype=np.uint64).astype(np.uint32)  # the index mod 2**32
    key = np.uint32((int(seed) * MIX1 + int(salt) * MIX2) & _MASK)
    x = (i * np.uint32(GOLDEN)) ^ key
    x ^= x >> np.uint32(16)
    x *= np.uint32(MIX1)
    x ^= x >> np.uint32(13)
    x *= np.uint32(MIX2)
    x ^= x >> np.uint32(16)
    return x.reshape(shape)


def uniform_np(shape, seed: int, salt: int) -> np.ndarray:
    """float32 uniforms in [0, 1) for ``shape``: ``(x >> 8) * 2**-24``."""
    return (hash_bits(shape, seed, salt) >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24)


def keep_threshold(p: float) -> int:
    """The integer form of ``u >= p``: an element is kept iff ``x >> 8 >= keep_threshold(p)``."""
    return math.ceil(p * 2 ** 24)


def keep_mask_np(shape, seed: int, p: float, salt: int) -> np.ndarray:
    """Dropout's keep mask (bool) for ``shape``."""
    return (hash_bits(shape, seed, salt) >> np.uint32(8)) >= np.uint32(keep_threshold(p))


def check_seed(op: str, seed: TensorType) -> None:
    if seed.dtype != _dt.int32 or seed.rank != 0:
        raise TypeError_(f"seed must be an i32[] scalar, got {seed}", op=op,
                         hint="use graphdsl.tracing.current_builder().seed(), or pass a Python int")


def salt_attr(op: str, salt) -> int:
    if isinstance(salt, bool) or not isinstance(salt, (int, np.integer)):
        raise AttributeError_(f"salt must be an int, got {salt!r}", op=op)
    return int(salt)


def seed_tensor(seed):
    """A Python int seed becomes an i32 constant; tensors pass through."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        from graphdsl.tracing import current_builder
        wrapped = (int(seed) + 2 ** 31) % 2 ** 32 - 2 ** 31  # the same 32 bits, as a signed int
        return current_builder().constant(wrapped, _dt.int32)
    return seed


# -- random_uniform -------------------------------------------------------------------------------
def _uniform_normalize(seed, shape, salt):
    return {"shape": tuple(as_dim(d) for d in shape), "salt": salt_attr("random_uniform", salt)}


def _uniform_infer(seed, shape, salt):
    check_seed("random_uniform", seed)
    return TensorType(Shape(shape), _dt.float32)


_random_uniform = defop("random_uniform", attrs={"shape": REQUIRED, "salt": 0},
                        normalize=_uniform_normalize, infer=_uniform_infer,
                        ref=lambda seed, shape, salt: uniform_np(shape, int(seed), salt),
                        differentiable=False,
                        types="seed int32[] → float32",
                        doc="f32 uniforms in [0, 1): a hash of (flat index, seed, salt); see random.py")


def random_uniform(seed, shape, salt: int = 0):
    """f32 uniforms in [0, 1) of ``shape``, from an i32 seed tensor (or a Python int) and a salt."""
    return _random_uniform(seed_tensor(seed), shape=tuple(shape), salt=salt)


# -- dropout --------------------------------------------------------------------------------------
def _dropout_normalize(x, seed, p, salt):
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise AttributeError_(f"p must be a probability in [0, 1), got {p!r}", op="dropout")
    return {"p": float(p), "salt": salt_attr("dropout", salt)}


def _dropout_infer(x, seed, p, salt):
    require_float("dropout", x)
    check_seed("dropout", seed)
    return x


def _dropout_ref(x, seed, p, salt):
    acc = np.float64 if x.dtype == np.float64 else np.float32
    keep = keep_mask_np(x.shape, int(seed), p, salt)
    return np.where(keep, x.astype(acc) * acc(1.0 / (1.0 - p)), acc(0)).astype(x.dtype)


_dropout = defop("dropout", attrs={"p": REQUIRED, "salt": 0}, arity=2, normalize=_dropout_normalize,
                 infer=_dropout_infer, ref=_dropout_ref,
                 vjp=lambda g, y, x, seed, p, salt: [dropout(g, seed, p=p, salt=salt), None],
                 types="x float; seed int32[] → x's dtype",
                 doc="x * keep / (1 - p), keep = random_uniform(seed, x.shape, salt) >= p")


def dropout(x, seed, p: float, salt: int = 0):
    """Zero each element of ``x`` with probability ``p`` (mask from seed and salt), scale the rest."""
    return _dropout(x, seed_tensor(seed), p=p, salt=salt)


def apply_dropout(x, p: float, *, training: bool = True):
    """Dropout for nn modules: the graph's seed input, a fresh salt; identity if p == 0 or not training."""
    from graphdsl.tracing import current_builder
    b = current_builder()
    if p == 0 or not training or not b.training:
        return x
    return dropout(x, b.seed(), p=p, salt=b.next_salt())


__all__ = ["random_uniform", "dropout", "apply_dropout", "keep_threshold"]
