"""Shape ops: reshape, transpose/permute, broadcast_to, and the indexing helpers built on them."""
from __future__ import annotations

import numpy as np

from graphdsl.errors import ShapeError
from graphdsl.registry import defop
from graphdsl.types import Dim, Shape, TensorType, as_dim, broadcast_shapes, dim_div

from .common import sizes_attr, sum_to


def _reshape_normalize(x: TensorType, shape):
    """Resolve one -1 against the input's element count, symbolically; other sizes must be >= 0."""
    dims = [as_dim(d) for d in shape]
    for i, d in enumerate(dims):
        if isinstance(d, int) and d < -1:
            raise ShapeError(f"target shape {tuple(dims)} has the negative size {d} at position {i}",
                             op="reshape", hint="sizes are >= 0; one -1 stands for the dim to infer")
    holes = [i for i, d in enumerate(dims) if isinstance(d, int) and d == -1]
    if len(holes) > 1:
        raise ShapeError(f"at most one -1 in the target shape, got {tuple(shape)}", op="reshape",
                         hint="give every size but one")
    if holes:
        known = 1
        for i, d in enumerate(dims):
            if i != holes[0]:
                known = known * d
        missing = dim_div(x.shape.numel(), known)
        if missing is None:
            raise ShapeError(f"cannot reshape {x} to {tuple(shape)}: "
                             f"{x.shape.numel()} elements do not divide by {known}", op="reshape")
        dims[holes[0]] = missing
    return {"shape": tuple(dims)}


def _reshape_infer(x: TensorType, shape):
    if any(isinstance(d, int) and d < 0 for d in shape):
        raise ShapeError(f"negative dim in target shape {tuple(shape)}", op="reshape",
                         hint="sizes are >= 0; one -1 stands for the dim to infer")
    target = Shape(shape)
    if Dim.of(target.numel()) != Dim.of(x.shape.numel()):
        raise ShapeError(f"cannot reshape {x} to {target}: {x.shape.numel()} elements vs "
                         f"{target.numel()}", op="reshape",
                         hint="the element counts must match; use -1 for the dim to infer")
    return x.with_shape(target)


reshape = defop("reshape", attrs=("shape",), normalize=_reshape_normalize, infer=_reshape_infer,
                ref=lambda x, shape: np.reshape(x, shape),
                vjp=lambda g, y, x, shape: [reshape(g, shape=tuple(x.shape))],
                types="any dtype → same dtype",
                doc="same elements, new shape (one dim may be -1)")


def _transpose_normalize(x: TensorType, perm):
    """Non-negative axes, each of the input's axes exactly once (negative ones count from the end)."""
    given = tuple(int(p) for p in perm)
    if len(given) != x.rank:
        raise ShapeError(f"perm {given} is not a permutation of the {x.rank} axes of {x}: it has "
                         f"{len(given)}", op="transpose",
                         hint="name every axis once, e.g. x.permute(0, 2, 1, 3); x.transpose(a, b) swaps two")
    for p in given:
        if not -x.rank <= p < x.rank:
            raise ShapeError(f"perm {given} is not a permutation of the {x.rank} axes of {x}: axis {p} "
                             f"is out of range", op="transpose",
                             hint=f"axes of a rank-{x.rank} tensor are {-x.rank} to {x.rank - 1}")
    out = tuple(p % x.rank for p in given)
    for i, p in enumerate(out):
        if p in out[:i]:
            raise ShapeError(f"perm {given} is not a permutation of the {x.rank} axes of {x}: it names "
                             f"axis {p} twice", op="transpose",
                             hint="a permutation names every axis exactly once")
    return {"perm": out}


transpose = defop("transpose", attrs=("perm",), normalize=_transpose_normalize,
                  infer=lambda x, perm: x.with_shape(tuple(x.shape[p] for p in perm)),
                  ref=lambda x, perm: np.transpose(x, perm),
                  vjp=lambda g, y, x, perm: [transpose(g, perm=tuple(np.argsort(perm).tolist()))],
                  types="any dtype → same dtype",
                  doc="permute axes (x.transpose(-1, -2), x.permute(0, 2, 1, 3))")


def _broadcast_infer(x: TensorType, shape):
    target = Shape(shape)
    if len(target) < x.rank or broadcast_shapes(x.shape, target) != target:
        raise ShapeError(f"cannot broadcast {x} to {target}", op="broadcast_to")
    return x.with_shape(target)


broadcast_to = defop("broadcast_to", attrs=("shape",),
                     normalize=lambda x, shape: {"shape": sizes_attr(shape, "broadcast_to")},
                     infer=_broadcast_infer,
                     # np.array, not np.ascontiguousarray: that one turns a 0-d result into shape (1,)
                     ref=lambda x, shape: np.array(np.broadcast_to(x, shape)),
                     vjp=lambda g, y, x, shape: [sum_to(g, x.shape)],
                     types="any dtype → same dtype",
                     doc="expand size-1 and missing leading axes (PyTorch's expand)")
expand = broadcast_to
