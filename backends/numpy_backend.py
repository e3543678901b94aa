"""The NumPy reference backend: the semantics every other backend is tested against.

``compile`` turns the graph into a flat list of steps (the op's reference function, its input
slots and its attributes) once, so a call is one tight loop over NumPy calls. Values are dropped
after their last use, so a training step does not hold every activation twice.
"""
from __future__ import annotations

import numpy as np

from graphdsl.errors import GraphDSLError, InputError, LoweringError
from graphdsl.graph import Graph
from graphdsl.registry import get

from .base import Executable, has_symbolic, resolve_attr


class NumpyExecutable(Executable):
    target = "numpy"

    def __init__(self, graph: Graph, check_nan: bool = False):
        super().__init__(graph)
        self.check_nan = check_nan
        slot = {id(n): i for i, n in enumerate(graph.nodes)}
        self._n = len(graph.nodes)
        self._sources = []  # (slot, name) for inputs/params, (slot, array) for constants
        self._constants = []
        self._steps = []
        last_use = {}
        for i, node in enumerate(graph.nodes):
            for inp in node.inputs:
                last_use[slot[id(inp)]] = i
        for out in graph.outputs.values():
            last_use[slot[id(out)]] = self._n
        for i, node in enumerate(graph.nodes):
            if node.op in ("input", "param"):
                self._sources.append((i, node.attrs["name"]))
                continue
            if node.op == "constant":
                self._constants.append((i, node.attrs["value"]))
                continue
            op = get(node.op)
            if op.ref is None:
                raise LoweringError("has no reference implementation", op=node.op, loc=node.loc)
            attrs = dict(node.attrs)
            symbolic = any(has_symbolic(v) for v in attrs.values())
            frees = tuple(j for j in {slot[id(x)] for x in node.inputs} if last_use.get(j) == i)
            self._steps.append((i, op.ref, tuple(slot[id(x)] for x in node.inputs), attrs, symbolic,
                                frees, node))
        self._outputs = [(k, slot[id(v)]) for k, v in graph.outputs.items()]

    def run(self, arrays, env):
        if self.check_nan:
            for name, arr in arrays.items():
                if arr.dtype.kind == "f" and np.isnan(arr).any():
                    raise InputError(f"input {name!r} contains NaN at {_first_nan(arr)}",
                                     hint="check_nan=True rejects NaN inputs")
        vals: list = [None] * self._n
        for i, name in self._sources:
            vals[i] = arrays[name]
        for i, value in self._constants:
            vals[i] = value
        for i, ref, ins, attrs, symbolic, frees, node in self._steps:
            if symbolic:
                attrs = {k: resolve_attr(v, env) for k, v in attrs.items()}
            try:
                with np.errstate(all="ignore"):
                    vals[i] = ref(*[vals[j] for j in ins], **attrs)
            except GraphDSLError as e:
                raise e.with_loc(node.loc) from None
            except Exception as e:  # a reference bug or a data-dependent failure: say where
                shapes = ", ".join(f"{vals[j].dtype}{list(vals[j].shape)}" for j in ins)
                raise GraphDSLError(f"failed at run time on inputs ({shapes}): {type(e).__name__}: {e}",
                                    op=node.op, loc=node.loc) from e
            if self.check_nan and _has_new_nan(vals[i], [vals[j] for j in ins]):
                shapes = ", ".join(f"{vals[j].dtype}{list(vals[j].shape)}" for j in ins)
                raise GraphDSLError(f"produced NaN at {_first_nan(vals[i])} from inputs without NaN "
                                    f"({shapes})", op=node.op, loc=node.loc,
                                    hint="look for log/sqrt of negatives, 0/0, or inf - inf")
            for j in frees:
                vals[j] = None
        return {k: vals[j] for k, j in self._outputs}


def _has_new_nan(out, ins) -> bool:
    if out.dtype.kind != "f" or not np.isnan(out).any():
        return False
    return not any(a.dtype.kind == "f" and np.isnan(a).any() for a in ins)


def _first_nan(arr) -> list[int]:
    return [int(i) for i in np.argwhere(np.isnan(arr))[0]]


def compile(graph: Graph, *, check_nan: bool = False, **options) -> NumpyExecutable:
    """Compile for the reference backend. ``check_nan=True`` rejects NaN inputs and stops at the
    first node that turns NaN-free inputs into NaN, naming the op and the line that made it."""
    if options:
        raise GraphDSLError(f"the numpy target takes no options other than check_nan, got {sorted(options)}")
    return NumpyExecutable(graph, check_nan=check_nan)
