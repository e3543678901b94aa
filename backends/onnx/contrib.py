"""Optional lowerings to ONNX Runtime's com.microsoft contrib ops (``export(contrib_ops=True)``).

Only where the contrib op's layout fits; a lowering returns None to decline, and the node is then
lowered to standard ONNX ops. Only a fused ``attention`` op becomes MultiHeadAttention (run
``passes.optimize`` first to fuse textbook attention; ``optimize_file`` does both). It does when
q, k and v are [batch, heads, seq, head_dim] with the same batch and heads, there is no dropout,
and a causal mask is square (Sq == Sk, where ORT's top-left and our bottom-right alignment agree).
A bias that broadcasts to the scores (``[batch, 1, 1, Sk]`` padding, ``[Sq, Sk]``) is expanded to
ORT's ``attention_bias`` layout ``[batch or 1, heads or 1, Sq, Sk]``. Rows whose scores are all
``-inf`` follow ORT's convention there, not ours; with a finite fill (``finfo.min``, as
fold_masks writes it) both give the mean of v.
"""
from __future__ import annotations

from .emitter import Emitter
from .lower_math import narrow, widen


def _bias_4d(em: Emitter, bias: str, shape, batch, heads, sq, sk) -> str | None:
    """``bias`` (which broadcasts to [batch, heads, sq, sk]) as [batch or 1, heads or 1, sq, sk]."""
    if len(shape) > 4:
        return None
    full = (1,) * (4 - len(shape)) + tuple(shape)
    want = (batch if full[0] != 1 else 1, heads if full[1] != 1 else 1, sq, sk)
    if tuple(shape) == want:
        return bias
    return em.op("Expand", [bias, em.dims(want)], hint="attention_bias")   # Expand also adds axes


def _attention(em: Emitter, node, ins):
    a = node.attrs
    qt, kt, vt = (i.type for i in node.inputs[:3])
    if a["dropout_p"] > 0 or qt.rank != 4 or kt.rank != 4 or vt.rank != 4:
        return None
    if not (qt.shape[:2] == kt.shape[:2] == vt.shape[:2]) or not isinstance(qt.shape[1], int):
        return None
    if a["causal"] and qt.shape[2] != kt.shape[2]:
        return None
    batch, heads, sq, dq = qt.shape
    dv = vt.shape[3]
    bias = None
    if a["has_bias"]:
        bias = _bias_4d(em, widen(em, ins[3]), node.inputs[3].type.shape, batch, heads, sq, kt.shape[2])
        if bias is None:
            return None
    q, k, v = (widen(em, i) for i in ins[:3])
    q_bsd = em.op("Reshape", [em.op("Transpose", [q], perm=[0, 2, 1, 3]),
                              em.dims((batch, sq, heads * dq))])
    out = em.op("MultiHeadAttention", [q_bsd, k, v, None, None, bias], domain="com.microsoft",
                num_heads=heads, scale=a["scale"], unidirectional=int(a["causal"]),
                dtype=em.dtypes[q], hint="mha")
    out = em.op("Transpose", [em.op("Reshape", [out, em.dims((batch, sq, heads, dv))])], perm=[0, 2, 1, 3])
    return narrow(em, out, node.type.dtype)


CONTRIB = {"attention": _attention}
