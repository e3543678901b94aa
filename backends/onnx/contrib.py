"""Optional lowerings to ONNX Runtime's com.microsoft contrib ops (``export(contrib_ops=True)``).

Only where the contrib op's layout fits; a lowering returns None to decline, and the node is then
lowered to standard ONNX ops. ``attention`` becomes MultiHeadAttention when q, k and v are
[batch, heads, seq, head_dim] with the same batch and heads, there is no dropout, and a causal
mask is square (Sq == Sk, where ORT's top-left and our bottom-right alignment agree). Rows whose
scores are all masked follow ORT's convention there, not ours.
"""
from __future__ import annotations

from .emitter import Emitter
from .lower_math import narrow, widen


def _attention(em: Emitter, node, ins):
    a = node.attrs
    qt, kt, vt = (i.type for i in node.inputs[:3])
    if a["dropout_p"] > 0 or qt.rank != 4 or kt.rank != 4 or vt.rank != 4:
        return None
    if not (qt.shape[:2] == kt.shape[:2] == vt.shape[:2]) or not isinstance(qt.shape[1], int):
        return None
    if a["causal"] and qt.shape[2] != kt.shape[2]:
        return None
    bias = None
    if a["has_bias"]:
        bt = node.inputs[3].type
        if bt.rank != 4 or bt.shape[2:] != (qt.shape[2], kt.shape[2]):
            return None
        bias = widen(em, ins[3])
    batch, heads, sq, dq = qt.shape
    dv = vt.shape[3]
    q, k, v = (widen(em, i) for i in ins[:3])
    q_bsd = em.op("Reshape", [em.op("Transpose", [q], perm=[0, 2, 1, 3]),
                              em.dims((batch, sq, heads * dq))])
    out = em.op("MultiHeadAttention", [q_bsd, k, v, None, None, bias], domain="com.microsoft",
                num_heads=heads, scale=a["scale"], unidirectional=int(a["causal"]),
                dtype=em.dtypes[q], hint="mha")
    out = em.op("Transpose", [em.op("Reshape", [out, em.dims((batch, sq, heads, dv))])], perm=[0, 2, 1, 3])
    return narrow(em, out, node.type.dtype)


CONTRIB = {"attention": _attention}
