"""Rules and the fixed-point rewrite driver.

A ``Rule`` pairs a pattern with a rewrite function ``fn(match) -> replacement | None``; ``None``
declines. Rewrite functions build their replacement by calling ops on ``match.t(name)`` tensors:
the driver runs them inside a tracing context located at the replaced node's source line, so the
new nodes get their types inferred and attributes normalized by the ops themselves, and keep the
user's line.

``rewrite(graph, rules)`` sweeps the graph in topological order (``Sweep``, a graphdsl.interpreter
walk whose values are the new graph's nodes), rebuilding each node on its (possibly replaced) inputs and trying the rules whose root op matches; it repeats the sweep until
nothing changes. User counts (for ``one_use`` and ``Match.contained``) come from the graph the
sweep started from; a node made during the sweep has unknown users, so guards decline on it until
the next sweep sees it in a fresh graph.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable

from graphdsl.errors import GraphDSLError
from graphdsl.graph import Graph, Node
from graphdsl.interpreter import Interpreter
from graphdsl.tracing import Builder, Tensor, current_builder, tracing

from .pattern import Match, Pat

MAX_SWEEPS = 50
MAX_REWRITES_PER_NODE = 20


class PassError(GraphDSLError):
    """A pass failed: a rule broke the graph, a pass did not converge, or the verifier objected."""


class Rule:
    """``Rule(name, pattern, fn)``: where ``pattern`` matches, ``fn(match)`` may rewrite the root."""

    def __init__(self, name: str, pattern: Pat, fn: Callable[[Match], Node | Tensor | None]):
        self.name, self.pattern, self.fn = name, pattern, fn

    def apply(self, node: Node, ctx: "Context") -> Node | None:
        for m in self.pattern.match(node, ctx):
            with building(node):
                out = self.fn(m)
            if out is None:
                continue
            out = out.node if isinstance(out, Tensor) else out
            if out.type != node.type:
                raise PassError(f"rule {self.name!r} replaced a node of type {node.type} by one of "
                                f"type {out.type}", op=node.op, loc=node.loc)
            return out
        return None

    def __repr__(self):
        return f"<Rule {self.name}: {self.pattern!r}>"


def building(node: Node):
    """A tracing context whose new nodes carry ``node``'s source line."""
    b = Builder()
    b.loc_override = node.loc
    return tracing(b)


def constant(value, dtype) -> Tensor:
    """A constant of ``dtype`` in the replacement being built (inside a rule's rewrite)."""
    return current_builder().constant(value, dtype)


class Context:
    """What a sweep knows about users, and the counters rules report into.

    ``origin`` maps every node of the sweep, old or rebuilt, to the node of the starting graph
    whose users it has (None: unknown, once an existing node took over other users too).
    """

    def __init__(self, graph: Graph, counts: Counter):
        self.users: dict[Node, list[Node | None]] = graph.users()
        for out in graph.outputs.values():
            self.users[out].append(None)  # a graph output is a user outside any match
        self.origin: dict[Node, Node | None] = {n: n for n in graph.nodes}
        self.counts = counts

    def adopt(self, new: Node, old: Node) -> None:
        """``new`` stands for ``old`` (a rebuild or a replacement): it has ``old``'s users."""
        if new in self.origin:       # an existing node took more users: no longer known
            self.origin[new] = None
            return
        self.origin[new] = self.origin.get(old)

    def users_of(self, node: Node) -> list[Node | None] | None:
        """The users ``node`` stands for in the starting graph, or None when they are unknown."""
        origin = self.origin.get(node)
        return None if origin is None else self.users.get(origin)

    def num_users(self, node: Node) -> int | None:
        users = self.users_of(node)
        return None if users is None else len(users)

    def contained(self, root: Node, interior: Iterable[Node]) -> bool:
        interior = list(interior)
        inside = {self.origin.get(n) for n in interior + [root]}
        for n in interior:
            users = self.users_of(n)
            if users is None or any(u is None or u not in inside for u in users):
                return False
        return True

    def note(self, key: str, n: int = 1) -> None:
        self.counts[key] += n


def rewrite(graph: Graph, rules: Iterable[Rule], *, max_sweeps: int = MAX_SWEEPS) -> tuple[Graph, Counter]:
    """Apply ``rules`` until none fires; return the new graph and how often each rule fired."""
    rules = list(rules)
    by_op: dict[str, list[Rule]] = {}
    anywhere: list[Rule] = []
    for r in rules:
        ops = r.pattern.root_ops()
        if ops is None:
            anywhere.append(r)
        else:
            for op in ops:
                by_op.setdefault(op, []).append(r)
    counts: Counter = Counter()
    for _ in range(max_sweeps):
        graph, changed = _sweep(graph, by_op, anywhere, counts)
        if not changed:
            return graph, counts
    fired = ", ".join(sorted(k for k in counts)) or "none"
    raise PassError(f"rewriting did not reach a fixed point after {max_sweeps} sweeps (rules that "
                    f"fired: {fired})", hint="two rules probably undo each other")


class Sweep(Interpreter):
    """One sweep as a graph walk: each node's value is the node standing for it in the new graph
    (itself, rebuilt on replaced inputs, or what a rule replaced it with)."""

    def __init__(self, graph: Graph, by_op, anywhere, ctx: Context):
        super().__init__(graph)
        self.by_op, self.anywhere, self.ctx = by_op, anywhere, ctx
        self.changed = False

    def source(self, node: Node) -> Node:
        return node

    def constant(self, node: Node) -> Node:
        return node

    def call(self, node: Node, args: list) -> Node:
        cur = node
        if any(a is not b for a, b in zip(args, node.inputs)):
            cur = node.replace(inputs=args)
            self.ctx.adopt(cur, node)
        for _ in range(MAX_REWRITES_PER_NODE):
            new = _try_rules(cur, self.by_op.get(cur.op, []) + self.anywhere, self.ctx)
            if new is None:
                break
            self.ctx.adopt(new, cur)
            cur, self.changed = new, True
        return cur


def _sweep(graph: Graph, by_op, anywhere, counts: Counter) -> tuple[Graph, bool]:
    sweep = Sweep(graph, by_op, anywhere, Context(graph, counts))
    outputs = sweep.run()
    if all(new is node for node, new in sweep.env.items()):
        return graph, sweep.changed
    return Graph(outputs, name=graph.name, sources=graph.sources(), meta=graph.meta), sweep.changed


def _try_rules(node: Node, rules: list[Rule], ctx: Context) -> Node | None:
    for rule in rules:
        out = rule.apply(node, ctx)
        if out is not None and out is not node:
            ctx.note(rule.name)
            return out
    return None


__all__ = ["Rule", "rewrite", "building", "constant", "PassError", "Context"]
