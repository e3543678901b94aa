"""Initializer specs: how ``Module.init`` fills a Parameter with numbers.

A spec is data, so it can sit on a Parameter and be printed: ``Parameter((16, 32), init="zeros")``.

    "zeros", "ones"          constant 0 / 1
    "normal"                 N(0, 0.02^2), BERT's default
    ("normal", std)          N(0, std^2)
    ("uniform", a)           U(-a, a)
    "xavier_uniform"         U(-a, a) with a = sqrt(6 / (fan_in + fan_out))
    ("constant", v)          every element v
    callable(rng, shape)     any function returning an array of that shape

Fans follow our weight layout ``[in, out]``: the last axis is fan_out, the product of the others
fan_in (a vector counts its length as both).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from graphdsl.errors import GraphDSLError

BERT_STD = 0.02

_NAMED = ("zeros", "ones", "normal", "xavier_uniform")
_WITH_ARG = ("normal", "uniform", "constant")


def check_spec(spec: Any) -> Any:
    """Return ``spec`` if it is a known initializer spec, else raise with the list of forms."""
    if callable(spec) or spec in _NAMED:
        return spec
    if (isinstance(spec, tuple) and len(spec) == 2 and spec[0] in _WITH_ARG
            and isinstance(spec[1], (int, float)) and not isinstance(spec[1], bool)):
        return spec
    raise GraphDSLError(f"unknown initializer {spec!r}",
                        hint="use 'zeros', 'ones', 'normal', 'xavier_uniform', ('normal', std), "
                             "('uniform', a), ('constant', v) or a function (rng, shape) -> array")


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight stored as ``[in, out]``."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    return int(np.prod(shape[:-1])), shape[-1]


def initialize(spec: Any, shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    """An array of ``shape`` and ``dtype`` drawn by ``spec`` from ``rng``."""
    spec = check_spec(spec)
    if callable(spec):
        values = np.asarray(spec(rng, shape))
        if values.shape != tuple(shape):
            raise GraphDSLError(f"initializer {spec!r} returned shape {list(values.shape)}, "
                                f"expected {list(shape)}")
    else:
        kind, arg = spec if isinstance(spec, tuple) else (spec, None)
        values = _DRAW[kind](rng, shape, arg)
    return np.asarray(values).astype(dtype)


def _xavier_uniform(rng, shape, _):
    fan_in, fan_out = fans(shape)
    a = float(np.sqrt(6.0 / (fan_in + fan_out)))
    return rng.uniform(-a, a, shape)


_DRAW: dict[str, Callable] = {
    "zeros": lambda rng, shape, _: np.zeros(shape),
    "ones": lambda rng, shape, _: np.ones(shape),
    "constant": lambda rng, shape, v: np.full(shape, v),
    "normal": lambda rng, shape, std: rng.normal(0.0, BERT_STD if std is None else std, shape),
    "uniform": lambda rng, shape, a: rng.uniform(-a, a, shape),
    "xavier_uniform": _xavier_uniform,
}
