"""The SSA value of the IR: an immutable node ``(op, inputs, attrs, type)`` and the user's source line.

Three source ops hold the leaves: ``input`` and ``param`` (named by their ``name`` attribute) and
``constant`` (an array in its ``value`` attribute). Every other op is a registry op. Nodes live
below ``Graph`` so the graph's views (printer, verifier, JSON) can build and check nodes without
importing the Graph class that calls them.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Iterable, Mapping

import numpy as np

from .errors import SourceLoc
from .registry import get as get_op
from .types import TensorType

SOURCE_OPS = ("input", "param", "constant")


class Node:
    """One SSA value. Immutable after construction; identity is the node object itself.

    A node hashes by identity, so ``dict[Node, value]`` is the environment every walker uses: the
    dict keeps its keys alive, so (unlike an integer id) a key can never be reused by another node.
    """

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
    seen: set[Node] = set()
    for root in outputs:
        stack = [(root, False)]
        while stack:
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if node in seen:
                continue
            seen.add(node)
            stack.append((node, True))
            for inp in reversed(node.inputs):
                if inp not in seen:
                    stack.append((inp, False))
    return order


def constant_value(node: Node) -> np.ndarray | None:
    return node.attrs["value"] if node.op == "constant" else None


__all__ = ["Node", "SOURCE_OPS", "topo_sort", "constant_value"]
