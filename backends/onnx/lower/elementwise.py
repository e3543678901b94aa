"""ONNX rows of the elementwise ops (graphdsl/ops/elementwise.py): arithmetic, comparisons,
activations, casts.

The edges follow the reference (docs/semantics.md): ONNX Runtime's Sigmoid has an absolute error
of about 6e-8 (17% off at -15, 0 below -17.5), so it is used for x >= 0 only, exp(x) / (1 + exp(x))
below; it casts float64 (and ints, to bf16) to f16/bf16 through float32, rounding twice, which
``round_once`` corrects. Integer division floors, as ours does. ``ACTIVATIONS`` is shared with the
fused ``bias_activation`` row.
"""
from __future__ import annotations

import numpy as np

from ..emitter import Emitter, onnx_dtype
from ..table import EXPORT
from .common import BF16, F16, F32, F64, I32, I64, U32, narrow, scalar_like, widen

# ops that are one ONNX node of the same name, as they are
_DIRECT = {
    "add": "Add", "sub": "Sub", "mul": "Mul", "pow": "Pow", "maximum": "Max", "minimum": "Min",
    "abs": "Abs", "exp": "Exp", "log": "Log", "sqrt": "Sqrt",
    "sin": "Sin", "cos": "Cos", "equal": "Equal",
    "less": "Less", "less_equal": "LessOrEqual", "greater": "Greater",
    "greater_equal": "GreaterOrEqual", "logical_and": "And", "logical_or": "Or",
    "logical_not": "Not", "where": "Where",
}


def one_node(op_type: str):
    """The row of an op that is the ONNX node ``op_type`` on the same inputs."""
    def lower(em, node, *ins):
        return em.op(op_type, ins, hint=node.op)
    lower.__qualname__ = f"one_node({op_type!r})"
    return lower


for _name, _op_type in _DIRECT.items():
    EXPORT.register(_name, one_node(_op_type))


@EXPORT.register("not_equal")
def _not_equal(em, node, a, b):
    return em.op("Not", [em.op("Equal", [a, b])])


@EXPORT.register("div")
def _div(em, node, a, b):
    if not node.type.dtype.is_int:
        return em.op("Div", [a, b], hint="div")
    # floor division, with x // 0 defined as x // 1: (a - a mod b) / b is exact
    zero, one = scalar_like(em, 0, b), scalar_like(em, 1, b)
    if node.type.dtype.is_unsigned:
        safe = em.op("Where", [em.op("Equal", [b, zero]), one, b])
        rem = em.op("Mod", [a, safe], fmod=0)
        return em.op("Div", [em.op("Sub", [a, rem]), safe], hint="div")
    # MIN / -1 (and MIN mod -1) trap in x86's idiv, killing the process: x // -1 is 0 - x
    # (wrapping to MIN, as the reference does), and the divider sees 1 instead
    minus_one = em.op("Equal", [b, scalar_like(em, -1, b)])
    safe = em.op("Where", [em.op("Or", [em.op("Equal", [b, zero]), minus_one]), one, b])
    rem = em.op("Mod", [a, safe], fmod=0)
    quotient = em.op("Div", [em.op("Sub", [a, rem]), safe])
    return em.op("Where", [minus_one, em.op("Sub", [scalar_like(em, 0, a), a]), quotient], hint="div")


@EXPORT.register("neg")
def _neg(em, node, x):
    """ONNX's Neg takes signed types only: an unsigned -x is 0 - x, which wraps as ours does."""
    if node.type.dtype.is_unsigned:
        return em.op("Sub", [scalar_like(em, 0, x), x], hint="neg")
    return em.op("Neg", [x], hint="neg")


@EXPORT.register("fmod")
def _fmod(em, node, a, b):
    return em.op("Mod", [a, b], fmod=1, hint="fmod")


@EXPORT.register("rsqrt")
def _rsqrt(em, node, x):
    return em.op("Reciprocal", [em.op("Sqrt", [x])], hint="rsqrt")


# -- activations: fn(em, x, dtype, **attrs), x in the node's dtype ---------------------------------
def sigmoid(em: Emitter, x: str) -> str:
    """The reference's sigmoid: ONNX Sigmoid for x >= 0, exp(x) / (1 + exp(x)) below (NaN stays NaN)."""
    e = em.op("Exp", [x])
    tail = em.op("Div", [e, em.op("Add", [scalar_like(em, 1, x), e])])
    return em.op("Where", [em.op("Less", [x, scalar_like(em, 0, x)]), tail, em.op("Sigmoid", [x])],
                 hint="sigmoid")


def relu(em: Emitter, x: str, dtype) -> str:
    if dtype.is_float:
        return em.op("Relu", [x], hint="relu")
    return em.op("Max", [x, scalar_like(em, 0, x)], hint="relu")


def rounded_sigmoid(em: Emitter, x: str, dtype) -> str:
    """The sigmoid computed in float32 for a narrow float, rounded once to ``dtype``."""
    return narrow(em, sigmoid(em, widen(em, x)), dtype)


def silu(em: Emitter, x: str, dtype) -> str:
    """x times its sigmoid rounded to x's dtype, as the reference."""
    return em.op("Mul", [x, rounded_sigmoid(em, x, dtype)], hint="silu")


def tanh(em: Emitter, x: str, dtype) -> str:
    return em.op("Tanh", [x], hint="tanh")


# erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n c_n x^(2n+1), c_n = 2^n / (2n+1)!!: every term positive,
# so no cancellation; 110 terms reach 1e-17 at |x| = 6, past which erf is +-1 in float64
# evaluated in u = x^2 / 36 with coefficients c_n 36^n (5.6e-9 to 4e15): ONNX Runtime's
# NoopElimination drops an Add of a float64 constant that is 0 in float32, which c_110 (5e-180) was
_ERF_TERMS = 110
_ERF_COEFFS = np.cumprod([1.0] + [72.0 / (2 * n + 1) for n in range(1, _ERF_TERMS + 1)])


def erf(em: Emitter, x: str) -> str:
    """ONNX Erf, except where the runtime has no float64 kernel (ONNX Runtime): there the series
    above in float64 nodes (within 25 ulps of the exact value; Erf through float32 was 1e-8 off)."""
    kernels = em.kernels
    have = em.dtypes[x]
    if kernels is None or have != F64:
        return em.op("Erf", [x], hint="erf")
    ok = kernels.supported("Erf", 13, "T")
    if ok is None or "tensor(double)" in ok:
        return em.op("Erf", [x], hint="erf")
    c = lambda v: scalar_like(em, v, x)  # noqa: E731
    big = em.op("Greater", [em.op("Abs", [x]), c(6.0)])
    xc = em.op("Where", [big, em.op("Mul", [em.op("Sign", [x]), c(6.0)]), x])   # NaN stays NaN
    y = em.op("Mul", [xc, xc])
    u = em.op("Div", [y, c(36.0)])
    p = c(float(_ERF_COEFFS[-1]))
    for coeff in _ERF_COEFFS[-2::-1]:
        p = em.op("Add", [em.op("Mul", [p, u]), c(float(coeff))])
    out = em.op("Mul", [em.op("Mul", [c(float(2.0 / np.sqrt(np.pi))), em.op("Exp", [em.op("Neg", [y])])]),
                        em.op("Mul", [xc, p])])
    out = em.op("Where", [em.op("Greater", [out, c(1.0)]), c(1.0), out])
    return em.op("Where", [em.op("Less", [out, c(-1.0)]), c(-1.0), out], hint="erf")


@EXPORT.register("erf")
def _erf(em, node, x):
    return erf(em, x)


def gelu(em: Emitter, x: str, dtype, approximate: str = "none") -> str:
    x = widen(em, x)
    c = lambda v: scalar_like(em, v, x)  # noqa: E731
    if approximate == "tanh":
        cube = em.op("Mul", [em.op("Mul", [em.op("Mul", [c(0.044715), x]), x]), x])
        inner = em.op("Mul", [c(float(np.sqrt(2.0 / np.pi))), em.op("Add", [x, cube])])
        cdf = em.op("Add", [c(1.0), em.op("Tanh", [inner])])
    else:
        cdf = em.op("Add", [c(1.0), erf(em, em.op("Mul", [x, c(float(1.0 / np.sqrt(2.0)))]))])
    out = em.op("Mul", [em.op("Mul", [c(0.5), x]), cdf], hint="gelu")
    return narrow(em, out, dtype)


ACTIVATIONS = {"relu": relu, "sigmoid": rounded_sigmoid, "silu": silu, "tanh": tanh, "gelu": gelu}


@EXPORT.register(tuple(ACTIVATIONS))
def _activation(em, node, x):
    return ACTIVATIONS[node.op](em, x, node.type.dtype, **node.attrs)


# -- casts ----------------------------------------------------------------------------------------
@EXPORT.register("cast")
def _cast(em, node, x):
    to, have = onnx_dtype(node.attrs["dtype"]), em.dtypes[x]
    if to == have:
        # no node: ONNX Runtime's basic optimizations (CastElimination with DivMulFusion) left a
        # consumer of a same-type Cast reading a name no node wrote, and the model did not load
        return x
    if to in _NARROW_MAX and have in _ROUNDED_TWICE[to]:
        return round_once(em, x, to)
    return em.op("Cast", [x], to=to, hint="cast")


# (the largest finite value, the tie between it and inf) of each narrow type
_NARROW_MAX = {F16: (65504.0, 65520.0), BF16: (3.3895313892515355e38, 3.39617752923046e38)}
# Casts ONNX Runtime makes through float32, rounding twice: a value that float32 rounds onto a tie
# of the narrow type then goes to the even side, which may be the wrong one.
_ROUNDED_TWICE = {F16: (F64,), BF16: (F64, I32, I64, U32)}


def round_once(em: Emitter, x: str, to: int) -> str:
    """``x`` (float64 or int) cast to f16/bf16 with ONE rounding to nearest, ties to even (NumPy's).

    m = float32(x) can be wrong only as a tie of ``to`` that x is not: then x's side of m decides
    between m's two neighbours in ``to``, the even one b (Cast's choice) and o = m + (m - b) (exact;
    a tie is exactly the case where o is a value of ``to``)."""
    xd = em.cast(x, F64)
    m = em.cast(xd, F32)
    as_to = lambda v: em.cast(em.op("Cast", [v], to=to), F32)  # noqa: E731  (rounded, back in f32)
    b = as_to(m)
    top, edge = _NARROW_MAX[to]                       # past the largest value, the tie is with inf
    overflow = em.op("IsInf", [b])
    o = em.op("Where", [overflow, em.op("Mul", [em.op("Sign", [m]), em.const(np.float32(top))]),
                        em.op("Add", [m, em.op("Sub", [m, b])])])
    is_tie = em.op("Where", [overflow, em.op("Equal", [em.op("Abs", [m]), em.const(np.float32(edge))]),
                             em.op("Equal", [as_to(o), o])])
    tie = em.op("And", [em.op("Not", [em.op("Equal", [b, m])]), is_tie])
    md = em.cast(m, F64)
    wrong = em.op("And", [tie, em.op("Not", [em.op("Equal", [md, xd])])])
    side = em.op("Where", [em.op("Greater", [xd, md]), em.op("Max", [b, o]), em.op("Min", [b, o])])
    return em.op("Cast", [em.op("Where", [wrong, side, b])], to=to, hint="cast")
