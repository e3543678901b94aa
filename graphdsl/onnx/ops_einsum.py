"""Import of ONNX Einsum, written with our ops: the registry has no einsum op, and needs none.

The equation is parsed into one label list per operand; the dims an ellipsis stands for become
numbered labels, right-aligned across operands as NumPy broadcasts them, and every label
broadcasts a size of 1 as ``np.einsum`` does. An operand's repeated label takes its diagonal (an
``iota`` mask, then a sum); a label that neither the output nor a later operand needs is summed
away; operands are contracted left to right, as one batched matmul when the pair shares labels to
sum, else as a broadcast multiply; the result is permuted to the output's order. float16 and
bfloat16 are computed in float32 and rounded once, as ONNX's reference does.
"""
from __future__ import annotations

import string
from dataclasses import dataclass

from graphdsl import dtypes as _dt
from graphdsl import ops
from graphdsl.errors import GraphError, ShapeError, TypeError_
from graphdsl.tracing import Tensor
from graphdsl.types import Shape, broadcast_shapes

from .table import IMPORT

_LETTERS = frozenset(string.ascii_letters)
_ELLIPSIS = "..."


@dataclass(frozen=True)
class Equation:
    """A parsed equation: each operand's labels and the output's, in order. A label is a letter,
    or an int for a dim under the ellipsis (0 is the leftmost of the widest ellipsis)."""

    inputs: tuple[tuple, ...]
    output: tuple


@dataclass(frozen=True)
class _Operand:
    """A tensor and the label of each of its axes."""

    t: Tensor
    labels: tuple

    def size(self, label):
        return self.t.shape[self.labels.index(label)]


def _split_term(term: str, where: str, fail):
    """The letters before and after the term's ellipsis, and whether it has one."""
    if term.count(_ELLIPSIS) > 1:
        fail(f"{where} {term!r} has more than one ellipsis")
    before, dots, after = term.partition(_ELLIPSIS)
    bad = sorted(set(before + after) - _LETTERS)
    if bad:
        fail(f"{where} {term!r} has the character(s) {' '.join(map(repr, bad))}",
             "a term is letters a-z, A-Z and at most one '...'")
    return before, after, bool(dots)


def parse(equation: str, ranks, fail) -> Equation:
    """The labels of every operand (given their ranks) and of the output; ``fail(why, hint)``
    raises the error for a malformed equation."""
    text = "".join(equation.split())
    lhs, arrow, rhs = text.partition("->")
    if "->" in rhs:
        fail("has more than one '->'")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        fail(f"has {len(terms)} input term(s) for {len(ranks)} input(s)")
    parts = [_split_term(term, f"input term {i}", fail) for i, term in enumerate(terms)]
    widths = []
    for i, ((before, after, dots), rank) in enumerate(zip(parts, ranks)):
        width = rank - len(before) - len(after)
        if width < 0 or (width and not dots):
            fail(f"input term {i} {terms[i]!r} names {len(before) + len(after)} axes of a rank-{rank} input",
                 "name every axis, or stand for the leading ones with '...'")
        widths.append(width)
    wide = max(widths, default=0)
    inputs = tuple(tuple(before) + tuple(range(wide - w, wide)) + tuple(after)
                   for (before, after, _), w in zip(parts, widths))
    letters = [x for labels in inputs for x in labels if isinstance(x, str)]
    if not arrow:
        once = sorted(x for x in set(letters) if letters.count(x) == 1)
        return Equation(inputs, tuple(range(wide)) + tuple(once))
    if "," in rhs:
        fail(f"output term {rhs!r} has a ','", "there is one output")
    before, after, dots = _split_term(rhs, "output term", fail)
    named = before + after
    repeated = sorted(x for x in set(named) if named.count(x) > 1)
    if repeated:
        fail(f"output term {rhs!r} names {', '.join(map(repr, repeated))} twice")
    unknown = sorted(set(named) - set(letters))
    if unknown:
        fail(f"output term {rhs!r} names {', '.join(map(repr, unknown))}, which no input term has")
    if wide and not dots:
        fail(f"the inputs' ellipsis stands for {wide} axis(es), which the output term {rhs!r} drops",
             "write '...' in the output too, or name those axes and sum them explicitly")
    return Equation(inputs, tuple(before) + (tuple(range(wide)) if dots else ()) + tuple(after))


def _permute(t: Tensor, perm) -> Tensor:
    return t if list(perm) == list(range(t.ndim)) else t.permute(*perm)


def _reshape(t: Tensor, shape) -> Tensor:
    return t if Shape(tuple(t.shape)) == Shape(shape) else t.reshape(tuple(shape))


def _diagonal(x: _Operand, fail) -> _Operand:
    """One axis per label: a label named k times keeps the elements whose k indices are equal."""
    t, labels = x.t, list(x.labels)
    while len(set(labels)) < len(labels):
        label = next(a for a in labels if labels.count(a) > 1)
        p = labels.index(label)
        q = labels.index(label, p + 1)
        n = t.shape[p]
        if Shape([n]) != Shape([t.shape[q]]):
            fail(f"label {label!r} is repeated in one input over axes of sizes {n} and {t.shape[q]}",
                 "a repeated label takes a diagonal, whose axes must be the same size")
        rest = [i for i in range(len(labels)) if i not in (p, q)]
        t = _permute(t, rest + [p, q])
        off = ops.not_equal(ops.iota(shape=(n, n), axis=0), ops.iota(shape=(n, n), axis=1))
        t = t.masked_fill(off, 0).sum(axis=-1)
        labels = [labels[i] for i in rest] + [label]
    return _Operand(t, tuple(labels))


def _sum_unneeded(x: _Operand, needed) -> _Operand:
    axes = tuple(i for i, a in enumerate(x.labels) if a not in needed)
    if not axes:
        return x
    return _Operand(x.t.sum(axis=axes), tuple(a for a in x.labels if a in needed))


def _align(x: _Operand, order) -> Tensor:
    """``x`` with its axes in ``order``, a size-1 axis for each label it lacks."""
    present = [a for a in order if a in x.labels]
    t = _permute(x.t, [x.labels.index(a) for a in present])
    return _reshape(t, [x.size(a) if a in x.labels else 1 for a in order])


def _expanded(x: _Operand, labels, sizes) -> _Operand:
    """``x`` with its size-1 axes of ``labels`` broadcast to the label's size in every input."""
    shape = Shape(sizes[a] if a in labels else d for a, d in zip(x.labels, x.t.shape))
    return x if shape == Shape(x.t.shape) else _Operand(x.t.expand(tuple(shape)), x.labels)


def _contract(a: _Operand, b: _Operand, keep, sizes) -> _Operand:
    """The product of two operands, summed over the labels both have and ``keep`` lacks: one
    matmul [batch.., M, K] @ [batch.., K, N] (it broadcasts the batch axes), or a broadcast
    multiply when nothing is summed."""
    shared = [x for x in a.labels if x in b.labels]
    batch = [x for x in shared if x in keep]
    summed = [x for x in shared if x not in keep]
    only_a = [x for x in a.labels if x not in b.labels]
    only_b = [x for x in b.labels if x not in a.labels]
    labels = tuple(batch + only_a + only_b)
    if not summed:
        return _Operand(_align(a, labels) * _align(b, labels), labels)
    a, b = _expanded(a, summed, sizes), _expanded(b, summed, sizes)
    m, k, n = ([x.size(label) for label in group] for x, group in ((a, only_a), (a, summed), (b, only_b)))
    ta = _align(a, batch + only_a + summed)
    tb = _align(b, batch + summed + only_b)
    ta = _reshape(ta, tuple(ta.shape[:len(batch)]) + (Shape(m).numel(), Shape(k).numel()))
    tb = _reshape(tb, tuple(tb.shape[:len(batch)]) + (Shape(k).numel(), Shape(n).numel()))
    out = ta @ tb
    return _Operand(_reshape(out, tuple(out.shape[:len(batch)]) + tuple(m) + tuple(n)), labels)


def einsum(equation: str, tensors: list[Tensor]) -> Tensor:
    """``np.einsum(equation, *tensors)`` as graph ops; every error names the equation and the
    inputs' types."""
    types = ", ".join(str(t.type) for t in tensors) or "no inputs"

    def fail(why, hint=None, kind=ShapeError):
        raise kind(f"equation {equation!r} on {types}: {why}", hint=hint)

    if not tensors:
        fail("has no inputs", kind=GraphError)
    dtypes = sorted({t.dtype.name for t in tensors})
    if len(dtypes) > 1:
        fail(f"mixes the dtypes {', '.join(dtypes)}", "cast the inputs to one dtype", kind=TypeError_)
    dtype = tensors[0].dtype
    if not (dtype.is_float or dtype.is_int):
        fail(f"takes numbers, not {dtype.name}", kind=TypeError_)
    eq = parse(equation, [t.ndim for t in tensors], lambda why, hint=None: fail(why, hint, GraphError))
    wide = dtype.name in ("float16", "bfloat16")
    xs = [_diagonal(_Operand(t.astype(_dt.float32) if wide else t, labels), fail)
          for t, labels in zip(tensors, eq.inputs)]
    sizes = {}
    for x in xs:
        for label, d in zip(x.labels, x.t.shape):
            got = broadcast_shapes(Shape([sizes.get(label, 1)]), Shape([d]))
            if got is None:
                name = f"{label!r}" if isinstance(label, str) else f"ellipsis axis {label}"
                fail(f"label {name} has sizes {sizes[label]} and {d}, which do not broadcast",
                     "a label's axes are the same size in every input (or 1)")
            sizes[label] = got[0]
    out = xs[0]
    for i, x in enumerate(xs[1:], start=1):
        later = set(eq.output).union(*(y.labels for y in xs[i + 1:]))
        out = _contract(_sum_unneeded(out, later | set(x.labels)), _sum_unneeded(x, later | set(out.labels)),
                        later, sizes)
    out = _sum_unneeded(out, set(eq.output))
    t = _permute(out.t, [out.labels.index(a) for a in eq.output])
    return t.astype(dtype) if wide else t


@IMPORT.register("Einsum")
def _einsum(imp, node, *xs):
    if "equation" not in imp.attrs:
        raise GraphError("Einsum has no equation attribute")
    return einsum(imp.attrs["equation"], [imp.tensor(x) for x in xs])
