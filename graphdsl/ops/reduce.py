"""Reductions: sum, mean, prod, max, min, argmax, each over one axis, several, or all, with keepdims;
cumsum, the running sum along one axis; and topk_indices, the positions of the k largest (or
smallest) elements along one axis (``topk`` pairs them with their values through ``gather``)."""
from __future__ import annotations

import numpy as np

from graphdsl import dtypes as _dt
from graphdsl.errors import GraphDSLError, ShapeError, TypeError_
from graphdsl.registry import REQUIRED, defop
from graphdsl.types import TensorType

from .common import axes_attr, axis_attr, require_float


def _reduce_normalize(name):
    def normalize(x, axis, keepdims):
        return {"axis": axes_attr(axis, x.rank, name), "keepdims": bool(keepdims)}
    return normalize


def _reduced_shape(x: TensorType, axis, keepdims):
    axes = range(x.rank) if axis is None else axis
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    return tuple(d for i, d in enumerate(x.shape) if i not in axes)


def _reduce_infer(x, axis, keepdims):
    return x.with_shape(_reduced_shape(x, axis, keepdims))


def _restore(g, x, axis, keepdims):
    """Broadcast a reduction's cotangent back to the input's shape."""
    from .shape import broadcast_to, reshape
    if not keepdims:
        g = reshape(g, shape=_reduced_shape(x.type, axis, True))
    return broadcast_to(g, shape=tuple(x.shape))


def _sum_ref(x, axis, keepdims):
    return np.asarray(np.sum(x, axis=axis, keepdims=keepdims), dtype=x.dtype)


sum = defop("sum", attrs={"axis": None, "keepdims": False}, normalize=_reduce_normalize("sum"),
            infer=_reduce_infer, ref=_sum_ref,
            vjp=lambda g, y, x, axis, keepdims: [_restore(g, x, axis, keepdims)],
            doc="sum over axis (None: all axes)", tags=("reduction",))


def _count(x: TensorType, axis):
    """How many elements each output of a reduction over ``axis`` combines (an int or a Dim)."""
    n = 1
    for i in (range(x.rank) if axis is None else axis):
        n = n * x.shape[i]
    return n


def _float_reduce_infer(name):
    def infer(x, axis, keepdims):
        require_float(name, x)
        return _reduce_infer(x, axis, keepdims)
    return infer


def _mean_ref(x, axis, keepdims):
    wide = x.astype(np.float32) if x.dtype.itemsize < 4 else x
    return np.asarray(np.mean(wide, axis=axis, keepdims=keepdims), dtype=x.dtype)


def _mean_vjp(g, y, x, axis, keepdims):
    from .creation import full
    n = _count(x.type, axis)
    scale = 1.0 / n if isinstance(n, int) else 1.0 / full(shape=(), value=n, dtype=x.dtype)
    return [_restore(g * scale, x, axis, keepdims)]


mean = defop("mean", attrs={"axis": None, "keepdims": False}, normalize=_reduce_normalize("mean"),
             infer=_float_reduce_infer("mean"), ref=_mean_ref, vjp=_mean_vjp,
             doc="mean over axis (None: all axes)", tags=("reduction",))


# -- prod ----------------------------------------------------------------------------------------
def _narrow_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f" and dtype.itemsize < 4 or dtype.name == "bfloat16"


def _prod_infer(x, axis, keepdims):
    if x.dtype.is_bool:
        raise TypeError_(f"does not take bool input {x}", op="prod",
                         hint="cast it to an integer first, or use min for a logical and")
    return _reduce_infer(x, axis, keepdims)


def _prod_ref(x, axis, keepdims):
    """np.prod in the input's dtype (an integer product wraps as the dtype does); a narrow float
    multiplies in float32 and rounds once, as ``mean`` does. An empty slice gives 1."""
    wide = x.astype(np.float32) if _narrow_float(x.dtype) else x
    return np.asarray(np.prod(wide, axis=axis, keepdims=keepdims, dtype=wide.dtype), dtype=x.dtype)


def _prod_vjp(g, y, x, axis, keepdims):
    """d prod / d x_i is the product of the other elements of x_i's slice, written so that a zero
    is exact (``y / x`` is 0/0 there): with ``p`` the product of the slice's nonzero elements and
    ``z`` the number of its zeros, the product of the others is ``p / x_i`` when z == 0; for
    z == 1, ``p`` at the zero and 0 elsewhere; for z >= 2, 0 everywhere."""
    from .elementwise import cast, equal, where
    zero = equal(x, 0)
    zeros = sum(cast(zero, dtype=x.dtype), axis=axis, keepdims=True)
    p = prod(where(zero, 1, x), axis=axis, keepdims=True)
    others = where(zero, where(equal(zeros, 1), p, 0), where(equal(zeros, 0), p / where(zero, 1, x), 0))
    return [_restore(g, x, axis, keepdims) * others]


prod = defop("prod", attrs={"axis": None, "keepdims": False}, normalize=_reduce_normalize("prod"),
             infer=_prod_infer, ref=_prod_ref, vjp=_prod_vjp,
             doc="product over axis (None: all axes; an empty slice gives 1; an integer product wraps); "
                 "a narrow float multiplies in float32 and rounds once", tags=("reduction",))


def _extremum_vjp(g, y, x, axis, keepdims):
    """The gradient goes to the elements equal to the extremum, split equally among ties."""
    from .elementwise import cast, equal
    mask = cast(equal(x, _restore(y, x, axis, keepdims)), dtype=x.dtype)
    share = g / sum(mask, axis=axis, keepdims=keepdims)
    return [mask * _restore(share, x, axis, keepdims)]


def empty_extremum(name: str, dtype: np.dtype):
    """What max (min) of an empty slice is: the identity of the reduction, -inf (+inf) for a float,
    the dtype's least (greatest) value for an integer, False (True) for bool, as ONNX defines it.
    NumPy raises instead; the reference passes this as ``initial``."""
    dtype = np.dtype(dtype)
    low = name == "max"
    if dtype == np.bool_:
        return not low
    if dtype.kind == "f" or dtype.name == "bfloat16":
        return -np.inf if low else np.inf
    info = np.iinfo(dtype)
    return info.min if low else info.max


def _extremum(name, fn):
    def ref(x, axis, keepdims):
        return np.asarray(fn(x, axis=axis, keepdims=keepdims, initial=empty_extremum(name, x.dtype)), dtype=x.dtype)
    return defop(name, attrs={"axis": None, "keepdims": False}, normalize=_reduce_normalize(name),
                 infer=_reduce_infer, ref=ref, vjp=_extremum_vjp,
                 doc=f"{name}imum over axis (None: all axes; an empty slice gives "
                     f"{'-inf' if name == 'max' else '+inf'}, or the dtype's extreme); ties share the "
                     "gradient equally", tags=("reduction",))


max = _extremum("max", np.max)
min = _extremum("min", np.min)


def _argmax_normalize(x, axis, keepdims):
    axes = axes_attr(axis, x.rank, "argmax")
    if axes is not None and len(axes) != 1:
        raise ShapeError(f"takes one axis or None, got axis={axis!r} for {x}", op="argmax",
                         hint="reshape to merge the axes first")
    return {"axis": axes, "keepdims": bool(keepdims)}


def _argmax_ref(x, axis, keepdims):
    out = np.argmax(x, axis=None if axis is None else axis[0], keepdims=keepdims)
    return np.asarray(out, dtype=np.int64)


argmax = defop("argmax", attrs={"axis": -1, "keepdims": False}, normalize=_argmax_normalize,
               infer=lambda x, axis, keepdims: _reduce_infer(x, axis, keepdims).with_dtype(_dt.int64),
               ref=_argmax_ref, differentiable=False,
               doc="int64 index of the largest element along one axis (default the last; None: of the "
                   "flattened tensor); the first one on ties", tags=("reduction",))


# -- topk ----------------------------------------------------------------------------------------
def _flag(op: str, name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)) and value not in (0, 1):
        raise ShapeError(f"{name} must be a bool, got {value!r}", op=op)
    return bool(value)


def _topk_normalize(x, k, axis, largest, sorted):
    if x.rank == 0:
        raise ShapeError(f"needs an input of rank >= 1, got {x}", op="topk_indices", hint="reshape it to [1] first")
    axis = axis_attr(axis, x.rank, "topk_indices")
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ShapeError(f"k must be an int >= 0, got k={k!r} for {x}", op="topk_indices")
    n = x.shape[axis]
    if isinstance(n, int) and k > n:
        raise ShapeError(f"k={k} is more than the {n} elements along axis {axis} of {x}", op="topk_indices",
                         hint=f"k is at most the size of the axis ({n})")
    return {"k": int(k), "axis": axis, "largest": _flag("topk_indices", "largest", largest),
            "sorted": _flag("topk_indices", "sorted", sorted)}


def _topk_infer(x, k, axis, largest, sorted):
    shape = tuple(x.shape[:axis]) + (k,) + tuple(x.shape[axis + 1:])
    return TensorType(shape, _dt.int64)


def topk_np(x: np.ndarray, k: int, axis: int, largest: bool, sorted: bool) -> np.ndarray:
    """The reference: a stable argsort. Ascending, np.argsort puts NaN last (NaN counts as larger
    than every number) and keeps equal elements in index order; descending sorts the flipped
    array ascending and reads the order backwards, so equal elements stay in index order (the
    lower index first) and NaN comes first. -0.0 and 0.0 are equal. ``sorted=False`` gives the
    same k positions in increasing index order."""
    n = x.shape[axis]
    if k > n:
        raise GraphDSLError(f"k={k} is more than the {n} elements along axis {axis} of an array of shape "
                            f"{list(x.shape)}", op="topk_indices", hint=f"k is at most the size of the axis ({n})")
    if _narrow_float(x.dtype):
        x = x.astype(np.float32)   # exact; NumPy's sort knows float32's NaN
    if largest:
        order = n - 1 - np.flip(np.argsort(np.flip(x, axis), axis=axis, kind="stable"), axis)
    else:
        order = np.argsort(x, axis=axis, kind="stable")
    out = np.take(order, np.arange(k), axis=axis)
    if not sorted:
        out = np.sort(out, axis=axis)
    return np.ascontiguousarray(out, dtype=np.int64)


topk_indices = defop(
    "topk_indices", attrs={"k": REQUIRED, "axis": -1, "largest": True, "sorted": True},
    normalize=_topk_normalize, infer=_topk_infer, ref=topk_np, differentiable=False,
    types="any dtype → int64",
    doc="int64 positions of the k largest (largest=False: smallest) elements along axis, the best "
        "first; equal elements in index order (the lower index first), NaN larger than every number; "
        "sorted=False: the same positions in increasing index order", tags=("reduction",))


def topk(x, k: int, axis: int = -1, largest: bool = True, sorted: bool = True):
    """``(values, indices)`` of the k largest (or smallest) elements along ``axis``: the indices
    from ``topk_indices``, the values gathered from ``x`` at them (so the gradient flows to the
    elements picked)."""
    from .indexing import gather
    indices = topk_indices(x, k=k, axis=axis, largest=largest, sorted=sorted)
    return gather(x, indices, axis=axis), indices


# -- cumsum --------------------------------------------------------------------------------------
def _cumsum_normalize(x, axis, exclusive, reverse):
    if x.rank == 0:
        raise ShapeError(f"needs an input of rank >= 1, got {x}", op="cumsum")
    for name, flag in (("exclusive", exclusive), ("reverse", reverse)):
        if not isinstance(flag, (bool, np.bool_)) and flag not in (0, 1):
            raise ShapeError(f"{name} must be a bool, got {flag!r}", op="cumsum")
    return {"axis": axis_attr(axis, x.rank, "cumsum"), "exclusive": bool(exclusive), "reverse": bool(reverse)}


def _cumsum_infer(x, axis, exclusive, reverse):
    if x.dtype.name == "bool":
        raise ShapeError(f"does not take bool input {x}", op="cumsum", hint="cast it to an integer first")
    return x


def cumsum_np(x: np.ndarray, axis: int, exclusive: bool, reverse: bool) -> np.ndarray:
    """The running sum along ``axis``, from the end with ``reverse``; ``exclusive`` leaves each
    element out of its own sum (the first is 0). A narrow float sums in float32, as ``mean`` does."""
    acc = np.float32 if x.dtype.kind == "f" and x.dtype.itemsize < 4 or x.dtype.name == "bfloat16" else x.dtype
    v = np.flip(x, axis) if reverse else x
    out = np.cumsum(v, axis=axis, dtype=acc)
    if exclusive:   # the sums shifted one place along the axis, 0 first
        out = np.moveaxis(out, axis, 0)
        out = np.concatenate([np.zeros_like(out[:1]), out[:-1]], axis=0)
        out = np.moveaxis(out, 0, axis)
    return np.ascontiguousarray(np.flip(out, axis) if reverse else out).astype(x.dtype)


cumsum = defop("cumsum", attrs={"axis": 0, "exclusive": False, "reverse": False}, normalize=_cumsum_normalize,
               infer=_cumsum_infer, ref=cumsum_np,
               vjp=lambda g, y, x, axis, exclusive, reverse: [
                   cumsum(g, axis=axis, exclusive=exclusive, reverse=not reverse)],
               doc="running sum along axis (exclusive: each element left out of its own; reverse: from the end)")


__all__ = ["sum", "mean", "prod", "max", "min", "argmax", "topk_indices", "topk", "cumsum"]
