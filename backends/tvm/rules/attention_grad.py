"""Lowering of ``attention_grad`` (graphdsl/ops/attention.py), the gradient of attention w.r.t. q,
k or v: on llvm our fused CPU kernel (kernels/attention_grad.py), on cuda the FlashAttention
kernels (rules/flash.py), else the op's decomposition (softmax + matmuls).

A training graph holds one attention_grad node per input of an attention, and the three share
all their work (the recomputed probabilities, dp and ds). So the first of them to be lowered
emits one kernel call computing the gradients of all of them (the nodes with the same inputs
and attributes but another ``wrt``), and the others take theirs from ``cx.memo``.
With dropout the kernel redraws the forward's keep mask from each element's index (the node's
inputs are then q, k, v, [bias], seed, g). ``wrt="bias"``, broadcast leading axes and symbolic
head dims take the decomposition.
"""
from __future__ import annotations

from ..kernels.attention_grad import RULE, WRT, fused_attention_grad, schedule_fused_attention_grad
from . import flash
from ._util import acc_dtype, own_kernel


def _fusable(node) -> bool:
    """What every fused kernel needs: q, k, v with the same leading axes, static head dims."""
    qt, kt, vt = (n.type for n in node.inputs[:3])
    return (node.attrs["wrt"] in WRT and qt.rank >= 3
            and qt.shape[:-2] == kt.shape[:-2] == vt.shape[:-2]
            and isinstance(qt.shape[-1], int) and isinstance(vt.shape[-1], int))


def _wanted(cx, node) -> tuple:
    """The gradients the graph takes of this node's attention: its own ``wrt`` and those of the
    attention_grad nodes with the same inputs and attributes (its siblings), in q, k, v order."""
    attrs = {k: a for k, a in node.attrs.items() if k != "wrt"}
    wrt = {node.attrs["wrt"]}
    for user in cx.users.get(id(node.inputs[0]), []):
        if (user.op == node.op and len(user.inputs) == len(node.inputs)
                and all(a is b for a, b in zip(user.inputs, node.inputs))
                and {k: a for k, a in user.attrs.items() if k != "wrt"} == attrs):
            wrt.add(user.attrs["wrt"])
    return tuple(w for w in WRT if w in wrt)


def _fused_cpu(cx, node, q, k, v, *rest):
    """The node's gradient from our fused llvm kernel, emitted (with its CPU schedule) for the first
    of the siblings and shared through ``cx.memo``."""
    a, dt = node.attrs, node.type.dtype.name
    key = (RULE, *(id(x) for x in (q, k, v, *rest)), a["scale"], a["causal"], a["dropout_p"], a["salt"])
    if key not in cx.memo:
        wrt = _wanted(cx, node)
        out = cx.te(fused_attention_grad, q, k, v, *rest, wrt=wrt, scale=a["scale"], causal=a["causal"],
                    dropout_p=a["dropout_p"], salt=a["salt"], acc=acc_dtype(dt), out_dtype=dt,
                    name="fused_attention_grad")
        own_kernel(cx, out, RULE, schedule_fused_attention_grad)
        grads = [out] if len(wrt) == 1 else [cx.item(out, n) for n in range(len(wrt))]
        cx.memo[key] = dict(zip(wrt, grads))
    return cx.memo[key][a["wrt"]]


def _attention_grad(cx, node, *args):
    if flash.applies(cx, node):   # cuda (and llvm with gpu_kernels_on_cpu): the GPU's kernels
        return flash.attention_grad(cx, node, *args)
    if cx.target_kind == "llvm" and _fusable(node):
        return _fused_cpu(cx, node, *args)
    from ..table import _via_decomposition   # the table imports this module
    return _via_decomposition(cx, node, *args)


RULES = {"attention_grad": _attention_grad}
