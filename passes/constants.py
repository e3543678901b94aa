"""fold_constants: evaluate, with the ops' own NumPy references, nodes whose inputs are constants.

A node folds when all its inputs are constants (``full`` and ``iota`` have none), its attributes
and type are static, and the result is not an expansion: at most ``EXPAND_LIMIT`` elements, or
no more than its largest constant input. So ``tril(ones) == 0`` folds into one boolean constant,
while ``zeros([4096, 4096])`` stays a ``full`` node instead of 64 MiB inside the graph. The
reference computes the same numbers the backend would, so folding never changes a result.
"""
from __future__ import annotations

import numpy as np

from graphdsl.graph import Node
from graphdsl.registry import get
from graphdsl.types import Dim

from .manager import rule_pass
from .pattern import Pat
from .rewrite import Rule

EXPAND_LIMIT = 1024

RULES = [
    # f(c1, c2, ...) on constants  ->  the constant f's reference computes (unless an expansion)
    Rule("fold", Pat.any(where=lambda n: foldable(n)), lambda m: folded(m.root)),
]


def is_static(value) -> bool:
    if isinstance(value, Dim):
        return False
    if isinstance(value, tuple):
        return all(is_static(v) for v in value)
    return True


def foldable(node: Node) -> bool:
    if node.is_source or not all(i.op == "constant" for i in node.inputs):
        return False
    if not node.type.shape.is_static or not all(is_static(v) for v in node.attrs.values()):
        return False
    size = int(np.prod(tuple(node.type.shape), dtype=np.int64))
    largest = max((i.attrs["value"].size for i in node.inputs), default=0)
    return size <= max(EXPAND_LIMIT, largest) and get(node.op).ref is not None


def folded(node: Node) -> Node | None:
    """The constant ``node`` evaluates to, by its op's NumPy reference."""
    ref = get(node.op).ref
    with np.errstate(all="ignore"):
        value = np.asarray(ref(*[i.attrs["value"] for i in node.inputs], **dict(node.attrs)))
    value = np.ascontiguousarray(value.astype(node.type.dtype.np, copy=False))
    if value.shape != tuple(node.type.shape):
        return None
    return Node("constant", (), {"value": value}, node.type, node.loc)


FOLD_CONSTANTS = rule_pass("fold_constants", RULES, "evaluate nodes whose inputs are all constants")
