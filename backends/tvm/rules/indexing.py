"""TVM rows for graphdsl/ops/indexing.py: slices, concat, squeezes, take/gather, the scatter-adds,
one_hot and the triangles.

Relax ops where Relax has the exact semantics; our TE kernels (kernels/indexing.py,
kernels/scatter.py) where it does not: the slices (any step, symbolic starts), take/gather with
clipped reads, the scatter-adds, one_hot. Every op that reads at data-dependent indices also
returns the indices' min and max as a run-time check (common.check_indices), so an out-of-range
index raises the same error as on the NumPy backend. ``split`` has no row: its decomposition
(slices) is lowered instead.
"""
from __future__ import annotations

from tvm import tirx
from tvm.relax import op as R

from graphdsl.types import Shape

from ..kernels import indexing as K
from ..kernels.scatter import scatter_add_3d
from ..table import TVM
from .common import check_indices, check_slice, own_kernel


@TVM.register("slice")
def slice_(cx, node, x):
    a = node.attrs
    axis, step = a["axis"], a["step"]
    check_slice(cx, node)
    return cx.te(K.slice_axis, x, axis, cx.dim(a["start"]), step, cx.dim(node.type.shape[axis]))


@TVM.register("slice_grad")
def slice_grad(cx, node, g):
    a = node.attrs
    check_slice(cx, node)
    return cx.te(K.slice_grad, g, a["axis"], cx.dim(a["start"]), a["step"], cx.dim(a["size"]))


@TVM.register("concat")
def concat(cx, node, *xs):
    """R.concat along static dims; along a symbolic one, our kernel: Relax's concat writes the
    result's length as its own sum (1 + n), and FuseTIR then failed on the fused kernels that read
    it ("Inconsistent buffers ... mapped to the same relax var", "Parameter expression T.int64(1)
    expected ... n")."""
    axis = node.attrs["axis"]
    if all(isinstance(x.type.shape[axis], int) for x in node.inputs):
        return cx.emit(R.concat(list(xs), axis=axis))
    sizes = [cx.dim(x.type.shape[axis]) for x in node.inputs]
    sizes = [tirx.const(s, "int64") if isinstance(s, int) else s for s in sizes]
    out = cx.te(K.concat_axis, *xs, axis=axis, sizes=sizes, total=cx.dim(node.type.shape[axis]))
    # its own kernel: inlined into its readers, a chain of concats (each read a choice between
    # its inputs) grew the index expressions exponentially, and TVM's simplifier never finished
    return own_kernel(cx, out, "concat")


@TVM.register("squeeze")
def squeeze(cx, node, x):
    return cx.emit(R.squeeze(x, [node.attrs["axis"]]))


@TVM.register("unsqueeze")
def unsqueeze(cx, node, x):
    return cx.emit(R.expand_dims(x, node.attrs["axis"]))


@TVM.register("take")
def take(cx, node, table, indices):
    check_indices(cx, node, indices)
    return cx.te(K.take, table, indices, node.attrs["axis"])


@TVM.register("gather")
def gather(cx, node, x, indices):
    check_indices(cx, node, indices)
    return cx.te(K.gather, x, indices, node.attrs["axis"])


def _scatter(cx, node, indices, updates, *, shared: bool):
    """index_add (shared indices) and scatter_add through the one 3-D scatter-add kernel."""
    axis, size = node.attrs["axis"], node.attrs["size"]
    check_indices(cx, node, indices)
    ushape = node.inputs[1].type.shape
    k = node.inputs[0].type.rank if shared else 1
    pre = Shape(ushape[:axis]).numel()
    n = Shape(ushape[axis:axis + k]).numel()
    post = Shape(ushape[axis + k:]).numel()
    upd3 = R.reshape(updates, cx.shape((pre, n, post)))
    idx = R.reshape(indices, cx.shape((n,) if shared else (pre, n, post)))
    out = cx.te(scatter_add_3d, idx, upd3, cx.dim(size), gpu=cx.target_kind == "cuda")
    return cx.emit(R.reshape(out, cx.shape(node.type.shape)))


@TVM.register("index_add")
def index_add(cx, node, indices, updates):
    return _scatter(cx, node, indices, updates, shared=True)


@TVM.register("scatter_add")
def scatter_add(cx, node, indices, updates):
    return _scatter(cx, node, indices, updates, shared=False)


@TVM.register("one_hot")
def one_hot(cx, node, indices):
    a = node.attrs
    return cx.te(K.one_hot, indices, cx.dim(a["depth"]), a["axis"], a["dtype"].name)


@TVM.register("triu")
def triu(cx, node, x):
    return cx.te(K.triangle, x, node.attrs["k"], True)


@TVM.register("tril")
def tril(cx, node, x):
    return cx.te(K.triangle, x, node.attrs["k"], False)
