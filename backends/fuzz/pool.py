"""The generation state: the pool of tensors a random graph grows from, with value bounds.

A ``Value`` is a traced tensor with an interval ``[lo, hi]`` holding every value it can take (the
families compute it by interval arithmetic); ``Gen`` holds one graph's RNG, its pool and the specs
of the inputs made so far. ``keep`` refuses values whose bound passes ``LIMIT`` or whose size
passes ``MAX_ELEMENTS``: that is how generated graphs stay finite and cheap.

Symbolic dims: a graph may type its first input's leading dim as ``Dim("n")``; ``Value.shape``
gives the typed dims (new inputs built from them share the symbol), ``Value.sizes`` the sizes of
this run (``Gen.sizes``, seeded), for every count and bound.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graphdsl import dtypes as dt
from graphdsl.tracing import Tensor, current_builder
from graphdsl.types import TensorType

LIMIT = 1e3                 # no value whose bound exceeds this is made (f16's largest is 65504)
MAX_ELEMENTS = 256          # nor any tensor with more elements (keeps compiles and runs small)
SIZES = (1, 2, 2, 3, 3, 4, 4, 5, 8)
STEPS = (3, 15)             # generator steps per graph, inclusive
TRIES = 8                   # attempts per step before the step is skipped


@dataclass
class Value:
    """A pool member: the traced tensor, a bound on its values, and whether it is a graph input."""
    t: Tensor
    lo: float
    hi: float
    is_input: bool = False
    env: dict = field(default_factory=dict)     # the sizes of symbolic dims (set by Gen)

    @property
    def shape(self) -> tuple:
        """The dims as typed: ints and symbolic ``Dim``s (use these to build new shapes)."""
        return tuple(self.t.shape)

    @property
    def sizes(self) -> tuple[int, ...]:
        """The concrete sizes of this run (use these for counts and bounds)."""
        return concrete(self.shape, self.env)

    @property
    def dtype(self):
        return self.t.dtype

    @property
    def mag(self) -> float:
        return max(abs(self.lo), abs(self.hi))


def concrete(shape, env) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else d.evaluate({k: env[k] for k in d.symbols}) for d in shape)


@dataclass
class InputSpec:
    """How to draw one input: its type and the interval (or, for bool, the chance of True)."""
    type: TensorType
    lo: float = -2.0
    hi: float = 2.0


@dataclass
class Gen:
    """The state of one graph being generated: the RNG, the pool, the inputs made so far."""
    rng: np.random.Generator
    prefix: str
    specs: dict[str, InputSpec] = field(default_factory=dict)
    pool: list[Value] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)   # symbolic dim -> its size in this run

    # -- random choices ------------------------------------------------------------------------
    def choice(self, items):
        return items[int(self.rng.integers(len(items)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def shape(self, rank: int | None = None) -> tuple[int, ...]:
        rank = int(self.rng.integers(1, 4)) if rank is None else rank
        while True:
            shape = tuple(int(self.choice(SIZES)) for _ in range(rank))
            if int(np.prod(shape)) <= MAX_ELEMENTS:
                return shape

    # -- pool ------------------------------------------------------------------------------------
    def input(self, shape, dtype=dt.float32, lo: float = -2.0, hi: float = 2.0) -> Value:
        """A fresh graph input drawn from [lo, hi] (bool: True with probability ``hi``), in the pool."""
        name = f"{self.prefix}x{len(self.specs)}"
        t = TensorType(tuple(shape), dtype)
        self.specs[name] = InputSpec(t, lo, hi)
        value = Value(current_builder().input(name, t), lo, hi, is_input=True, env=self.sizes)
        self.pool.append(value)
        return value

    def pick(self, ok=lambda v: True) -> Value | None:
        """A pool member (recent ones more likely) for which ``ok`` holds, or None."""
        fits = [v for v in self.pool if v.dtype.is_float and ok(v)]
        if not fits:
            return None
        weights = np.arange(1, len(fits) + 1, dtype=np.float64)
        return fits[int(self.rng.choice(len(fits), p=weights / weights.sum()))]

    def keep(self, value: Value | None) -> Value | None:
        """Add ``value`` to the pool if it is small and bounded; None (dropped) otherwise."""
        if value is None:
            return None
        if not (np.isfinite(value.lo) and np.isfinite(value.hi)) or value.mag > LIMIT:
            return None
        value.env = self.sizes
        if int(np.prod(value.sizes)) > MAX_ELEMENTS:
            return None
        self.pool.append(value)
        return value
