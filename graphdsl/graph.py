"""The Graph IR: immutable nodes in SSA order, named inputs, parameters and outputs.

A node is ``(op, inputs, attrs, type)`` plus the user's source line (``graphdsl/node.py``). Graphs
are values: passes build new ones. The views of a graph (printer, verifier, JSON, networkx/DOT) live
in their own modules, below this one: they read graphs by their attributes and never import Graph,
so the facade methods here (``print(g)``, ``g.verify()``, ``g.to_json()``) make no import cycle.
Calling a graph inside a trace (``g(x=...)``) inlines it; the inliner sits above tracing and binds
itself here with ``bind_inliner``, as the tracer binds itself to the registry.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Mapping

from . import analysis, printer, serialize
from .errors import GraphDSLError, GraphError
from .files import atomic_write_text
from .node import SOURCE_OPS, Node, constant_value, topo_sort
from .verify import verify as verify_graph

_INLINER: Callable | None = None   # graphdsl.interpreter.inline, bound when that module loads


def bind_inliner(inline: Callable) -> None:
    """Called once by graphdsl.interpreter: what ``graph(x=...)`` does while tracing."""
    global _INLINER
    _INLINER = inline


class Graph:
    """A whole computation: nodes in topological order, with named outputs.

    ``inputs`` and ``params`` keep the order they were declared in; unused ones stay (a caller's
    calling convention should not change because an optimization removed a use).
    """

    def __init__(self, outputs: Mapping[str, Node], *, name: str = "main",
                 sources: Iterable[Node] = (), meta: Mapping | None = None):
        if not outputs:
            raise GraphError("a graph needs at least one output")
        self.name = name
        self.outputs: dict[str, Node] = dict(outputs)
        declared = [n for n in sources if n.op in ("input", "param")]
        reachable = topo_sort(list(self.outputs.values()))
        seen = set(reachable)
        self.nodes: tuple[Node, ...] = tuple([n for n in declared if n not in seen] + reachable)
        self.meta = dict(meta or {})
        order = {n: i for i, n in enumerate(declared)}
        by_order = lambda n: order.get(n, len(order))  # noqa: E731
        self.inputs: dict[str, Node] = {
            n.attrs["name"]: n for n in sorted((n for n in self.nodes if n.op == "input"), key=by_order)}
        self.params: dict[str, Node] = {
            n.attrs["name"]: n for n in sorted((n for n in self.nodes if n.op == "param"), key=by_order)}

    # -- queries ------------------------------------------------------------------------
    def users(self) -> dict[Node, list[Node]]:
        """node -> the nodes that use it (a node using a value twice is listed twice)."""
        out: dict[Node, list[Node]] = {n: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out[i].append(n)
        return out

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            if not n.is_source:
                counts[n.op] = counts.get(n.op, 0) + 1
        return dict(sorted(counts.items()))

    def sources(self) -> list[Node]:
        """Input and param nodes in declaration order (for building a graph that keeps them)."""
        return list(self.inputs.values()) + list(self.params.values())

    def with_outputs(self, outputs: Mapping[str, Node], name: str | None = None) -> "Graph":
        return Graph(outputs, name=name or self.name, sources=self.sources(), meta=self.meta)

    # -- views --------------------------------------------------------------------------
    def __str__(self):
        return printer.format_graph(self)

    def __repr__(self):
        return (f"<Graph {self.name}: {len(self.inputs)} inputs, {len(self.params)} params, "
                f"{len(self.nodes)} nodes, outputs {list(self.outputs)}>")

    def verify(self) -> "Graph":
        return verify_graph(self)

    def to_json(self) -> str:
        return serialize.graph_to_json(self)

    def structural_hash(self) -> str:
        """A digest of what the graph computes, blind to source lines, its name and meta."""
        return serialize.structural_hash(self)

    @staticmethod
    def from_json(text: str) -> "Graph":
        """Load a graph saved by ``to_json`` and verify it; a problem is a GraphError naming its JSON path."""
        return graph_from_json(text)

    def save(self, path) -> None:
        """Write the JSON to a temporary sibling, then rename it into place (never half a file)."""
        atomic_write_text(path, self.to_json())

    @staticmethod
    def load(path) -> "Graph":
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise GraphError(f"cannot read graph file {path}: {e.strerror}") from None
        return Graph.from_json(text)

    def to_networkx(self):
        return analysis.to_networkx(self)

    def to_dot(self) -> str:
        return analysis.to_dot(self)

    def __call__(self, *args, **kwargs):
        """Inline this graph into the graph being traced: ``outs = g(x=..., **params)``."""
        if _INLINER is None:
            raise GraphError("graphs are called while tracing; import graphdsl first")
        return _INLINER(self, *args, **kwargs)


def graph_from_json(text) -> Graph:
    """The graph saved by ``graph_to_json`` (graphdsl.serialize decodes it), verified."""
    return verify_graph(Graph(**serialize.decode_graph(text)))


__all__ = ["Node", "Graph", "SOURCE_OPS", "topo_sort", "constant_value", "graph_from_json",
           "bind_inliner", "GraphDSLError"]
