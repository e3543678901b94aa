"""TE kernels for the indexing ops (slices, take/gather, one_hot, triangles) and for creating
tensors from sizes (iota, fill, numel).

Indices are clipped into range inside the kernels, so a bad index never reads outside a buffer;
whether an index was bad is checked separately (see rules/common.check_indices), so nothing is silently
clipped from the user's point of view. An axis of symbolic size can be empty, where there is
nothing to clip into: the read is then skipped (``_guarded``), and the check raises.
"""
from __future__ import annotations

from tvm import te, tirx


def _i64(x):
    return x if str(x.ty) == "int64" else x.astype("int64")


def _clip(j, size):
    return tirx.max(tirx.min(_i64(j), _i64(tirx.const(0, "int64") + size) - 1), tirx.const(0, "int64"))


def nonempty(size) -> bool:
    """Whether an axis of this size is known to hold at least one element."""
    return isinstance(size, (int, tirx.IntImm)) and int(size) > 0


def _guarded(read, size, dtype):
    """``read`` (a load at a clipped index), or 0 where the axis read is empty: a symbolic size
    can be 0 at run time, and index 0 of an empty buffer is outside it. A static size costs nothing."""
    if nonempty(size):
        return read
    return tirx.if_then_else(_i64(tirx.const(0, "int64") + size) > 0, read, tirx.const(0, dtype))


def take(table: te.Tensor, indices: te.Tensor, axis: int) -> te.Tensor:
    """out[pre, i..., post] = table[pre, indices[i...], post]."""
    k = len(indices.shape)
    size = table.shape[axis]
    shape = list(table.shape[:axis]) + list(indices.shape) + list(table.shape[axis + 1:])

    def f(*i):
        j = _clip(indices(*i[axis:axis + k]), size)
        return _guarded(table(*i[:axis], j, *i[axis + k:]), size, table.dtype)
    return te.compute(shape, f, name="take")


def gather(x: te.Tensor, indices: te.Tensor, axis: int) -> te.Tensor:
    """out[i] = x[i with axis replaced by indices[i]] (take_along_axis)."""
    size = x.shape[axis]

    def f(*i):
        return _guarded(x(*i[:axis], _clip(indices(*i), size), *i[axis + 1:]), size, x.dtype)
    return te.compute(indices.shape, f, name="gather")


def concat_axis(*xs: te.Tensor, axis: int, sizes, total) -> te.Tensor:
    """The inputs laid end to end along ``axis``; ``sizes`` and ``total`` are their lengths there,
    written as the lowering writes every dim (lower.Ctx.dim), so the fused kernels that read the
    result see one expression for its length."""
    shape = list(xs[0].shape)
    shape[axis] = total

    starts, offset = [], tirx.const(0, "int64")
    for size in sizes:
        starts.append(offset)
        offset = offset + size

    def f(*i):
        pos = _i64(i[axis])

        def read(j):
            return xs[j](*i[:axis], pos - starts[j], *i[axis + 1:])
        value = read(len(xs) - 1)
        for j in range(len(xs) - 2, -1, -1):   # if_then_else reads only the chosen input
            value = tirx.if_then_else(pos < starts[j + 1], read(j), value)
        return value
    return te.compute(shape, f, name="concat")


def slice_axis(x: te.Tensor, axis: int, start, step: int, length) -> te.Tensor:
    """out[.., i, ..] = x[.., start + i * step, ..]."""
    shape = list(x.shape)
    shape[axis] = length

    def f(*i):
        return x(*i[:axis], _i64(i[axis]) * step + start, *i[axis + 1:])
    return te.compute(shape, f, name="slice")


def slice_grad(g: te.Tensor, axis: int, start, step: int, size) -> te.Tensor:
    """Zeros of ``size`` along axis with g placed at start, start + step, ... (slice's adjoint)."""
    shape = list(g.shape)
    shape[axis] = size
    n = g.shape[axis]

    def f(*i):
        rel = _i64(i[axis]) - start
        q = tirx.floordiv(rel, step)
        hit = tirx.all(tirx.floormod(rel, step) == 0, q >= 0, q < n)
        value = g(*i[:axis], tirx.max(tirx.min(q, _i64(n) - 1), 0), *i[axis + 1:])
        return tirx.Select(hit, value, tirx.const(0, g.dtype))
    return te.compute(shape, f, name="slice_grad")


def one_hot(indices: te.Tensor, depth, axis: int, dtype: str) -> te.Tensor:
    shape = list(indices.shape[:axis]) + [depth] + list(indices.shape[axis:])

    def f(*i):
        hit = _i64(indices(*i[:axis], *i[axis + 1:])) == _i64(i[axis])
        return hit.astype(dtype)
    return te.compute(shape, f, name="one_hot")


def triangle(x: te.Tensor, k: int, upper: bool) -> te.Tensor:
    """Keep the upper (j - i >= k) or lower (j - i <= k) triangle of the last two axes."""
    def f(*i):
        d = _i64(i[-1]) - _i64(i[-2])
        keep = d >= k if upper else d <= k
        return tirx.Select(keep, x(*i), tirx.const(0, x.dtype))
    return te.compute(x.shape, f, name="triu" if upper else "tril")


def iota(shape, axis: int, dtype: str) -> te.Tensor:
    return te.compute(shape, lambda *i: i[axis].astype(dtype), name="iota")


def fill(shape, value, dtype: str) -> te.Tensor:
    """A tensor of ``shape`` holding one (possibly symbolic) value."""
    return te.compute(shape, lambda *i: value.astype(dtype), name="fill")


def numel(x: te.Tensor, axes, dtype: str) -> te.Tensor:
    """The product of x's sizes over ``axes``, as a scalar tensor (sizes may be symbolic)."""
    n = tirx.const(1, "int64")
    for a in axes:
        n = n * _i64(tirx.const(0, "int64") + x.shape[a])
    return te.compute((), lambda: n.astype(dtype), name="numel")
