"""Importers of ONNX shape and data-movement ops, and of the shape arithmetic around them.

When the data is known at import time (a constant, or a ``Sym`` computed from shapes), these ops
are evaluated on the spot, symbolic dims included, so run-time shape subgraphs fold away. On
run-time tensors they become our reshape, slice, concat, take, ... ops.
"""
from __future__ import annotations

import numpy as np

from graphdsl import dtypes as _dt
from graphdsl import ops
from graphdsl.errors import GraphError, ShapeError
from graphdsl.types import Dim, Shape, broadcast_shapes, dim_div

from .table import IMPORT
from .values import Sym, axes_arg, dtype_of, known_all, normalize_axis

BIG = 2 ** 31 - 1   # slice bounds at or past this mean "to the end"


def _rank(v) -> int:
    return v.value.ndim if isinstance(v, Sym) else v.ndim


def _shape(v) -> tuple:
    return tuple(v.value.shape) if isinstance(v, Sym) else tuple(v.shape)


def _shape_of(imp, v) -> tuple:
    """The shape of a Sym or of the tensor ``v`` stands for."""
    return _shape(v) if isinstance(v, Sym) else tuple(imp.tensor(v).shape)


def _rank_of(imp, v) -> int:
    return _rank(v) if isinstance(v, Sym) else imp.tensor(v).ndim


@IMPORT.register("Constant")
def _constant(imp, node):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in imp.attrs:
            value = np.asarray(imp.attrs[key])
            if key in ("value_float", "value_floats"):
                value = value.astype(np.float32)
            elif key in ("value_int", "value_ints"):
                value = value.astype(np.int64)
            return imp.const(value)
    raise GraphError(f"Constant with attribute(s) {sorted(imp.attrs)} is not supported",
                     hint="numeric tensors only (value, value_float(s), value_int(s))")


@IMPORT.register("Identity")
def _identity(imp, node, x):
    return x


@IMPORT.register("Dropout")
def _dropout(imp, node, x, ratio=None, training_mode=None):
    """Inference-mode dropout is the identity, its mask all true. In training mode (the
    ``training_mode`` input, known at import) it is our dropout op on the graph's ``seed`` input:
    each element kept with probability 1 - ratio and scaled by 1 / (1 - ratio), the mask drawn by
    our counter-based generator (docs/semantics.md), so it is a dropout mask, not the bits ONNX's
    reference draws."""
    training = False if training_mode is None else imp.known(training_mode)
    if training is None:
        raise imp.unknown_value(training_mode, "Dropout's training_mode")
    want_mask = len(node.output) > 1 and bool(node.output[1])
    t = imp.tensor(x)
    identity = [x, ops.full(shape=tuple(t.shape), value=True, dtype=_dt.bool_)] if want_mask else x
    if not bool(np.asarray(training)):
        return identity
    p = 0.5 if ratio is None else imp.known(ratio)
    if p is None:
        raise imp.unknown_value(ratio, "Dropout's ratio (in training mode)")
    p = float(np.asarray(p))
    if p == 0.0:
        return identity
    from graphdsl.tracing import current_builder
    b = current_builder()
    seed, salt = b.seed(), b.next_salt()
    y = ops.dropout(t, seed, p=p, salt=salt)
    if not want_mask:
        return y
    kept = ops.dropout(ops.full(shape=tuple(t.shape), value=1.0, dtype=t.dtype), seed, p=p, salt=salt) != 0
    return [y, kept]


@IMPORT.register("Shape")
def _shape_op(imp, node, x):
    dims = _shape_of(imp, x)
    rank = len(dims)
    start, end = imp.attrs.get("start", 0), imp.attrs.get("end", rank)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return imp.value(np.array(list(dims[start:end]), dtype=object), _dt.int64)


@IMPORT.register("Size")
def _size(imp, node, x):
    return imp.value(np.array(Shape(_shape_of(imp, x)).numel(), dtype=object), _dt.int64)


def _cast_to(imp, x, to: _dt.DType):
    """``x`` as ``to``; a shape value cast to an integer type stays a shape value. ``saturate``
    (float8 targets) and ``round_mode`` (float8_e8m0fnu) are ONNX's, with its defaults."""
    if isinstance(x, Sym) and to.is_int and not to.storage:
        return Sym(x.value, to)
    t = imp.tensor(x)
    if t.dtype == to:
        return t
    round_mode = imp.attrs.get("round_mode", "up")
    round_mode = round_mode.decode() if isinstance(round_mode, bytes) else round_mode
    return ops.cast(t, dtype=to, saturate=bool(imp.attrs.get("saturate", 1)), round_mode=round_mode)


@IMPORT.register("Cast")
def _cast(imp, node, x):
    return _cast_to(imp, x, dtype_of(imp.attrs["to"], "Cast target"))


@IMPORT.register("CastLike")
def _cast_like(imp, node, x, like):
    return _cast_to(imp, x, like.dtype if isinstance(like, Sym) else imp.tensor(like).dtype)


def wrapped(imp, indices, size):
    """ONNX's gathers take an index in [-size, size): a negative one counts from the end. Ours
    take [0, size) and check it, so a negative index becomes ``index + size`` here; one below
    -size is still out of range and the op's check names it."""
    size = size if isinstance(size, int) else imp.dim_tensor(size)
    if not isinstance(size, int) and size.dtype != indices.dtype:
        size = size.astype(indices.dtype)
    return ops.where(indices < 0, indices + size, indices)


@IMPORT.register("Gather")
def _gather(imp, node, data, indices):
    known, symbolic = known_all(imp, [data, indices])
    axis = normalize_axis(imp.attrs.get("axis", 0), _rank_of(imp, data))
    if known is not None and symbolic:
        values, idx = known
        idx = np.where(idx.astype(np.int64) < 0, idx.astype(np.int64) + values.shape[axis], idx)
        return imp.value(np.take(values, idx.astype(np.int64), axis=axis), data.dtype)
    table = imp.tensor(data)
    idx_known = imp.known(indices)
    if idx_known is not None and not isinstance(indices, Sym):
        size = table.shape[axis]
        if (np.asarray(idx_known) < 0).any():
            if not isinstance(size, int):
                raise ShapeError(f"negative Gather indices on symbolic dim {size}")
            indices = imp.const(np.where(idx_known < 0, idx_known + size, idx_known))
        return ops.take(table, imp.tensor(indices), axis=axis)
    return ops.take(table, wrapped(imp, imp.tensor(indices), table.shape[axis]), axis=axis)


@IMPORT.register("GatherElements")
def _gather_elements(imp, node, data, indices):
    x = imp.tensor(data)
    axis = normalize_axis(imp.attrs.get("axis", 0), x.ndim)
    return ops.gather(x, wrapped(imp, imp.tensor(indices), x.shape[axis]), axis=axis)


@IMPORT.register("GatherND")
def _gather_nd(imp, node, data, indices):
    """data[idx[..., 0], ..., idx[..., k-1]] as one take on data reshaped to [d0*...*dk-1, rest].
    With batch_dims b the first b coordinates are each index row's own batch position (an iota
    over the indices' leading dims), so the b batch dims join the linear index too."""
    data, indices = imp.tensor(data), imp.tensor(indices)
    b = imp.attrs.get("batch_dims", 0)
    k = indices.shape[-1]
    if not isinstance(k, int):
        raise ShapeError(f"GatherND needs a static index depth, got {indices.type}")
    if not 0 <= b < min(data.ndim, indices.ndim) or b + k > data.ndim:
        raise ShapeError(f"GatherND batch_dims={b} with index depth {k} does not fit data {data.type} "
                         f"and indices {indices.type}")
    lead, rest = tuple(data.shape[:b + k]), tuple(data.shape[b + k:])
    rows = tuple(indices.shape[:-1])
    parts = [ops.iota(shape=rows, axis=j, dtype=indices.dtype) for j in range(b)]
    parts += [wrapped(imp, indices[..., j], lead[b + j]) for j in range(k)]
    linear = None
    for j, part in enumerate(parts):
        stride = Shape(lead[j + 1:]).numel()
        if stride != 1:
            size = stride if isinstance(stride, int) else imp.dim_tensor(stride)
            if not isinstance(size, int) and size.dtype != part.dtype:
                size = size.astype(part.dtype)
            part = part * size
        linear = part if linear is None else linear + part
    flat = data.reshape((Shape(lead).numel(),) + rest)
    return ops.take(flat, linear, axis=0)


@IMPORT.register("Concat")
def _concat(imp, node, *xs):
    known, symbolic = known_all(imp, xs)
    if known is not None and symbolic:
        rank = known[0].ndim
        out = np.concatenate([k.astype(object) for k in known], axis=normalize_axis(imp.attrs["axis"], rank))
        return imp.value(out, next(x.dtype for x in xs if isinstance(x, Sym)))
    tensors = [imp.tensor(v) for v in xs]
    return ops.concat(tensors, axis=normalize_axis(imp.attrs["axis"], tensors[0].ndim))


@IMPORT.register("Unsqueeze")
def _unsqueeze(imp, node, x, axes=None):
    axes = axes_arg(imp, axes)
    rank = _rank_of(imp, x) + len(axes)
    axes = sorted(normalize_axis(a, rank) for a in axes)
    if isinstance(x, Sym):
        value = x.value
        for a in axes:
            value = np.expand_dims(value, a)
        return Sym(value, x.dtype)
    t = imp.tensor(x)
    for a in axes:
        t = t.unsqueeze(a)
    return t


@IMPORT.register("Squeeze")
def _squeeze(imp, node, x, axes=None):
    shape = _shape_of(imp, x)
    axes = axes_arg(imp, axes)
    if axes is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    axes = sorted((normalize_axis(a, len(shape)) for a in axes), reverse=True)
    if isinstance(x, Sym):
        return Sym(np.squeeze(x.value, axis=tuple(axes)) if axes else x.value, x.dtype)
    t = imp.tensor(x)
    for a in axes:
        t = t.squeeze(a)
    return t


@IMPORT.register("Reshape")
def _reshape(imp, node, x, shape_value):
    target = imp.ints(shape_value, "Reshape's target shape")
    shape = _shape_of(imp, x)
    if not imp.attrs.get("allowzero", 0):
        target = [shape[i] if isinstance(d, int) and d == 0 else d for i, d in enumerate(target)]
    if isinstance(x, Sym):
        if any(isinstance(d, Dim) for d in target):
            raise ShapeError(f"cannot reshape a shape value to symbolic shape {target}")
        return Sym(x.value.reshape([int(d) for d in target]), x.dtype)
    t = imp.tensor(x)
    return t if tuple(target) == tuple(t.shape) else t.reshape(tuple(target))


@IMPORT.register("Flatten")
def _flatten(imp, node, x):
    t = imp.tensor(x)
    axis = imp.attrs.get("axis", 1) if t.ndim else 0
    if not -t.ndim <= axis <= t.ndim:
        raise ShapeError(f"Flatten axis {axis} is out of range for rank {t.ndim} (valid: {-t.ndim} to {t.ndim})")
    axis = axis + t.ndim if axis < 0 else axis     # ONNX counts a negative axis from the end: -1 is rank-1
    return t.reshape((Shape(t.shape[:axis]).numel(), Shape(t.shape[axis:]).numel()))


@IMPORT.register("Transpose")
def _transpose(imp, node, x):
    t = imp.tensor(x)
    perm = imp.attrs.get("perm", list(reversed(range(t.ndim))))
    return t if list(perm) == list(range(t.ndim)) else t.permute(*perm)


@IMPORT.register("Expand")
def _expand(imp, node, x, shape_value):
    dims = imp.ints(shape_value, "Expand's target shape")
    shape = _shape_of(imp, x)
    target = broadcast_shapes(Shape(shape), Shape(dims))
    if target is None:
        raise ShapeError(f"cannot expand shape {Shape(shape)} to {dims}")
    if isinstance(x, Sym) and target.is_static:
        return Sym(np.broadcast_to(x.value, tuple(target)).copy(), x.dtype)
    t = imp.tensor(x)
    return t if tuple(target) == tuple(t.shape) else t.expand(tuple(target))


@IMPORT.register("Slice")
def _slice(imp, node, x, starts, ends, axes=None, steps=None):
    starts = imp.ints(starts, "Slice's starts")
    ends = imp.ints(ends, "Slice's ends")
    rank = _rank_of(imp, x)
    axes = imp.ints(axes, "Slice's axes") if axes is not None else list(range(len(starts)))
    steps = imp.ints(steps, "Slice's steps") if steps is not None else [1] * len(starts)
    if isinstance(x, Sym) and not any(isinstance(v, Dim) for v in starts + ends):
        index = [slice(None)] * rank
        for a, s, e, st in zip(axes, starts, ends, steps):
            index[normalize_axis(a, rank)] = slice(s, e, st)
        return Sym(x.value[tuple(index)], x.dtype)
    t = imp.tensor(x)
    for a, s, e, st in zip(axes, starts, ends, steps):
        a = normalize_axis(a, rank)
        if isinstance(e, int) and (e >= BIG or (st < 0 and e <= -BIG)):
            e = None
        if isinstance(s, int) and st > 0 and s >= BIG:
            s = t.shape[a]
        t = ops.slice(t, axis=a, start=s, stop=e, step=st)
    return t


@IMPORT.register("Split")
def _split(imp, node, x, split=None):
    t = imp.tensor(x)
    axis = normalize_axis(imp.attrs.get("axis", 0), t.ndim)
    if split is not None:
        sizes = imp.ints(split, "Split's sizes")
    elif "split" in imp.attrs:
        sizes = list(imp.attrs["split"])
    else:
        n = imp.attrs.get("num_outputs", len(node.output))
        dim = t.shape[axis]
        if isinstance(dim, int):
            each = -(-dim // n)
            sizes = [min(each, dim - i * each) for i in range(n)]
        else:
            each = dim_div(dim, n)
            if each is None:
                raise ShapeError(f"cannot split dim {dim} into {n} equal parts")
            sizes = [each] * n
    return list(ops.split(t, sizes=tuple(sizes), axis=axis))


@IMPORT.register("ConstantOfShape")
def _constant_of_shape(imp, node, shape_value):
    dims = imp.ints(shape_value, "ConstantOfShape's shape")
    fill = np.asarray(imp.attrs.get("value", np.zeros(1, np.float32)))
    dtype = _dt.dtype(fill.dtype)
    value = fill.reshape(-1)[0].item()
    return ops.full(shape=tuple(dims), value=value, dtype=dtype)


@IMPORT.register("Range")
def _range(imp, node, start_value, limit_value, delta_value):
    start, limit, delta = (imp.ints(v, "Range's bounds")[0] for v in (start_value, limit_value, delta_value))
    dtype = start_value.dtype if isinstance(start_value, Sym) else imp.tensor(start_value).dtype
    if not any(isinstance(v, Dim) for v in (start, limit, delta)):
        return imp.const(np.arange(start, limit, delta), dtype)
    n = dim_div(Dim.of(limit) - start, delta) if isinstance(delta, int) else None
    if n is None:
        raise ShapeError(f"Range({start}, {limit}, {delta}) has no exact symbolic length")
    out = ops.iota(shape=(n,), dtype=dtype)
    if delta != 1:
        out = out * imp.const(np.asarray(delta), dtype)
    if start != 0:
        out = out + imp.tensor(imp.value(np.array(start, dtype=object), dtype))
    return out


@IMPORT.register("Where")
def _where(imp, node, cond, a, b):
    known, symbolic = known_all(imp, [cond, a, b])
    if known is not None and symbolic:
        c, x, y = known
        dtype = next(v.dtype for v in (a, b) if isinstance(v, Sym))
        return imp.value(np.where(c.astype(bool), x, y), dtype)
    return ops.where(imp.tensor(cond), imp.tensor(a), imp.tensor(b))


@IMPORT.register("Trilu")
def _trilu(imp, node, x, k=None):
    k = int(imp.ints(k, "Trilu's k")[0]) if k is not None else 0
    t = imp.tensor(x)
    return ops.triu(t, k=k) if imp.attrs.get("upper", 1) else ops.tril(t, k=k)
