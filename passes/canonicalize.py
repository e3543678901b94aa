"""canonicalize: one spelling for things users write several ways, so later patterns match one form.

* ``x / c`` -> ``x * (1/c)`` for a float constant ``c``; ``c * x`` -> ``x * c`` (constants right);
  ``(x * c1) * c2`` -> ``x * (c1*c2)``;
* ``sum(x, axes, keepdims) * (1/n)`` -> ``mean(x, axes, keepdims)`` when ``n`` is the count;
* transposes: two in a row compose into one (or none); the identity permutation disappears.
  (``x.transpose(-1, -2)``, ``x.mT`` and ``x.permute(0, 1, 3, 2)`` are already one op with one
  normalized ``perm``);
* a batched swap of the last two axes written with reshapes, ``reshape(reshape(x, [B*H, S, D]).transpose
  (0, 2, 1), [B, H, D, S])`` (the reshapes only regroup the leading dims), is ``x``'s swap;
* reshape of a reshape is one reshape; reshape/broadcast to the same shape, cast to the same dtype,
  ``x * 1``, ``x + 0``, ``-(-x)``, ``m & True`` and ``m | False`` disappear; a lossless cast round
  trip (f16 -> f32 -> f16) too.
"""
from __future__ import annotations

from graphdsl import ops
from graphdsl.registry import get
from graphdsl.tracing import Tensor

from .pattern import Pat, scalar_value
from .rewrite import Rule
from .transposes import swap_last_two, swaps_last_two

def _is_const(node) -> bool:
    return scalar_value(node) is not None


def _float(node) -> bool:
    return node.type.dtype.is_float


def _div_const(m):
    c = scalar_value(m["c"])
    if c == 0 or m["x"].type != m.root.type:
        return None
    return m.t("x") * (1.0 / c)


def _const_right(m):
    a, b = m.root.inputs
    if not _is_const(a) or _is_const(b):
        return None
    return get(m.root.op)(Tensor(b), Tensor(a))


def _merge_scales(m):
    if m["x"].type != m.root.type:
        return None
    return m.t("x") * (scalar_value(m["c1"]) * scalar_value(m["c2"]))


def _sum_to_mean(m):
    s, x = m["sum"], m["x"]
    axes = range(x.type.rank) if s.attrs["axis"] is None else s.attrs["axis"]
    n = 1
    for a in axes:
        n = n * x.type.shape[a]
    if not isinstance(n, int) or abs(scalar_value(m["c"]) * n - 1.0) > 1e-6:
        return None
    out = ops.mean(m.t("x"), axis=s.attrs["axis"], keepdims=s.attrs["keepdims"])
    return out if out.type == m.root.type else None


def _compose_transposes(m):
    inner, outer = m["inner"].attrs["perm"], m.root.attrs["perm"]
    perm = tuple(inner[i] for i in outer)
    if perm == tuple(range(len(perm))):
        return m["x"]
    return ops.transpose(m.t("x"), perm=perm)


def _regrouped_swap(m):
    """reshape(swap(reshape(x))) where both reshapes keep the last two axes: swap(x)."""
    x = tuple(m["x"].type.shape)
    inner, outer = tuple(m["inner"].type.shape), tuple(m.root.type.shape)
    if len(x) < 2 or inner[-2:] != x[-2:] or outer != x[:-2] + (x[-1], x[-2]):
        return None
    return swap_last_two(m.t("x"))


def _identity(m):
    return m["x"] if m["x"].type == m.root.type else None


def _lossless(src, mid) -> bool:
    """Casting ``src`` to ``mid`` and back gives every value back."""
    if src.is_float and mid.is_float:
        return mid.bits > src.bits and not (src.name == "bfloat16" and mid.name == "float16")
    if src.is_int and mid.is_int:
        signed = lambda d: d.name != "uint32"  # noqa: E731
        return mid.bits > src.bits or (mid.bits == src.bits and signed(src) == signed(mid))
    return src.is_bool


def _cast_round_trip(m):
    x, mid = m["x"], m["mid"]
    if m.root.type != x.type or not _lossless(x.type.dtype, mid.type.dtype):
        return None
    return x


_X = Pat.any("x")
RULES = [
    Rule("div_to_mul", Pat("div", _X, Pat.const("c"), where=_float), _div_const),
    Rule("constant_right", Pat(("add", "mul", "maximum", "minimum"), Pat.any(), Pat.any(), commute=False),
         _const_right),
    Rule("merge_scales", Pat("mul", Pat("mul", _X, Pat.const("c1"), one_use=True), Pat.const("c2"),
                             where=_float), _merge_scales),
    Rule("sum_to_mean", Pat("mul", Pat("sum", _X, name="sum", one_use=True), Pat.const("c"),
                            where=_float), _sum_to_mean),
    Rule("compose_transposes", Pat("transpose", Pat("transpose", _X, name="inner", one_use=True)),
         _compose_transposes),
    Rule("identity_transpose",
         Pat("transpose", _X, where=lambda n: n.attrs["perm"] == tuple(range(n.type.rank))), _identity),
    Rule("regrouped_swap", Pat("reshape", Pat("transpose", Pat("reshape", _X, name="inner", one_use=True),
                                              where=swaps_last_two, one_use=True)), _regrouped_swap),
    Rule("reshape_reshape", Pat("reshape", Pat("reshape", _X, one_use=True)),
         lambda m: ops.reshape(m.t("x"), shape=tuple(m.root.type.shape))),
    Rule("identity_reshape", Pat(("reshape", "broadcast_to"), _X), _identity),
    Rule("identity_cast", Pat("cast", _X), _identity),
    Rule("cast_round_trip", Pat("cast", Pat("cast", _X, name="mid")), _cast_round_trip),
    Rule("mul_one", Pat("mul", _X, Pat.const(value=1.0, rtol=0)), _identity),
    Rule("add_zero", Pat("add", _X, Pat.const(value=0.0, rtol=0), where=_float), _identity),
    Rule("neg_neg", Pat("neg", Pat("neg", _X)), lambda m: m["x"]),
    Rule("and_true", Pat("logical_and", _X, Pat.const(value=1.0, rtol=0), commute=True), _identity),
    Rule("or_false", Pat("logical_or", _X, Pat.const(value=0.0, rtol=0), commute=True), _identity),
]
