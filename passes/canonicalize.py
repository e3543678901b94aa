"""canonicalize: one spelling for things users write several ways, so later patterns match one form.

``x.transpose(-1, -2)``, ``x.mT`` and ``x.permute(0, 1, 3, 2)`` are already one op with one
normalized ``perm``; the rules below take care of the rest. A lossless cast round trip is one that
gives every value back (f16 -> f32 -> f16, not f32 -> f16 -> f32).
"""
from __future__ import annotations

from graphdsl import ops
from graphdsl.registry import get
from graphdsl.tracing import Tensor

from .manager import rule_pass
from .pattern import (Pat, broadcast_to, cast, exactly, logical_and, logical_or, reshape, scalar_value, sum_,
                      transpose)
from .predicates import identity_perm, is_float, swaps_last_two
from .rewrite import Rule

X = Pat.any("x")
C, C1, C2 = Pat.const("c"), Pat.const("c1"), Pat.const("c2")

RULES = [
    # x / c  ->  x * (1/c), for a float constant c
    Rule("div_to_mul", (X / C).having(where=is_float), lambda m: times_inverse(m)),
    # c + x  ->  x + c (and *, maximum, minimum): constants to the right
    Rule("constant_right", Pat(("add", "mul", "maximum", "minimum"), Pat.any(), Pat.any(), commute=False),
         lambda m: constant_right(m)),
    # (x * c1) * c2  ->  x * (c1 c2)
    Rule("merge_scales", ((X * C1).having(one_use=True) * C2).having(where=is_float),
         lambda m: merged_scales(m)),
    # sum(x) * (1/n)  ->  mean(x), n the number of summed elements
    Rule("sum_to_mean", (sum_(X, name="sum", one_use=True) * C).having(where=is_float),
         lambda m: sum_to_mean(m)),
    # transpose(transpose(x))  ->  one transpose (or x)
    Rule("compose_transposes", transpose(transpose(X, name="inner", one_use=True)),
         lambda m: composed_transposes(m)),
    # transpose(x) with the identity permutation  ->  x
    Rule("identity_transpose", transpose(X, where=identity_perm), lambda m: same_type_input(m)),
    # reshape(swap(reshape(x))), the reshapes only regrouping the leading dims  ->  swap(x)
    Rule("regrouped_swap", reshape(transpose(reshape(X, name="inner", one_use=True), where=swaps_last_two,
                                             one_use=True)), lambda m: regrouped_swap(m)),
    # reshape(reshape(x))  ->  one reshape
    Rule("reshape_reshape", reshape(reshape(X, one_use=True)),
         lambda m: ops.reshape(m.t("x"), shape=tuple(m.root.type.shape))),
    # reshape or broadcast_to the shape x already has  ->  x
    Rule("identity_reshape", reshape(X) | broadcast_to(X), lambda m: same_type_input(m)),
    # cast to the dtype x already has  ->  x
    Rule("identity_cast", cast(X), lambda m: same_type_input(m)),
    # cast(cast(x)) back to x's dtype through a wider one  ->  x
    Rule("cast_round_trip", cast(cast(X, name="mid")), lambda m: lossless_round_trip(m)),
    # x * 1  ->  x
    Rule("mul_one", X * exactly(1.0), lambda m: same_type_input(m)),
    # x + 0  ->  x (float x)
    Rule("add_zero", (X + exactly(0.0)).having(where=is_float), lambda m: same_type_input(m)),
    # -(-x)  ->  x
    Rule("neg_neg", -(-X), lambda m: m["x"]),
    # m & True  ->  m
    Rule("and_true", logical_and(X, exactly(1.0), commute=True), lambda m: same_type_input(m)),
    # m | False  ->  m
    Rule("or_false", logical_or(X, exactly(0.0), commute=True), lambda m: same_type_input(m)),
]


def swap_last_two(t):
    """Graph code: ``t`` with its last two axes swapped (the canonical spelling of ``t.mT``)."""
    r = t.ndim
    return ops.transpose(t, perm=tuple(range(r - 2)) + (r - 1, r - 2))


def is_constant(node) -> bool:
    return scalar_value(node) is not None


def times_inverse(m):
    c = scalar_value(m["c"])
    if c == 0 or m["x"].type != m.root.type:
        return None
    return m.t("x") * (1.0 / c)


def constant_right(m):
    a, b = m.root.inputs
    if not is_constant(a) or is_constant(b):
        return None
    return get(m.root.op)(Tensor(b), Tensor(a))


def merged_scales(m):
    if m["x"].type != m.root.type:
        return None
    return m.t("x") * (scalar_value(m["c1"]) * scalar_value(m["c2"]))


def sum_to_mean(m):
    s, x = m["sum"], m["x"]
    axes = range(x.type.rank) if s.attrs["axis"] is None else s.attrs["axis"]
    n = 1
    for a in axes:
        n = n * x.type.shape[a]
    if not isinstance(n, int) or abs(scalar_value(m["c"]) * n - 1.0) > 1e-6:
        return None
    out = ops.mean(m.t("x"), axis=s.attrs["axis"], keepdims=s.attrs["keepdims"])
    return out if out.type == m.root.type else None


def composed_transposes(m):
    inner, outer = m["inner"].attrs["perm"], m.root.attrs["perm"]
    perm = tuple(inner[i] for i in outer)
    if perm == tuple(range(len(perm))):
        return m["x"]
    return ops.transpose(m.t("x"), perm=perm)


def regrouped_swap(m):
    """reshape(swap(reshape(x))) where both reshapes keep the last two axes: swap(x)."""
    x = tuple(m["x"].type.shape)
    inner, outer = tuple(m["inner"].type.shape), tuple(m.root.type.shape)
    if len(x) < 2 or inner[-2:] != x[-2:] or outer != x[:-2] + (x[-1], x[-2]):
        return None
    return swap_last_two(m.t("x"))


def same_type_input(m):
    """``x`` itself, when it has the type of the node it replaces (the op was the identity)."""
    return m["x"] if m["x"].type == m.root.type else None


def lossless(src, mid) -> bool:
    """Casting ``src`` to ``mid`` and back gives every value back."""
    if src.is_float and mid.is_float:
        return mid.bits > src.bits and not (src.name in ("bfloat16", "float8_e8m0fnu") and mid.name == "float16")
    if src.is_int and mid.is_int:
        signed = lambda d: d.name != "uint32"  # noqa: E731
        return mid.bits > src.bits or (mid.bits == src.bits and signed(src) == signed(mid))
    return src.is_bool


def lossless_round_trip(m):
    x, mid = m["x"], m["mid"]
    if m.root.type != x.type or not lossless(x.type.dtype, mid.type.dtype):
        return None
    return x


CANONICALIZE = rule_pass("canonicalize", RULES, "div by constant to mul, constants right, transposes "
                         "composed, identity reshapes/casts/transposes dropped")
