"""The pattern language: node patterns with captures, written like the math they match.

Patterns are built with operators and functions named like the ops, so a rule reads as the
expression it matches::

    X = Pat.any("x")
    GELU_ERF = X * 0.5 * (erf(X * 0.7071) + 1)           # mul(mul(x, 0.5), add(erf(...), 1))
    SOFTMAX = softmax(X, where=on_last_axis) | X          # alternatives

* ``+ - * / @ **`` and unary ``-`` build ``add sub mul div matmul pow neg`` patterns; a Python
  number becomes a constant pattern, ``Pat.const(value=...)`` (every element equal to it, within
  a relative 1e-6; ``exactly(v)`` for no tolerance, ``Pat.const(value=v, rtol=...)`` for more);
* ``erf(p)``, ``where(c, a, b)``, ``transpose(p, perm=(1, 0))``, ... (the functions below) build
  the op of that name; keyword arguments other than the ``Pat`` options test the attributes as the
  op stores them (a normalized ``axis``: ``softmax(p, axis=1)``, not ``-1``);
* the constructor form, ``Pat(op, *inputs, name=, attrs=, where=, dtype=, one_use=, commute=)``,
  says what operators cannot: ``op`` may be a tuple of names or ``None`` (any node); ``name``
  captures the node (a name used twice must capture the same node); ``attrs`` maps attribute
  names to a value or a predicate; ``where`` is a predicate on the node; ``dtype`` restricts the
  element type; ``one_use=True``: exactly one user (graph outputs count). ``p.having(...)`` adds
  these options to a pattern built with operators;
* commutative ops (the registry's ``commutative`` tag) also match their two inputs swapped, so
  ``0.5 * X`` and ``X * 0.5`` match the same nodes.

``Pat.match(node, ctx)`` yields every way the pattern matches, as a ``Match``; a rewrite rule
(see rewrite.py) takes the first one its rewrite function accepts.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from graphdsl.graph import Node
from graphdsl.registry import get

DEFAULT_RTOL = 1e-6
OPTIONS = ("name", "attrs", "where", "dtype", "one_use", "commute")


class Pat:
    """A node pattern (see the module docstring)."""

    __array_ufunc__ = None   # ``np.float32(2) * p`` builds a pattern, not an object array

    def __init__(self, op: str | tuple | None = None, *inputs: "Pat | float", name: str | None = None,
                 attrs: Mapping[str, Any] | None = None, where: Callable[[Node], bool] | None = None,
                 dtype=None, one_use: bool = False, commute: bool | None = None):
        self.ops = None if op is None else ((op,) if isinstance(op, str) else tuple(op))
        self.inputs = tuple(lift(p) for p in inputs) if inputs else None
        self.name = name
        self.attrs = dict(attrs or {})
        self.where = where
        self.dtype = dtype
        self.one_use = one_use
        self.commute = commute

    # -- constructors -------------------------------------------------------------------------
    @staticmethod
    def any(name: str | None = None, **kw) -> "Pat":
        """Any node (a wildcard), captured as ``name``."""
        return Pat(None, name=name, **kw)

    @staticmethod
    def const(name: str | None = None, value: float | None = None, *, rtol: float = DEFAULT_RTOL,
              where: Callable[[float], bool] | None = None) -> "Const":
        """A constant whose elements all equal one number (``value`` within ``rtol``, if given)."""
        return Const(name, value, rtol, where)

    def having(self, **options) -> "Pat":
        """This pattern with more options (``name``, ``where``, ``one_use``, ...; see ``Pat``)."""
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise TypeError(f"unknown pattern options {sorted(unknown)}; options: {', '.join(OPTIONS)}")
        out = copy.copy(self)
        for key, value in options.items():
            setattr(out, key, {**self.attrs, **value} if key == "attrs" else value)
        return out

    # -- operators: the expression builds the pattern of the ops it names ----------------------
    def __add__(self, other): return Pat("add", self, other)
    def __radd__(self, other): return Pat("add", other, self)
    def __sub__(self, other): return Pat("sub", self, other)
    def __rsub__(self, other): return Pat("sub", other, self)
    def __mul__(self, other): return Pat("mul", self, other)
    def __rmul__(self, other): return Pat("mul", other, self)
    def __truediv__(self, other): return Pat("div", self, other)
    def __rtruediv__(self, other): return Pat("div", other, self)
    def __matmul__(self, other): return Pat("matmul", self, other)
    def __rmatmul__(self, other): return Pat("matmul", other, self)
    def __pow__(self, other): return Pat("pow", self, other)
    def __rpow__(self, other): return Pat("pow", other, self)
    def __neg__(self): return Pat("neg", self)

    def __or__(self, other: "Pat") -> "Alt":
        return Alt(self, lift(other))

    def __ror__(self, other) -> "Alt":
        return Alt(lift(other), self)

    # -- matching -----------------------------------------------------------------------------
    def root_ops(self) -> set[str] | None:
        return None if self.ops is None else set(self.ops)

    def match(self, node: Node, ctx=None) -> Iterator["Match"]:
        for caps, nodes in _match(self, node, {}, (), ctx):
            yield Match(node, caps, nodes, ctx)

    def first(self, node: Node, ctx=None) -> "Match | None":
        return next(self.match(node, ctx), None)

    def accepts(self, node: Node, ctx) -> bool:
        """Whether ``node`` itself (not its inputs) passes this pattern's tests."""
        if self.ops is not None and node.op not in self.ops:
            return False
        if self.dtype is not None and node.type.dtype != self.dtype:
            return False
        for key, want in self.attrs.items():
            if key not in node.attrs:
                return False
            have = node.attrs[key]
            if callable(want) and not isinstance(want, type):
                if not want(have):
                    return False
            elif have != want:
                return False
        if self.where is not None and not self.where(node):
            return False
        if self.one_use and ctx is not None and ctx.num_users(node) != 1:
            return False
        return True

    def signature(self) -> tuple:
        """The pattern as nested tuples (predicates by identity): equal signatures, same pattern."""
        inputs = None if self.inputs is None else tuple(p.signature() for p in self.inputs)
        return ("pat", self.ops, inputs, self.name, tuple(sorted(self.attrs.items())), self.where,
                self.dtype, self.one_use, self.commute)

    def __repr__(self):
        head = "|".join(self.ops) if self.ops else "_"
        args = ", ".join(map(repr, self.inputs)) if self.inputs is not None else ""
        name = f" as {self.name}" if self.name else ""
        return f"{head}({args}){name}"


class Const(Pat):
    """A constant node whose elements all equal one number (see ``Pat.const``)."""

    def __init__(self, name: str | None, value: float | None, rtol: float,
                 test: Callable[[float], bool] | None):
        super().__init__("constant", name=name)
        self.value, self.rtol, self.test = value, rtol, test

    def accepts(self, node: Node, ctx) -> bool:
        if not super().accepts(node, ctx):
            return False
        v = scalar_value(node)
        if v is None:
            return False
        if self.value is not None and not close(v, self.value, self.rtol):
            return False
        return self.test is None or bool(self.test(v))

    def signature(self) -> tuple:
        return super().signature() + (self.value, self.rtol, self.test)

    def __repr__(self):
        value = "" if self.value is None else f"{self.value:g}"
        return f"constant({value})" + (f" as {self.name}" if self.name else "")


class Alt(Pat):
    """Alternatives: the first pattern that matches, then the next on backtracking."""

    def __init__(self, *options: Pat):
        super().__init__(None)
        flat = []
        for p in options:
            flat.extend(p.options if isinstance(p, Alt) else [p])
        self.options = tuple(flat)

    def root_ops(self) -> set[str] | None:
        out: set[str] = set()
        for p in self.options:
            ops = p.root_ops()
            if ops is None:
                return None
            out |= ops
        return out

    def having(self, **options) -> "Alt":
        """Each alternative with these options (an alternative matches as one of its options)."""
        return Alt(*(p.having(**options) for p in self.options))

    def signature(self) -> tuple:
        return ("alt",) + tuple(p.signature() for p in self.options)

    def __repr__(self):
        return " | ".join(map(repr, self.options))


def lift(p) -> Pat:
    """A pattern as given, or a Python number as the constant pattern of that value."""
    if isinstance(p, Pat):
        return p
    if isinstance(p, (bool, int, float, np.number)):
        return Pat.const(value=float(p))
    raise TypeError(f"a pattern input must be a Pat or a number, not {type(p).__name__}")


def exactly(value: float, name: str | None = None) -> Const:
    """A constant equal to ``value`` with no tolerance (``x * 1``, ``x + 0``, ``m & True``)."""
    return Pat.const(name, value, rtol=0)


def opt(op: str, inner: Pat, **kw) -> Pat:
    """``inner``, or ``op(inner)`` around it: an optional wrapper such as a cast."""
    return Pat(op, inner, **kw) | inner


# -- functions named like the ops: erf(p), where(c, a, b), softmax(p, axis=...) ------------------
def op_pattern(op: str) -> Callable[..., Pat]:
    """The builder of ``op`` patterns: inputs positional, ``Pat`` options and attribute tests by
    keyword (``softmax(p, axis=-1, name="sm")``)."""
    def build(*inputs, **kw) -> Pat:
        options = {k: kw.pop(k) for k in OPTIONS if k in kw}
        options["attrs"] = {**options.get("attrs", {}), **kw}
        return Pat(op, *inputs, **options)
    build.__name__ = build.__qualname__ = op
    build.__doc__ = f"The pattern of a ``{op}`` node on these inputs."
    return build


erf, tanh, exp, sqrt, rsqrt = (op_pattern(n) for n in ("erf", "tanh", "exp", "sqrt", "rsqrt"))
cast, reshape, transpose, broadcast_to = (op_pattern(n) for n in ("cast", "reshape", "transpose",
                                                                   "broadcast_to"))
softmax, dropout, layer_norm, rms_norm = (op_pattern(n) for n in ("softmax", "dropout", "layer_norm",
                                                                   "rms_norm"))
mean, max_, sum_ = op_pattern("mean"), op_pattern("max"), op_pattern("sum")  # max_/sum_: not the builtins
where, equal, not_equal = op_pattern("where"), op_pattern("equal"), op_pattern("not_equal")
logical_and, logical_or = op_pattern("logical_and"), op_pattern("logical_or")


class Match:
    """One way a pattern matched: ``m["q"]`` is the captured node; ``m.nodes`` every node an op
    pattern matched (the root first)."""

    def __init__(self, root: Node, caps: dict, nodes: tuple, ctx):
        self.root, self.caps, self.nodes, self.ctx = root, caps, nodes, ctx

    def __getitem__(self, name: str) -> Node:
        return self.caps[name]

    def get(self, name: str, default=None):
        return self.caps.get(name, default)

    def __contains__(self, name: str) -> bool:
        return name in self.caps

    def t(self, name: str):
        """The captured node as a Tensor, for building the replacement with ops."""
        from graphdsl.tracing import Tensor
        return Tensor(self.caps[name])

    def contained(self, extra=()) -> bool:
        """True when no matched interior node (nor any in ``extra``) is used outside the match."""
        if self.ctx is None:
            return True
        interior = [n for n in list(self.nodes[1:]) + list(extra) if not n.is_source]
        return self.ctx.contained(self.root, interior)

    def note(self, key: str, n: int = 1) -> None:
        """Count something the rewrite did (shown in the pass report)."""
        if self.ctx is not None:
            self.ctx.note(key, n)

    def __repr__(self):
        return f"<Match {self.root.op}: {sorted(self.caps)}>"


# -- the matcher -----------------------------------------------------------------------------------
def _match(pat: Pat, node: Node, caps: dict, nodes: tuple, ctx) -> Iterator[tuple[dict, tuple]]:
    if isinstance(pat, Alt):
        for option in pat.options:
            yield from _match(option, node, caps, nodes, ctx)
        return
    if pat.name is not None and pat.name in caps and caps[pat.name] is not node:
        return
    if not pat.accepts(node, ctx):
        return
    if pat.name is not None:
        caps = {**caps, pat.name: node}
    if pat.ops is not None:
        nodes = nodes + (node,)
    if pat.inputs is None:
        yield caps, nodes
        return
    if len(pat.inputs) != len(node.inputs):
        return
    orders = [node.inputs]
    if len(node.inputs) == 2 and _commutes(pat, node) and node.inputs[0] is not node.inputs[1]:
        orders.append(node.inputs[::-1])
    for inputs in orders:
        yield from _match_all(pat.inputs, inputs, caps, nodes, ctx)


def _match_all(pats, inputs, caps, nodes, ctx):
    if not pats:
        yield caps, nodes
        return
    for caps1, nodes1 in _match(pats[0], inputs[0], caps, nodes, ctx):
        yield from _match_all(pats[1:], inputs[1:], caps1, nodes1, ctx)


def _commutes(pat: Pat, node: Node) -> bool:
    if pat.commute is not None:
        return pat.commute
    if node.is_source:
        return False
    return "commutative" in get(node.op).tags


# -- constants ------------------------------------------------------------------------------------
def scalar_value(node: Node) -> float | None:
    """The number a constant node holds in every element, or None (not constant, or not uniform)."""
    if node.op != "constant":
        return None
    value = node.attrs["value"]
    if value.size == 0:
        return None
    flat = value.reshape(-1)
    first = flat[0]
    if value.size > 1 and not np.all(flat == first):
        return None
    if value.dtype.kind == "b":
        return float(bool(first))
    if value.dtype.kind == "f":
        return float(str(first))  # the shortest decimal of the constant's own precision: 1e-05
    return float(first)


def close(a: float, b: float, rtol: float) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= rtol * max(abs(a), abs(b))


__all__ = ["Pat", "Const", "Alt", "Match", "lift", "exactly", "opt", "op_pattern", "scalar_value", "close",
           "erf", "tanh", "exp", "sqrt", "rsqrt", "cast", "reshape", "transpose", "broadcast_to", "softmax",
           "dropout", "layer_norm", "rms_norm", "mean", "max_", "sum_", "where", "equal", "not_equal",
           "logical_and", "logical_or"]
