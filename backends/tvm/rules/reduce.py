"""TVM rows for graphdsl/ops/reduce.py: sum, mean, prod, max, min, argmax, topk_indices and cumsum.

Relax's reductions, made to follow NumPy at the edges: max and min of a slice holding a NaN are
NaN, of an empty slice the reduction's identity (docs/semantics.md; prod's is 1), and argmax is the
first NaN's index when there is one (TVM's max/min combiner ``a > b ? a : b`` skips a NaN). A sum
over the batch axes of a matmul used nowhere else is folded into that matmul (linalg.te_matmul).
topk_indices is our own TE kernel (each element's rank in the reference's order), not TVM's topk:
that calls a CPU-only packed sort whose comparator is no order at all once a NaN is present.
"""
from __future__ import annotations

from tvm import te, tirx, topi
from tvm.relax import op as R

from graphdsl.ops.reduce import empty_extremum
from graphdsl.types import Dim

from ...checks import slice_check

from ..table import TVM
from .common import NARROW, axes_list, cast, isnan, scalar, upcast
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
        return _identity_if_empty(cx, node, out, x, empty_extremum(name, xt.dtype.np))
    return row


def _identity_if_empty(cx, node, out, x, identity):
    """``out``, but ``identity`` where the reduced slice is empty (statically or at run time)."""
    xt = node.inputs[0].type
    reduced = [xt.shape[a] for a in (node.attrs["axis"] or range(xt.rank))]
    if all(isinstance(d, int) and d > 0 for d in reduced):
        return out
    return cx.te(_empty_is_identity, out, x, [cx.dim(d) for d in reduced], identity, name=f"{node.op}_empty")


def _empty_is_identity(out: te.Tensor, src: te.Tensor, reduced: list, identity) -> te.Tensor:
    """``out`` where the reduced slice has elements, else ``identity`` (``src`` is there for the
    sizes of its symbolic dims)."""
    count = tirx.const(1, "int64")
    for d in reduced:
        count = count * (tirx.const(d, "int64") if isinstance(d, int) else d)
    value = tirx.const(identity, out.dtype)
    return te.compute(out.shape, lambda *i: tirx.Select(count == 0, value, out(*i)), name="identity_if_empty")


_plain_sum = _reduction(R.sum)
TVM.register("mean", _reduction(R.mean, widen=True))
TVM.register("max", _extremum(R.max, "max"))
TVM.register("min", _extremum(R.min, "min"))


@TVM.register("prod")
def prod(cx, node, x):
    """R.prod, in float32 for a narrow float (rounded once, as the reference); an empty slice
    gives 1 (TVM would leave it unwritten); bool is refused by the type rule."""
    if node.inputs[0].type.rank == 0:
        return x
    out = _reduction(R.prod, widen=node.type.dtype.name in NARROW)(cx, node, x)
    return _identity_if_empty(cx, node, out, x, 1)


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


# -- topk_indices ------------------------------------------------------------------------------------
@TVM.register("topk_indices")
def topk_indices(cx, node, x):
    """The reference's order (graphdsl.ops.reduce.topk_np) as a TE kernel: each element's rank is
    the number of elements that come before it, the better value or an equal one at a lower
    index (NaN larger than every number); output position r holds the index whose rank is r.
    O(n^2) comparisons per slice of n elements along the axis, none of them a sort."""
    a = node.attrs
    xt = node.inputs[0].type
    n = xt.shape[a["axis"]]
    if isinstance(n, Dim):   # the type rule checked k <= n for a static n only
        cx.add_slice_check(slice_check(node, n, 0, a["k"]))
    dt = xt.dtype.name
    src = upcast(x) if dt in NARROW else R.astype(x, "int8") if dt == "bool" else x
    return cx.te(_topk_kernel, src, a["k"], a["axis"], a["largest"], a["sorted"], name="topk_indices")


def _replace(index, axis: int, value) -> tuple:
    return tuple(index[:axis]) + (value,) + tuple(index[axis + 1:])


def _comes_before(a, b, ia, ib, largest: bool, is_float: bool):
    """Element ``a`` (at index ``ia``) comes before ``b`` (at ``ib``): a better value, or an equal
    one at a lower index. NaN is larger than every number and equal to NaN; -0.0 equals 0.0."""
    better = a > b if largest else a < b
    same = a == b
    if is_float:
        na, nb = tirx.isnan(a), tirx.isnan(b)
        nan_better = tirx.And(na, tirx.Not(nb)) if largest else tirx.And(nb, tirx.Not(na))
        better = tirx.Or(better, nan_better)
        same = tirx.Or(same, tirx.And(na, nb))
    return tirx.Or(better, tirx.And(same, ia.astype("int64") < ib.astype("int64")))


_ZERO = tirx.const(0, "int64")


def _topk_kernel(x: te.Tensor, k: int, axis: int, largest: bool, sorted_: bool) -> te.Tensor:
    n = x.shape[axis]
    is_float = "float" in str(x.dtype)
    j = te.reduce_axis((0, n), name="j")
    rank = te.compute(x.shape, lambda *i: te.sum(
        _comes_before(x(*_replace(i, axis, j)), x(*i), j, i[axis], largest, is_float).astype("int64"), axis=j),
        name="topk_rank")
    out_shape = _replace(x.shape, axis, k)
    m = te.reduce_axis((0, n), name="m")
    best = te.compute(out_shape, lambda *o: te.sum(
        tirx.Select(rank(*_replace(o, axis, m)) == o[axis].astype("int64"), m.var.astype("int64"), _ZERO),
        axis=m), name="topk_best")
    if sorted_:
        return best
    # sorted=False: the same k indices in increasing order (the rank of each among the k, then placed)
    s = te.reduce_axis((0, k), name="s")
    pos = te.compute(out_shape, lambda *o: te.sum(
        (best(*_replace(o, axis, s)) < best(*o)).astype("int64"), axis=s), name="topk_pos")
    r = te.reduce_axis((0, k), name="r")
    return te.compute(out_shape, lambda *o: te.sum(
        tirx.Select(pos(*_replace(o, axis, r)) == o[axis].astype("int64"), best(*_replace(o, axis, r)), _ZERO),
        axis=r), name="topk_in_order")
