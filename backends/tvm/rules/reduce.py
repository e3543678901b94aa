"""TVM rows for graphdsl/ops/reduce.py: sum, mean, max, min and argmax.

Relax's reductions, made to follow NumPy at the edges: max and min of a slice holding a NaN are
NaN, and argmax is the first NaN's index when there is one (TVM's max/min combiner
``a > b ? a : b`` skips a NaN). A sum over the batch axes of a matmul used nowhere else is folded
into that matmul (linalg.te_matmul).
"""
from __future__ import annotations

from tvm.relax import op as R

from ..table import TVM
from .common import axes_list, cast, scalar, upcast
from .linalg import operand, te_matmul


def _reduction(fn, widen=False, nan_wins=False):
    """A Relax reduction's row; with ``nan_wins`` (max, min) a slice holding a NaN reduces to NaN."""
    def row(cx, node, x):
        axis, keep = axes_list(node.attrs["axis"]), node.attrs["keepdims"]
        if node.inputs[0].type.rank == 0:
            return x
        src = upcast(x) if widen else x
        out = fn(src, axis, keep)
        if nan_wins and node.inputs[0].type.dtype.is_float and not widen:
            has_nan = R.greater(R.max(R.astype(R.isnan(src), "int32"), axis, keep), scalar(0, "int32"))
            out = R.where(has_nan, scalar(float("nan"), node.inputs[0].type.dtype.name), out)
        return cx.emit(cast(out, node.type.dtype.name))
    return row


_plain_sum = _reduction(R.sum)
TVM.register("mean", _reduction(R.mean, widen=True))
TVM.register("max", _reduction(R.max, nan_wins=True))
TVM.register("min", _reduction(R.min, nan_wins=True))


@TVM.register("sum")
def sum_(cx, node, x):
    """A sum over batch axes of a matmul used nowhere else (a weight gradient, from sum_to) is
    one matmul contracting those axes too: no batch of products in memory, no separate sum."""
    src, axis = node.inputs[0], node.attrs["axis"]
    if (src.op == "matmul" and axis is not None and all(ax < src.type.rank - 2 for ax in axis)
            and cx.only_used_by(src, node)):
        (va, ta), (vb, tb) = operand(cx, src.inputs[0]), operand(cx, src.inputs[1])
        return te_matmul(cx, src, va, ta, vb, tb, summed=axis, keepdims=node.attrs["keepdims"])
    return _plain_sum(cx, node, x)


@TVM.register("argmax")
def argmax(cx, node, x):
    """NumPy's argmax: the index of the first maximum, or of the first NaN when there is one."""
    axis = node.attrs["axis"]
    ax, keep = (None if axis is None else axis[0]), node.attrs["keepdims"]
    out = R.argmax(x, ax, keep)
    if node.inputs[0].type.dtype.is_float:
        nan = R.astype(R.isnan(x), "int32")
        out = R.where(R.greater(R.max(nan, ax, keep), scalar(0, "int32")), R.argmax(nan, ax, keep), out)
    return cx.emit(cast(out, "int64"))
