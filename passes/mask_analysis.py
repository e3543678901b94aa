"""Reading attention masks: the chain of mask steps before a softmax, and causal masks.

fold_masks and fuse_attention share this analysis (docs/passes.md has the argument, mask by mask):

* ``split_chain(top)`` walks from a softmax input down through the mask steps to the scores:
  ``s + b`` (``AddBias``), ``where(keep, s, c)`` (``KeepWhere``) and ``where(hide, c, s)``
  (``HideWhere``, ``s.masked_fill(hide, c)``), where ``c <= MASK_FILL_MAX`` is a mask fill
  (``-1e4``, ``finfo.min``, ``-inf``; a larger fill is not a mask);
* ``build_bias(steps, dtype)`` is ``f(0)`` for the chain ``f``: the one additive bias, with a
  finite fill written as the dtype's minimum and ``-inf`` kept;
* ``strip_causal(bias, sq, sk)`` recognizes a causal mask in that bias -- a constant
  lower-triangular array or an iota comparison (2-D, or 1-D iotas unsqueezed to ``[1, 1, S, 1]``
  and ``[1, 1, 1, S]``, or reshaped to ``[S, 1]`` and ``[1, S]`` and expanded to ``[S, S]``),
  bottom-right aligned -- and takes it out when the op's ``causal`` flag computes exactly the same:
  the causal mask is the only mask, or its fill is ``-inf``; with ``-inf`` it may also be one term
  of the mask (``where(causal & padding, 0, -inf)``, as torch exports it), the other terms staying
  in the bias. (A finite-fill causal mask combined with a padding mask stays in the bias: a fully
  masked row is uniform over all keys there, but the flag would make it uniform over the visible
  keys only.)
"""
from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass, field, replace

import numpy as np

from graphdsl import dtypes
from graphdsl import ops
from graphdsl.graph import Node
from graphdsl.tracing import Tensor
from graphdsl.types import Dim

from .pattern import scalar_value
from .rewrite import constant

MASK_FILL_MAX = -1e4
COMPARES = ("less", "less_equal", "greater", "greater_equal")
MAX_DEPTH = 32


# -- the chain of mask steps -----------------------------------------------------------------------
@dataclass(frozen=True)
class AddBias:
    """``s + bias``."""

    bias: Node


@dataclass(frozen=True)
class KeepWhere:
    """``where(mask, s, fill)``: the mask says which keys are kept."""

    mask: Node
    fill: float


@dataclass(frozen=True)
class HideWhere:
    """``where(mask, fill, s)``: the mask says which keys are hidden (``masked_fill``)."""

    mask: Node
    fill: float


MaskStep = AddBias | KeepWhere | HideWhere


@dataclass
class Chain:
    """``top = f(scores)``: the mask steps (outermost first) and the nodes that carry them."""

    scores: Node
    steps: list[MaskStep] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)

    @property
    def masks(self) -> int:
        """How many steps are masks (``where``), not additive biases."""
        return sum(1 for s in self.steps if not isinstance(s, AddBias))


def mask_fill(node: Node) -> float | None:
    """The value of a constant mask fill (a float scalar <= MASK_FILL_MAX, or -inf), else None."""
    v = scalar_value(node)
    if v is None or not node.type.dtype.is_float or not v <= MASK_FILL_MAX:
        return None
    return v


def bias_fill(value: float, dtype) -> float:
    """The fill the bias uses for a user's fill: -inf stays, any finite fill is the dtype's minimum."""
    return value if math.isinf(value) else dtypes.finfo_min(dtype)


def scalar_shaped(node: Node) -> bool:
    return all(isinstance(d, int) and d == 1 for d in node.type.shape)


def is_scores(node: Node, depth: int = 0) -> bool:
    """A matmul, possibly scaled by scalars, cast, or already under mask steps."""
    if depth > MAX_DEPTH:
        return False
    op, ins = node.op, node.inputs
    if op == "matmul":
        return True
    if op == "cast":
        return is_scores(ins[0], depth + 1)
    if op in ("mul", "div"):
        return (is_scores(ins[0], depth + 1) and scalar_shaped(ins[1])) or (
            op == "mul" and scalar_shaped(ins[0]) and is_scores(ins[1], depth + 1))
    if op == "add":
        return is_scores(ins[0], depth + 1) != is_scores(ins[1], depth + 1)
    if op == "where":
        return (mask_fill(ins[2]) is not None and is_scores(ins[1], depth + 1)) or (
            mask_fill(ins[1]) is not None and is_scores(ins[2], depth + 1))
    return False


def mask_step(x: Node) -> tuple[MaskStep, Node] | None:
    """The mask step ``x`` applies and the node it applies it to, or None."""
    ins = x.inputs
    if x.op == "add" and is_scores(ins[0]) and not is_scores(ins[1]):
        return AddBias(ins[1]), ins[0]
    if x.op == "add" and is_scores(ins[1]) and not is_scores(ins[0]):
        return AddBias(ins[0]), ins[1]
    if x.op == "where" and mask_fill(ins[2]) is not None and is_scores(ins[1]):
        return KeepWhere(ins[0], mask_fill(ins[2])), ins[1]
    if x.op == "where" and mask_fill(ins[1]) is not None and is_scores(ins[2]):
        return HideWhere(ins[0], mask_fill(ins[1])), ins[2]
    return None


def split_chain(top: Node) -> Chain:
    """Walk from the softmax input down through add/where mask steps to the scores."""
    chain = Chain(top)
    x = top
    while (found := mask_step(x)) is not None:
        step, x_next = found
        chain.steps.append(step)
        chain.nodes.append(x)
        x = x_next
    chain.scores = x
    return chain


def build_bias(steps: list[MaskStep], dtype) -> Tensor | None:
    """``f(0)`` for the steps of a chain (inside a rule's rewrite): the one additive bias."""
    bias = None
    for step in reversed(steps):
        if isinstance(step, AddBias):
            bias = Tensor(step.bias) if bias is None else bias + Tensor(step.bias)
            continue
        fill = constant(bias_fill(step.fill, dtype), dtype)
        rest = bias if bias is not None else constant(0.0, dtype)
        mask = Tensor(step.mask)
        bias = ops.where(mask, rest, fill) if isinstance(step, KeepWhere) else ops.where(mask, fill, rest)
    return bias


# -- index grids: which query row, which key column ------------------------------------------------
class Axis(enum.Enum):
    ROW = "row"        # the query index, varying along the scores' second-to-last axis
    COL = "col"        # the key index, along the last axis
    VECTOR = "vector"  # a 1-D iota (also unsqueezed or reshaped to one non-1 axis), not yet placed


@dataclass(frozen=True)
class Index:
    """An index grid ``iota + offset`` along ``axis``; rows/cols: the grid's lengths where known."""

    axis: Axis
    offset: object     # an int or a Dim (a KV-cache offset)
    rows: object
    cols: object


def int_value(node: Node):
    """An integer scalar constant, or the size a ``numel`` node counts (an int or a Dim)."""
    if node.op == "numel":
        src, axes = node.inputs[0].type, node.attrs["axis"]
        n = 1
        for a in (range(src.rank) if axes is None else axes):
            n = n * src.shape[a]
        return n
    v = scalar_value(node)
    if v is None or node.type.dtype.is_float or not float(v).is_integer():
        return None
    return int(v)


def vector_axis(node: Node) -> int | None:
    """The one axis of a vector-shaped node (``[n]``, ``[n, 1]``, ``[1, 1, 1, n]``, ...), else None."""
    axes = [i for i, d in enumerate(node.type.shape) if d != 1]
    return axes[0] if len(axes) == 1 else None


def index_of(node: Node, depth: int = 0) -> Index | None:
    """``node`` as an index grid: an iota, cast between int types, plus or minus a constant."""
    if depth > 8:
        return None
    op, ins = node.op, node.inputs
    if op == "iota":
        shape, axis = node.attrs["shape"], node.attrs["axis"]
        if len(shape) == 1:
            return Index(Axis.VECTOR, 0, shape[0], shape[0])
        if len(shape) < 2 or any(d != 1 for d in shape[:-2]) or axis < len(shape) - 2:
            return None
        return Index(Axis.ROW if axis == len(shape) - 2 else Axis.COL, 0, shape[-2], shape[-1])
    if op == "cast" and not node.type.dtype.is_float and not ins[0].type.dtype.is_float:
        return index_of(ins[0], depth + 1)
    if op in ("add", "sub"):
        for a, b in ((ins[0], ins[1]), (ins[1], ins[0])) if op == "add" else ((ins[0], ins[1]),):
            inner, off = index_of(a, depth + 1), int_value(b)
            if inner is not None and off is not None:
                return replace(inner, offset=inner.offset + off if op == "add" else inner.offset - off)
        return None
    if op in ("unsqueeze", "reshape") and vector_axis(node) is not None:
        inner = index_of(ins[0], depth + 1)
        return inner if inner is not None and inner.axis is Axis.VECTOR else None
    return None


def grid_of(node: Node) -> Index | None:
    """``index_of``, with a vector of indices read as a row index (``[..., n, 1]``) or a column index
    (``[..., 1, n]``), the way it broadcasts against the scores; also such an index expanded to the
    full grid (``broadcast_to``, as our ONNX exporter writes the comparison's broadcast)."""
    if node.op == "broadcast_to" and node.inputs[0].type.rank >= 2:
        inner = grid_of(node.inputs[0])
        if inner is None:
            return None
        return replace(inner, rows=node.type.shape[-2], cols=node.type.shape[-1])
    found = index_of(node)
    if found is None or found.axis is not Axis.VECTOR:
        return found
    rank, axis = node.type.rank, vector_axis(node)
    if rank < 2 or axis is None or axis < rank - 2:
        return None
    n = found.rows
    if axis == rank - 2:
        return Index(Axis.ROW, found.offset, n, None)
    return Index(Axis.COL, found.offset, None, n)


# -- causal masks ----------------------------------------------------------------------------------
class Causal(enum.Enum):
    VISIBLE = "visible"   # True where query i may see key j (j <= i + Sk - Sq)
    HIDDEN = "hidden"     # its complement

    @property
    def complement(self) -> "Causal":
        return Causal.HIDDEN if self is Causal.VISIBLE else Causal.VISIBLE


FLIPPED = {"less": "greater", "greater": "less", "less_equal": "greater_equal",
           "greater_equal": "less_equal"}


def same_size(a, b) -> bool:
    return a is None or b is None or Dim.of(a) == Dim.of(b)


def compare_kind(node: Node, sq, sk) -> Causal | None:
    """Which causal mask a comparison of a row index with a column index is, if any."""
    a, b = (grid_of(i) for i in node.inputs)
    if a is None or b is None or {a.axis, b.axis} != {Axis.ROW, Axis.COL}:
        return None
    op = node.op
    if a.axis is Axis.ROW:                 # row + oa OP col + ob  ->  col - row FLIP(OP) oa - ob
        row, col, op, k = a, b, FLIPPED[op], a.offset - b.offset
    else:                                  # col + oa OP row + ob  ->  col - row OP ob - oa
        col, row, k = a, b, b.offset - a.offset
    sizes = ((row.rows, sq), (row.cols, sk), (col.rows, sq), (col.cols, sk))
    if not all(same_size(x, y) for x, y in sizes):
        return None
    if op in ("less", "greater_equal"):
        k = k - 1                          # col - row < k  <=>  col - row <= k - 1
    if Dim.of(k) != Dim.of(sk - sq):
        return None
    return Causal.VISIBLE if op in ("less_equal", "less") else Causal.HIDDEN


def visible_np(sq: int, sk: int) -> np.ndarray:
    return np.arange(sk)[None, :] <= np.arange(sq)[:, None] + (sk - sq)


def causal_kind(mask: Node, sq, sk, depth: int = 0) -> Causal | None:
    """VISIBLE when ``mask`` is True exactly where a bottom-right aligned causal mask lets query i
    see key j; HIDDEN for its complement; None otherwise."""
    if depth > 8 or not mask.type.dtype.is_bool or mask.type.rank < 2:
        return None
    if any(d != 1 for d in mask.type.shape[:-2]):
        return None
    if mask.op == "constant":
        if not (isinstance(sq, int) and isinstance(sk, int)) or tuple(mask.type.shape[-2:]) != (sq, sk):
            return None
        value, vis = mask.attrs["value"].reshape(sq, sk), visible_np(sq, sk)
        if np.array_equal(value, vis):
            return Causal.VISIBLE
        return Causal.HIDDEN if np.array_equal(value, ~vis) else None
    if mask.op in COMPARES:
        return compare_kind(mask, sq, sk)
    if mask.op == "logical_not":
        inner = causal_kind(mask.inputs[0], sq, sk, depth + 1)
        return None if inner is None else inner.complement
    if mask.op in ("reshape", "broadcast_to", "unsqueeze") and mask.inputs[0].type.rank >= 2:
        if tuple(mask.inputs[0].type.shape[-2:]) == tuple(mask.type.shape[-2:]):
            return causal_kind(mask.inputs[0], sq, sk, depth + 1)
    return None


def every_row_sees_a_key(sq, sk) -> bool:
    off = Dim.of(sk - sq) if not isinstance(sk - sq, int) else sk - sq
    if isinstance(off, int):
        return off >= 0
    return all(c > 0 for c in off.terms.values())


def strip_causal(bias: Node, sq, sk) -> tuple[bool, Node | None]:
    """``(True, rest)`` when ``bias`` is a causal mask over ``rest`` (None: nothing left) and the
    op's causal flag computes exactly the same; else ``(False, bias)``."""
    if bias.op == "constant" and bias.type.dtype.is_float and isinstance(sq, int) and isinstance(sk, int):
        return (True, None) if causal_constant_bias(bias, sq, sk) else (False, bias)
    if bias.op != "where":
        return False, bias
    m, a, b = bias.inputs
    # where(keep, rest, fill) with keep = causal [& other masks]; where(hide, fill, rest) with hide =
    # causal complement [| other masks]
    for kind, fill, rest, join in ((Causal.VISIBLE, mask_fill(b), a, "logical_and"),
                                   (Causal.HIDDEN, mask_fill(a), b, "logical_or")):
        if fill is None:
            continue
        if causal_kind(m, sq, sk) == kind:
            if scalar_value(rest) == 0.0 and every_row_sees_a_key(sq, sk):
                return True, None
            return (True, rest) if fill == -math.inf else (False, bias)
        if fill == -math.inf:   # hidden by the causal mask or by another: -inf either way
            terms = joined_terms(m, join)
            causal = next((t for t in terms if causal_kind(t, sq, sk) == kind), None)
            if causal is not None:
                others = [Tensor(t) for t in terms if t is not causal]
                if not others:
                    return True, rest
                other = functools.reduce(getattr(ops, join), others)
                return True, ops.where(other, Tensor(a), Tensor(b)).node
    return False, bias


def causal_constant_bias(bias: Node, sq: int, sk: int) -> bool:
    """A constant float bias that is 0 where a causal mask sees and one mask fill elsewhere, with
    every row seeing a key (so its fill does not matter)."""
    value = bias.attrs["value"]
    if bias.type.rank < 2 or tuple(bias.type.shape[-2:]) != (sq, sk) or value.size != sq * sk:
        return False
    value, vis = value.reshape(sq, sk), visible_np(sq, sk)
    hidden = value[~vis]
    return bool(np.all(value[vis] == 0) and hidden.size and np.all(hidden == hidden[0])
                and hidden[0] <= MASK_FILL_MAX and every_row_sees_a_key(sq, sk))


def joined_terms(mask: Node, join: str) -> list[Node]:
    """The operands of a chain of ``join`` (logical_and / logical_or) ops."""
    if mask.op != join:
        return [mask]
    return [t for i in mask.inputs for t in joined_terms(i, join)]


__all__ = ["MASK_FILL_MAX", "AddBias", "KeepWhere", "HideWhere", "MaskStep", "Chain", "Causal", "Axis", "Index",
           "mask_fill", "bias_fill", "is_scores", "split_chain", "build_bias", "causal_kind", "strip_causal"]
