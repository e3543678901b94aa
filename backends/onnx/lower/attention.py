"""ONNX rows of the fused attention op (graphdsl/ops/attention.py), kernel choice as data.

Two rows, the first whose ``when`` holds is used:

* ``multi_head_attention`` (priority 10), with ``export(contrib_ops=True)``: ONNX Runtime's
  com.microsoft MultiHeadAttention, where its layout fits. That is when q, k and v are
  [batch, heads, seq, head_dim] with the same batch and heads, there is no dropout, and a causal
  mask is square (Sq == Sk, where ORT's top-left and our bottom-right alignment agree). A bias
  that broadcasts to the scores (``[batch, 1, 1, Sk]`` padding, ``[Sq, Sk]``) is expanded to ORT's
  ``attention_bias`` layout ``[batch or 1, heads or 1, Sq, Sk]``. Rows whose scores are all
  ``-inf`` follow ORT's convention there, not ours; with a finite fill (``finfo.min``, as
  fold_masks writes it) both give the mean of v. Only a fused ``attention`` op gets here: run
  ``passes.optimize`` first to fuse textbook attention (``optimize_file`` does both).
* ``standard_attention`` (always): MatMul, the guarded softmax of nn.py, dropout on the
  probabilities as the ``dropout`` op draws it, MatMul.

``attention_grad`` has no row: its decomposition is lowered.
"""
from __future__ import annotations

import numpy as np

from graphdsl.ops.attention import scores_shape
from graphdsl.types import broadcast_shapes

from ..emitter import Emitter
from ..table import EXPORT
from .common import arange, axes, narrow, scalar_like, widen
from .nn import softmax
from .random import apply_dropout


def causal_mask(em: Emitter, sq, sk) -> str:
    """bool [sq, sk]: True where key j is hidden from query i (j > i + sk - sq)."""
    rows = em.op("Unsqueeze", [arange(em, sq), axes(em, [1])])
    cols = em.op("Unsqueeze", [arange(em, sk), axes(em, [0])])
    return em.op("Greater", [cols, em.op("Add", [rows, em.scalar(sk - sq)])], hint="causal")


def _qkv_types(node):
    return tuple(node.arg(name).type for name in ("q", "k", "v"))


# -- com.microsoft MultiHeadAttention --------------------------------------------------------------
def multi_head_attention_fits(em: Emitter, node) -> bool:
    """Contrib ops were asked for, and the node has the layout MultiHeadAttention takes."""
    if not em.contrib_ops:
        return False
    qt, kt, vt = _qkv_types(node)
    a = node.attrs
    if a["dropout_p"] > 0 or qt.rank != 4 or kt.rank != 4 or vt.rank != 4:
        return False
    if not (qt.shape[:2] == kt.shape[:2] == vt.shape[:2]) or not isinstance(qt.shape[1], int):
        return False
    if a["causal"] and qt.shape[2] != kt.shape[2]:
        return False
    bias = node.arg("bias")
    return bias is None or bias.type.rank <= 4


def _bias_4d(em: Emitter, bias: str, shape, batch, heads, sq, sk) -> str:
    """``bias`` (which broadcasts to [batch, heads, sq, sk]) as [batch or 1, heads or 1, sq, sk]."""
    full = (1,) * (4 - len(shape)) + tuple(shape)
    want = (batch if full[0] != 1 else 1, heads if full[1] != 1 else 1, sq, sk)
    if tuple(shape) == want:
        return bias
    return em.op("Expand", [bias, em.dims(want)], hint="attention_bias")   # Expand also adds axes


@EXPORT.register("attention", when=multi_head_attention_fits, priority=10)
def multi_head_attention(em, node, q, k, v, *, bias=None, seed=None):
    qt, kt, vt = _qkv_types(node)
    batch, heads, sq, dq = qt.shape
    dv = vt.shape[3]
    if bias is not None:
        bias = _bias_4d(em, widen(em, bias), node.arg("bias").type.shape, batch, heads, sq, kt.shape[2])
    q, k, v = (widen(em, i) for i in (q, k, v))
    q_bsd = em.op("Reshape", [em.op("Transpose", [q], perm=[0, 2, 1, 3]),
                              em.dims((batch, sq, heads * dq))])
    a = node.attrs
    out = em.op("MultiHeadAttention", [q_bsd, k, v, None, None, bias], domain="com.microsoft",
                num_heads=heads, scale=a["scale"], unidirectional=int(a["causal"]),
                dtype=em.dtypes[q], hint="mha")
    out = em.op("Transpose", [em.op("Reshape", [out, em.dims((batch, sq, heads, dv))])], perm=[0, 2, 1, 3])
    return narrow(em, out, node.type.dtype)


# -- standard ONNX -----------------------------------------------------------------------------------
@EXPORT.register("attention")
def standard_attention(em, node, q, k, v, *, bias=None, seed=None):
    a = node.attrs
    q, k, v = (widen(em, i) for i in (q, k, v))
    qt, kt, vt = _qkv_types(node)
    if bias is not None:
        bias = widen(em, bias)
    perm = list(range(kt.rank - 2)) + [kt.rank - 1, kt.rank - 2]
    s = em.op("MatMul", [q, em.op("Transpose", [k], perm=perm)])
    s = em.op("Mul", [s, scalar_like(em, a["scale"], s)])
    if bias is not None:
        s = em.op("Add", [s, bias])
    if a["causal"]:
        hidden = causal_mask(em, qt.shape[-2], kt.shape[-2])
        s = em.op("Where", [hidden, scalar_like(em, -np.inf, s), s])
    p = softmax(em, s, -1)
    full = scores_shape(qt, kt, vt)
    s_shape = tuple(broadcast_shapes(qt.shape[:-2], kt.shape[:-2])) + (qt.shape[-2], kt.shape[-2])
    if bias is not None:
        s_shape = tuple(broadcast_shapes(s_shape, node.arg("bias").type.shape))
    if s_shape != tuple(full):
        p = em.op("Expand", [p, em.dims(full)])
    if seed is not None:
        p = apply_dropout(em, p, full, seed, a["dropout_p"], a["salt"])
    return narrow(em, em.op("MatMul", [p, v], hint="attention"), node.type.dtype)
