"""The Graph IR: immutable nodes in SSA order, named inputs, parameters and outputs.

A node is ``(op, inputs, attrs, type)`` plus the user's source line. Three source ops hold the
leaves: ``input`` and ``param`` (named by their ``name`` attribute) and ``constant`` (an array in
its ``value`` attribute). Every other op is a registry op. Graphs are values: passes build new ones.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Iterable, Mapping

import numpy as np

from .errors import GraphError, GraphDSLError, SourceLoc
from .registry import get as get_op
from .types import TensorType

SOURCE_OPS = ("input", "param", "constant")


class Node:
    """One SSA value. Immutable after construction; identity is the node object itself."""

    __slots__ = ("op", "inputs", "attrs", "type", "loc")

    def __init__(self, op: str, inputs: Iterable["Node"], attrs: Mapping, type: TensorType,
                 loc: SourceLoc | None = None):
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "inputs", tuple(inputs))
        object.__setattr__(self, "attrs", MappingProxyType(dict(attrs)))
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "loc", loc)

    def __setattr__(self, key, value):
        raise AttributeError("Node is immutable; build a new node instead")

    @property
    def is_source(self) -> bool:
        return self.op in SOURCE_OPS

    @property
    def name(self) -> str | None:
        """The input or parameter name, for ``input``/``param`` nodes."""
        return self.attrs.get("name") if self.op in ("input", "param") else None

    def arg(self, name: str) -> "Node | None":
        """The input called ``name`` in the op's declaration (``inputs=``), None when it is absent."""
        opdef = get_op(self.op)
        if name not in opdef.required_inputs and name not in opdef.optional_inputs:
            raise KeyError(f"{self.op} has no input {name!r}; its inputs: {', '.join(opdef.inputs)}")
        return opdef.bind_inputs(self, self.inputs).get(name)

    def args(self) -> dict[str, "Node"]:
        """name -> input node for the inputs this node has."""
        return get_op(self.op).bind_inputs(self, self.inputs)

    def replace(self, **changes) -> "Node":
        fields = {"op": self.op, "inputs": self.inputs, "attrs": self.attrs, "type": self.type,
                  "loc": self.loc}
        fields.update(changes)
        return Node(**fields)

    def __repr__(self):
        return f"<Node {self.op} {self.type}>"


def topo_sort(outputs: Iterable[Node]) -> list[Node]:
    """Every node reachable from ``outputs``, each after its inputs (iterative: graphs are deep)."""
    order: list[Node] = []
    seen: set[int] = set()
    for root in outputs:
        stack = [(root, False)]
        while stack:
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            for inp in reversed(node.inputs):
                if id(inp) not in seen:
                    stack.append((inp, False))
    return order


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
        seen = {id(n) for n in reachable}
        self.nodes: tuple[Node, ...] = tuple([n for n in declared if id(n) not in seen] + reachable)
        self.meta = dict(meta or {})
        order = {id(n): i for i, n in enumerate(declared)}
        by_order = lambda n: order.get(id(n), len(order))  # noqa: E731
        self.inputs: dict[str, Node] = {
            n.attrs["name"]: n for n in sorted((n for n in self.nodes if n.op == "input"), key=by_order)}
        self.params: dict[str, Node] = {
            n.attrs["name"]: n for n in sorted((n for n in self.nodes if n.op == "param"), key=by_order)}

    # -- queries ------------------------------------------------------------------------
    def users(self) -> dict[int, list[Node]]:
        """id(node) -> the nodes that use it (a node using a value twice is listed twice)."""
        out: dict[int, list[Node]] = {id(n): [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out[id(i)].append(n)
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
        from .printer import format_graph
        return format_graph(self)

    def __repr__(self):
        return (f"<Graph {self.name}: {len(self.inputs)} inputs, {len(self.params)} params, "
                f"{len(self.nodes)} nodes, outputs {list(self.outputs)}>")

    def verify(self) -> "Graph":
        from .verify import verify
        verify(self)
        return self

    def to_json(self) -> str:
        from .serialize import graph_to_json
        return graph_to_json(self)

    def structural_hash(self) -> str:
        """A digest of what the graph computes, blind to source lines, its name and meta."""
        from .serialize import structural_hash
        return structural_hash(self)

    @staticmethod
    def from_json(text: str) -> "Graph":
        from .serialize import graph_from_json
        return graph_from_json(text)

    def save(self, path) -> None:
        """Write the JSON to a temporary sibling, then rename it into place (never half a file)."""
        from .files import atomic_write_text
        atomic_write_text(path, self.to_json())

    @staticmethod
    def load(path) -> "Graph":
        from pathlib import Path
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise GraphError(f"cannot read graph file {path}: {e.strerror}") from None
        return Graph.from_json(text)

    def to_networkx(self):
        from .analysis import to_networkx
        return to_networkx(self)

    def to_dot(self) -> str:
        from .analysis import to_dot
        return to_dot(self)

    def __call__(self, *args, **kwargs):
        """Inline this graph into the graph being traced: ``outs = g(x=..., **params)``."""
        from .tracing import inline
        return inline(self, *args, **kwargs)


def constant_value(node: Node) -> np.ndarray | None:
    return node.attrs["value"] if node.op == "constant" else None


__all__ = ["Node", "Graph", "SOURCE_OPS", "topo_sort", "constant_value", "GraphDSLError"]
