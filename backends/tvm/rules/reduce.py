"""TVM rows for graphdsl/ops/reduce.py: sum, mean, max, min, argmax and cumsum.

Relax's reductions, made to follow NumPy at the edges: max and min of a slice holding a NaN are
NaN, of an empty slice the reduction's identity (docs/semantics.md), and argmax is the first NaN's index when there is one (TVM's max/min combiner
``a > b ? a : b`` skips a NaN). A sum over the batch axes of a matmul used nowhere else is folded
into that matmul (linalg.te_matmul).
"""
from __future__ import annotations

from tvm import te, tirx, topi
from tvm.relax import op as R

from graphdsl.ops.reduce import empty_extremum

from ..table import TVM
from .common import axes_list, cast, isnan, scalar, upcast
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
            has_nan = R.greater(R.max(R.astype(isnan(src), "int32"), axis, keep), scalar(0, "int32"))
            out = R.where(has_nan, scalar(float("nan"), node.inputs[0].type.dtype.name), out)
        return cx.emit(cast(out, node.type.dtype.name))
    return row


def _extremum(fn, name: str):
    """max / min: NaN wins (above), a bool tensor reduces as int8 (LLVM has no i1 max), and an
    empty slice gives the reduction's identity (graphdsl.ops.reduce.empty_extremum): TVM leaves
    such an output unwritten."""
    nan_row = _reduction(fn, nan_wins=True)

    def row(cx, node, x):
        xt = node.inputs[0].type
        if xt.rank == 0:
            return x
        dt = xt.dtype.name
        if dt == "bool":
            out = cx.emit(R.astype(fn(R.astype(x, "int8"), axes_list(node.attrs["axis"]), node.attrs["keepdims"]),
                                   "bool"))
        else:
            out = nan_row(cx, node, x)
        reduced = [xt.shape[a] for a in (node.attrs["axis"] or range(xt.rank))]
        if all(isinstance(d, int) and d > 0 for d in reduced):
            return out
        identity = empty_extremum(name, xt.dtype.np)
        return cx.te(_empty_is_identity, out, x, [cx.dim(d) for d in reduced], identity, name=f"{name}_empty")
    return row


def _empty_is_identity(out: te.Tensor, src: te.Tensor, reduced: list, identity) -> te.Tensor:
    """``out`` where the reduced slice has elements, else ``identity`` (``src`` is there for the
    sizes of its symbolic dims)."""
    count = tirx.const(1, "int64")
    for d in reduced:
        count = count * (tirx.const(d, "int64") if isinstance(d, int) else d)
    value = tirx.const(identity, out.dtype)
    return te.compute(out.shape, lambda *i: tirx.Select(count == 0, value, out(*i)), name="extremum")


_plain_sum = _reduction(R.sum)
TVM.register("mean", _reduction(R.mean, widen=True))
TVM.register("max", _extremum(R.max, "max"))
TVM.register("min", _extremum(R.min, "min"))


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
        nan = R.astype(isnan(x), "int32")
        out = R.where(R.greater(R.max(nan, ax, keep), scalar(0, "int32")), R.argmax(nan, ax, keep), out)
    return cx.emit(cast(out, "int64"))


@TVM.register("cumsum")
def cumsum(cx, node, x):
    """TVM's scan kernel (topi.cumsum: TVM 0.27 has no legalization for Relax's cumsum), in float32
    for a narrow float as the reference; reverse as the cumsum of the flipped tensor, flipped back."""
    a = node.attrs
    dt = node.type.dtype.name
    src = upcast(x) if dt in ("float16", "bfloat16") else x
    if a["reverse"]:
        src = R.flip(src, a["axis"])
    out = cx.te(topi.cumsum, src, a["axis"], None, a["exclusive"], name="cumsum")
    if a["reverse"]:
        out = R.flip(out, a["axis"])
    return cx.emit(cast(out, dt))
