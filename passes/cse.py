"""cse and dce: one node per distinct computation, and no node that no output needs.

CSE keys a node by its op, its (already deduplicated) inputs, its attributes and its type;
constants by dtype, shape and bytes. Inputs of commutative ops are keyed in either order. Random
ops are pure functions of their seed and salt (see graphdsl/ops/random.py), so two dropouts with
the same input, seed and salt are the same value and merge too. This is also what makes the
padding-mask bias of a Transformer computed once and shared by every layer.

DCE rebuilds the graph from its outputs; a Graph never holds unreachable nodes, so every pass
gets DCE for free and this pass only makes it explicit (and counts what went).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from graphdsl.graph import Graph, Node
from graphdsl.registry import get

from .manager import register


def _freeze(value):
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (tuple, list)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, float) and value != value:
        return ("nan",)
    return value


def _key(node: Node, inputs: list[Node]):
    """What makes two nodes the same value: op, inputs (as a set for commutative ops), attrs, type."""
    ins = frozenset(inputs) if len(inputs) == 2 and "commutative" in get(node.op).tags else tuple(inputs)
    attrs = tuple(sorted((k, _freeze(v)) for k, v in node.attrs.items()))
    return node.op, ins, attrs, node.type


def cse(graph: Graph) -> tuple[Graph, Counter]:
    seen: dict = {}
    mapping: dict[Node, Node] = {}
    merged = 0
    for node in graph.nodes:
        if node.op in ("input", "param"):
            continue
        inputs = [mapping.get(i, i) for i in node.inputs]
        cur = node if all(a is b for a, b in zip(inputs, node.inputs)) else node.replace(inputs=inputs)
        key = _key(cur, inputs) if node.op != "constant" else ("constant", _freeze(node.attrs["value"]))
        first = seen.setdefault(key, cur)
        if first is not cur:
            merged += 1
        if first is not node:
            mapping[node] = first
    if not mapping:
        return graph, Counter()
    outputs = {k: mapping.get(v, v) for k, v in graph.outputs.items()}
    out = Graph(outputs, name=graph.name, sources=graph.sources(), meta=graph.meta)
    return out, Counter({"merged": merged} if merged else {})


def dce(graph: Graph) -> tuple[Graph, Counter]:
    out = Graph(dict(graph.outputs), name=graph.name, sources=graph.sources(), meta=graph.meta)
    removed = len(graph.nodes) - len(out.nodes)
    return out, Counter({"removed": removed} if removed else {})


CSE = register("cse", cse, "merge nodes that compute the same value")
DCE = register("dce", dce, "drop nodes no output needs")
