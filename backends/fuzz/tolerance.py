"""The fuzzer's tolerances: one table and one formula, stated here and in docs/semantics.md.

A float output ``got`` agrees with the reference ``want`` when, elementwise (NaN matching NaN,
equal infinities matching),

    |got - want| <= sqrt(K) * (ATOL[d] * max(1, M) + RTOL[d] * |want|)

where
  d  the least precise float dtype among the output's ancestors (the output itself included):
     an f32 output computed from bf16 intermediates carries bf16 rounding;
  K  the longest reduction among its ancestors: the reduced length of sum/mean/max/min, the
     softmax/log_softmax/norm axis, a matmul's inner dim, an attention's key count (1 if none);
     rounding errors of a K-term sum grow like sqrt(K) when they are random;
  M  the largest finite magnitude the reference computes at any ancestor: an error of a few
     ulps of a large intermediate survives a later subtraction, so the absolute part scales
     with the largest value that flowed into the output, not with the output's own size.
Integer and bool outputs must be equal. The base values are about four ulps for f16 and bf16;
for f32 and f64 they leave room for the bits docs/semantics.md leaves unspecified (the last bits
of ``exp``/``erf``/``tanh``, summation order). On fuzz runs over a few hundred graphs the worst
agreeing error was 0.18 of its allowance (onnxruntime, f32), so a ratio above 1 is a finding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from graphdsl.graph import Graph
from graphdsl.node import Node, topo_sort

# dtype name -> (ATOL, RTOL): the base tolerances of the formula above
TABLE = {
    "float64": (1e-10, 1e-9),
    "float32": (2e-5, 1e-4),
    "float16": (4e-3, 8e-3),
    "bfloat16": (3e-2, 6e-2),
}
PRECISION = ["float64", "float32", "float16", "bfloat16"]     # most to least precise


@dataclass(frozen=True)
class Tolerance:
    dtype: str
    reduction: int
    magnitude: float

    @property
    def atol(self) -> float:
        return math.sqrt(self.reduction) * TABLE[self.dtype][0] * max(1.0, self.magnitude)

    @property
    def rtol(self) -> float:
        return math.sqrt(self.reduction) * TABLE[self.dtype][1]

    def to_dict(self) -> dict:
        return {"dtype": self.dtype, "reduction": self.reduction, "magnitude": self.magnitude,
                "atol": self.atol, "rtol": self.rtol}


def reduction_length(node: Node, shapes: dict | None = None) -> int:
    """How many terms one output element of ``node`` combines (1 for elementwise ops); a
    symbolic dim counts at its size in ``shapes`` (node -> the shape the reference computed)."""
    if node.is_source or not node.inputs:
        return 1
    shapes = shapes or {}
    x = shapes.get(node.inputs[0], node.inputs[0].type.shape)
    static = lambda d: d if isinstance(d, int) else 1   # noqa: E731  (symbolic, size unknown: 1)
    if node.op in ("sum", "mean", "max", "min"):
        axes = node.attrs.get("axis")
        axes = range(len(x)) if axes is None else axes
        return max(1, int(np.prod([static(x[a]) for a in axes])))
    if node.op in ("softmax", "log_softmax"):
        return max(1, static(x[node.attrs["axis"]]))
    if node.op in ("layer_norm", "rms_norm", "add_layer_norm") and len(x):
        return max(1, static(x[-1]))
    if node.op == "matmul" and len(x):
        return max(1, static(x[-1]))
    if node.op in ("attention", "attention_grad"):
        k = shapes.get(node.inputs[1], node.inputs[1].type.shape)
        return max(1, static(k[-2]) * static(k[-1]))
    return 1


def tolerance_for(graph: Graph, node: Node, magnitudes: dict[Node, float],
                  shapes: dict | None = None) -> Tolerance:
    """The tolerance of output ``node`` of ``graph`` (``magnitudes``: the reference's max |value|
    per node; ``shapes``: its shapes, for reductions over symbolic dims)."""
    cone = topo_sort([node])
    floats = [n.type.dtype.name for n in cone if n.type.dtype.is_float and n.type.dtype.name in TABLE]
    dtype = max(floats, key=PRECISION.index) if floats else "float32"
    k = max(reduction_length(n, shapes) for n in cone)
    m = max((magnitudes.get(n, 0.0) for n in cone), default=0.0)
    return Tolerance(dtype, k, float(m))


def magnitude(value) -> float:
    """The largest finite |value| (0 for an empty or all-non-finite array, and for non-floats)."""
    a = np.asarray(value)
    if a.dtype.kind not in "fcV" and a.dtype.name != "bfloat16":
        return 0.0
    a = a.astype(np.float64)
    finite = a[np.isfinite(a)]
    return float(np.max(np.abs(finite))) if finite.size else 0.0


def disagreement(got, want, tol: Tolerance | None) -> float | None:
    """None when ``got`` agrees with ``want``; else the largest error divided by its allowance
    (>1; ``inf`` for a shape, dtype, NaN or integer mismatch)."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape or got.dtype != want.dtype:
        return math.inf
    if tol is None or want.dtype.kind in "biu":
        return None if np.array_equal(got, want) else math.inf
    g, w = got.astype(np.float64), want.astype(np.float64)
    equal = (g == w) | (np.isnan(g) & np.isnan(w))
    with np.errstate(invalid="ignore", over="ignore"):     # inf - inf, where only one side is inf
        err = np.where(equal, 0.0, np.abs(g - w))
        allowed = tol.atol + tol.rtol * np.abs(np.where(np.isfinite(w), w, 0.0))
        ratio = np.where(equal, 0.0, np.nan_to_num(err, nan=np.inf) / allowed)
    worst = float(np.max(ratio, initial=0.0))
    return None if worst <= 1.0 else worst
