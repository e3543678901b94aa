"""Random valid graphs for the differential fuzzer, built with the public tracing API.

A graph grows from a pool of tensors: each step picks one generator family (families.py) by
weight, and the family returns a new tensor built from pool members (or fresh inputs), or None
when nothing in the pool fits. The op's own type rule decides validity: a choice that makes
tracing raise a ``GraphDSLError`` is dropped and another is tried, so only graphs the registry
accepts come out, and the generator never restates a type rule.

Every pool member carries an interval ``[lo, hi]`` that bounds its values (interval arithmetic
in the families), and inputs are drawn uniformly inside their declared domain. That is how the
fuzzer keeps results finite without looking at values: ``exp`` takes only bounded operands,
``log``/``sqrt``/a denominator only operands bounded away from 0 (or ``abs(x) + 0.5``), and a
value whose bound passes ``LIMIT`` is never made. Comparisons (the masks of ``where``) only read
graph inputs, whose values every backend sees bit for bit, so a mask never flips on an ulp.

Several independent graphs go into one traced graph (``batch``): disjoint inputs, all outputs.
One compile then tests them all; a finding's minimizer splits them again by dropping outputs.
Same seed, same graphs: every choice comes from one ``numpy.random.Generator``.
"""
from __future__ import annotations

import numpy as np

from graphdsl import dtypes as dt
from graphdsl import ops
from graphdsl.errors import GraphDSLError
from graphdsl.graph import Graph
from graphdsl.tracing import Builder, Tensor, tracing
from graphdsl.types import Dim

from .families import FAMILIES
from .minimize import used_sources
from .pool import LIMIT, STEPS, TRIES, Gen, InputSpec, Value, concrete

SYMBOLIC = 0.3              # the chance that a batch types its first inputs' leading dim as "n"
SYMBOL_SIZES = (1, 2, 3, 5)

__all__ = ["LIMIT", "draw_inputs", "generate_batch", "generate_one", "loss_of"]


def generate_one(rng: np.random.Generator, prefix: str, families=None,
                 sizes: dict[str, int] | None = None) -> tuple[dict[str, Tensor], dict[str, InputSpec]]:
    """Grow one random graph inside the active trace; returns its outputs and its inputs' specs.
    With ``sizes`` ({"n": 3}), the first inputs' leading dim is the symbolic dim ``n``."""
    families = FAMILIES if families is None else families
    names = list(families)
    weights = np.array([families[n][1] for n in names], dtype=np.float64)
    g = Gen(rng, prefix, sizes=dict(sizes or {}))
    for _ in range(int(rng.integers(1, 3))):
        shape = g.shape()
        if g.sizes:
            shape = (Dim(next(iter(g.sizes))),) + shape[1:]
        g.input(shape, dt.float64 if g.chance(0.1) else dt.float32)
    made: list[Value] = []
    for _ in range(int(rng.integers(STEPS[0], STEPS[1] + 1))):
        for _ in range(TRIES):
            fn = families[names[int(rng.choice(len(names), p=weights / weights.sum()))]][0]
            try:
                value = g.keep(fn(g))
            except GraphDSLError:          # the type rule refused this choice: try another
                value = None
            if value is not None:
                made.append(value)
                break
    if not made:                           # every step refused: one op that always applies
        made.append(g.keep(Value(ops.tanh(g.pool[0].t), -1.0, 1.0)))
    count = min(len(made), int(rng.integers(1, 4)))
    outs = made[-count:]
    return {f"{prefix}out{i}": v.t for i, v in enumerate(outs)}, g.specs


def generate_batch(seed, batch: int = 4, *, grad: bool = False, families=None):
    """``batch`` independent random graphs traced as one: returns (graph, inputs).

    ``seed`` is an int or a tuple of ints (``(fuzzer_seed, batch_index)``): the same seed gives
    the same graph and the same input values. With ``grad``, the graph has a scalar ``loss``:
    the sum over every float output of ``sum(cast(out, f32) * W)`` for a fixed random ``W``.
    Some batches (``SYMBOLIC``) use a symbolic dim ``n``, of a seeded size, in their inputs.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    sizes = {"n": int(rng.choice(SYMBOL_SIZES))} if rng.random() < SYMBOLIC else {}
    b = Builder()
    outputs: dict[str, Tensor] = {}
    specs: dict[str, InputSpec] = {}
    with tracing(b):
        for i in range(batch):
            outs, sp = generate_one(rng, f"g{i}_", families, sizes)
            outputs.update(outs)
            specs.update(sp)
        if grad:
            outputs["loss"] = loss_of(rng, outputs)
    nodes = {k: v.node for k, v in outputs.items()}
    graph = Graph(nodes, name="fuzz", sources=used_sources(b.sources, nodes.values()))
    graph.verify()
    inputs = draw_inputs(rng, {k: s for k, s in specs.items() if k in graph.inputs}, sizes)
    return graph, inputs


def loss_of(rng: np.random.Generator, outputs: dict[str, Tensor]) -> Tensor:
    """A scalar f32 loss that depends on every float output through fixed random weights (an
    output with a symbolic dim: weights over its static trailing dims, broadcast over the rest)."""
    total = None
    for t in outputs.values():
        if not t.dtype.is_float:
            continue
        dims = tuple(t.shape)
        static = [i for i, d in enumerate(dims) if not isinstance(d, int)]
        trailing = dims[static[-1] + 1:] if static else dims
        w = rng.uniform(-1.0, 1.0, tuple(int(d) for d in trailing)).astype(np.float32)
        term = ops.sum(ops.cast(t, dtype=dt.float32) * w)
        total = term if total is None else total + term
    if total is None:
        raise GraphDSLError("the random graph has no float output to make a loss of")
    return total


def draw_inputs(rng: np.random.Generator, specs: dict[str, InputSpec],
                sizes: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Uniform values in each input's interval, rounded to its dtype (bool: True with chance
    ``hi``); a symbolic dim takes its size from ``sizes``."""
    out = {}
    for name, s in specs.items():
        shape = concrete(s.type.shape, sizes or {})
        if s.type.dtype.is_bool:
            out[name] = rng.random(shape) < s.hi
        else:
            out[name] = rng.uniform(s.lo, s.hi, shape).astype(s.type.dtype.np)
    return out
