"""The attention op and its gradients on the GPU: our FlashAttention kernels (kernels/flash.py).

``attention`` becomes one forward kernel. The ``attention_grad`` nodes of one attention (one per
input: q, k, v) share their work: the first one emits the row statistics kernel (each query
row's log-sum-exp and delta), the q node the dq kernel, and the k and v nodes one column kernel
computing dk and dv together; later nodes reuse what an earlier one emitted (``cx.memo``).

They apply on the cuda target, and on llvm when compiled with ``gpu_kernels_on_cpu=True`` (the
kernels' emulated form, to check their numbers without a GPU), to attention (with or without
dropout) whose q, k, v share their leading axes and whose head dims are static, at most MAX_HEAD_DIM, and small
enough for the tiles to fit a block's static shared memory (f64 tiles take twice the room).
Everything else (the bias gradient, broadcast heads) keeps the unfused lowering.
"""
from __future__ import annotations

from ..kernels import flash
from ._util import acc_dtype, own_kernel

def applies(cx, node) -> bool:
    """Whether the flash kernels take this attention / attention_grad node."""
    if not (cx.target_kind == "cuda" or cx.gpu_kernels_on_cpu):
        return False
    if node.op == "attention_grad" and node.attrs["wrt"] == "bias":
        return False
    qt, kt, vt = (n.type for n in node.inputs[:3])
    d, dv = qt.shape[-1], vt.shape[-1]
    if not (qt.rank >= 3 and qt.shape[:-2] == kt.shape[:-2] == vt.shape[:-2]
            and all(isinstance(x, int) and 0 < x <= flash.MAX_HEAD_DIM for x in (d, dv))):
        return False
    acc = acc_dtype(qt.dtype.name)
    return flash.shared_bytes(d, dv, acc, node.attrs["has_bias"]) <= flash.SHARED_LIMIT


def _kernel(cx, fn, *args, name: str, **kwargs):
    """Emit a flash kernel and mark it scheduled: the schedule rules and FuseOps leave it alone."""
    return own_kernel(cx, cx.te(fn, *args, name=name, emulate=cx.target_kind != "cuda", **kwargs), flash.RULE)


def _common(node) -> dict:
    a = node.attrs
    return dict(scale=a["scale"], causal=a["causal"], dropout_p=a["dropout_p"], salt=a["salt"],
                acc=acc_dtype(node.inputs[0].type.dtype.name))


def attention(cx, node, q, k, v, *rest):
    """rest: [bias], [seed]."""
    return _kernel(cx, flash.forward, q, k, v, *rest, name="flash_attention",
                   out_dtype=node.type.dtype.name, **_common(node))


def attention_grad(cx, node, q, k, v, *rest):
    """dq, dk or dv (attr wrt) through the shared statistics and gradient kernels; rest: [bias],
    [seed], g."""
    *extra, g = rest
    common = _common(node)
    key = (id(q), id(k), id(v), id(g), *(id(x) for x in extra), tuple(sorted(common.items())))
    stats = _memo(cx, ("stats", key), lambda: _kernel(
        cx, flash.stats, q, k, v, g, *extra, name="flash_attention_stats", **common))
    lse, delta = (_memo(cx, (f"stats.{i}", key), lambda i=i: cx.item(stats, i))
                  for i in range(2))
    wrt = node.attrs["wrt"]
    if wrt == "q":
        return _kernel(cx, flash.grad_q, q, k, v, g, lse, delta, *extra, name="flash_attention_dq", **common)
    dkv = _memo(cx, ("dkv", key), lambda: _kernel(
        cx, flash.grad_kv, q, k, v, g, lse, delta, *extra, name="flash_attention_dkv", **common))
    return cx.item(dkv, 0 if wrt == "k" else 1)


def _memo(cx, key, make):
    if key not in cx.memo:
        cx.memo[key] = make()
    return cx.memo[key]
