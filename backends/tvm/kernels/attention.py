"""TE pieces of the fused attention op: the bottom-right aligned causal mask."""
from __future__ import annotations

from tvm import te, tirx


def causal_mask(scores: te.Tensor, offset) -> te.Tensor:
    """-inf where key j is hidden from query i (j > i + offset, offset = Sk - Sq), else the score."""
    neg_inf = tirx.const(float("-inf"), scores.dtype)

    def f(*i):
        hidden = i[-1].astype("int64") > i[-2].astype("int64") + offset
        return tirx.Select(hidden, neg_inf, scores(*i))
    return te.compute(scores.shape, f, name="causal_mask")
