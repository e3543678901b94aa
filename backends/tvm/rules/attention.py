"""TVM rows for graphdsl/ops/attention.py: ``attention`` and its gradient ``attention_grad``.

Kernel choice is data: each op has three rows, and the first whose predicate holds lowers it.

    priority 20  flash_applies       our FlashAttention kernels (kernels/flash.py): on cuda, and on
                                     llvm with ``gpu_kernels_on_cpu`` (their emulated CPU form)
    priority 10  cpu_fused_applies   our fused llvm kernels (kernels/attention.py, attention_grad.py)
    priority 0   (always)            attention: the generic lowering below; attention_grad: its
                                     decomposition (softmax + matmuls)

Both kinds of fused kernel need q, k, v with the same leading axes and static head dims (flash
also head dims of at most MAX_HEAD_DIM whose tiles fit a block's static shared memory), and
neither computes the gradient w.r.t. the bias. The rows receive the optional inputs by name,
``bias=None, seed=None`` (graphdsl.lowering.call_row); seed is there when dropout_p > 0.

The generic attention computes

    out = dropout(softmax(scale * q @ k^T + bias, causal-masked)) @ v

in f32 (f64 for f64 inputs) like the reference, with our safe softmax (fully masked rows give
zeros) and our dropout kernel drawing the reference's mask over the full [..., Sq, Sk] shape. The
fused CPU kernel never stores the probabilities in main memory (nor, with dropout, the keep mask:
it redraws it from each element's index); it is scheduled here and marked opaque, so fusion leaves
it whole and the schedule pass leaves it as it is.

A training graph holds one attention_grad node per input of an attention (its siblings: the same
inputs and attributes, another ``wrt``), and they share all their work. So the first sibling to be
lowered emits the kernels for all of them, and the others take theirs from ``cx.shared``: on llvm
one fused kernel call computing every gradient the graph takes; with flash the row statistics
kernel (each query row's log-sum-exp and delta), then the dq kernel for the q node and one column
kernel computing dk and dv together for the k and v nodes.
"""
from __future__ import annotations

from tvm.relax import op as R

from graphdsl.types import broadcast_shapes

from ..kernels import flash
from ..kernels import random as RNG
from ..kernels.attention import RULE as FUSED_RULE
from ..kernels.attention import causal_mask, fused_attention, schedule_fused_attention
from ..kernels.attention_grad import RULE as FUSED_GRAD_RULE
from ..kernels.attention_grad import WRT, fused_attention_grad, schedule_fused_attention_grad
from ..table import TVM
from .common import acc_dtype, cast, decomposed, own_kernel, scalar
from .nn import safe_softmax


# -- when the fused kernels apply ------------------------------------------------------------------
def _fusable(node) -> bool:
    """What every fused kernel needs: q, k, v with the same leading axes, static head dims, and
    (attention_grad) a gradient w.r.t. q, k or v."""
    qt, kt, vt = (n.type for n in node.inputs[:3])
    return ((node.op != "attention_grad" or node.attrs["wrt"] in WRT) and qt.rank >= 3
            and qt.shape[:-2] == kt.shape[:-2] == vt.shape[:-2]
            and isinstance(qt.shape[-1], int) and isinstance(vt.shape[-1], int))


def flash_applies(cx, node) -> bool:
    """Whether the FlashAttention kernels take this attention / attention_grad node."""
    if not (cx.target_kind == "cuda" or cx.gpu_kernels_on_cpu) or not _fusable(node):
        return False
    qt, vt = node.inputs[0].type, node.inputs[2].type
    d, dv = qt.shape[-1], vt.shape[-1]
    if not all(0 < x <= flash.MAX_HEAD_DIM for x in (d, dv)):
        return False
    has_bias = node.arg("bias") is not None
    return flash.shared_bytes(d, dv, acc_dtype(qt.dtype.name), has_bias) <= flash.SHARED_LIMIT


def cpu_fused_applies(cx, node) -> bool:
    """Whether our fused llvm kernel takes this attention / attention_grad node."""
    return cx.target_kind == "llvm" and _fusable(node)


def _siblings(node) -> tuple:
    """What the attention_grad nodes of one attention have in common: inputs, attributes but wrt."""
    return (node.op, node.inputs, tuple(sorted((k, a) for k, a in node.attrs.items() if k != "wrt")))


def _wanted(cx, node) -> tuple:
    """The gradients the graph takes of this node's attention: its own ``wrt`` and its siblings',
    in q, k, v order."""
    mine = _siblings(node)
    wrt = {user.attrs["wrt"] for user in cx.users.get(node.inputs[0], []) if _siblings(user) == mine}
    return tuple(w for w in WRT if w in wrt | {node.attrs["wrt"]})


# -- flash (cuda) ----------------------------------------------------------------------------------
def _flash_kernel(cx, fn, *args, name: str, **kwargs):
    """Emit a flash kernel and mark it scheduled: the schedule rules and FuseOps leave it alone."""
    return own_kernel(cx, cx.te(fn, *args, name=name, emulate=cx.target_kind != "cuda", **kwargs), flash.RULE)


def _flash_attrs(node) -> dict:
    a = node.attrs
    return dict(scale=a["scale"], causal=a["causal"], dropout_p=a["dropout_p"], salt=a["salt"],
                acc=acc_dtype(node.inputs[0].type.dtype.name))


def flash_attention(cx, node, q, k, v, bias=None, seed=None):
    """One forward kernel."""
    return _flash_kernel(cx, flash.forward, q, k, v, bias=bias, seed=seed, name="flash_attention",
                         out_dtype=node.type.dtype.name, **_flash_attrs(node))


def flash_attention_grad(cx, node, q, k, v, g, bias=None, seed=None):
    """dq, dk or dv (attr wrt) through the statistics and gradient kernels the siblings share."""
    attrs, key = dict(bias=bias, seed=seed, **_flash_attrs(node)), _siblings(node)

    def row_stats():
        out = _flash_kernel(cx, flash.stats, q, k, v, g, name="flash_attention_stats", **attrs)
        return cx.item(out, 0), cx.item(out, 1)
    lse, delta = cx.shared(("flash.stats", key), row_stats)
    wrt = node.attrs["wrt"]
    if wrt == "q":
        return _flash_kernel(cx, flash.grad_q, q, k, v, g, lse, delta, name="flash_attention_dq", **attrs)
    dkv = cx.shared(("flash.dkv", key), lambda: _flash_kernel(
        cx, flash.grad_kv, q, k, v, g, lse, delta, name="flash_attention_dkv", **attrs))
    return cx.item(dkv, 0 if wrt == "k" else 1)


# -- fused CPU kernels (llvm) ----------------------------------------------------------------------
def cpu_fused_attention(cx, node, q, k, v, bias=None, seed=None):
    """One call of our fused kernel, with its CPU schedule."""
    a, dt = node.attrs, node.type.dtype.name
    out = cx.te(fused_attention, q, k, v, bias=bias, seed=seed, scale=a["scale"], causal=a["causal"],
                dropout_p=a["dropout_p"], salt=a["salt"], acc=acc_dtype(dt), out_dtype=dt,
                name="fused_attention")
    return own_kernel(cx, out, FUSED_RULE, schedule_fused_attention)


def cpu_fused_attention_grad(cx, node, q, k, v, g, bias=None, seed=None):
    """The node's gradient from the one fused kernel call (with its CPU schedule) that computes
    those of all its siblings."""
    a, dt = node.attrs, node.type.dtype.name

    def all_gradients():
        wrt = _wanted(cx, node)
        out = cx.te(fused_attention_grad, q, k, v, g, bias=bias, seed=seed, wrt=wrt, scale=a["scale"],
                    causal=a["causal"], dropout_p=a["dropout_p"], salt=a["salt"], acc=acc_dtype(dt),
                    out_dtype=dt, name="fused_attention_grad")
        own_kernel(cx, out, FUSED_GRAD_RULE, schedule_fused_attention_grad)
        return dict(zip(wrt, [out] if len(wrt) == 1 else [cx.item(out, n) for n in range(len(wrt))]))
    return cx.shared(("fused.grads", _siblings(node)), all_gradients)[a["wrt"]]


# -- generic ---------------------------------------------------------------------------------------
def generic_attention(cx, node, q, k, v, bias=None, seed=None):
    """The math in Relax ops and our causal-mask and dropout kernels."""
    a = node.attrs
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
    lead = [qt.shape[:-2], kt.shape[:-2]] + ([node.arg("bias").type.shape[:-2]] if bias is not None else [])
    s_shape = tuple(broadcast_shapes(*lead)) + (qt.shape[-2], kt.shape[-2])
    if s_shape != full:
        p = cx.emit(R.broadcast_to(p, cx.shape(full)))
    if seed is not None:
        p = cx.te(RNG.dropout, p, seed, a["dropout_p"], a["salt"], acc)
    return cx.emit(cast(R.matmul(p, vf), dt))


TVM.register("attention", flash_attention, when=flash_applies, priority=20)
TVM.register("attention", cpu_fused_attention, when=cpu_fused_applies, priority=10)
TVM.register("attention", generic_attention)

TVM.register("attention_grad", flash_attention_grad, when=flash_applies, priority=20)
TVM.register("attention_grad", cpu_fused_attention_grad, when=cpu_fused_applies, priority=10)
TVM.register("attention_grad", decomposed)
