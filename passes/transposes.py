"""fold_transposes: fewer transposes around matmuls, in one canonical form.

``a^T @ b^T`` (each a swap of the last two axes, used only there) becomes ``(b @ a)^T``: one
transpose instead of two, and the same dot products summed in the same order, so the same
numbers. Chains of transposes are composed by canonicalize. No backend we target has a matmul
that reads transposed operands for free, so transposes are not folded *into* matmul attributes;
the attention op takes K untransposed, which is where a transpose mattered (see fuse_attention).
"""
from __future__ import annotations

from graphdsl import ops
from graphdsl.graph import Node

from .pattern import Pat
from .rewrite import Rule


def swaps_last_two(node: Node) -> bool:
    r = node.type.rank
    return r >= 2 and node.attrs["perm"] == tuple(range(r - 2)) + (r - 1, r - 2)


def swap_last_two(t):
    """Graph code: ``t`` with its last two axes swapped."""
    r = t.ndim
    return ops.transpose(t, perm=tuple(range(r - 2)) + (r - 1, r - 2))


def _fold(m):
    out = swap_last_two(m.t("b") @ m.t("a"))
    return out if out.type == m.root.type else None


_T = dict(where=swaps_last_two, one_use=True)
RULES = [
    Rule("matmul_of_transposes", Pat("matmul", Pat("transpose", Pat.any("a"), **_T),
                                     Pat("transpose", Pat.any("b"), **_T)), _fold),
]
