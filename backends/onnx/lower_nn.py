"""ONNX lowerings of the fused and nn ops: softmax, norms, counter-based random, attention, losses.

Fused ops become standard ONNX ops (Softmax, LayerNormalization, MatMul, ...). The random ops
hash ``(flat index, seed, salt)`` in uint32 arithmetic (Mul wraps mod 2**32, BitShift, BitwiseXor
from opset 18) exactly as graphdsl/ops/random.py does, so dropout masks match bit for bit.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from graphdsl.ops.attention import _scores_shape
from graphdsl.ops.random import GOLDEN, MIX1, MIX2, keep_threshold
from graphdsl.types import Shape, broadcast_shapes

from .emitter import Emitter
from .lower_math import F32, I64, arange, axes, narrow, reduce, scalar_like, widen
from .table import lowers

U32 = TensorProto.UINT32


# -- softmax -------------------------------------------------------------------------------------
def softmax(em: Emitter, x: str, axis: int, log: bool = False) -> str:
    """Softmax (or log-softmax) whose all -inf rows give zeros (or stay -inf), never NaN; a row
    holding a NaN is NaN (ONNX Runtime's own softmax).

    In a file for users (``export``) the guard is exactly ``where(max(x) == -inf, 0, softmax(x))``,
    the form passes/attention.py fuses on re-import; ReduceMax skips a NaN that is not first, so
    there a row of -inf with such a NaN reads as fully masked. The model the onnxruntime backend
    runs (``em.exact``) also tests the row for NaN, so it follows the reference on every row."""
    out = em.op("LogSoftmax" if log else "Softmax", [x], axis=axis)
    top = reduce(em, "ReduceMax", x, [axis], keepdims=True)
    dead = em.op("Equal", [top, scalar_like(em, -np.inf, x)])
    if em.exact:
        nan = reduce(em, "ReduceMax", em.cast(em.op("IsNaN", [x]), F32), [axis], keepdims=True)
        dead = em.op("And", [dead, em.op("Not", [em.op("Greater", [nan, em.const(np.array(0, np.float32))])])])
    return em.op("Where", [dead, x if log else scalar_like(em, 0, x), out])


@lowers("softmax", "log_softmax")
def _softmax(em, node, ins):
    out = softmax(em, widen(em, ins[0]), node.attrs["axis"], log=node.op == "log_softmax")
    return narrow(em, out, node.type.dtype)


@lowers("layer_norm")
def _layer_norm(em, node, ins):
    x, w, b = (widen(em, i) for i in ins)
    out = em.op("LayerNormalization", [x, w, b], axis=-1, epsilon=node.attrs["eps"], hint="layer_norm")
    return narrow(em, out, node.type.dtype)


@lowers("rms_norm")
def _rms_norm(em, node, ins):
    x, w = (widen(em, i) for i in ins)
    ms = reduce(em, "ReduceMean", em.op("Mul", [x, x]), [-1], keepdims=True)
    rms = em.op("Sqrt", [em.op("Add", [ms, scalar_like(em, node.attrs["eps"], x)])])
    out = em.op("Mul", [em.op("Div", [x, rms]), w], hint="rms_norm")
    return narrow(em, out, node.type.dtype)


# -- counter-based random numbers ----------------------------------------------------------------
def hash_bits(em: Emitter, shape, seed: str, salt: int) -> str:
    """The uint32 hash of every element of ``shape`` (see graphdsl/ops/random.py)."""
    u = lambda v: em.const(np.array(v & 0xFFFFFFFF, np.uint32))  # noqa: E731
    n = Shape(shape).numel()
    index = em.cast(arange(em, n, I64), U32)                     # the flat index mod 2**32
    key = em.op("Add", [em.op("Mul", [em.cast(seed, U32), u(MIX1)]), u(salt * MIX2)])
    x = em.op("BitwiseXor", [em.op("Mul", [index, u(GOLDEN)]), key])

    def xorshift(x, bits):
        return em.op("BitwiseXor", [x, em.op("BitShift", [x, u(bits)], direction="RIGHT")])

    x = em.op("Mul", [xorshift(x, 16), u(MIX1)])
    x = em.op("Mul", [xorshift(x, 13), u(MIX2)])
    x = xorshift(x, 16)
    return em.op("Reshape", [x, em.dims(shape)], hint="hash")


def _top24(em: Emitter, bits: str) -> str:
    return em.op("BitShift", [bits, em.const(np.array(8, np.uint32))], direction="RIGHT")


def keep_mask(em: Emitter, shape, seed: str, p: float, salt: int) -> str:
    """Dropout's keep mask: ``x >> 8 >= keep_threshold(p)``, compared as int64."""
    top = em.cast(_top24(em, hash_bits(em, shape, seed, salt)), I64)
    return em.op("GreaterOrEqual", [top, em.const(np.array(keep_threshold(p), np.int64))])


def apply_dropout(em: Emitter, x: str, shape, seed: str, p: float, salt: int) -> str:
    """``where(keep, x * 1/(1-p), 0)`` in x's dtype."""
    scaled = em.op("Mul", [x, scalar_like(em, 1.0 / (1.0 - p), x)])
    return em.op("Where", [keep_mask(em, shape, seed, p, salt), scaled, scalar_like(em, 0, x)])


@lowers("random_uniform")
def _random_uniform(em, node, ins):
    top = _top24(em, hash_bits(em, node.attrs["shape"], ins[0], node.attrs["salt"]))
    return em.op("Mul", [em.cast(top, F32), em.const(np.array(2.0 ** -24, np.float32))],
                 hint="random_uniform")


@lowers("dropout")
def _dropout(em, node, ins):
    x, seed = ins
    out = apply_dropout(em, widen(em, x), node.type.shape, seed, node.attrs["p"], node.attrs["salt"])
    return narrow(em, out, node.type.dtype)


# -- attention ----------------------------------------------------------------------------------
def causal_mask(em: Emitter, sq, sk) -> str:
    """bool [sq, sk]: True where key j is hidden from query i (j > i + sk - sq)."""
    rows = em.op("Unsqueeze", [arange(em, sq), axes(em, [1])])
    cols = em.op("Unsqueeze", [arange(em, sk), axes(em, [0])])
    return em.op("Greater", [cols, em.op("Add", [rows, em.scalar(sk - sq)])], hint="causal")


@lowers("attention")
def _attention(em, node, ins):
    a = node.attrs
    q, k, v = (widen(em, i) for i in ins[:3])
    qt, kt, vt = (i.type for i in node.inputs[:3])
    rest = ins[3:]
    bias = widen(em, rest[0]) if a["has_bias"] else None
    seed = rest[-1] if a["dropout_p"] > 0 else None
    perm = list(range(kt.rank - 2)) + [kt.rank - 1, kt.rank - 2]
    s = em.op("MatMul", [q, em.op("Transpose", [k], perm=perm)])
    s = em.op("Mul", [s, scalar_like(em, a["scale"], s)])
    if bias is not None:
        s = em.op("Add", [s, bias])
    if a["causal"]:
        hidden = causal_mask(em, qt.shape[-2], kt.shape[-2])
        s = em.op("Where", [hidden, scalar_like(em, -np.inf, s), s])
    p = softmax(em, s, -1)
    full = _scores_shape(qt, kt, vt)
    s_shape = tuple(broadcast_shapes(qt.shape[:-2], kt.shape[:-2])) + (qt.shape[-2], kt.shape[-2])
    if bias is not None:
        s_shape = tuple(broadcast_shapes(s_shape, node.inputs[3].type.shape))
    if s_shape != tuple(full):
        p = em.op("Expand", [p, em.dims(full)])
    if seed is not None:
        p = apply_dropout(em, p, full, seed, a["dropout_p"], a["salt"])
    return narrow(em, em.op("MatMul", [p, v], hint="attention"), node.type.dtype)


# -- losses --------------------------------------------------------------------------------------
def reduce_loss(em: Emitter, loss: str, reduction: str, count: str | None = None) -> str:
    """'none', 'sum', or 'mean' (over ``count`` when given: a 0-d value of loss's dtype)."""
    if reduction == "none":
        return loss
    total = reduce(em, "ReduceSum", loss, None, keepdims=False)
    if reduction == "sum":
        return total
    if count is None:
        return reduce(em, "ReduceMean", loss, None, keepdims=False)
    return em.op("Div", [total, em.op("Max", [count, scalar_like(em, 1, count)])])


def _picked(em: Emitter, logp: str, targets: str, ignore_index: int):
    """(logp at each target, the valid-target mask, the count of valid targets as logp's dtype)."""
    valid = em.op("Not", [em.op("Equal", [targets, scalar_like(em, ignore_index, targets)])])
    safe = em.op("Where", [valid, targets, scalar_like(em, 0, targets)])
    idx = em.op("Unsqueeze", [em.cast(safe, I64), axes(em, [-1])])
    picked = em.op("Squeeze", [em.op("GatherElements", [logp, idx], axis=-1), axes(em, [-1])])
    count = em.cast(reduce(em, "ReduceSum", em.cast(valid, I64), None, keepdims=False), em.dtypes[logp])
    return picked, valid, count


@lowers("cross_entropy")
def _cross_entropy(em, node, ins):
    a = node.attrs
    logp = softmax(em, widen(em, ins[0]), -1, log=True)
    picked, valid, count = _picked(em, logp, ins[1], a["ignore_index"])
    loss = em.op("Mul", [picked, scalar_like(em, -(1.0 - a["label_smoothing"]), logp)])
    if a["label_smoothing"]:
        smooth = reduce(em, "ReduceMean", logp, [-1], keepdims=False)
        loss = em.op("Sub", [loss, em.op("Mul", [smooth, scalar_like(em, a["label_smoothing"], logp)])])
    loss = em.op("Where", [valid, loss, scalar_like(em, 0, loss)])
    return narrow(em, reduce_loss(em, loss, a["reduction"], count), node.type.dtype)


@lowers("nll")
def _nll(em, node, ins):
    a = node.attrs
    picked, valid, count = _picked(em, widen(em, ins[0]), ins[1], a["ignore_index"])
    loss = em.op("Where", [valid, em.op("Neg", [picked]), scalar_like(em, 0, picked)])
    return narrow(em, reduce_loss(em, loss, a["reduction"], count), node.type.dtype)


@lowers("mse")
def _mse(em, node, ins):
    d = em.op("Sub", [widen(em, ins[0]), widen(em, ins[1])])
    loss = em.op("Mul", [d, d])
    return narrow(em, reduce_loss(em, loss, node.attrs["reduction"]), node.type.dtype)


@lowers("margin_ranking")
def _margin_ranking(em, node, ins):
    x1, x2, y = (widen(em, i) for i in ins)
    z = em.op("Add", [em.op("Mul", [em.op("Neg", [y]), em.op("Sub", [x1, x2])]),
                      scalar_like(em, node.attrs["margin"], x1)])
    loss = em.op("Max", [z, scalar_like(em, 0, z)])
    return narrow(em, reduce_loss(em, loss, node.attrs["reduction"]), node.type.dtype)


@lowers("cosine_similarity")
def _cosine_similarity(em, node, ins):
    axis, eps = node.attrs["axis"], node.attrs["eps"]
    shape = broadcast_shapes(node.inputs[0].type.shape, node.inputs[1].type.shape)
    a, b = (em.op("Expand", [widen(em, i), em.dims(shape)]) for i in ins)

    def norm(t):
        length = em.op("Sqrt", [reduce(em, "ReduceSum", em.op("Mul", [t, t]), [axis], keepdims=False)])
        return em.op("Max", [length, scalar_like(em, eps, length)])

    dot = reduce(em, "ReduceSum", em.op("Mul", [a, b]), [axis], keepdims=False)
    out = em.op("Div", [dot, em.op("Mul", [norm(a), norm(b)])], hint="cosine_similarity")
    return narrow(em, out, node.type.dtype)
