"""The pattern language: declarative node patterns with captures, matched with backtracking.

A pattern describes a node and, optionally, its inputs::

    QK = Pat("matmul", Pat.any("q"), Pat("transpose", Pat.any("k"), attrs={"perm": swaps_last_two}))
    SCALED = Pat("mul", QK, Pat.const("scale")) | QK        # alternatives
    SOFTMAX = Pat("softmax", SCALED, attrs={"axis": is_last_axis}, one_use=True)

* ``op`` is an op name, a tuple of names, or ``None`` (any node);
* input patterns, when given, must match the node's inputs one for one; commutative ops (the
  registry's ``commutative`` tag) also try their two inputs swapped;
* ``name`` captures the node; a name used twice must capture the same node both times;
* ``attrs`` maps attribute names to a value or a predicate; ``where`` is a predicate on the node
  (types, shapes, anything); ``dtype`` restricts the element type;
* ``one_use=True``: the node has exactly one user (graph outputs count as users).

``Pat.match(node, ctx)`` yields every way the pattern matches, as a ``Match``; a rewrite rule
(see rewrite.py) takes the first one its rewrite function accepts.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from graphdsl.graph import Node
from graphdsl.registry import get


class Pat:
    """A node pattern (see the module docstring)."""

    def __init__(self, op: str | tuple | None = None, *inputs: "Pat", name: str | None = None,
                 attrs: Mapping[str, Any] | None = None, where: Callable[[Node], bool] | None = None,
                 dtype=None, one_use: bool = False, commute: bool | None = None):
        self.ops = None if op is None else ((op,) if isinstance(op, str) else tuple(op))
        self.inputs = tuple(inputs) if inputs else None
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
    def const(name: str | None = None, value: float | None = None, *, rtol: float = 1e-6,
              where: Callable[[float], bool] | None = None) -> "Pat":
        """A constant whose elements all equal one number (``value`` within ``rtol``, if given)."""
        def check(node: Node) -> bool:
            v = scalar_value(node)
            if v is None:
                return False
            if value is not None and not close(v, value, rtol):
                return False
            return where is None or bool(where(v))
        return Pat("constant", name=name, where=check)

    def __or__(self, other: "Pat") -> "Alt":
        return Alt(self, other)

    # -- matching -----------------------------------------------------------------------------
    def root_ops(self) -> set[str] | None:
        return None if self.ops is None else set(self.ops)

    def match(self, node: Node, ctx=None) -> Iterator["Match"]:
        for caps, nodes in _match(self, node, {}, (), ctx):
            yield Match(node, caps, nodes, ctx)

    def first(self, node: Node, ctx=None) -> "Match | None":
        return next(self.match(node, ctx), None)

    def __repr__(self):
        head = "|".join(self.ops) if self.ops else "_"
        args = ", ".join(map(repr, self.inputs)) if self.inputs is not None else ""
        name = f" as {self.name}" if self.name else ""
        return f"{head}({args}){name}"


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

    def __repr__(self):
        return " | ".join(map(repr, self.options))


def opt(op: str, inner: Pat, **kw) -> Pat:
    """``inner``, or ``op(inner)`` around it: an optional wrapper such as a cast."""
    return Pat(op, inner, **kw) | inner


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
    if not _node_ok(pat, node, ctx):
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


def _node_ok(pat: Pat, node: Node, ctx) -> bool:
    if pat.ops is not None and node.op not in pat.ops:
        return False
    if pat.dtype is not None and node.type.dtype != pat.dtype:
        return False
    for key, want in pat.attrs.items():
        if key not in node.attrs:
            return False
        have = node.attrs[key]
        if callable(want) and not isinstance(want, type):
            if not want(have):
                return False
        elif have != want:
            return False
    if pat.where is not None and not pat.where(node):
        return False
    if pat.one_use and ctx is not None and ctx.num_users(node) != 1:
        return False
    return True


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


__all__ = ["Pat", "Alt", "opt", "Match", "scalar_value", "close"]
