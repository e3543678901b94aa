"""One graph walker for every layer: an environment keyed by ``Node``, with hooks per node kind.

torch.fx's ``Interpreter`` is the model: ``env: dict[Node, value]`` filled in node order, a hook for
each kind of node (``source`` for inputs and parameters, ``constant``, ``call`` for ops), and the
outputs read back by name. The NumPy backend, the TVM lowering, the ONNX exporter, inlining,
autodiff and the rewriter all walk graphs through it, so none keys a dict by a node's integer id
(ids are reused once a node is garbage collected: the env holds its keys alive instead).

``Replay`` is the walk that copies a graph into the one being traced (its values are the new
graph's Tensors): ``inline`` (what ``graph(x=...)`` does inside a trace) and autodiff's forward copy.
``decomposition_graph(node)`` is the op's decomposition traced on the node's input types, as a graph
whose inputs are ``x0, x1, ...``: what a backend lowers when it has no row for the op.

This module sits above tracing (replaying and decomposing both trace), so Graph cannot import it:
it binds ``inline`` into ``graphdsl.graph`` when it loads, as tracing binds itself to the registry.
"""
from __future__ import annotations

import abc
from typing import Any, Callable, Mapping

from .errors import GraphDSLError, GraphError, LoweringError, TypeError_
from .graph import Graph, Node, bind_inliner
from .registry import get
from .tracing import Tensor, as_tensor, current_builder, trace


class Interpreter(abc.ABC):
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

    @abc.abstractmethod
    def call(self, node: Node, args: list) -> Any:
        """An op node's value from its inputs' values: what each walk is for, so every subclass
        says it (the NumPy reference, a Relax expression, an ONNX name, a copied node)."""

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


class Replay(Interpreter):
    """Copy ``graph`` into the graph being traced: the env maps each node to its copy, a Tensor.

    Each op node is rebuilt on its inputs' copies (same op, attributes, type and source line), each
    constant copied; ``source(node)`` gives what an input or parameter becomes: ``bind(node)``, or
    nodes pre-bound in ``run(env=...)``.
    """

    def __init__(self, graph: Graph, bind: Callable[[Node], Tensor] | None = None):
        super().__init__(graph)
        self.bind = bind

    def source(self, node: Node) -> Tensor:
        if self.bind is None:
            raise GraphError(f"replaying graph {self.graph.name!r}: nothing is bound to "
                             f"{node.op} {node.attrs['name']!r}")
        return self.bind(node)

    def constant(self, node: Node) -> Tensor:
        return Tensor(node.replace())

    def call(self, node: Node, args: list) -> Tensor:
        return Tensor(node.replace(inputs=[a.node for a in args]))


def inline(graph: Graph, *args, **bindings) -> dict[str, Tensor]:
    """Copy ``graph``'s nodes into the graph being traced, wiring its inputs/params to ``bindings``.

    Unbound parameters become parameters of the outer graph with the same names (an unbound
    ``seed`` input becomes the outer graph's seed). Returns the inlined outputs by name.
    """
    if args:
        if len(args) != 1 or not isinstance(args[0], Mapping):
            raise GraphError("call a graph with keyword arguments or one mapping of name -> tensor")
        bindings = {**args[0], **bindings}
    builder = current_builder()
    unknown = set(bindings) - set(graph.inputs) - set(graph.params)
    if unknown:
        raise GraphError(f"graph {graph.name!r} has no input or parameter {sorted(unknown)}",
                         hint=f"inputs: {list(graph.inputs)}")

    def bind(node: Node) -> Tensor:
        name = node.attrs["name"]
        if node.op == "param":
            return as_tensor(bindings[name]) if name in bindings else builder.param(name, node.type)
        if name not in bindings:
            if name == "seed":
                return builder.seed()
            raise GraphError(f"missing input {name!r} when inlining graph {graph.name!r}")
        t = as_tensor(bindings[name])
        if t.type != node.type:
            raise TypeError_(f"input {name!r} of graph {graph.name!r} expects {node.type}, got {t.type}")
        return t

    return Replay(graph, bind).run()


def decomposition_graph(node: Node) -> Graph:
    """``node``'s op written with other ops: its ``decompose`` traced on the node's input types.

    The graph's inputs are ``x0, x1, ...`` (the node's inputs in order) and its output ``out``."""
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


bind_inliner(inline)   # graph(x=...) inlines from now on
