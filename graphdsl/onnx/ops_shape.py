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

from .importer import Sym, dtype_of
from .table import handles

BIG = 2 ** 31 - 1   # slice bounds at or past this mean "to the end"


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def _known_all(imp, ins):
    """The known values of every input (None if one is not known), and whether any is a Sym."""
    vals = [imp.known(v) for v in ins]
    if any(v is None for v in vals):
        return None, False
    return [np.asarray(v, dtype=object) if isinstance(x, Sym) else np.asarray(v)
            for v, x in zip(vals, ins)], any(isinstance(x, Sym) for x in ins)


def _rank(v) -> int:
    return v.value.ndim if isinstance(v, Sym) else v.ndim


def _dtype(v):
    return v.dtype


def _shape(v) -> tuple:
    return tuple(v.value.shape) if isinstance(v, Sym) else tuple(v.shape)


def _axes_arg(imp, ins, attrs, index: int = 1):
    """Axes from the input at ``index`` (opset 13/18+) or the ``axes`` attribute (before)."""
    if len(ins) > index and ins[index] is not None:
        return [int(a) for a in imp.ints(ins[index], "axes")]
    return list(attrs["axes"]) if "axes" in attrs else None


@handles("Constant")
def _constant(imp, ins, attrs):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in attrs:
            value = np.asarray(attrs[key])
            if key in ("value_float", "value_floats"):
                value = value.astype(np.float32)
            elif key in ("value_int", "value_ints"):
                value = value.astype(np.int64)
            return imp.const(value)
    raise GraphError(f"Constant with attribute(s) {sorted(attrs)} is not supported",
                     hint="numeric tensors only (value, value_float(s), value_int(s))")


@handles("Identity")
def _identity(imp, ins, attrs):
    return ins[0]


@handles("Dropout")
def _dropout(imp, ins, attrs):
    """Inference-mode dropout is the identity; its mask output is all true."""
    x = ins[0]
    if len(imp.node.output) > 1 and imp.node.output[1]:
        return [x, ops.full(shape=tuple(imp.tensor(x).shape), value=True, dtype=_dt.bool_)]
    return x


@handles("Shape")
def _shape_op(imp, ins, attrs):
    dims = _shape(ins[0]) if isinstance(ins[0], Sym) else tuple(imp.tensor(ins[0]).shape)
    rank = len(dims)
    start, end = attrs.get("start", 0), attrs.get("end", rank)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return imp.value(np.array(list(dims[start:end]), dtype=object), _dt.int64)


@handles("Size")
def _size(imp, ins, attrs):
    dims = _shape(ins[0]) if isinstance(ins[0], Sym) else tuple(imp.tensor(ins[0]).shape)
    return imp.value(np.array(Shape(dims).numel(), dtype=object), _dt.int64)


@handles("Cast")
def _cast(imp, ins, attrs):
    to = dtype_of(attrs["to"], "Cast target")
    x = ins[0]
    if isinstance(x, Sym) and to.is_int:
        return Sym(x.value, to)
    t = imp.tensor(x)
    return t if t.dtype == to else t.astype(to)


@handles("CastLike")
def _cast_like(imp, ins, attrs):
    to = imp.tensor(ins[1]).dtype if not isinstance(ins[1], Sym) else ins[1].dtype
    return _cast(imp, ins[:1], {"to": _onnx_type(to)})


def _onnx_type(dtype) -> int:
    from .importer import DTYPES
    return next(k for k, v in DTYPES.items() if v == dtype)


@handles("Gather")
def _gather(imp, ins, attrs):
    data, indices = ins
    known, symbolic = _known_all(imp, ins)
    axis = _axis(attrs.get("axis", 0), _rank(data) if isinstance(data, Sym) else imp.tensor(data).ndim)
    if known is not None and symbolic:
        values, idx = known
        idx = np.where(idx.astype(np.int64) < 0, idx.astype(np.int64) + values.shape[axis], idx)
        return imp.value(np.take(values, idx.astype(np.int64), axis=axis), _dtype(data))
    table = imp.tensor(data)
    idx_known = imp.known(indices)
    if idx_known is not None and not isinstance(indices, Sym):
        size = table.shape[axis]
        if (np.asarray(idx_known) < 0).any():
            if not isinstance(size, int):
                raise ShapeError(f"negative Gather indices on symbolic dim {size}")
            indices = imp.const(np.where(idx_known < 0, idx_known + size, idx_known))
    return ops.take(table, imp.tensor(indices), axis=axis)


@handles("GatherElements")
def _gather_elements(imp, ins, attrs):
    x = imp.tensor(ins[0])
    return ops.gather(x, imp.tensor(ins[1]), axis=_axis(attrs.get("axis", 0), x.ndim))


@handles("GatherND")
def _gather_nd(imp, ins, attrs):
    """data[idx[..., 0], ..., idx[..., k-1]] as one take on data reshaped to [d0*...*dk-1, rest]."""
    if attrs.get("batch_dims", 0) != 0:
        raise GraphError("GatherND with batch_dims != 0 is not supported")
    data, indices = imp.tensor(ins[0]), imp.tensor(ins[1])
    k = indices.shape[-1]
    if not isinstance(k, int):
        raise ShapeError(f"GatherND needs a static index depth, got {indices.type}")
    lead, rest = tuple(data.shape[:k]), tuple(data.shape[k:])
    linear = None
    for j in range(k):
        part = indices[..., j]
        stride = Shape(lead[j + 1:]).numel()
        if stride != 1:
            size = stride if isinstance(stride, int) else imp.dim_tensor(stride)
            if not isinstance(size, int) and size.dtype != part.dtype:
                size = size.astype(part.dtype)
            part = part * size
        linear = part if linear is None else linear + part
    flat = data.reshape((Shape(lead).numel(),) + rest)
    return ops.take(flat, linear, axis=0)


@handles("Concat")
def _concat(imp, ins, attrs):
    known, symbolic = _known_all(imp, ins)
    if known is not None and symbolic:
        rank = known[0].ndim
        out = np.concatenate([k.astype(object) for k in known], axis=_axis(attrs["axis"], rank))
        return imp.value(out, next(x.dtype for x in ins if isinstance(x, Sym)))
    tensors = [imp.tensor(v) for v in ins]
    return ops.concat(tensors, axis=_axis(attrs["axis"], tensors[0].ndim))


@handles("Unsqueeze")
def _unsqueeze(imp, ins, attrs):
    x = ins[0]
    axes = _axes_arg(imp, ins, attrs)
    rank = (_rank(x) if isinstance(x, Sym) else imp.tensor(x).ndim) + len(axes)
    axes = sorted(_axis(a, rank) for a in axes)
    if isinstance(x, Sym):
        value = x.value
        for a in axes:
            value = np.expand_dims(value, a)
        return Sym(value, x.dtype)
    t = imp.tensor(x)
    for a in axes:
        t = t.unsqueeze(a)
    return t


@handles("Squeeze")
def _squeeze(imp, ins, attrs):
    x = ins[0]
    shape = _shape(x) if isinstance(x, Sym) else tuple(imp.tensor(x).shape)
    axes = _axes_arg(imp, ins, attrs)
    if axes is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    axes = sorted((_axis(a, len(shape)) for a in axes), reverse=True)
    if isinstance(x, Sym):
        return Sym(np.squeeze(x.value, axis=tuple(axes)) if axes else x.value, x.dtype)
    t = imp.tensor(x)
    for a in axes:
        t = t.squeeze(a)
    return t


@handles("Reshape")
def _reshape(imp, ins, attrs):
    x = ins[0]
    target = imp.ints(ins[1], "Reshape's target shape")
    shape = _shape(x) if isinstance(x, Sym) else tuple(imp.tensor(x).shape)
    if not attrs.get("allowzero", 0):
        target = [shape[i] if isinstance(d, int) and d == 0 else d for i, d in enumerate(target)]
    if isinstance(x, Sym):
        if any(isinstance(d, Dim) for d in target):
            raise ShapeError(f"cannot reshape a shape value to symbolic shape {target}")
        return Sym(x.value.reshape([int(d) for d in target]), x.dtype)
    t = imp.tensor(x)
    return t if tuple(target) == tuple(t.shape) else t.reshape(tuple(target))


@handles("Flatten")
def _flatten(imp, ins, attrs):
    t = imp.tensor(ins[0])
    axis = _axis(attrs.get("axis", 1), t.ndim + 1) if t.ndim else 0
    return t.reshape((Shape(t.shape[:axis]).numel(), Shape(t.shape[axis:]).numel()))


@handles("Transpose")
def _transpose(imp, ins, attrs):
    t = imp.tensor(ins[0])
    perm = attrs.get("perm", list(reversed(range(t.ndim))))
    return t if list(perm) == list(range(t.ndim)) else t.permute(*perm)


@handles("Expand")
def _expand(imp, ins, attrs):
    x = ins[0]
    dims = imp.ints(ins[1], "Expand's target shape")
    shape = _shape(x) if isinstance(x, Sym) else tuple(imp.tensor(x).shape)
    target = broadcast_shapes(Shape(shape), Shape(dims))
    if target is None:
        raise ShapeError(f"cannot expand shape {Shape(shape)} to {dims}")
    if isinstance(x, Sym) and target.is_static:
        return Sym(np.broadcast_to(x.value, tuple(target)).copy(), x.dtype)
    t = imp.tensor(x)
    return t if tuple(target) == tuple(t.shape) else t.expand(tuple(target))


@handles("Slice")
def _slice(imp, ins, attrs):
    x = ins[0]
    starts = imp.ints(ins[1], "Slice's starts")
    ends = imp.ints(ins[2], "Slice's ends")
    rank = _rank(x) if isinstance(x, Sym) else imp.tensor(x).ndim
    axes = imp.ints(ins[3], "Slice's axes") if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
    steps = imp.ints(ins[4], "Slice's steps") if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    if isinstance(x, Sym) and not any(isinstance(v, Dim) for v in starts + ends):
        index = [slice(None)] * rank
        for a, s, e, st in zip(axes, starts, ends, steps):
            index[_axis(a, rank)] = slice(s, e, st)
        return Sym(x.value[tuple(index)], x.dtype)
    t = imp.tensor(x)
    for a, s, e, st in zip(axes, starts, ends, steps):
        a = _axis(a, rank)
        if isinstance(e, int) and (e >= BIG or (st < 0 and e <= -BIG)):
            e = None
        if isinstance(s, int) and st > 0 and s >= BIG:
            s = t.shape[a]
        t = ops.slice(t, axis=a, start=s, stop=e, step=st)
    return t


@handles("Split")
def _split(imp, ins, attrs):
    t = imp.tensor(ins[0])
    axis = _axis(attrs.get("axis", 0), t.ndim)
    if len(ins) > 1 and ins[1] is not None:
        sizes = imp.ints(ins[1], "Split's sizes")
    elif "split" in attrs:
        sizes = list(attrs["split"])
    else:
        n = attrs.get("num_outputs", len(imp.node.output))
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


@handles("ConstantOfShape")
def _constant_of_shape(imp, ins, attrs):
    dims = imp.ints(ins[0], "ConstantOfShape's shape")
    fill = np.asarray(attrs.get("value", np.zeros(1, np.float32)))
    dtype = _dt.dtype(fill.dtype)
    value = fill.reshape(-1)[0].item()
    return ops.full(shape=tuple(dims), value=value, dtype=dtype)


@handles("Range")
def _range(imp, ins, attrs):
    start, limit, delta = (imp.ints(v, "Range's bounds")[0] for v in ins)
    dtype = imp.tensor(ins[0]).dtype if not isinstance(ins[0], Sym) else ins[0].dtype
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


@handles("Where")
def _where(imp, ins, attrs):
    known, symbolic = _known_all(imp, ins)
    if known is not None and symbolic:
        cond, a, b = known
        dtype = next(x.dtype for x in ins[1:] if isinstance(x, Sym))
        return imp.value(np.where(cond.astype(bool), a, b), dtype)
    c, a, b = (imp.tensor(v) for v in ins)
    return ops.where(c, a, b)


@handles("Trilu")
def _trilu(imp, ins, attrs):
    k = int(imp.ints(ins[1], "Trilu's k")[0]) if len(ins) > 1 and ins[1] is not None else 0
    t = imp.tensor(ins[0])
    return ops.triu(t, k=k) if attrs.get("upper", 1) else ops.tril(t, k=k)
