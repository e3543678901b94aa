"""Rows for graphdsl/ops/random.py: random_uniform and dropout.

Random bits come from the counter-based hash written out in plain Python ints, never from the ops'
NumPy references. ``py_uniform`` and ``py_keep`` are shared with tests/optable/attention.py and
tests/test_random_attention.py.
"""
import math

import numpy as np

from graphdsl.errors import AttributeError_, TypeError_
from tests.opinfo import ErrorCase, OpInfo, Sample, randn

X = randn(2, 3, 4, seed=11)
SEED = np.array(1234, dtype=np.int32)


def py_uniform(index: int, seed: int, salt: int) -> float:
    """The counter-based uniform of one flat index, in plain Python ints mod 2**32."""
    m = 0xFFFFFFFF
    x = ((index * 0x9E3779B1) & m) ^ ((seed * 0x85EBCA6B + salt * 0xC2B2AE35) & m)
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & m
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & m
    x ^= x >> 16
    return (x >> 8) * 2.0 ** -24


def py_keep(shape, seed, p, salt) -> np.ndarray:
    """The dropout keep-mask of ``shape``: uniform >= p, element by element."""
    flat = [py_uniform(i, seed, salt) >= p for i in range(math.prod(shape))]
    return np.array(flat, dtype=bool).reshape(shape)


OPS = [
    OpInfo("random_uniform", [
        Sample([SEED], {"shape": (2, 3)}, name="shape_2x3",
               expected=np.array([py_uniform(i, 1234, 0) for i in range(6)]).reshape(2, 3)),
        Sample([np.array(-7, np.int32)], {"shape": (5,), "salt": 3}, name="negative_seed_salt",
               expected=np.array([py_uniform(i, -7 & 0xFFFFFFFF, 3) for i in range(5)])),
    ], [ErrorCase(["f32[]"], {"shape": (2,)}, TypeError_, r"seed must be an i32\[\] scalar", "float_seed"),
        ErrorCase(["i32[2]"], {"shape": (2,)}, TypeError_, r"seed must be an i32\[\] scalar", "vector_seed"),
        ErrorCase(["i32[]"], {"shape": (2,), "salt": 0.5}, AttributeError_, r"salt must be an int", "salt")]),
    OpInfo("dropout", [
        Sample([X, SEED], {"p": 0.3, "salt": 2}, name="p03",
               expected=lambda x, s: x * py_keep(x.shape, 1234, 0.3, 2) / 0.7),
        Sample([X, SEED], {"p": 0.0}, expected=lambda x, s: x, name="p0"),
    ], [ErrorCase(["f32[2,3]", "i32[]"], {"p": 1.0}, AttributeError_, r"p must be a probability", "p1"),
        ErrorCase(["f32[2,3]", "i64[]"], {"p": 0.5}, TypeError_, r"seed must be an i32\[\]", "i64_seed")]),
]
