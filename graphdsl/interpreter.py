"""One graph walker for every layer: an environment keyed by ``Node``, with hooks per node kind.

torch.fx's ``Interpreter`` is the model: ``env: dict[Node, value]`` filled in node order, a hook for
each kind of node (``source`` for inputs and parameters, ``constant``, ``call`` for ops), and the
outputs read back by name. The NumPy backend, the TVM lowering, the ONNX exporter, inlining,
autodiff and the rewriter all walk graphs through it, so none keys a dict by ``id(node)`` (ids are
reused once a node is garbage collected: the env holds its keys alive instead).

``decomposition_graph(node)`` is the op's decomposition traced on the node's input types, as a graph
whose inputs are ``x0, x1, ...``: what a backend lowers when it has no row for the op.
"""
from __future__ import annotations

from typing import Any, Mapping

from .errors import GraphDSLError, LoweringError
from .graph import Graph, Node


class Interpreter:
    """Walk ``graph`` in node order. Subclasses override the hooks; ``run`` returns the outputs.

    ``env`` may be given to ``run`` already holding values (for nodes computed elsewhere, such as
    the sources of a decomposition bound to the caller's values); those nodes are not visited.
    """

    def __init__(self, graph: Graph):
        self.graph = graph
        self.env: dict[Node, Any] = {}

    # -- hooks ------------------------------------------------------------------------------
    def source(self, node: Node) -> Any:
        """An ``input`` or ``param`` node's value (by default from the ``values`` given to run)."""
        try:
            return self.values[node.attrs["name"]]
        except KeyError:
            raise GraphDSLError(f"no value for {node.op} {node.attrs['name']!r}") from None

    def constant(self, node: Node) -> Any:
        return node.attrs["value"]

    def call(self, node: Node, args: list) -> Any:
        """An op node's value from its inputs' values."""
        raise NotImplementedError

    def visit(self, node: Node) -> Any:
        """One node's value: dispatch on its kind."""
        if node.op in ("input", "param"):
            return self.source(node)
        if node.op == "constant":
            return self.constant(node)
        return self.call(node, [self.env[i] for i in node.inputs])

    # -- driving ----------------------------------------------------------------------------
    def run(self, values: Mapping[str, Any] | None = None, *,
            env: Mapping[Node, Any] | None = None) -> dict[str, Any]:
        self.values = dict(values or {})
        if env:
            self.env.update(env)
        for node in self.graph.nodes:
            if node not in self.env:
                self.env[node] = self.visit(node)
        return {name: self.env[node] for name, node in self.graph.outputs.items()}


def decomposition_graph(node: Node) -> Graph:
    """``node``'s op written with other ops: its ``decompose`` traced on the node's input types.

    The graph's inputs are ``x0, x1, ...`` (the node's inputs in order) and its output ``out``."""
    from .registry import get
    from .tracing import Tensor, trace

    opdef = get(node.op)
    if opdef.decompose is None:
        raise LoweringError("has no decomposition", op=node.op)
    names = [f"x{i}" for i in range(len(node.inputs))]

    def body(**xs):
        out = opdef.decompose(*[xs[n] for n in names], **dict(node.attrs))
        if not isinstance(out, Tensor):
            raise LoweringError("its decomposition returns several tensors; a node has one output",
                                op=node.op)
        return out

    return trace(body, name=node.op, **{n: i.type for n, i in zip(names, node.inputs)})


def bind_decomposition(node: Node, args: list) -> tuple[Graph, dict[Node, Any]]:
    """The decomposition graph of ``node`` and an env binding its inputs to ``args``."""
    sub = decomposition_graph(node)
    return sub, {sub.inputs[f"x{i}"]: a for i, a in enumerate(args)}
