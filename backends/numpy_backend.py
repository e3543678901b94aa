"""The NumPy reference backend: the semantics every other backend is tested against.

A call is a walk of ``graphdsl.interpreter.Interpreter`` whose ``call`` hook runs the op's NumPy
reference. What does not change between calls is planned once at compile time, keyed by node: each
op node's reference function, its attributes (and whether any holds a symbolic dim to resolve for
the call), and the inputs whose last use it is. Those values leave the env as soon as the node has
run, so a training step does not hold every activation twice.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from graphdsl.errors import GraphDSLError, InputError, LoweringError
from graphdsl.graph import Graph, Node
from graphdsl.interpreter import Interpreter
from graphdsl.registry import get

from .base import Executable, has_symbolic, resolve_attr


class Step(NamedTuple):
    """What running one op node needs, decided at compile time."""

    ref: Callable
    attrs: dict
    symbolic: bool          # some attribute holds a symbolic dim: resolve it for each call
    frees: tuple            # input nodes whose value is not needed after this node


def plan(graph: Graph) -> dict[Node, Step]:
    """The step of every op node; an op without a reference implementation fails here."""
    last_use: dict[Node, Node | None] = {}
    for node in graph.nodes:
        for inp in node.inputs:
            last_use[inp] = node
    for out in graph.outputs.values():
        last_use[out] = None          # outputs live to the end
    steps: dict[Node, Step] = {}
    for node in graph.nodes:
        if node.is_source:
            continue
        op = get(node.op)
        if op.ref is None:
            raise LoweringError("has no reference implementation", op=node.op, loc=node.loc)
        attrs = dict(node.attrs)
        frees = tuple(i for i in dict.fromkeys(node.inputs) if last_use[i] is node)
        steps[node] = Step(op.ref, attrs, any(has_symbolic(v) for v in attrs.values()), frees)
    return steps


class ReferenceInterpreter(Interpreter):
    """One call of the reference backend: ``dims`` holds the size of each symbolic dim."""

    def __init__(self, graph: Graph, steps: dict[Node, Step], dims: dict[str, int], check_nan: bool):
        super().__init__(graph)
        self.steps = steps
        self.dims = dims
        self.check_nan = check_nan

    def call(self, node: Node, args: list):
        ref, attrs, symbolic, frees = self.steps[node]
        if symbolic:
            attrs = {k: resolve_attr(v, self.dims) for k, v in attrs.items()}
        try:
            out = ref(*args, **attrs)
        except GraphDSLError as e:
            raise e.with_loc(node.loc) from None
        except Exception as e:  # a reference bug or a data-dependent failure: say where
            raise GraphDSLError(f"failed at run time on inputs ({_shapes(args)}): {type(e).__name__}: {e}",
                                op=node.op, loc=node.loc) from e
        if self.check_nan and _has_new_nan(out, args):
            raise GraphDSLError(f"produced NaN at {_first_nan(out)} from inputs without NaN "
                                f"({_shapes(args)})", op=node.op, loc=node.loc,
                                hint="look for log/sqrt of negatives, 0/0, or inf - inf")
        for dead in frees:
            del self.env[dead]
        return out


class NumpyExecutable(Executable):
    target = "numpy"

    def __init__(self, graph: Graph, check_nan: bool = False):
        super().__init__(graph)
        self.check_nan = check_nan
        self.steps = plan(graph)

    def run(self, arrays, env):
        if self.check_nan:
            for name, arr in arrays.items():
                if arr.dtype.kind == "f" and np.isnan(arr).any():
                    raise InputError(f"input {name!r} contains NaN at {_first_nan(arr)}",
                                     hint="check_nan=True rejects NaN inputs")
        walk = ReferenceInterpreter(self.graph, self.steps, env, self.check_nan)
        with np.errstate(all="ignore"):
            return walk.run(arrays)


def _shapes(arrays) -> str:
    return ", ".join(f"{a.dtype}{list(a.shape)}" for a in arrays)


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
