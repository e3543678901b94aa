"""Lowering rules for matmul, shape, reduction, creation and indexing ops.

Relax ops where Relax has the exact semantics; our TE kernels (kernels/) where it does not: the
slices (any step, symbolic starts), take/gather with clipped reads, the scatter-adds, one_hot, iota.
Every op that reads at data-dependent indices also returns the indices' min and max as a run-time
check, so an out-of-range index raises the same error as on the NumPy backend.
"""
from __future__ import annotations

from tvm import relax
from tvm.relax import op as R

from graphdsl.types import Dim, Shape, broadcast_shapes

from ..checks import index_check, range_check, slice_check_for
from ..kernels import indexing as K
from ..kernels.linalg import matmul as matmul_kernel
from ..kernels.scatter import scatter_add_3d
from ._util import axes_list, cast, scalar, upcast


# -- run-time checks -------------------------------------------------------------------------------
def check_range(cx, node, indices: relax.Expr, size, axis: int, kind: str = "index",
                ignore_index: int | None = None) -> None:
    """After each call, raise the reference's error when an index falls outside [0, size)."""
    _add_range_check(cx, indices, range_check(node, axis, size, kind, ignore_index))


def _check_indices(cx, node, indices: relax.Expr) -> None:
    """The run-time check of ``node``'s indices that checks.index_check describes."""
    _add_range_check(cx, indices, index_check(node)[1])


def _add_range_check(cx, indices: relax.Expr, check) -> None:
    """Return the indices' [min, max] as an extra output. For empty indices it is garbage (a TVM
    reduction initialises in its first iteration), which the check knows from its ``count``."""
    i64 = cast(indices, "int64")
    lo_hi = R.concat([R.reshape(R.min(i64), [1]), R.reshape(R.max(i64), [1])], axis=0)
    cx.add_check(cx.emit(lo_hi), check)


def _check_slice(cx, node) -> None:
    """A slice typed on a symbolic dim assumed the dim was large enough: check it per call."""
    check = slice_check_for(node)
    if check is not None:
        cx.add_slice_check(check)


# -- linear algebra, shapes, reductions --------------------------------------------------------------
def _matmul(cx, node, a, b):
    """A plain Relax matmul, or our TE matmul when an operand is ``x.mT``, read without the copy."""
    (va, ta), (vb, tb) = _operand(cx, node.inputs[0]), _operand(cx, node.inputs[1])
    if not (ta or tb):
        return cx.emit(R.matmul(a, b))
    return _te_matmul(cx, node, va, ta, vb, tb)


def _operand(cx, node):
    """(value, stored transposed?) of a matmul operand, looking through a last-two-axes transpose."""
    perm = node.attrs.get("perm") if node.op == "transpose" else None
    r = node.type.rank
    if perm is not None and r >= 2 and tuple(perm) == tuple(range(r - 2)) + (r - 1, r - 2):
        return cx.value(node.inputs[0]), True
    return cx.value(node), False


def _te_matmul(cx, mm, va, ta, vb, tb, summed=(), keepdims=False):
    at, bt = mm.inputs[0].type, mm.inputs[1].type
    batch = cx.shape(broadcast_shapes(at.shape[:-2], bt.shape[:-2]))
    return cx.te(matmul_kernel, va, vb, trans_a=ta, trans_b=tb, batch=batch, summed=tuple(summed),
                 keepdims=keepdims, name="matmul")


def _sum(cx, node, x):
    """A sum over batch axes of a matmul used nowhere else (a weight gradient, from sum_to) is
    one matmul contracting those axes too: no batch of products in memory, no separate sum."""
    src, axis = node.inputs[0], node.attrs["axis"]
    if (src.op == "matmul" and axis is not None and all(ax < src.type.rank - 2 for ax in axis)
            and cx.only_used_by(src, node)):
        (va, ta), (vb, tb) = _operand(cx, src.inputs[0]), _operand(cx, src.inputs[1])
        return _te_matmul(cx, src, va, ta, vb, tb, summed=axis, keepdims=node.attrs["keepdims"])
    return _reduce(R.sum)(cx, node, x)


def _reshape(cx, node, x):
    return cx.emit(R.reshape(x, cx.shape(node.attrs["shape"])))


def _reduce(fn, widen=False, nan_wins=False):
    """A Relax reduction; with ``nan_wins`` (max, min) a slice holding a NaN reduces to NaN, as
    NumPy's does (TVM's max/min combiner ``a > b ? a : b`` skips a NaN)."""
    def rule(cx, node, x):
        axis, keep = axes_list(node.attrs["axis"]), node.attrs["keepdims"]
        if node.inputs[0].type.rank == 0:
            return x
        src = upcast(x) if widen else x
        out = fn(src, axis, keep)
        if nan_wins and node.inputs[0].type.dtype.is_float and not widen:
            has_nan = R.greater(R.max(R.astype(R.isnan(src), "int32"), axis, keep), scalar(0, "int32"))
            out = R.where(has_nan, scalar(float("nan"), node.inputs[0].type.dtype.name), out)
        return cx.emit(cast(out, node.type.dtype.name))
    return rule


def _argmax(cx, node, x):
    """NumPy's argmax: the index of the first maximum, or of the first NaN when there is one."""
    axis = node.attrs["axis"]
    ax, keep = (None if axis is None else axis[0]), node.attrs["keepdims"]
    out = R.argmax(x, ax, keep)
    if node.inputs[0].type.dtype.is_float:
        nan = R.astype(R.isnan(x), "int32")
        out = R.where(R.greater(R.max(nan, ax, keep), scalar(0, "int32")), R.argmax(nan, ax, keep), out)
    return cx.emit(cast(out, "int64"))


def _full(cx, node):
    dt, value = node.attrs["dtype"].name, node.attrs["value"]
    if isinstance(value, Dim):  # a symbolic size as a value (the 1/n of a mean's gradient)
        return cx.te(K.fill, cx.shape(node.attrs["shape"]), cx.dim(value), dt)
    return cx.emit(R.full(cx.shape(node.attrs["shape"]), scalar(value, dt), dt))


def _numel(cx, node, x):
    axis = node.attrs["axis"]
    axes = range(node.inputs[0].type.rank) if axis is None else axis
    return cx.te(K.numel, x, list(axes), node.attrs["dtype"].name)


# -- indexing ---------------------------------------------------------------------------------------
def _slice(cx, node, x):
    a = node.attrs
    axis, step = a["axis"], a["step"]
    _check_slice(cx, node)
    return cx.te(K.slice_axis, x, axis, cx.dim(a["start"]), step, cx.dim(node.type.shape[axis]))


def _slice_grad(cx, node, g):
    a = node.attrs
    _check_slice(cx, node)
    return cx.te(K.slice_grad, g, a["axis"], cx.dim(a["start"]), a["step"], cx.dim(a["size"]))


def _take(cx, node, table, indices):
    _check_indices(cx, node, indices)
    return cx.te(K.take, table, indices, node.attrs["axis"])


def _gather(cx, node, x, indices):
    _check_indices(cx, node, indices)
    return cx.te(K.gather, x, indices, node.attrs["axis"])


def _scatter(cx, node, indices, updates, *, shared: bool):
    """index_add (shared indices) and scatter_add through the one 3-D scatter-add kernel."""
    axis, size = node.attrs["axis"], node.attrs["size"]
    _check_indices(cx, node, indices)
    ushape = node.inputs[1].type.shape
    k = node.inputs[0].type.rank if shared else 1
    pre = Shape(ushape[:axis]).numel()
    n = Shape(ushape[axis:axis + k]).numel()
    post = Shape(ushape[axis + k:]).numel()
    upd3 = R.reshape(updates, cx.shape((pre, n, post)))
    idx = R.reshape(indices, cx.shape((n,) if shared else (pre, n, post)))
    out = cx.te(scatter_add_3d, idx, upd3, cx.dim(size), gpu=cx.target_kind == "cuda")
    return cx.emit(R.reshape(out, cx.shape(node.type.shape)))


def _one_hot(cx, node, indices):
    a = node.attrs
    return cx.te(K.one_hot, indices, cx.dim(a["depth"]), a["axis"], a["dtype"].name)


RULES = {
    "matmul": _matmul,
    "reshape": _reshape,
    "transpose": lambda cx, node, x: cx.emit(R.permute_dims(x, list(node.attrs["perm"]))),
    "broadcast_to": lambda cx, node, x: cx.emit(R.broadcast_to(x, cx.shape(node.attrs["shape"]))),
    "sum": _sum,
    "mean": _reduce(R.mean, widen=True),
    "max": _reduce(R.max, nan_wins=True),
    "min": _reduce(R.min, nan_wins=True),
    "argmax": _argmax,
    "full": _full,
    "iota": lambda cx, node: cx.te(K.iota, cx.shape(node.attrs["shape"]), node.attrs["axis"],
                                   node.attrs["dtype"].name),
    "numel": _numel,
    "slice": _slice,
    "slice_grad": _slice_grad,
    "concat": lambda cx, node, *xs: cx.emit(R.concat(list(xs), axis=node.attrs["axis"])),
    "squeeze": lambda cx, node, x: cx.emit(R.squeeze(x, [node.attrs["axis"]])),
    "unsqueeze": lambda cx, node, x: cx.emit(R.expand_dims(x, node.attrs["axis"])),
    "take": _take,
    "gather": _gather,
    "index_add": lambda cx, node, i, u: _scatter(cx, node, i, u, shared=True),
    "scatter_add": lambda cx, node, i, u: _scatter(cx, node, i, u, shared=False),
    "one_hot": _one_hot,
    "triu": lambda cx, node, x: cx.te(K.triangle, x, node.attrs["k"], True),
    "tril": lambda cx, node, x: cx.te(K.triangle, x, node.attrs["k"], False),
}
