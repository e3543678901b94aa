"""fuse_attention: textbook attention becomes one ``attention`` op.

The root is ``probs @ v``; ``PROBS`` below matches the softmax (on the last axis) with its
optional casts, NaN guard and dropout. The rest varies too much for one tree, so the rewrite
reads it with small helpers:

* the softmax input is split by ``mask_analysis.split_chain`` into the scores and the mask steps, which
  become one additive bias (a causal mask becomes the ``causal`` flag where that is exact);
* the scores are ``qk``, ``qk * c`` or ``qk / c`` (any scalar factors, also non-constant ones);
* ``qk = q' @ kt``: scalar factors on ``q'`` or on ``kt`` (also before the head split, through
  reshapes and transposes, when those are used only here) join the scale; ``kt`` is ``k``
  transposed (``transpose``/``permute``: the fused op reads ``k``) or any tensor, which is then
  transposed back;
* the NaN guard ``where(p != p, 0, p)`` that torch's exporters put after the softmax (so that
  ONNX Runtime's NaN for a fully masked row becomes zeros) is dropped: the softmax and the
  attention op already give zeros there; they differ only for scores that hold NaN or +inf;
* so is the guard our own ONNX exporter writes around every softmax (backends/onnx/lower/nn.py),
  ``where(max(x) == -inf, 0, softmax(x))`` or ``where(max(x) != -inf, softmax(x), 0)``: its
  condition holds exactly on rows that are all ``-inf``, where our softmax is 0 already, so it is
  the identity on our softmax for every input (NaN and +inf included) and dropping it is exact;
  its ``max`` must read the softmax's own input, over the softmax's axis with kept dims;
* guards: every node inside the match is used only inside it (an intermediate used elsewhere
  blocks the fusion), the softmax is over the last axis, the fused op's type rule accepts q, k, v
  and the bias (dtypes agree), and the fused op has the type of the node it replaces; with
  dropout, the probabilities have the fused op's full score shape (the same random draw).

It requires canonicalize (k^T written with regrouping reshapes becomes one swap), fuse_softmax (a
written-out softmax) and fold_masks (a ``(1 - m) * c`` bias becomes ``where(m, 0, c)``, which is
how a causal mask written as a float bias becomes the flag). The report's ``attention`` section
(``summary`` below) counts the fused ops, the causal ones and the biases.
"""
from __future__ import annotations

import math

from graphdsl import ops
from graphdsl.errors import GraphDSLError
from graphdsl.graph import Graph, Node
from graphdsl.tracing import Tensor
from graphdsl.types import broadcast_shapes

from . import mask_analysis
from .manager import Section, rule_pass
from .pattern import Pat, cast, dropout, equal, exactly, max_, not_equal, opt, scalar_value, softmax, where
from .predicates import float_cast, on_last_axis, reduces_last_axis, typed_as_input
from .rewrite import Rule

ZERO, NEG_INF = exactly(0.0), Pat.const(value=-math.inf)
# softmax([cast](s)) over the last axis
SM = softmax(opt("cast", Pat.any("s"), name="upcast", where=float_cast), name="softmax", where=on_last_axis)
# where(max(x) == -inf, 0, p) and where(max(x) != -inf, p, 0): our exporter's guard ("guarded" is x)
ROW_MAX = max_(Pat.any("guarded"), name="guard_max", where=reduces_last_axis)
SOFTMAX = (SM
           | where(not_equal(SM, SM), ZERO, SM, name="nan_guard", where=typed_as_input(2))  # torch's NaN guard
           | where(equal(ROW_MAX, NEG_INF), ZERO, SM, name="max_guard", where=typed_as_input(2))
           | where(not_equal(ROW_MAX, NEG_INF), SM, ZERO, name="max_guard", where=typed_as_input(1)))
DROPOUT = dropout(SOFTMAX | cast(SOFTMAX, name="downcast", where=float_cast), Pat.any("seed"), name="dropout")
PROBS = (DROPOUT | cast(DROPOUT, name="downcast", where=float_cast)
         | cast(SOFTMAX, name="downcast", where=float_cast) | SOFTMAX)

RULES = [
    # [dropout]([cast](guarded softmax(mask_chain(scale * q @ k^T)))) @ v  ->  attention(q, k, v, ...)
    Rule("attention", PROBS @ Pat.any("v"), lambda m: fused_attention(m)),
]

_SCALARISH = ("mul", "div")
_VIEWS = ("reshape", "transpose")


def _scalarish(node: Node) -> bool:
    return all(d == 1 for d in node.type.shape)


def _scaling(x: Node):
    """(factor, tensor factor, unscaled input) when ``x`` multiplies or divides by a scalar."""
    if x.op not in _SCALARISH:
        return None
    for i in ((1, 0) if x.op == "mul" else (1,)):
        s, other = x.inputs[i], x.inputs[1 - i]
        if not _scalarish(s) or other.type != x.type:
            continue
        c = scalar_value(s)
        if c is not None and c != 0:
            return (c if x.op == "mul" else 1.0 / c), None, other
        if c is None and x.op == "mul" and s.type.dtype.is_float:
            return 1.0, s, other
    return None


def peel_factors(node: Node, through_views: bool = False):
    """``node == inner * factor * tensors``: (inner, factor, tensors, consumed nodes).

    Peels multiplications and divisions by scalars; with ``through_views`` also scalings under
    reshapes and transposes, whose view chain is then rebuilt on the unscaled tensor.
    """
    factor, tensors, consumed, views = 1.0, [], [], []
    x = node
    while True:
        found = _scaling(x)
        if found is not None:
            c, t, other = found
            factor *= c
            tensors += [t] if t is not None else []
            consumed += views + [x]
            views = []
            x = other
        elif through_views and x.op in _VIEWS:
            views.append(x)
            x = x.inputs[0]
        else:
            break
    if not consumed:
        return node, 1.0, [], []
    inner = Tensor(views[0] if views else x)
    for v in reversed([n for n in consumed if n.op in _VIEWS]):
        inner = (ops.reshape(inner, shape=tuple(v.type.shape)) if v.op == "reshape"
                 else ops.transpose(inner, perm=v.attrs["perm"]))
    return inner.node, factor, tensors, consumed


def untranspose(kt: Node) -> Tensor:
    """``k`` with ``k^T == kt``: undo a last-two-axes swap, or compose one with the transpose."""
    rank = kt.type.rank
    swap = tuple(range(rank - 2)) + (rank - 1, rank - 2)
    if kt.op == "transpose":
        perm = tuple(kt.attrs["perm"][i] for i in swap)
        x = Tensor(kt.inputs[0])
        return x if perm == tuple(range(rank)) else ops.transpose(x, perm=perm)
    return ops.transpose(Tensor(kt), perm=swap)


def _peel_operand(m, node: Node, interior: list):
    """Scalar factors of a matmul operand, when the nodes that carry them are used only here."""
    inner, factor, tensors, consumed = peel_factors(node, through_views=True)
    if consumed and not m.contained(interior + consumed):
        return node, 1.0, []
    return inner, factor, tensors


def fused_attention(m):
    if "guarded" in m and m["guarded"] is not m["softmax"].inputs[0]:
        return None   # the guard tests another tensor than the one the softmax normalizes
    chain = mask_analysis.split_chain(m["s"])
    scores, scale, tensors, scaled = peel_factors(chain.scores)
    interior = chain.nodes + scaled + [scores]
    if scores.op != "matmul" or not m.contained(interior):
        return None
    q0, kt0 = scores.inputs
    q, fq, tq = _peel_operand(m, q0, interior)
    kt, fk, tk = _peel_operand(m, kt0, interior)
    dtype = q0.type.dtype
    bias = mask_analysis.build_bias(chain.steps, dtype) if chain.steps else None
    k = untranspose(kt)
    causal = False
    if bias is not None:
        causal, rest = mask_analysis.strip_causal(bias.node, q.type.shape[-2], k.type.shape[-2])
        bias = Tensor(rest) if rest is not None else None
    qt = Tensor(q)
    for t in tensors + tq + tk:
        qt = qt * Tensor(t)
    drop = m.get("dropout")
    try:
        out = ops.attention(qt, k, m.t("v"), bias, Tensor(drop.inputs[1]) if drop else None,
                            scale=scale * fq * fk, causal=causal,
                            dropout_p=drop.attrs["p"] if drop else 0.0,
                            salt=drop.attrs["salt"] if drop else 0)
    except GraphDSLError:
        return None  # the fused op's type rule rejects these operands (dtypes, shapes)
    if out.type != m.root.type:
        return None
    if drop is not None and _full_scores_shape(out.node) != tuple(drop.type.shape):
        return None
    if causal:
        m.note("causal")
    if chain.masks:
        m.note("masks", chain.masks)
    return out


def _full_scores_shape(att: Node) -> tuple:
    q, k, v = (att.arg(name).type.shape for name in ("q", "k", "v"))
    batch = broadcast_shapes(q[:-2], k[:-2], v[:-2])
    return tuple(batch) + (q[-2], k[-2])


def summary(graph: Graph) -> dict[str, int]:
    """The report's ``attention`` section: fused ops, causal ones, biases, softmax left unfused."""
    atts = [n for n in graph.nodes if n.op == "attention"]
    biases = [n.arg("bias") for n in atts if n.arg("bias") is not None]
    return {"attention_ops": len(atts), "causal": sum(1 for n in atts if n.attrs["causal"]),
            "with_bias": len(biases), "distinct_biases": len(set(biases)),
            "softmax_left": graph.op_counts().get("softmax", 0)}


FUSE_ATTENTION = rule_pass("fuse_attention", RULES, "softmax(scale * q @ k^T + bias) @ v to one attention op",
                           requires=("canonicalize", "fuse_softmax", "fold_masks"),
                           section=Section("attention", summary))
