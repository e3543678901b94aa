"""The Python-level helpers behind ``Tensor.__getitem__`` and ``Tensor.flatten``.

They are not ops of their own: they emit slice, squeeze, unsqueeze, take and reshape nodes, and
refuse the NumPy indexing forms whose axis order would surprise (two tensor indices, boolean masks).
Tracing sits below the ops, so this module binds the two helpers into it (``bind_indexing``).
"""
from __future__ import annotations

import builtins

import numpy as np

from graphdsl.errors import ShapeError, TypeError_
from graphdsl.tracing import Tensor, as_tensor, bind_indexing, user_loc
from graphdsl.types import Dim, Shape, normalize_axis

from .indexing import slice, squeeze, take, unsqueeze
from .shape import reshape

_PySlice = builtins.slice


def _index_error(message: str, hint: str | None = None, cls=ShapeError, op: str = "getitem"):
    """An error at the user's line, for the helpers below (they are not ops, so apply_op cannot)."""
    return cls(message, op=op, loc=user_loc(), hint=hint)


def _is_int(item) -> bool:
    return isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_))


def _index_item(item):
    """Check one entry of an index; lists and arrays of ints become constant int tensors."""
    if item is None or item is Ellipsis or _is_int(item):
        return int(item) if _is_int(item) else item
    if isinstance(item, _PySlice):
        for bound in (item.start, item.stop, item.step):
            if not (bound is None or _is_int(bound) or isinstance(bound, Dim)):
                raise _index_error(f"slice bounds must be ints, got {item}",
                                   hint="for a tensor-valued position use take or gather")
        return item
    if isinstance(item, (list, np.ndarray)):
        item = as_tensor(np.asarray(item))
    if isinstance(item, Tensor):
        if item.dtype.is_bool:
            raise _index_error(f"boolean mask index {item.type}: the result's shape would depend on "
                               f"the data", hint="use where(mask, x, 0) or x.masked_fill(~mask, 0)")
        return item
    raise _index_error(f"cannot index with {type(item).__name__} {item!r}", cls=TypeError_)


def _expand_ellipsis(x, items: list) -> list:
    """Replace ``...`` (or the implicit trailing one) by full slices."""
    used = builtins.sum(1 for it in items if it is not None and it is not Ellipsis)
    if used > x.ndim:
        raise _index_error(f"too many indices for {x.type}: {used} given")
    fill = [_PySlice(None)] * (x.ndim - used)
    dots = [i for i, it in enumerate(items) if it is Ellipsis]
    if len(dots) > 1:
        raise _index_error("an index can have only one ellipsis (...)")
    if dots:
        return items[:dots[0]] + fill + items[dots[0] + 1:]
    return items + fill


def _check_advanced(items: list) -> None:
    """One tensor index at most, and next to any int indices, so NumPy would place it in line."""
    tensors = [i for i, it in enumerate(items) if isinstance(it, Tensor)]
    if len(tensors) > 1:
        raise _index_error("only one tensor index is supported",
                           hint="index one axis at a time, or use gather for pairwise indexing")
    if tensors:
        picked = tensors + [i for i, it in enumerate(items) if isinstance(it, int)]
        if builtins.max(picked) - builtins.min(picked) + 1 != len(picked):
            raise _index_error("a tensor index and int indices separated by other entries: NumPy "
                               "would move the indexed axes to the front",
                               hint="index in two steps, e.g. x[:, idx][..., 0]")


def _pick(x, axis: int, i: int):
    """x[..., i, ...] along axis, keeping the axis (squeezed by the caller)."""
    dim = x.shape[axis]
    if isinstance(dim, int) and not -dim <= i < dim:
        raise _index_error(f"index {i} is out of range for axis {axis} of {x.type}")
    return slice(x, axis=axis, start=i, stop=None if i == -1 else i + 1)


def getitem(x, index):
    """``x[index]`` with ints, slices (any step), None, ``...`` and one integer tensor index (take)."""
    items = list(index) if isinstance(index, tuple) else [index]
    items = _expand_ellipsis(x, [_index_item(it) for it in items])
    _check_advanced(items)
    out, axis = x, 0
    for it in items:
        if it is None:
            out = unsqueeze(out, axis=axis)
            axis += 1
        elif isinstance(it, _PySlice):
            if not (it.start is None and it.stop is None and it.step in (None, 1)):
                out = slice(out, axis=axis, start=it.start, stop=it.stop,
                            step=1 if it.step is None else it.step)
            axis += 1
        elif isinstance(it, Tensor):
            out = take(out, it, axis=axis)
            axis += it.ndim
        else:
            out = squeeze(_pick(out, axis, it), axis=axis)
    return out


def flatten(x, start: int = 0, end: int = -1):
    """Merge axes ``start..end`` (inclusive) into one, by reshape: ``x.flatten(1)``."""
    if x.ndim == 0:
        return reshape(x, shape=(1,))
    for a in (start, end):
        if not -x.ndim <= a < x.ndim:
            raise _index_error(f"axis {a} is out of range for {x.type}", op="flatten")
    s, e = normalize_axis(start, x.ndim), normalize_axis(end, x.ndim)
    if s > e:
        raise _index_error(f"start axis {start} comes after end axis {end} for {x.type}", op="flatten")
    merged = Shape(x.shape[s:e + 1]).numel()
    return reshape(x, shape=tuple(x.shape[:s]) + (merged,) + tuple(x.shape[e + 1:]))


bind_indexing(getitem=getitem, flatten=flatten)

__all__ = ["getitem", "flatten"]
