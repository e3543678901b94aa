"""Lowering of the fused ``attention`` op (graphdsl/ops/attention.py).

    out = dropout(softmax(scale * q @ k^T + bias, causal-masked)) @ v

computed in f32 (f64 for f64 inputs) like the reference, with our safe softmax (fully masked rows
give zeros) and our dropout kernel drawing the reference's mask over the full [..., Sq, Sk] shape.

On llvm, when q, k and v share their leading axes and the head dims are static, the op is
instead one fused kernel (kernels/attention.py) that never stores the probabilities in main
memory (nor, with dropout, the keep mask: it redraws it from each element's index), scheduled
here and marked opaque so fusion leaves it whole and the schedule pass leaves it as it is. On
cuda (and on llvm with ``gpu_kernels_on_cpu``) the op is our FlashAttention kernel instead
(rules/flash.py).
"""
from __future__ import annotations

from tvm.relax import op as R

from graphdsl.types import broadcast_shapes

from ..kernels import random as RNG
from ..kernels.attention import RULE, causal_mask, fused_attention, schedule_fused_attention
from . import flash
from ._util import acc_dtype, cast, own_kernel, scalar
from .nn import safe_softmax


def _fusable(cx, node) -> bool:
    qt, kt, vt = (n.type for n in node.inputs[:3])
    return (cx.target_kind == "llvm" and qt.rank >= 3
            and qt.shape[:-2] == kt.shape[:-2] == vt.shape[:-2]
            and isinstance(qt.shape[-1], int) and isinstance(vt.shape[-1], int))  # vectorized head dims


def _fused(cx, node, q, k, v, *rest):
    """One call of our fused kernel (inputs q, k, v, [bias], [seed]), with its CPU schedule."""
    a, dt = node.attrs, node.type.dtype.name
    out = cx.te(fused_attention, q, k, v, *rest, scale=a["scale"], causal=a["causal"],
                dropout_p=a["dropout_p"], salt=a["salt"], acc=acc_dtype(dt), out_dtype=dt,
                name="fused_attention")
    return own_kernel(cx, out, RULE, schedule_fused_attention)


def _attention(cx, node, q, k, v, *rest):
    a = node.attrs
    if flash.applies(cx, node):
        return flash.attention(cx, node, q, k, v, *rest)
    if _fusable(cx, node):
        return _fused(cx, node, q, k, v, *rest)
    bias = rest[0] if a["has_bias"] else None
    seed = rest[-1] if a["dropout_p"] > 0 else None
    qt, kt, vt = (n.type for n in node.inputs[:3])
    dt = node.type.dtype.name
    acc = acc_dtype(dt)
    qf, kf, vf = (cast(x, acc) for x in (q, k, v))
    perm = list(range(kt.rank - 2)) + [kt.rank - 1, kt.rank - 2]
    s = R.multiply(R.matmul(qf, R.permute_dims(kf, perm)), scalar(a["scale"], acc))
    if bias is not None:
        s = R.add(s, cast(bias, acc))
    s = cx.emit(s)
    if a["causal"]:
        s = cx.te(causal_mask, s, cx.dim(kt.shape[-2] - qt.shape[-2]))
    p = cx.emit(safe_softmax(s, -1))
    full = tuple(broadcast_shapes(qt.shape[:-2], kt.shape[:-2], vt.shape[:-2])) + (qt.shape[-2], kt.shape[-2])
    lead = [qt.shape[:-2], kt.shape[:-2]] + ([node.inputs[3].type.shape[:-2]] if bias is not None else [])
    s_shape = tuple(broadcast_shapes(*lead)) + (qt.shape[-2], kt.shape[-2])
    if s_shape != full:
        p = cx.emit(R.broadcast_to(p, cx.shape(full)))
    if seed is not None:
        p = cx.te(RNG.dropout, p, seed, a["dropout_p"], a["salt"], acc)
    return cx.emit(cast(R.matmul(p, vf), dt))


RULES = {"attention": _attention}
