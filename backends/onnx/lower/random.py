"""ONNX rows of the counter-based random ops (graphdsl/ops/random.py): random_uniform, dropout.

They hash ``(flat index, seed, salt)`` in uint32 arithmetic (Mul wraps mod 2**32, BitShift,
BitwiseXor from opset 18) exactly as graphdsl/ops/random.py does, so dropout masks match the
reference bit for bit. ``apply_dropout`` is shared with attention's dropout on its probabilities.
"""
from __future__ import annotations

import numpy as np

from graphdsl.ops.random import GOLDEN, MIX1, MIX2, keep_threshold
from graphdsl.types import Shape

from ..emitter import Emitter
from ..table import EXPORT
from .common import F32, I64, U32, arange, narrow, scalar_like, widen


def hash_bits(em: Emitter, shape, seed: str, salt: int) -> str:
    """The uint32 hash of every element of ``shape`` (see graphdsl/ops/random.py)."""
    u = lambda v: em.const(np.array(v & 0xFFFFFFFF, np.uint32))  # noqa: E731
    n = Shape(shape).numel()
    index = em.cast(arange(em, n, I64), U32)                     # the flat index mod 2**32
    key = em.op("Add", [em.op("Mul", [em.cast(seed, U32), u(MIX1)]), u(salt * MIX2)])
    x = em.op("BitwiseXor", [em.op("Mul", [index, u(GOLDEN)]), key])

    def xorshift(x, bits):
        return em.op("BitwiseXor", [x, em.op("BitShift", [x, u(bits)], direction="RIGHT")])

    x = em.op("Mul", [xorshift(x, 16), u(MIX1)])
    x = em.op("Mul", [xorshift(x, 13), u(MIX2)])
    x = xorshift(x, 16)
    return em.op("Reshape", [x, em.dims(shape)], hint="hash")


def _top24(em: Emitter, bits: str) -> str:
    return em.op("BitShift", [bits, em.const(np.array(8, np.uint32))], direction="RIGHT")


def keep_mask(em: Emitter, shape, seed: str, p: float, salt: int) -> str:
    """Dropout's keep mask: ``x >> 8 >= keep_threshold(p)``, compared as int64."""
    top = em.cast(_top24(em, hash_bits(em, shape, seed, salt)), I64)
    return em.op("GreaterOrEqual", [top, em.const(np.array(keep_threshold(p), np.int64))])


def apply_dropout(em: Emitter, x: str, shape, seed: str, p: float, salt: int) -> str:
    """``where(keep, x * 1/(1-p), 0)`` in x's dtype."""
    scaled = em.op("Mul", [x, scalar_like(em, 1.0 / (1.0 - p), x)])
    return em.op("Where", [keep_mask(em, shape, seed, p, salt), scaled, scalar_like(em, 0, x)])


@EXPORT.register("random_uniform")
def _random_uniform(em, node, seed):
    top = _top24(em, hash_bits(em, node.attrs["shape"], seed, node.attrs["salt"]))
    return em.op("Mul", [em.cast(top, F32), em.const(np.array(2.0 ** -24, np.float32))],
                 hint="random_uniform")


@EXPORT.register("dropout")
def _dropout(em, node, x, seed):
    out = apply_dropout(em, widen(em, x), node.type.shape, seed, node.attrs["p"], node.attrs["salt"])
    return narrow(em, out, node.type.dtype)
