"""Indexing ops: slice, concat, split, squeeze/unsqueeze, take, gather, scatter, one_hot, triu/tril.
Integer indices are checked at run time: an index outside ``[0, size)`` raises a GraphDSLError
naming the op, the index and the valid range. Nothing is clipped or wrapped silently.
"""
from __future__ import annotations

import builtins

import numpy as np

from graphdsl import dtypes as _dt
from graphdsl.errors import AttributeError_, GraphDSLError, ShapeError, TypeError_
from graphdsl.registry import REQUIRED, defop
from graphdsl.types import Dim, TensorType, as_dim

from .common import axis_attr, same_dtype, types_str

_PySlice = builtins.slice


def _with_dim(shape, axis: int, dim) -> tuple:
    """``shape`` with the dim at ``axis`` replaced by ``dim``."""
    return tuple(shape[:axis]) + (dim,) + tuple(shape[axis + 1:])


def _at(axis: int, index) -> tuple:
    """A NumPy index tuple applying ``index`` along ``axis``."""
    return (_PySlice(None),) * axis + (index,)


def _check_range(op: str, indices: np.ndarray, size: int, axis: int) -> None:
    """Raise when an index falls outside ``[0, size)``: never clip or wrap."""
    if indices.size == 0:
        return
    lo, hi = int(indices.min()), int(indices.max())
    if lo < 0 or hi >= size:
        bad = lo if lo < 0 else hi
        raise GraphDSLError(f"index {bad} is out of range for axis {axis} of size {size} "
                            f"(valid: 0 to {size - 1})", op=op,
                            hint="indices are never clipped or wrapped; check the ids against the size")


def _require_int(op: str, indices: TensorType, *others: TensorType) -> None:
    if not indices.dtype.is_int:
        raise TypeError_(f"indices must be int32 or int64, got {types_str(*others, indices)}", op=op,
                         hint="cast the indices: ids.astype('int64')")


# -- slice ------------------------------------------------------------------------------------
def _nonnegative(d) -> bool:
    """A length we can trust: a non-negative int, or a polynomial whose symbolic terms are positive."""
    if isinstance(d, int):
        return d >= 0
    return all(c > 0 for m, c in d.terms.items() if m)


def _slice_bounds(op: str, dim, start, stop, step):
    """Canonical ``(start, stop, step)`` of a slice of a dim of size ``dim``, and its length.

    On a static dim the bounds follow Python's rules (clamped). On a symbolic dim, negative ints
    count from the end (``-2`` becomes ``seq-2``); the result must have an expressible length.
    The canonical form is a fixed point: normalizing it again gives it back.
    """
    step = int(step)
    if step == 0:
        raise ShapeError("slice step must not be zero", op=op)
    start = None if start is None else as_dim(start)
    stop = None if stop is None else as_dim(stop)
    if all(v is None or isinstance(v, int) for v in (dim, start, stop)):
        r = range(*_PySlice(start, stop, step).indices(dim))
        if step > 0:
            return r.start, builtins.max(r.start, r.stop), step, len(r)
        return r.start, (r.stop if r.stop >= 0 else None), step, len(r)
    if step < 0:
        raise ShapeError(f"a negative step needs a static dim, got dim {dim}", op=op,
                         hint="reverse along static axes only")
    start = 0 if start is None else start
    if isinstance(start, int) and start < 0:
        start = dim + start
    if stop is None:
        stop = dim
    elif isinstance(stop, int) and stop < 0:
        stop = dim + stop
    length = stop - start
    if not _nonnegative(length):
        raise ShapeError(f"slice [{start}:{stop}] of dim {dim} has length {length}, which is not "
                         f"known to be non-negative", op=op,
                         hint="on a symbolic dim use [int:], [:int], [-int:] or [int:-int]")
    if step != 1:
        if isinstance(length, int):
            length = -(-length // step)
        elif all(c % step == 0 for c in length.terms.values()):
            length = length // step
        else:
            raise ShapeError(f"slice of dim {dim} with step {step} has length ceil(({length})/{step}), "
                             f"which is not a dim expression", op=op,
                             hint="use step 1 on symbolic dims, or reshape first")
    return start, stop, step, length


def _slice_normalize(x, axis, start, stop, step):
    ax = axis_attr(axis, x.rank, "slice")
    start, stop, step, _ = _slice_bounds("slice", x.shape[ax], start, stop, step)
    return {"axis": ax, "start": start, "stop": stop, "step": step}


def _slice_infer(x, axis, start, stop, step):
    *_, length = _slice_bounds("slice", x.shape[axis], start, stop, step)
    return x.with_shape(_with_dim(x.shape, axis, length))


def _check_bounds(op, n, axis, start, stop, step):
    """A slice typed on a symbolic dim assumed the dim was large enough: check it now."""
    if step > 0 and not (0 <= start <= n and 0 <= stop <= n):
        raise GraphDSLError(f"slice [{start}:{stop}] is out of range for axis {axis} of size {n}",
                            op=op, hint="the type was inferred assuming the symbolic dim is large enough")


def _slice_ref(x, axis, start, stop, step):
    _check_bounds("slice", x.shape[axis], axis, start, stop, step)
    return x[_at(axis, _PySlice(start, stop, step))].copy()


slice = defop("slice", attrs={"axis": REQUIRED, "start": REQUIRED, "stop": None, "step": 1},
              normalize=_slice_normalize, infer=_slice_infer, ref=_slice_ref,
              vjp=lambda g, y, x, axis, start, stop, step: [
                  slice_grad(g, axis=axis, start=start, stop=stop, step=step, size=x.shape[axis])],
              types="any dtype → same dtype",
              doc="x[start:stop:step] along one axis (stop None: to the end; negative ints count "
                  "from the end)")


def _slice_grad_normalize(g, axis, start, stop, step, size):
    ax = axis_attr(axis, g.rank, "slice_grad")
    size = as_dim(size)
    start, stop, step, _ = _slice_bounds("slice_grad", size, start, stop, step)
    return {"axis": ax, "start": start, "stop": stop, "step": step, "size": size}


def _slice_grad_infer(g, axis, start, stop, step, size):
    *_, length = _slice_bounds("slice_grad", size, start, stop, step)
    if length != g.shape[axis]:
        raise ShapeError(f"a slice [{start}:{stop}:{step}] of size {size} has {length} elements on "
                         f"axis {axis}, but the input is {g}", op="slice_grad")
    return g.with_shape(_with_dim(g.shape, axis, size))


def _slice_grad_ref(g, axis, start, stop, step, size):
    _check_bounds("slice_grad", size, axis, start, stop, step)
    out = np.zeros(_with_dim(g.shape, axis, size), dtype=g.dtype)
    out[_at(axis, _PySlice(start, stop, step))] = g
    return out


slice_grad = defop("slice_grad", attrs={"axis": REQUIRED, "start": REQUIRED, "stop": None, "step": 1,
                                        "size": REQUIRED},
                   normalize=_slice_grad_normalize, infer=_slice_grad_infer, ref=_slice_grad_ref,
                   vjp=lambda g, y, x, axis, start, stop, step, size: [
                       slice(g, axis=axis, start=start, stop=stop, step=step)],
                   types="any dtype → same dtype",
                   doc="zeros of length size along axis, with the input placed at [start:stop:step] "
                       "(the adjoint of slice)")


# -- concat and split ---------------------------------------------------------------------------
def _concat_infer(*xs, axis):
    dt = same_dtype("concat", *xs)
    first = xs[0]
    total = 0
    for x in xs:
        if x.rank != first.rank:
            raise ShapeError(f"ranks differ: {types_str(*xs)}", op="concat")
        for i, (a, b) in enumerate(zip(first.shape, x.shape)):
            if i != axis and a != b:
                raise ShapeError(f"shapes differ on axis {i} (concatenating on axis {axis}): "
                                 f"{types_str(*xs)}", op="concat",
                                 hint="all inputs must match except on the concatenation axis")
        total = total + x.shape[axis]
    return TensorType(_with_dim(first.shape, axis, total), dt)


def _concat_vjp(g, y, *xs, axis):
    grads, offset = [], 0
    for x in xs:
        end = offset + x.shape[axis]
        grads.append(slice(g, axis=axis, start=offset, stop=end))
        offset = end
    return grads


concat = defop("concat", attrs=("axis",), arity=(1, None),
               normalize=lambda *xs, axis: {"axis": axis_attr(axis, xs[0].rank, "concat")},
               infer=_concat_infer, ref=lambda *xs, axis: np.concatenate(xs, axis=axis),
               vjp=_concat_vjp, types="any dtype, all inputs one dtype → same dtype",
               doc="join tensors along an existing axis: concat(a, b, axis=1)")


def _split_normalize(x, sizes, axis):
    ax = axis_attr(axis, x.rank, "split")
    if not isinstance(sizes, (tuple, list)):
        raise AttributeError_(f"sizes must be a tuple of piece sizes, got {sizes!r}", op="split",
                              hint="give the size of each piece, e.g. sizes=(64, 64, 64)")
    sizes = [as_dim(s) for s in sizes]
    holes = [i for i, s in enumerate(sizes) if isinstance(s, int) and s == -1]
    dim = x.shape[ax]
    if len(holes) > 1:
        raise ShapeError(f"at most one -1 in sizes, got {tuple(sizes)}", op="split")
    if holes:
        rest = dim - builtins.sum((s for i, s in enumerate(sizes) if i != holes[0]), 0)
        if not _nonnegative(rest):
            raise ShapeError(f"sizes {tuple(sizes)} do not fit axis {ax} of {x}", op="split")
        sizes[holes[0]] = rest
    total = builtins.sum(sizes, 0)
    if Dim.of(total) != Dim.of(dim) or not all(_nonnegative(s) for s in sizes):
        raise ShapeError(f"sizes {tuple(sizes)} add up to {total}, but axis {ax} of {x} has {dim}",
                         op="split", hint="the sizes must add up to the axis length (one may be -1)")
    return {"sizes": tuple(sizes), "axis": ax}


def _split_decompose(x, sizes, axis):
    pieces, offset = [], 0
    for s in sizes:
        pieces.append(slice(x, axis=axis, start=offset, stop=offset + s))
        offset = offset + s
    return tuple(pieces)


split = defop("split", attrs=("sizes", "axis"), normalize=_split_normalize,
              infer=lambda x, sizes, axis: x, decompose=_split_decompose,
              types="any dtype → same dtype",
              doc="a tuple of consecutive slices with the given sizes (one may be -1 for the rest)")


# -- squeeze / unsqueeze ------------------------------------------------------------------------
def _squeeze_infer(x, axis):
    if x.shape[axis] != 1:
        raise ShapeError(f"cannot squeeze axis {axis} of {x}: its size is {x.shape[axis]}, not 1",
                         op="squeeze")
    return x.with_shape(tuple(x.shape[:axis]) + tuple(x.shape[axis + 1:]))


squeeze = defop("squeeze", attrs=("axis",),
                normalize=lambda x, axis: {"axis": axis_attr(axis, x.rank, "squeeze")},
                infer=_squeeze_infer, ref=lambda x, axis: np.squeeze(x, axis),
                vjp=lambda g, y, x, axis: [unsqueeze(g, axis=axis)],
                types="any dtype → same dtype",
                doc="remove one axis of size 1")
unsqueeze = defop("unsqueeze", attrs=("axis",),
                  normalize=lambda x, axis: {"axis": axis_attr(axis, x.rank + 1, "unsqueeze")},
                  infer=lambda x, axis: x.with_shape(tuple(x.shape[:axis]) + (1,) + tuple(x.shape[axis:])),
                  ref=lambda x, axis: np.expand_dims(x, axis),
                  vjp=lambda g, y, x, axis: [squeeze(g, axis=axis)],
                  types="any dtype → same dtype",
                  doc="insert an axis of size 1 (axis counts in the output's rank; -1 appends)")


# -- take / index_add ---------------------------------------------------------------------------
def _take_infer(table, indices, axis):
    _require_int("take", indices, table)
    return TensorType(tuple(table.shape[:axis]) + tuple(indices.shape) + tuple(table.shape[axis + 1:]),
                      table.dtype)


def _take_ref(table, indices, axis):
    _check_range("take", indices, table.shape[axis], axis)
    return np.take(table, indices, axis=axis)


take = defop("take", attrs={"axis": 0}, arity=2,
             normalize=lambda table, indices, axis: {"axis": axis_attr(axis, table.rank, "take")},
             infer=_take_infer, ref=_take_ref,
             vjp=lambda g, y, table, indices, axis: [
                 index_add(indices, g, axis=axis, size=table.shape[axis]), None],
             doc="pick entries of table along axis by integer indices (np.take; embedding lookup: "
                 "f32[V,H] by i64[B,S] gives f32[B,S,H])")


def _index_add_normalize(indices, updates, axis, size):
    out_rank = updates.rank - indices.rank + 1
    if out_rank < 1:
        raise ShapeError(f"updates must have at least the indices' rank: {types_str(indices, updates)}",
                         op="index_add")
    return {"axis": axis_attr(axis, out_rank, "index_add"), "size": as_dim(size)}


def _index_add_infer(indices, updates, axis, size):
    _require_int("index_add", indices, updates)
    k = indices.rank
    if tuple(updates.shape[axis:axis + k]) != tuple(indices.shape):
        raise ShapeError(f"updates must hold the indices' shape at axis {axis}: "
                         f"{types_str(indices, updates)}", op="index_add")
    return updates.with_shape(tuple(updates.shape[:axis]) + (size,) + tuple(updates.shape[axis + k:]))


def _index_add_ref(indices, updates, axis, size):
    _check_range("index_add", indices, size, axis)
    k, r = indices.ndim, updates.ndim
    out = np.zeros(updates.shape[:axis] + (size,) + updates.shape[axis + k:], dtype=updates.dtype)
    perm = list(range(axis, axis + k)) + list(range(axis)) + list(range(axis + k, r))
    np.add.at(np.moveaxis(out, axis, 0), indices, np.transpose(updates, perm))
    return out


index_add = defop("index_add", attrs=("axis", "size"), arity=2,
                  normalize=_index_add_normalize, infer=_index_add_infer, ref=_index_add_ref,
                  vjp=lambda g, y, indices, updates, axis, size: [None, take(g, indices, axis=axis)],
                  types="indices int; updates any dtype → updates' dtype",
                  doc="zeros with size entries along axis, updates added at the indices "
                      "(np.add.at; the adjoint of take)")


# -- gather / scatter_add -----------------------------------------------------------------------
def _gather_infer(x, indices, axis):
    _require_int("gather", indices, x)
    if x.rank != indices.rank:
        raise ShapeError(f"indices must have the rank of the input: {types_str(x, indices)}", op="gather",
                         hint="add the gathered axis to the indices, e.g. labels[..., None]")
    for i, (a, b) in enumerate(zip(x.shape, indices.shape)):
        if i != axis and a != b:
            raise ShapeError(f"input and indices differ on axis {i}: {types_str(x, indices)}",
                             op="gather", hint=f"they must match on every axis except {axis}")
    return TensorType(indices.shape, x.dtype)


def _gather_ref(x, indices, axis):
    _check_range("gather", indices, x.shape[axis], axis)
    return np.take_along_axis(x, indices, axis=axis)


gather = defop("gather", attrs=("axis",), arity=2,
               normalize=lambda x, indices, axis: {"axis": axis_attr(axis, x.rank, "gather")},
               infer=_gather_infer, ref=_gather_ref,
               vjp=lambda g, y, x, indices, axis: [
                   scatter_add(indices, g, axis=axis, size=x.shape[axis]), None],
               types="x any dtype; indices int → x's dtype",
               doc="out[..., i, ...] = x[..., indices[..., i, ...], ...] along axis "
                   "(np.take_along_axis; indices have the input's rank)")


def _scatter_add_infer(indices, updates, axis, size):
    _require_int("scatter_add", indices, updates)
    if indices.shape != updates.shape:
        raise ShapeError(f"indices and updates must have the same shape: {types_str(indices, updates)}",
                         op="scatter_add")
    return updates.with_shape(_with_dim(updates.shape, axis, size))


def _scatter_add_ref(indices, updates, axis, size):
    _check_range("scatter_add", indices, size, axis)
    out = np.zeros(_with_dim(updates.shape, axis, size), dtype=updates.dtype)
    where = list(np.indices(indices.shape, sparse=True))
    where[axis] = indices
    np.add.at(out, tuple(where), updates)
    return out


scatter_add = defop("scatter_add", attrs=("axis", "size"), arity=2,
                    normalize=lambda indices, updates, axis, size: {
                        "axis": axis_attr(axis, updates.rank, "scatter_add"), "size": as_dim(size)},
                    infer=_scatter_add_infer, ref=_scatter_add_ref,
                    vjp=lambda g, y, indices, updates, axis, size: [None, gather(g, indices, axis=axis)],
                    types="indices int; updates any dtype → updates' dtype",
                    doc="zeros with size entries along axis, each update added at its index "
                        "(the adjoint of gather)")


# -- one_hot, triu, tril ------------------------------------------------------------------------
def _one_hot_normalize(indices, depth, dtype, axis):
    return {"depth": as_dim(depth), "dtype": _dt.dtype(dtype),
            "axis": axis_attr(axis, indices.rank + 1, "one_hot")}


def _one_hot_infer(indices, depth, dtype, axis):
    _require_int("one_hot", indices)
    return TensorType(tuple(indices.shape[:axis]) + (depth,) + tuple(indices.shape[axis:]), dtype)


def _one_hot_ref(indices, depth, dtype, axis):
    classes = np.arange(depth).reshape(_with_dim((1,) * (indices.ndim + 1), axis, depth))
    return (np.expand_dims(indices, axis) == classes).astype(dtype.np)


one_hot = defop("one_hot", attrs={"depth": REQUIRED, "dtype": _dt.float32, "axis": -1},
                normalize=_one_hot_normalize, infer=_one_hot_infer, ref=_one_hot_ref,
                differentiable=False,
                types="indices int → the dtype attribute",
                doc="1 at each index along a new axis of length depth, 0 elsewhere "
                    "(an index outside [0, depth) gives all zeros)")


def _triangle(name: str, fn):
    def infer(x, k):
        if x.rank < 2:
            raise ShapeError(f"needs a matrix or a batch of them, got {x}", op=name)
        return x

    op = defop(name, attrs={"k": 0}, normalize=lambda x, k: {"k": int(k)}, infer=infer,
               ref=lambda x, k: fn(x, k), vjp=lambda g, y, x, k: [op(g, k=k)],
               doc=f"np.{name} over the last two axes: keep the "
                   f"{'upper' if name == 'triu' else 'lower'} triangle from diagonal k, zero the rest")
    return op


triu = _triangle("triu", np.triu)
tril = _triangle("tril", np.tril)


__all__ = ["slice", "slice_grad", "concat", "split", "squeeze", "unsqueeze", "take", "index_add",
           "gather", "scatter_add", "one_hot", "triu", "tril"]
