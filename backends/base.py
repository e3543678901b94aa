"""What every backend shares: the calling convention and the checks on a call's inputs.

An executable is called with named arrays (a mapping, keywords, or both) and returns a dict of named
arrays. Before any backend code runs, the inputs are checked against the graph: names, dtypes, ranks
and dims, binding each symbolic dim (``batch``) to its size, so a bad call fails with one clear
message, never a traceback from inside a kernel. Data of another dtype is converted only when no
value changes beyond float rounding (see ``_convert``). After the run, every output's shape is
checked against its type, so no backend can drift from the reference's shapes unnoticed.
"""
from __future__ import annotations

import abc
from typing import Mapping

import ml_dtypes
import numpy as np

from graphdsl import dtypes as _dt
from graphdsl.errors import GraphDSLError, InputError
from graphdsl.graph import Graph
from graphdsl.types import Dim


def bind_inputs(graph: Graph, args: tuple, kwargs: Mapping) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Check a call's arrays against the graph's inputs and params; return them and the dim sizes."""
    if len(args) > 1 or (args and not isinstance(args[0], Mapping)):
        raise InputError("call an executable with named arrays: exe(x=...) or exe({'x': ...})")
    given = {**(args[0] if args else {}), **kwargs}
    expected = {**graph.inputs, **graph.params}
    missing = [k for k in expected if k not in given]
    unknown = [k for k in given if k not in expected]
    if missing or unknown:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(f"{k!r} ({expected[k].type})" for k in missing))
        if unknown:
            parts.append("unknown " + ", ".join(f"{k!r} ({_describe(given[k])})" for k in unknown))
        takes = ", ".join(f"{k}: {n.type}" for k, n in graph.inputs.items())
        raise InputError(f"graph {graph.name!r}: " + "; ".join(parts),
                         hint=f"it takes inputs ({takes}) and {len(graph.params)} parameters")
    env: dict[str, int] = {}
    bound_by: dict[str, str] = {}   # symbol -> the input that fixed its size, for messages
    arrays: dict[str, np.ndarray] = {}
    for name, node in expected.items():
        arr = np.asarray(given[name])
        want = node.type
        if arr.dtype != want.dtype.np:
            have = _dt.dtype(arr.dtype) if arr.dtype in _NUMPY_OK else None
            if have is None or not _castable(have, want.dtype, arr):
                raise InputError(f"input {name!r} expects {want}, got {arr.dtype} array of shape "
                                 f"{list(arr.shape)}", hint=f"convert it: arr.astype('{want.dtype.name}')")
            arr = _convert(name, want, arr)
        if arr.ndim != len(want.shape):
            raise InputError(f"input {name!r} expects {want} (rank {len(want.shape)}), got shape "
                             f"{list(arr.shape)}")
        arrays[name] = arr
    # Plain symbolic dims bind first, whichever input declares them: an input typed [3*n] may come
    # before the one typed [n]. Then every other dim is solved (a*n + b alone) or checked.
    axes = [(name, expected[name].type, arr.shape, axis, dim, size)
            for name, arr in arrays.items() for axis, (dim, size) in enumerate(zip(expected[name].type.shape, arr.shape))]
    for item in sorted(axes, key=lambda a: not _plain(a[4])):
        _bind(*item, env, bound_by)
    return arrays, env


def _plain(dim) -> bool:
    return not isinstance(dim, int) and len(dim.terms) == 1 and len(dim.symbols) == 1 \
        and dim.terms.get(((next(iter(dim.symbols)), 1),)) == 1


_NUMPY_OK = {d.np for d in _dt.ALL}


def _describe(value) -> str:
    arr = np.asarray(value)
    return f"given {arr.dtype} array of shape {list(arr.shape)}"


def _castable(have, want, arr) -> bool:
    """Accept arrays of the same kind (int64 data for an int32 input, f64 for f32), not int<->float;
    a storage dtype (float8, int4, ...) takes only arrays of its own (its casts round and saturate)."""
    if want.storage:
        return False
    if have.kind == want.kind:
        return True
    return have.is_int and want.is_float or (have.is_bool and want.kind == "int")


def _convert(name: str, want, arr: np.ndarray) -> np.ndarray:
    """``arr`` as ``want``'s dtype, refusing a conversion that changes a value beyond rounding.

    Integer targets take only values in their range (nothing wraps). Float targets round to
    nearest (f64 data for an f32 input is normal) but a finite value must stay finite: one that
    would overflow to inf is refused; NaN and inf pass as themselves. The check looks at the
    extremes only (conversions are monotonic), so it costs a min and a max, never a Python loop.
    There is no switch to turn it off: to wrap or saturate on purpose, convert before the call.
    """
    to = want.dtype.np
    if arr.size and not np.can_cast(arr.dtype, to, "safe"):
        lo, hi = _extremes(arr)
        for v in (lo, hi) if lo is not None else ():
            if not _fits(v, arr.dtype, want.dtype):
                raise InputError(_narrowing_message(name, want, arr, v), hint=_narrowing_hint(want.dtype))
    with np.errstate(over="ignore", invalid="ignore"):
        return arr.astype(to)


def _extremes(arr: np.ndarray):
    """The smallest and largest finite values of ``arr`` (None, None when it has none)."""
    lo, hi = arr.min(), arr.max()
    if arr.dtype.kind == "f" and not (np.isfinite(lo) and np.isfinite(hi)):
        finite = arr[np.isfinite(arr)]   # NaN or inf present: they would hide the finite extremes
        if not finite.size:
            return None, None
        lo, hi = finite.min(), finite.max()
    return lo, hi


def _fits(value, have: np.dtype, want) -> bool:
    if want.is_int:
        info = np.iinfo(want.np)
        return info.min <= int(value) <= info.max
    with np.errstate(over="ignore"):
        return bool(np.isfinite(np.asarray(value, have).astype(want.np)))


def _narrowing_message(name, want, arr, value) -> str:
    shown = int(value) if arr.dtype.kind in "iub" else float(value)
    if want.dtype.is_int:
        info = np.iinfo(want.dtype.np)
        why = f"is outside {want.dtype.name}'s range {info.min} to {info.max} (it would wrap)"
    else:
        why = f"overflows {want.dtype.name} (it would become inf)"
    return (f"input {name!r} expects {want}: the value {shown} of the given {arr.dtype} array "
            f"(shape {list(arr.shape)}) {why}")


def _narrowing_hint(want) -> str:
    if want.is_int:
        return (f"give values that fit in {want.name}, or convert them yourself if wrapping is meant: "
                f"arr.astype('{want.name}')")
    top = float(ml_dtypes.finfo(want.np).max)
    return (f"{want.name}'s largest finite value is {top:g}: scale the data, or declare the input with "
            f"a wider dtype")


def _bind(name, want, shape, axis, dim, size, env, bound_by) -> None:
    if isinstance(dim, int):
        if dim != size:
            raise InputError(f"input {name!r} expects {want}, got shape {list(shape)} "
                             f"(axis {axis} is {size}, not {dim})")
        return
    free = [s for s in dim.symbols if s not in env]
    if len(free) == 1 and len(dim.terms) == 1 and dim.terms.get(((free[0], 1),)) == 1:
        env[free[0]] = size
        bound_by[free[0]] = f"{name!r} axis {axis}"
        return
    solved = _solve_linear(dim, free, size, env)
    if solved is not None:
        env[free[0]] = solved
        bound_by[free[0]] = f"{name!r} axis {axis} ({dim} = {size})"
        return
    if free:
        raise InputError(f"input {name!r}: cannot bind dim {dim} on axis {axis}",
                         hint="declare inputs with plain symbolic dims like 'batch'")
    if dim.evaluate(env) != size:
        sets = ", ".join(f"{s}={env[s]} was set by input {bound_by.get(s, '?')}"
                         for s in sorted(dim.symbols))
        why = sets if str(dim) in env else f"{dim} = {dim.evaluate(env)} with {sets}"
        raise InputError(f"input {name!r} expects {want}, got shape {list(shape)} "
                         f"(axis {axis} is {size}, but {why})",
                         hint="inputs that share a symbolic dim must agree on its size")


def _solve_linear(dim, free, size, env):
    """The size of the one unbound symbol of ``a*n + b`` (a and b ints or bound symbols) that
    makes ``dim`` equal ``size``, or None (no such form, or no non-negative integer solution)."""
    if len(free) != 1:
        return None
    sym = free[0]
    coef, rest = 0, 0
    for mono, c in dim.terms.items():
        powers = dict(mono)
        if sym in powers:
            if powers[sym] != 1 or len(powers) != 1:
                return None
            coef += c
        else:
            value = c
            for s, p in mono:
                value *= env[s] ** p
            rest += value
    if coef <= 0 or (size - rest) % coef or size < rest:
        return None
    return (size - rest) // coef


def check_outputs(graph: Graph, target: str, outs: dict, env: Mapping[str, int]) -> dict:
    """Every backend returns each output in the shape its type gives (a 0-d output is shape ``()``)."""
    for name, node in graph.outputs.items():
        if name not in outs or not node.type.shape.symbols <= env.keys():
            continue
        want = node.type.shape.evaluate(env)
        if np.shape(outs[name]) != want:
            raise GraphDSLError(f"the {target} backend returned output {name!r} with shape "
                                f"{list(np.shape(outs[name]))}, but its type {node.type} says {list(want)}",
                                hint="a backend bug: the numpy reference defines the shape")
    return outs


def resolve_attr(value, env: Mapping[str, int]):
    """Replace symbolic dims in an attribute by their sizes for this call."""
    if isinstance(value, Dim):
        return value.evaluate(env)
    if isinstance(value, tuple):
        return tuple(resolve_attr(v, env) for v in value)
    return value


def has_symbolic(value) -> bool:
    if isinstance(value, Dim):
        return True
    if isinstance(value, tuple):
        return any(has_symbolic(v) for v in value)
    return False


class Executable(abc.ABC):
    """A compiled graph. ``exe(x=..., **params) -> {output name: array}``."""

    target = "?"

    def __init__(self, graph: Graph):
        self.graph = graph
        self.weights: dict[str, np.ndarray] = {}    # parameter values used when a call omits them

    @property
    def input_names(self) -> list[str]:
        return list(self.graph.inputs)

    @property
    def param_names(self) -> list[str]:
        return list(self.graph.params)

    @property
    def output_names(self) -> list[str]:
        return list(self.graph.outputs)

    def __call__(self, *args, **kwargs) -> dict[str, np.ndarray]:
        if self.weights:
            if len(args) == 1 and isinstance(args[0], Mapping):
                args, kwargs = (), {**args[0], **kwargs}
            kwargs = {**self.weights, **kwargs}
        arrays, env = bind_inputs(self.graph, args, kwargs)
        return check_outputs(self.graph, self.target, self.run(arrays, env), env)

    def bind_weights(self, params: Mapping[str, np.ndarray]) -> "Executable":
        """Keep parameter values, so calls need only the inputs (given ones still win)."""
        self.weights = dict(params)
        return self

    @abc.abstractmethod
    def run(self, arrays: dict[str, np.ndarray], env: dict[str, int]) -> dict[str, np.ndarray]:
        """Run on checked arrays; ``env`` holds the size of each symbolic dim for this call."""

    def __repr__(self):
        return f"<{type(self).__name__} {self.graph.name} on {self.target}>"
