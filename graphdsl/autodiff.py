"""Reverse-mode autodiff over the graph: ``grad(graph, wrt=...)`` builds a new graph.

The new graph recomputes the forward pass (a ``Replay`` of the graph, its sources pre-bound to the
new graph's), then walks the nodes between the ``wrt`` sources and the loss in reverse order,
calling each op's VJP rule. VJP rules are graph code, so the gradient graph is an ordinary graph:
printable, optimizable, compilable on every backend. Every map is keyed by ``Node``.
"""
from __future__ import annotations

from typing import Iterable

from .errors import GraphError, TypeError_
from .graph import Graph, Node
from .interpreter import Replay
from .registry import get
from .tracing import Builder, Tensor, current_builder, tracing

GRAD_PREFIX = "grad/"


def grad(graph: Graph, wrt: Iterable[str] | None = None, loss: str | None = None,
         *, keep_outputs: bool = True, name: str | None = None) -> Graph:
    """A graph computing ``graph``'s outputs and ``grad/<name>`` for each name in ``wrt``.

    ``wrt`` names inputs or parameters (default: every float parameter); ``loss`` names the scalar
    output to differentiate (default: ``loss`` if present, else the only output).
    """
    loss = _pick_loss(graph, loss)
    loss_node = graph.outputs[loss]
    if loss_node.type.rank != 0 or not loss_node.type.dtype.is_float:
        raise TypeError_(f"the loss {loss!r} must be a float scalar, got {loss_node.type}",
                         hint="reduce it first, e.g. loss.mean()")
    sources = {**graph.inputs, **graph.params}
    if wrt is None:
        wrt = [k for k, n in graph.params.items() if n.type.dtype.is_float]
    wrt = list(wrt)
    for w in wrt:
        if w not in sources:
            raise GraphError(f"grad: {w!r} is not an input or parameter of graph {graph.name!r}",
                             hint=f"parameters: {list(graph.params)[:8]}...")
        if not sources[w].type.dtype.is_float:
            raise TypeError_(f"grad: cannot differentiate with respect to {w!r} of type "
                             f"{sources[w].type}")

    b = Builder()
    with tracing(b):
        fresh = {node: (b.input if node.op == "input" else b.param)(node.attrs["name"], node.type)
                 for node in graph.sources()}   # in declaration order: the new graph keeps it
        forward = Replay(graph)
        forward.run(env=fresh)
        env: dict[Node, Tensor] = forward.env
        grads = _backward(graph, env, loss_node, [sources[w] for w in wrt])

        outputs: dict[str, Node] = {}
        if keep_outputs:
            outputs.update({k: env[v].node for k, v in graph.outputs.items()})
        else:
            outputs[loss] = env[loss_node].node
        for w in wrt:
            g = grads.get(sources[w])
            if g is None:  # the loss does not depend on w
                g = _full_like(env[sources[w]], 0)
            outputs[GRAD_PREFIX + w] = g.node
    return Graph(outputs, name=name or f"{graph.name}_grad", sources=b.sources, meta=graph.meta)


def _pick_loss(graph: Graph, loss: str | None) -> str:
    if loss is not None:
        if loss not in graph.outputs:
            raise GraphError(f"grad: no output named {loss!r}", hint=f"outputs: {list(graph.outputs)}")
        return loss
    if "loss" in graph.outputs:
        return "loss"
    if len(graph.outputs) == 1:
        return next(iter(graph.outputs))
    raise GraphError(f"grad: which output is the loss? outputs: {list(graph.outputs)}",
                     hint="pass loss='name'")


def _full_like(t: Tensor, value) -> Tensor:
    """A tensor like ``t`` filled with ``value`` (the op by name: the ops sit above autodiff)."""
    return get("full")(shape=tuple(t.shape), value=value, dtype=t.dtype)


def _backward(graph: Graph, env: dict[Node, Tensor], loss: Node, wrt: list[Node]) -> dict[Node, Tensor]:
    """Cotangents of the ``wrt`` nodes (keyed by the original node), as tensors in the new graph."""
    # Only nodes on a path from some wrt source to the loss need a cotangent.
    wanted = set(wrt)
    depends: set[Node] = set()
    for node in graph.nodes:
        if node in wanted or any(i in depends for i in node.inputs):
            depends.add(node)
    if loss not in depends:
        return {}
    cot: dict[Node, Tensor] = {loss: _full_like(env[loss], 1)}
    for node in reversed(graph.nodes):
        g = cot.pop(node, None) if node not in wanted else cot.get(node)
        if g is None or node.is_source:
            continue
        op = get(node.op)
        if not op.differentiable:
            continue
        ins = [env[i] for i in node.inputs]
        if op.vjp is None:
            raise GraphError(f"op {node.op!r} has no gradient rule", op=node.op, loc=node.loc)
        builder = current_builder()
        builder.loc_override = node.loc
        try:
            in_grads = op.vjp(g, env[node], *ins, **dict(node.attrs))
        finally:
            builder.loc_override = None
        if len(in_grads) != len(ins):
            raise GraphError(f"vjp of {node.op} returned {len(in_grads)} gradients for {len(ins)} inputs")
        for inp, gi in zip(node.inputs, in_grads):
            if gi is None or inp not in depends or not inp.type.dtype.is_float:
                continue
            if gi.type != inp.type:
                raise GraphError(f"vjp of {node.op} gave {gi.type} for an input of type {inp.type}",
                                 op=node.op, loc=node.loc)
            prev = cot.get(inp)
            if prev is None:
                cot[inp] = gi
                continue
            builder.loc_override = node.loc  # a sum of two uses' gradients is located at the use adding it
            try:
                cot[inp] = prev + gi
            finally:
                builder.loc_override = None
    return {i: cot[i] for i in wanted if i in cot}
