"""Helpers shared by op declarations: type rules for common op shapes and gradient plumbing.

Every op group imports this module, so it imports none of them: the gradient plumbing calls the
ops it emits (``sum``, ``reshape``) through the registry by name.
"""
from __future__ import annotations

from graphdsl import dtypes as _dt
from graphdsl.errors import ShapeError, TypeError_
from graphdsl.registry import get as get_op
from graphdsl.types import Shape, TensorType, as_dim, broadcast_shapes, normalize_axis


def types_str(*types) -> str:
    return ", ".join(str(t) for t in types)


def same_dtype(op: str, *types: TensorType):
    first = types[0].dtype
    for t in types[1:]:
        if t.dtype != first:
            raise TypeError_(f"dtypes differ: {types_str(*types)}", op=op,
                             hint=f"cast one side, e.g. y.astype('{first.name}')")
    return first


def broadcast_infer(op: str, *types: TensorType) -> Shape:
    shape = broadcast_shapes(*(t.shape for t in types))
    if shape is None:
        raise ShapeError(f"shapes do not broadcast: {types_str(*types)}", op=op,
                         hint="broadcasting aligns trailing dims; each pair must be equal or 1")
    return shape


def require_float(op: str, t: TensorType) -> None:
    if not t.dtype.is_float:
        raise TypeError_(f"needs a floating-point input, got {t}", op=op,
                         hint="cast it first: x.astype('float32')")


def binary_infer(name: str, *, out_dtype=None, kinds=None):
    """Type rule of a broadcasting binary op (same dtype both sides)."""
    def infer(a: TensorType, b: TensorType) -> TensorType:
        dt = same_dtype(name, a, b)
        if kinds is not None and dt.kind not in kinds:
            raise TypeError_(f"does not take {dt.name} inputs ({types_str(a, b)})", op=name)
        return TensorType(broadcast_infer(name, a, b), out_dtype or dt)
    return infer


def unary_float_infer(name: str):
    def infer(x: TensorType) -> TensorType:
        require_float(name, x)
        return x
    return infer


def axis_attr(axis, rank: int, op: str) -> int:
    return normalize_axis(int(axis), rank, op)


def axes_attr(axis, rank: int, op: str) -> tuple[int, ...] | None:
    """Normalize a reduction's axis attribute: None (all axes) or a sorted tuple of distinct axes.

    An axis named twice (``(0, 0)``, or ``(1, -1)`` on a matrix) is an error, as in NumPy.
    """
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = [normalize_axis(int(a), rank, op) for a in axes]
    for i, a in enumerate(out):
        if a in out[:i]:
            first = axes[out.index(a)]
            same = f"axis {a}" if first == axes[i] else f"axes {first} and {axes[i]} (both axis {a})"
            raise ShapeError(f"axis={tuple(axes)} names {same} twice, for rank {rank}", op=op,
                             hint="name each axis once")
    return tuple(sorted(out))


def sizes_attr(shape, op: str, what: str = "shape") -> tuple:
    """A shape attribute as a tuple of dims (ints or Dims), refusing negative sizes."""
    dims = tuple(as_dim(d) for d in shape)
    for i, d in enumerate(dims):
        if isinstance(d, int) and d < 0:
            raise ShapeError(f"{what} {dims} has the negative size {d} at position {i}", op=op,
                             hint="sizes are >= 0 (only reshape takes one -1, for the dim to infer)")
    return dims


# -- gradient plumbing (runs while tracing the gradient graph) --------------------------------
def sum_to(g, shape: Shape):
    """Sum ``g`` down to ``shape``: the adjoint of broadcasting."""
    gshape = g.shape
    if gshape == shape:
        return g
    lead = len(gshape) - len(shape)
    axes = list(range(lead))
    for i, d in enumerate(shape):
        if d == 1 and gshape[lead + i] != 1:
            axes.append(lead + i)
    if axes:
        g = get_op("sum")(g, axis=tuple(axes), keepdims=True)
    if g.shape != shape:
        g = get_op("reshape")(g, shape=tuple(shape))
    return g


def float_dtype(t: TensorType):
    return t.dtype if t.dtype.is_float else _dt.float32
