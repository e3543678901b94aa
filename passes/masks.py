"""fold_masks: every attention mask becomes one additive bias with an explicit fill value.

Between the scores ``s`` (a scaled matmul) and the softmax, users write a chain of mask steps:
``s + bias`` (``(1 - m) * c`` padding biases), ``where(keep, s, c)`` (boolean masks, the causal
mask), ``where(hide, c, s)`` (``s.masked_fill(hide, c)``). The chain ``f`` is folded into
``s + f(0)``: the steps applied to a zero score, so the bias is computed once from the masks alone
(and shared by every layer once CSE has merged the copies). A ``where`` fill ``c`` is a mask fill
when ``c <= MASK_FILL_MAX`` (``-1e4``, ``finfo.min`` or ``-inf``); the bias uses ``-inf`` where the
user wrote ``-inf``, and the dtype's minimum for every finite fill.

Why this is exact (for float32/float64 scores) -- see docs/passes.md for the whole argument:
``s + where(m, b, MIN) == where(m, s + b, MIN)`` element for element, because ``s + MIN``
rounds to ``MIN`` for any |s| < 1e31; and ``s + (-inf) == -inf``. So rows with at least one
visible key give the same probabilities (masked weights underflow to exactly 0 either way), a
fully masked row is uniform before and after with a finite fill, and all zeros before and after
with ``-inf``. Upgrading a fill such as -1e4 to ``MIN`` keeps both properties.

``strip_causal`` (used by fuse_attention) recognizes a causal mask -- a constant lower-triangular
array or an iota comparison (2-D, or 1-D iotas unsqueezed to ``[1, 1, S, 1]`` and ``[1, 1, 1, S]``,
or reshaped to ``[S, 1]`` and ``[1, S]`` and expanded to ``[S, S]``), bottom-right aligned --
and turns it into the op's ``causal`` flag when that is exact: the causal mask is the only mask,
or its fill is ``-inf``; with ``-inf`` it may also be one term of the mask
(``where(causal & padding, 0, -inf)``, as torch exports it), the other terms staying in the bias.
(A finite-fill causal mask combined with a padding mask stays in the bias: a fully masked row is
uniform over all keys there, but the flag would make it uniform over the visible keys only.)
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from graphdsl import dtypes as _dt
from graphdsl import ops
from graphdsl.graph import Node
from graphdsl.tracing import Tensor
from graphdsl.types import Dim

from .pattern import Pat, scalar_value
from .rewrite import Rule, constant

MASK_FILL_MAX = -1e4
COMPARES = ("less", "less_equal", "greater", "greater_equal")


def mask_fill(node: Node) -> float | None:
    """The value of a constant mask fill (a float scalar <= MASK_FILL_MAX, or -inf), else None."""
    v = scalar_value(node)
    if v is None or not node.type.dtype.is_float or not v <= MASK_FILL_MAX:
        return None
    return v


def bias_fill(value: float, dtype) -> float:
    return value if math.isinf(value) else _dt.finfo_min(dtype)


def _scalar_like(node: Node) -> bool:
    shape = node.type.shape
    return all(isinstance(d, int) and d == 1 for d in shape)


def is_scores(node: Node, depth: int = 0) -> bool:
    """A matmul, possibly scaled by scalars, cast, or already under mask steps."""
    if depth > 32:
        return False
    op, ins = node.op, node.inputs
    if op == "matmul":
        return True
    if op == "cast":
        return is_scores(ins[0], depth + 1)
    if op in ("mul", "div"):
        return (is_scores(ins[0], depth + 1) and _scalar_like(ins[1])) or (
            op == "mul" and _scalar_like(ins[0]) and is_scores(ins[1], depth + 1))
    if op == "add":
        return is_scores(ins[0], depth + 1) != is_scores(ins[1], depth + 1)
    if op == "where":
        return (mask_fill(ins[2]) is not None and is_scores(ins[1], depth + 1)) or (
            mask_fill(ins[1]) is not None and is_scores(ins[2], depth + 1))
    return False


@dataclass
class Chain:
    """``top = f(scores)``: the mask steps (outermost first) and the nodes that carry them."""

    scores: Node
    steps: list = field(default_factory=list)   # ("add", b) | ("keep", m, fill) | ("hide", m, fill)
    nodes: list = field(default_factory=list)

    @property
    def masks(self) -> int:
        return sum(1 for s in self.steps if s[0] != "add")


def split_chain(top: Node) -> Chain:
    """Walk from the softmax input down through add/where mask steps to the scores."""
    chain = Chain(top)
    x = top
    while True:
        ins = x.inputs
        if x.op == "add" and is_scores(ins[0]) and not is_scores(ins[1]):
            step, nxt = ("add", ins[1]), ins[0]
        elif x.op == "add" and is_scores(ins[1]) and not is_scores(ins[0]):
            step, nxt = ("add", ins[0]), ins[1]
        elif x.op == "where" and mask_fill(ins[2]) is not None and is_scores(ins[1]):
            step, nxt = ("keep", ins[0], mask_fill(ins[2])), ins[1]
        elif x.op == "where" and mask_fill(ins[1]) is not None and is_scores(ins[2]):
            step, nxt = ("hide", ins[0], mask_fill(ins[1])), ins[2]
        else:
            break
        chain.steps.append(step)
        chain.nodes.append(x)
        x = nxt
    chain.scores = x
    return chain


def build_bias(steps: list, dtype) -> Tensor | None:
    """``f(0)`` for the steps of a chain (inside a rule's rewrite): the one additive bias."""
    bias = None
    for step in reversed(steps):
        if step[0] == "add":
            bias = Tensor(step[1]) if bias is None else bias + Tensor(step[1])
            continue
        fill = constant(bias_fill(step[2], dtype), dtype)
        rest = bias if bias is not None else constant(0.0, dtype)
        mask = Tensor(step[1])
        bias = ops.where(mask, rest, fill) if step[0] == "keep" else ops.where(mask, fill, rest)
    return bias


# -- causal masks ----------------------------------------------------------------------------------
def _int_value(node: Node):
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


def _index(node: Node, depth: int = 0):
    """(kind, offset, rows, cols) for a row/column index grid: kind "row" or "col" (or "vec" for a
    1-D iota, also unsqueezed or reshaped to one non-1 axis: ``_grid`` places it), plus a constant
    offset; rows/cols are the grid's lengths where known."""
    if depth > 8:
        return None
    op, ins = node.op, node.inputs
    if op == "iota":
        shape, axis = node.attrs["shape"], node.attrs["axis"]
        if len(shape) == 1:
            return ("vec", 0, shape[0], shape[0])
        if len(shape) < 2 or any(d != 1 for d in shape[:-2]) or axis < len(shape) - 2:
            return None
        return ("row" if axis == len(shape) - 2 else "col", 0, shape[-2], shape[-1])
    if op == "cast" and not node.type.dtype.is_float and not ins[0].type.dtype.is_float:
        return _index(ins[0], depth + 1)
    if op in ("add", "sub"):
        for a, b in ((ins[0], ins[1]), (ins[1], ins[0])) if op == "add" else ((ins[0], ins[1]),):
            inner, off = _index(a, depth + 1), _int_value(b)
            if inner is not None and off is not None:
                kind, o, rows, cols = inner
                return (kind, o + off if op == "add" else o - off, rows, cols)
        return None
    if op in ("unsqueeze", "reshape") and _vector_axis(node) is not None:
        inner = _index(ins[0], depth + 1)
        return inner if inner is not None and inner[0] == "vec" else None
    return None


def _vector_axis(node: Node) -> int | None:
    """The one axis of a vector-shaped node (``[n]``, ``[n, 1]``, ``[1, 1, 1, n]``, ...), else None."""
    axes = [i for i, d in enumerate(node.type.shape) if d != 1]
    return axes[0] if len(axes) == 1 else None


def _grid(node: Node):
    """``_index``, with a vector of indices read as a row index (``[..., n, 1]``) or a column index
    (``[..., 1, n]``), the way it broadcasts against the scores; also such an index expanded to the
    full grid (``broadcast_to``, as our ONNX exporter writes the comparison's broadcast)."""
    if node.op == "broadcast_to" and node.inputs[0].type.rank >= 2:
        inner = _grid(node.inputs[0])
        if inner is None:
            return None
        return inner[:2] + tuple(node.type.shape[-2:])
    found = _index(node)
    if found is None or found[0] != "vec":
        return found
    rank, axis = node.type.rank, _vector_axis(node)
    if rank < 2 or axis is None or axis < rank - 2:
        return None
    _, offset, n, _ = found
    return ("row", offset, n, None) if axis == rank - 2 else ("col", offset, None, n)


_FLIP = {"less": "greater", "greater": "less", "less_equal": "greater_equal",
         "greater_equal": "less_equal"}


def _same(a, b) -> bool:
    return a is None or b is None or Dim.of(a) == Dim.of(b)


def _compare_kind(node: Node, sq, sk) -> str | None:
    a, b = (_grid(i) for i in node.inputs)
    if a is None or b is None or {a[0], b[0]} != {"row", "col"}:
        return None
    op = node.op
    if a[0] == "row":                      # row + oa OP col + ob  ->  col - row FLIP(OP) oa - ob
        row, col, op, k = a, b, _FLIP[op], a[1] - b[1]
    else:                                  # col + oa OP row + ob  ->  col - row OP ob - oa
        col, row, k = a, b, b[1] - a[1]
    if not all(_same(x, y) for x, y in ((row[2], sq), (row[3], sk), (col[2], sq), (col[3], sk))):
        return None
    off = sk - sq
    if op in ("less", "greater_equal"):
        k = k - 1                          # col - row < k  <=>  col - row <= k - 1
    if Dim.of(k) != Dim.of(off):
        return None
    return "visible" if op in ("less_equal", "less") else "hidden"


def _visible_np(sq: int, sk: int) -> np.ndarray:
    return np.arange(sk)[None, :] <= np.arange(sq)[:, None] + (sk - sq)


def causal_kind(mask: Node, sq, sk, depth: int = 0) -> str | None:
    """"visible" when ``mask`` is True exactly where a bottom-right aligned causal mask lets query
    i see key j; "hidden" for its complement; None otherwise."""
    if depth > 8 or not mask.type.dtype.is_bool or mask.type.rank < 2:
        return None
    if any(d != 1 for d in mask.type.shape[:-2]):
        return None
    if mask.op == "constant":
        if not (isinstance(sq, int) and isinstance(sk, int)) or tuple(mask.type.shape[-2:]) != (sq, sk):
            return None
        value, vis = mask.attrs["value"].reshape(sq, sk), _visible_np(sq, sk)
        return "visible" if np.array_equal(value, vis) else "hidden" if np.array_equal(value, ~vis) else None
    if mask.op in COMPARES:
        return _compare_kind(mask, sq, sk)
    if mask.op == "logical_not":
        inner = causal_kind(mask.inputs[0], sq, sk, depth + 1)
        return {"visible": "hidden", "hidden": "visible"}.get(inner)
    if mask.op in ("reshape", "broadcast_to", "unsqueeze") and mask.inputs[0].type.rank >= 2:
        if tuple(mask.inputs[0].type.shape[-2:]) == tuple(mask.type.shape[-2:]):
            return causal_kind(mask.inputs[0], sq, sk, depth + 1)
    return None


def _every_row_sees_a_key(sq, sk) -> bool:
    off = Dim.of(sk - sq) if not isinstance(sk - sq, int) else sk - sq
    if isinstance(off, int):
        return off >= 0
    return all(c > 0 for c in off.terms.values())


def strip_causal(bias: Node, sq, sk) -> tuple[bool, Node | None]:
    """``(True, rest)`` when ``bias`` is a causal mask over ``rest`` (None: nothing left) and the
    op's causal flag computes exactly the same; else ``(False, bias)``."""
    if bias.op == "constant" and bias.type.dtype.is_float and isinstance(sq, int) and isinstance(sk, int):
        value = bias.attrs["value"]
        if bias.type.rank >= 2 and tuple(bias.type.shape[-2:]) == (sq, sk) and value.size == sq * sk:
            value, vis = value.reshape(sq, sk), _visible_np(sq, sk)
            hidden = value[~vis]
            if (np.all(value[vis] == 0) and hidden.size and np.all(hidden == hidden[0])
                    and hidden[0] <= MASK_FILL_MAX and _every_row_sees_a_key(sq, sk)):
                return True, None
        return False, bias
    if bias.op != "where":
        return False, bias
    m, a, b = bias.inputs
    # where(keep, rest, fill) with keep = causal [& other masks]; where(hide, fill, rest) with hide =
    # causal complement [| other masks]
    for kind, fill, rest, join in (("visible", mask_fill(b), a, "logical_and"),
                                   ("hidden", mask_fill(a), b, "logical_or")):
        if fill is None:
            continue
        if causal_kind(m, sq, sk) == kind:
            if scalar_value(rest) == 0.0 and _every_row_sees_a_key(sq, sk):
                return True, None
            return (True, rest) if fill == -math.inf else (False, bias)
        if fill == -math.inf:   # hidden by the causal mask or by another: -inf either way
            terms = _terms(m, join)
            causal = next((t for t in terms if causal_kind(t, sq, sk) == kind), None)
            if causal is not None:
                others = [Tensor(t) for t in terms if t is not causal]
                if not others:
                    return True, rest
                other = functools.reduce(getattr(ops, join), others)
                return True, ops.where(other, Tensor(a), Tensor(b)).node
    return False, bias


def _terms(mask: Node, join: str) -> list[Node]:
    """The operands of a chain of ``join`` (logical_and / logical_or) ops."""
    if mask.op != join:
        return [mask]
    return [t for i in mask.inputs for t in _terms(i, join)]


# -- the pass --------------------------------------------------------------------------------------
def _fold_chain(m):
    chain = split_chain(m["s"])
    adds = len(chain.steps) - chain.masks
    if chain.masks == 0 and adds < 2:
        return None
    if not m.contained(chain.nodes):
        return None
    s = Tensor(chain.scores) + build_bias(chain.steps, chain.scores.type.dtype)
    if s.type != m["s"].type:
        return None
    m.note("masks", chain.masks)
    return ops.softmax(s, axis=m.root.attrs["axis"])


def _bool_mask_bias(m):
    c = scalar_value(m["c"])
    if math.isinf(c) or mask_fill(m["c"]) is None or not m.contained():
        return None
    dtype = m.root.type.dtype
    out = ops.where(m.t("mask"), constant(0.0, dtype), constant(c, dtype))
    return out if out.type == m.root.type else None


_BOOL = Pat.any("mask", where=lambda n: n.type.dtype.is_bool)
RULES = [
    Rule("fold_mask_chain", Pat("softmax", Pat.any("s")), _fold_chain),
    Rule("bool_mask_bias", Pat("mul", Pat("sub", Pat.const(value=1.0, rtol=0), Pat("cast", _BOOL)),
                               Pat.const("c")), _bool_mask_bias),
]
