"""fold_masks: every attention mask becomes one additive bias with an explicit fill value.

Between the scores ``s`` (a scaled matmul) and the softmax, users write a chain of mask steps:
``s + bias`` (``(1 - m) * c`` padding biases), ``where(keep, s, c)`` (boolean masks, the causal
mask), ``where(hide, c, s)`` (``s.masked_fill(hide, c)``). The chain ``f`` is folded into
``s + f(0)``: the steps applied to a zero score, so the bias is computed once from the masks alone
(and shared by every layer once CSE has merged the copies). A ``where`` fill ``c`` is a mask fill
when ``c <= MASK_FILL_MAX`` (``-1e4``, ``finfo.min`` or ``-inf``); the bias uses ``-inf`` where the
user wrote ``-inf``, and the dtype's minimum for every finite fill. mask_analysis.py reads the
chain (and the causal masks fuse_attention turns into its flag).

Why this is exact (for float32/float64 scores) -- see docs/passes.md for the whole argument:
``s + where(m, b, MIN) == where(m, s + b, MIN)`` element for element, because ``s + MIN``
rounds to ``MIN`` for any |s| < 1e31; and ``s + (-inf) == -inf``. So rows with at least one
visible key give the same probabilities (masked weights underflow to exactly 0 either way), a
fully masked row is uniform before and after with a finite fill, and all zeros before and after
with ``-inf``. Upgrading a fill such as -1e4 to ``MIN`` keeps both properties.
"""
from __future__ import annotations

import math

from graphdsl import ops
from graphdsl.tracing import Tensor

from .manager import rule_pass
from .mask_analysis import build_bias, mask_fill, split_chain
from .pattern import Pat, cast, exactly, scalar_value, softmax
from .predicates import is_bool
from .rewrite import Rule, constant

RULES = [
    # softmax(f(s)), f a chain of mask steps  ->  softmax(s + f(0))
    Rule("fold_mask_chain", softmax(Pat.any("s")), lambda m: folded_chain(m)),
    # (1 - cast(m)) * c, m boolean, c a finite mask fill  ->  where(m, 0, c)
    Rule("bool_mask_bias", (exactly(1.0) - cast(Pat.any("mask", where=is_bool))) * Pat.const("c"),
         lambda m: bool_mask_bias(m)),
]


def folded_chain(m):
    chain = split_chain(m["s"])
    adds = len(chain.steps) - chain.masks
    if chain.masks == 0 and adds < 2:
        return None
    if not m.contained(chain.nodes):
        return None
    s = Tensor(chain.scores) + build_bias(chain.steps, chain.scores.type.dtype)
    if s.type != m["s"].type:
        return None
    m.note("masks", chain.masks)
    return ops.softmax(s, axis=m.root.attrs["axis"])


def bool_mask_bias(m):
    c = scalar_value(m["c"])
    if math.isinf(c) or mask_fill(m["c"]) is None or not m.contained():
        return None
    dtype = m.root.type.dtype
    out = ops.where(m.t("mask"), constant(0.0, dtype), constant(c, dtype))
    return out if out.type == m.root.type else None


FOLD_MASKS = rule_pass("fold_masks", RULES, "mask chains before a softmax to one additive bias")
