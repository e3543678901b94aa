"""ONNX rows of the nn ops (graphdsl/ops/nn.py): softmax, log_softmax, layer_norm, rms_norm, numel.

They become standard ONNX ops (Softmax, LayerNormalization, ...), computed in float32 for a narrow
float and rounded once, as the references do. ``softmax`` (the guarded form every softmax-like
row uses: attention, the losses) and ``layer_norm`` (shared with the fused ``add_layer_norm``) are
helpers other modules call.
"""
from __future__ import annotations

import numpy as np

from ..emitter import Emitter, onnx_dtype
from ..table import EXPORT
from .common import F32, axes, narrow, reduce, scalar_like, widen


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


@EXPORT.register(("softmax", "log_softmax"))
def _softmax(em, node, x):
    out = softmax(em, widen(em, x), node.attrs["axis"], log=node.op == "log_softmax")
    return narrow(em, out, node.type.dtype)


def layer_norm(em: Emitter, x: str, weight: str, bias: str, eps: float, dtype) -> str:
    """LayerNormalization over the last axis, in float32 for a narrow float, rounded to ``dtype``.
    For float64 it is written out (the reference's two passes): LayerNormalization's epsilon is
    a float32 attribute, and an eps that float32 cannot hold (1e-12) shifted rows whose variance
    is small beside it (the fuzzer found 3e-9)."""
    x, weight, bias = (widen(em, i) for i in (x, weight, bias))
    if dtype.name == "float64":
        mean = reduce(em, "ReduceMean", x, [-1], keepdims=True)
        centered = em.op("Sub", [x, mean])
        var = reduce(em, "ReduceMean", em.op("Mul", [centered, centered]), [-1], keepdims=True)
        std = em.op("Sqrt", [em.op("Add", [var, scalar_like(em, eps, x)])])
        return em.op("Add", [em.op("Mul", [em.op("Div", [centered, std]), weight]), bias], hint="layer_norm")
    out = em.op("LayerNormalization", [x, weight, bias], axis=-1, epsilon=eps, hint="layer_norm")
    return narrow(em, out, dtype)


@EXPORT.register("layer_norm")
def _layer_norm(em, node, x, weight, bias):
    return layer_norm(em, x, weight, bias, node.attrs["eps"], node.type.dtype)


@EXPORT.register("rms_norm")
def _rms_norm(em, node, x, weight):
    x, w = widen(em, x), widen(em, weight)
    ms = reduce(em, "ReduceMean", em.op("Mul", [x, x]), [-1], keepdims=True)
    rms = em.op("Sqrt", [em.op("Add", [ms, scalar_like(em, node.attrs["eps"], x)])])
    out = em.op("Mul", [em.op("Div", [x, rms]), w], hint="rms_norm")
    return narrow(em, out, node.type.dtype)


@EXPORT.register("numel")
def _numel(em, node, x):
    axis, to = node.attrs["axis"], onnx_dtype(node.attrs["dtype"])
    if axis is None:
        return em.cast(em.op("Size", [x]), to)
    sizes = em.op("Gather", [em.op("Shape", [x]), axes(em, axis)], axis=0)
    return em.cast(em.op("ReduceProd", [sizes], keepdims=0, hint="numel"), to)
