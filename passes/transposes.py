"""fold_transposes: fewer transposes around matmuls, in one canonical form.

``a^T @ b^T`` (each a swap of the last two axes, used only there) becomes ``(b @ a)^T``: one
transpose instead of two, and the same dot products summed in the same order, so the same
numbers. Chains of transposes are composed by canonicalize. No backend we target has a matmul
that reads transposed operands for free, so transposes are not folded *into* matmul attributes;
the attention op takes K untransposed, which is where a transpose mattered (see fuse_attention).
"""
from __future__ import annotations

from .canonicalize import swap_last_two
from .manager import rule_pass
from .pattern import Pat, transpose
from .predicates import swaps_last_two
from .rewrite import Rule

A_T = transpose(Pat.any("a"), where=swaps_last_two, one_use=True)
B_T = transpose(Pat.any("b"), where=swaps_last_two, one_use=True)

RULES = [
    # a^T @ b^T  ->  (b @ a)^T
    Rule("matmul_of_transposes", A_T @ B_T, lambda m: transposed_product(m)),
]


def transposed_product(m):
    out = swap_last_two(m.t("b") @ m.t("a"))
    return out if out.type == m.root.type else None


FOLD_TRANSPOSES = rule_pass("fold_transposes", RULES, "a^T @ b^T to (b @ a)^T")
