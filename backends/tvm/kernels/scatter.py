"""The one scatter-add kernel behind index_add (take's adjoint) and scatter_add (gather's adjoint).

Both are brought to one 3-D form by reshapes: ``out[p, idx, q] += upd[p, m, q]`` with ``out`` of
shape ``[pre, size, post]`` and ``upd`` of shape ``[pre, n, post]``; the index is ``idx[m]``
(index_add: every (p, q) shares it) or ``idx[p, m, q]`` (scatter_add). Each (p, q) is owned by
one thread, which zeroes its column of ``out`` and walks m in order, so no two threads write the
same element: no atomics, and the sums are deterministic. Written with TVM's IR builder because TE cannot express a scatter.
An output axis of symbolic size can be empty at run time; there is then nowhere to add an update
(index 0 is outside the buffer), so nothing is written and the index check raises.
"""
from __future__ import annotations

from contextlib import contextmanager

from tvm import te, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from .indexing import nonempty

GPU_THREADS = 256


def scatter_add_3d(indices: te.Tensor, updates: te.Tensor, size, *, gpu: bool) -> te.Tensor:
    """``out[p, clip(idx), q] += upd[p, m, q]``; ``indices`` is ``[n]`` or ``[pre, n, post]``."""
    pre, n, post = updates.shape
    shared = len(indices.shape) == 1
    dtype = str(updates.dtype)
    maybe_empty = not nonempty(size)   # a symbolic size may be 0 at run time

    def index(idx, p, m, q):
        raw = idx[m] if shared else idx[(p * n + m) * post + q]
        raw = raw if str(raw.ty) == "int64" else raw.astype("int64")
        return tirx.max(tirx.min(raw, tirx.const(0, "int64") + size - 1), tirx.const(0, "int64"))

    def column(idx, upd, out, p, q):
        """Zero out[p, :, q], then add every update of (p, q) in order of m."""
        with T.serial(0, size) as j:
            out[(p * size + j) * post + q] = tirx.const(0, dtype)
        with _when(tirx.const(0, "int64") + size > 0, maybe_empty):
            with T.serial(0, n) as m:
                out[(p * size + index(idx, p, m, q)) * post + q] += upd[(p * n + m) * post + q]

    def ir(ins, outs):
        idx, upd, out = T.buffer_proxy(ins[0]), T.buffer_proxy(ins[1]), T.buffer_proxy(outs[0])
        with IRBuilder() as ib:
            if gpu:
                with _gpu_loop(pre * post) as t:
                    column(idx, upd, out, t // post, t % post)
            else:
                with T.parallel(0, pre) as p:
                    with T.serial(0, post) as q:
                        column(idx, upd, out, p, q)
        return ib.get()

    return te.extern([[pre, size, post]], [indices, updates], ir, dtype=dtype, name="scatter_add")


@contextmanager
def _when(cond, needed: bool):
    """``with _when(cond, needed):`` the body runs only where ``cond`` holds (unguarded when not needed)."""
    if not needed:
        yield
        return
    with T.If(cond):
        with T.Then():
            yield


@contextmanager
def _gpu_loop(n):
    """``with _gpu_loop(n) as i:`` one GPU thread per i in [0, n)."""
    tx, bx = te.thread_axis("threadIdx.x"), te.thread_axis("blockIdx.x")
    blocks = tirx.const(0, "int64") + (n + GPU_THREADS - 1) // GPU_THREADS
    with T.frame_scope([T.attr(bx, "thread_extent", blocks.astype("int32")),
                        T.attr(tx, "thread_extent", GPU_THREADS)]):
        i = bx.astype("int64") * GPU_THREADS + tx.astype("int64")
        with T.If(i < n):
            with T.Then():
                yield i
