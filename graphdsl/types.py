"""Shapes with symbolic dims, and tensor types.

A dim is an ``int`` or a ``Dim``: a polynomial over named symbols with integer coefficients
(``batch``, ``batch*seq``, ``seq+8``). That is all the arithmetic reshape, concat and
flatten need, and it keeps equality exact: two dims are equal iff their polynomials are.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Union

from . import dtypes as _dt
from .dtypes import DType
from .errors import ShapeError

Monomial = tuple  # sorted tuple of (symbol, power)


class Dim:
    """A symbolic dimension: ``Dim("batch")``; supports ``+``, ``-``, ``*`` and exact ``//``."""

    __slots__ = ("terms", "_hash")

    def __init__(self, name: str | None = None, *, terms: Mapping[Monomial, int] | None = None):
        if name is not None:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ShapeError(f"bad dim name {name!r}", hint="dim names are identifiers like 'batch'")
            terms = {((name, 1),): 1}
        self.terms = {m: c for m, c in (terms or {}).items() if c != 0}
        self._hash = hash(frozenset(self.terms.items()))

    # -- construction -----------------------------------------------------------------
    @staticmethod
    def of(value: "DimLike") -> "Dim":
        if isinstance(value, Dim):
            return value
        return Dim(terms={(): int(value)})

    def simplify(self) -> "DimLike":
        """An int when the polynomial is constant, else self."""
        if not self.terms:
            return 0
        if len(self.terms) == 1 and () in self.terms:
            return self.terms[()]
        return self

    # -- arithmetic ---------------------------------------------------------------------
    def __add__(self, other):
        out = dict(self.terms)
        for m, c in Dim.of(other).terms.items():
            out[m] = out.get(m, 0) + c
        return Dim(terms=out).simplify()

    __radd__ = __add__

    def __neg__(self):
        return Dim(terms={m: -c for m, c in self.terms.items()}).simplify()

    def __sub__(self, other):
        return self + (-Dim.of(other))

    def __rsub__(self, other):
        return Dim.of(other) - self

    def __mul__(self, other):
        out: dict = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in Dim.of(other).terms.items():
                m = _mono_mul(m1, m2)
                out[m] = out.get(m, 0) + c1 * c2
        return Dim(terms=out).simplify()

    __rmul__ = __mul__

    def __floordiv__(self, other):
        q = dim_div(self, other)
        if q is None:
            raise ShapeError(f"cannot divide dim {self} by {other} exactly")
        return q

    # -- comparison ---------------------------------------------------------------------
    def __eq__(self, other):
        if isinstance(other, (int, Dim)):
            return self.terms == Dim.of(other).terms
        return NotImplemented

    def __hash__(self):
        return self._hash

    @property
    def symbols(self) -> set[str]:
        return {s for m in self.terms for s, _ in m}

    def evaluate(self, env: Mapping[str, int]) -> int:
        total = 0
        for m, c in self.terms.items():
            v = c
            for s, p in m:
                v *= env[s] ** p
            total += v
        return total

    def __repr__(self):
        parts = []
        for m, c in sorted(self.terms.items(), key=lambda mc: (-len(mc[0]), mc[0])):
            mono = "*".join(s if p == 1 else f"{s}^{p}" for s, p in m)
            if not mono:
                parts.append(str(c))
            elif c == 1:
                parts.append(mono)
            elif c == -1:
                parts.append("-" + mono)
            else:
                parts.append(f"{c}*{mono}")
        return "+".join(parts).replace("+-", "-") or "0"

    __str__ = __repr__


DimLike = Union[int, Dim]


def _mono_mul(a: Monomial, b: Monomial) -> Monomial:
    powers: dict = dict(a)
    for s, p in b:
        powers[s] = powers.get(s, 0) + p
    return tuple(sorted(powers.items()))


def _mono_div(a: Monomial, b: Monomial) -> Monomial | None:
    powers: dict = dict(a)
    for s, p in b:
        if powers.get(s, 0) < p:
            return None
        powers[s] -= p
    return tuple(sorted((s, p) for s, p in powers.items() if p))


def dim_div(a: DimLike, b: DimLike) -> DimLike | None:
    """Exact ``a / b`` when ``b`` is a single term (int or monomial) dividing every term of ``a``."""
    a, b = Dim.of(a), Dim.of(b)
    if len(b.terms) != 1:
        return a.simplify() if a == b else None
    (bm, bc), = b.terms.items()
    out = {}
    for m, c in a.terms.items():
        q = _mono_div(m, bm)
        if q is None or c % bc:
            return None
        out[q] = c // bc
    return Dim(terms=out).simplify()


def parse_dim(text: str) -> DimLike:
    """Parse what ``repr(Dim)`` prints ("batch*seq+8", "2*seq", "64")."""
    text = text.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    total: DimLike = 0
    for sign, term in re.findall(r"([+-]?)([^+-]+)", text):
        value: DimLike = 1
        for factor in term.split("*"):
            factor = factor.strip()
            if re.fullmatch(r"\d+", factor):
                value = value * int(factor)
            else:
                name, _, power = factor.partition("^")
                for _ in range(int(power or 1)):
                    value = value * Dim(name)
        total = total + (-value if sign == "-" else value)
    return total


def as_dim(d) -> DimLike:
    if isinstance(d, Dim):
        return d.simplify()
    if isinstance(d, str):
        return parse_dim(d)
    try:
        return int(d)
    except (TypeError, ValueError):
        raise ShapeError(f"a dim must be an int, a Dim or a dim expression, got {d!r}") from None


class Shape(tuple):
    """A tuple of dims that prints as ``[batch,128,64]``. A static dim is a size: never negative."""

    def __new__(cls, dims: Iterable = ()):
        shape = super().__new__(cls, (as_dim(d) for d in dims))
        for d in shape:
            if isinstance(d, int) and d < 0:
                raise ShapeError(f"dim {d} of shape {shape} is negative",
                                 hint="a dim is a size >= 0 or a symbolic dim like 'batch'")
        return shape

    @property
    def rank(self) -> int:
        return len(self)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self)

    @property
    def symbols(self) -> set[str]:
        return {s for d in self if isinstance(d, Dim) for s in d.symbols}

    def numel(self) -> DimLike:
        n: DimLike = 1
        for d in self:
            n = n * d
        return n

    def evaluate(self, env: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else d.evaluate(env) for d in self)

    def __repr__(self):
        return "[" + ",".join(str(d) for d in self) + "]"

    __str__ = __repr__


@dataclass(frozen=True)
class TensorType:
    """The static type of a value: a shape and an element type. Prints as ``f32[batch,128,64]``."""

    shape: Shape
    dtype: DType

    def __init__(self, shape, dtype=_dt.float32):
        object.__setattr__(self, "shape", shape if isinstance(shape, Shape) else Shape(shape))
        object.__setattr__(self, "dtype", _dt.dtype(dtype))

    @property
    def rank(self) -> int:
        return len(self.shape)

    def with_shape(self, shape) -> "TensorType":
        return TensorType(shape, self.dtype)

    def with_dtype(self, dtype) -> "TensorType":
        return TensorType(self.shape, dtype)

    def __repr__(self):
        return f"{self.dtype.short}{self.shape}"

    __str__ = __repr__

    @staticmethod
    def parse(text: str) -> "TensorType":
        """Parse ``f32[batch,128]`` (what ``repr`` prints)."""
        m = re.fullmatch(r"\s*([a-z0-9]+)\[(.*)\]\s*", text)
        if not m:
            raise ShapeError(f"cannot parse tensor type {text!r}", hint="write it like f32[batch,128]")
        dims = [parse_dim(d) for d in m.group(2).split(",") if d.strip()]
        negative = [d for d in dims if isinstance(d, int) and d < 0]
        if negative:
            raise ShapeError(f"tensor type {text!r} has a negative dim {negative[0]}",
                             hint="a dim is a size >= 0 or a symbolic dim like 'batch'")
        return TensorType(dims, _dt.dtype(m.group(1)))


def broadcast_shapes(*shapes: Shape) -> Shape | None:
    """NumPy broadcasting over symbolic shapes; ``None`` when the shapes do not broadcast.

    A symbolic dim broadcasts against 1 or against an equal dim only: we never guess that
    ``batch`` will be 1 at run time.
    """
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dim: DimLike = 1
        for s in shapes:
            j = i - (rank - len(s))
            if j < 0:
                continue
            d = s[j]
            if d == 1:
                continue
            if dim == 1:
                dim = d
            elif dim != d:
                return None
        out.append(dim)
    return Shape(out)


def normalize_axis(axis: int, rank: int, op: str = "") -> int:
    """``axis`` in ``[0, rank)``: a negative axis counts from the end; a rank-0 tensor has no axes."""
    if not -rank <= axis < rank:
        hint = (f"the axes of a rank-{rank} tensor are {-rank} to {rank - 1}" if rank else
                "a rank-0 tensor has no axes: reduce it with axis=None, or reshape it to (1,) first")
        raise ShapeError(f"axis {axis} is out of range for rank {rank}", op=op or None, hint=hint)
    return axis % rank
