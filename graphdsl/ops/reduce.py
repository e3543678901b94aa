"""Reductions: sum, mean, max, min, argmax, each over one axis, several, or all, with keepdims;
and cumsum, the running sum along one axis."""
from __future__ import annotations

import numpy as np

from graphdsl import dtypes as _dt
from graphdsl.errors import ShapeError
from graphdsl.registry import defop
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


__all__ = ["sum", "mean", "max", "min", "argmax", "cumsum"]
