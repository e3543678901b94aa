"""Elementwise ops: arithmetic, math functions, activations, comparisons, logic, where, cast."""
from __future__ import annotations

import numpy as np

from graphdsl import dtypes as _dt
from graphdsl.errors import TypeError_
from graphdsl.registry import REQUIRED, defop
from graphdsl.types import TensorType

from . import storage as _storage
from .common import (binary_infer, broadcast_infer, require_float, same_dtype, sum_to,
                      types_str, unary_float_infer)

_SQRT_2_OVER_PI = float(np.sqrt(2.0 / np.pi))
_INV_SQRT_2 = float(1.0 / np.sqrt(2.0))


def _erf(x: np.ndarray) -> np.ndarray:
    """scipy's erf, imported on first use so that `import graphdsl` stays fast."""
    from scipy.special import erf as scipy_erf
    return scipy_erf(x)


def _keep(dtype_like):
    """Wrap a NumPy function so its result keeps the input's dtype (f16/bf16 stay narrow)."""
    def wrapped(*xs, **kw):
        out = dtype_like(*xs, **kw)
        return np.asarray(out, dtype=xs[0].dtype)
    return wrapped


# -- binary arithmetic --------------------------------------------------------------------------
add = defop("add", arity=2, infer=binary_infer("add", kinds=("float", "int")),
            ref=_keep(np.add), vjp=lambda g, y, a, b: [sum_to(g, a.shape), sum_to(g, b.shape)],
            doc="a + b, broadcasting (integers wrap)", tags=("commutative", "elementwise"))
sub = defop("sub", arity=2, infer=binary_infer("sub", kinds=("float", "int")),
            ref=_keep(np.subtract), vjp=lambda g, y, a, b: [sum_to(g, a.shape), sum_to(-g, b.shape)],
            doc="a - b, broadcasting (integers wrap)", tags=("elementwise",))
mul = defop("mul", arity=2, infer=binary_infer("mul", kinds=("float", "int")),
            ref=_keep(np.multiply),
            vjp=lambda g, y, a, b: [sum_to(g * b, a.shape), sum_to(g * a, b.shape)],
            doc="a * b, broadcasting (integers wrap)", tags=("commutative", "elementwise"))


def _div_ref(a, b):
    if np.issubdtype(a.dtype, np.integer):
        return np.floor_divide(a, np.where(b == 0, 1, b)).astype(a.dtype)
    return np.asarray(a / b, dtype=a.dtype)


div = defop("div", arity=2, infer=binary_infer("div", kinds=("float", "int")), ref=_div_ref,
            vjp=lambda g, y, a, b: [sum_to(g / b, a.shape), sum_to(-g * y / b, b.shape)],
            doc="a / b; on integers, floor division (x // 0 is defined as x // 1)",
            tags=("elementwise",))


def _fmod_ref(a, b):
    with np.errstate(invalid="ignore"):   # fmod(x, 0) and fmod(inf, y) are NaN, as in C
        return _keep(np.fmod)(a, b)


fmod = defop("fmod", arity=2, infer=binary_infer("fmod", kinds=("float",)), ref=_fmod_ref,
             vjp=lambda g, y, a, b: [sum_to(g, a.shape), sum_to(-g * ((a - y) / b), b.shape)],
             doc="the remainder of a / b truncated toward zero, with a's sign (C's fmod); exact, "
                 "NaN for b == 0 or an infinite a, a itself for an infinite b",
             tags=("elementwise",))


def _pow_vjp(g, y, a, b):
    ga = sum_to(g * b * pow(a, b - 1.0), a.shape)
    safe = where(greater(a, 0.0), a, 1.0)
    gb = sum_to(g * y * log(safe), b.shape)
    return [ga, gb]


pow = defop("pow", arity=2, infer=binary_infer("pow", kinds=("float",)), ref=_keep(np.power),
            vjp=_pow_vjp, doc="a ** b (the gradient for b treats a <= 0 as contributing 0)",
            tags=("elementwise",))
maximum = defop("maximum", arity=2, infer=binary_infer("maximum", kinds=("float", "int")),
                ref=_keep(np.maximum),
                vjp=lambda g, y, a, b: [sum_to(where(greater_equal(a, b), g, 0.0), a.shape),
                                        sum_to(where(greater_equal(a, b), 0.0, g), b.shape)],
                doc="the larger of a and b, elementwise; NaN if either is NaN; on a tie the gradient goes to a",
                tags=("commutative", "elementwise"))
minimum = defop("minimum", arity=2, infer=binary_infer("minimum", kinds=("float", "int")),
                ref=_keep(np.minimum),
                vjp=lambda g, y, a, b: [sum_to(where(less_equal(a, b), g, 0.0), a.shape),
                                        sum_to(where(less_equal(a, b), 0.0, g), b.shape)],
                doc="the smaller of a and b, elementwise; NaN if either is NaN; on a tie the gradient goes to a",
                tags=("commutative", "elementwise"))


# -- unary math ---------------------------------------------------------------------------------
def _signed_infer(x: TensorType) -> TensorType:
    if x.dtype.is_bool:
        raise TypeError_(f"does not take bool input {x}", hint="use logical_not for booleans")
    return x


neg = defop("neg", infer=_signed_infer, ref=_keep(np.negative), vjp=lambda g, y, x: [-g],
            doc="-x (integers wrap: -MIN is MIN; an unsigned -x is 2**bits - x)", tags=("elementwise",))
abs = defop("abs", infer=_signed_infer, ref=_keep(np.abs),
            vjp=lambda g, y, x: [where(less(x, 0.0), -g, g)],
            doc="|x| (the gradient at 0 is taken as +1)", tags=("elementwise",))
exp = defop("exp", infer=unary_float_infer("exp"), ref=_keep(np.exp), vjp=lambda g, y, x: [g * y],
            doc="e ** x", tags=("elementwise",))
log = defop("log", infer=unary_float_infer("log"), ref=_keep(np.log), vjp=lambda g, y, x: [g / x],
            doc="the natural logarithm (log 0 = -inf, NaN below 0)", tags=("elementwise",))
sqrt = defop("sqrt", infer=unary_float_infer("sqrt"), ref=_keep(np.sqrt),
             vjp=lambda g, y, x: [g * 0.5 / y],
             doc="the square root (NaN below 0)", tags=("elementwise",))
rsqrt = defop("rsqrt", infer=unary_float_infer("rsqrt"), ref=_keep(lambda x: 1.0 / np.sqrt(x)),
              vjp=lambda g, y, x: [g * -0.5 * y * y * y],
              doc="1 / sqrt(x) (inf at 0, NaN below 0)", tags=("elementwise",))
tanh = defop("tanh", infer=unary_float_infer("tanh"), ref=_keep(np.tanh),
             vjp=lambda g, y, x: [g * (1.0 - y * y)],
             doc="the hyperbolic tangent", tags=("elementwise",))
sin = defop("sin", infer=unary_float_infer("sin"), ref=_keep(np.sin),
            vjp=lambda g, y, x: [g * cos(x)],
            doc="sine (radians)", tags=("elementwise",))
cos = defop("cos", infer=unary_float_infer("cos"), ref=_keep(np.cos),
            vjp=lambda g, y, x: [-g * sin(x)],
            doc="cosine (radians)", tags=("elementwise",))
erf = defop("erf", infer=unary_float_infer("erf"),
            ref=_keep(lambda x: _erf(x.astype(np.float32) if x.dtype.itemsize < 4 else x)),
            vjp=lambda g, y, x: [g * (2.0 / np.sqrt(np.pi)) * exp(-(x * x))],
            doc="the error function, 2/sqrt(pi) * integral of exp(-t^2) from 0 to x (f16/bf16 computed in f32)",
            tags=("elementwise",))


def _sigmoid_ref(x):
    wide = x.astype(np.float32) if x.dtype.itemsize < 4 else x
    e = np.exp(-np.abs(wide))  # never overflows: the stable two-sided form of 1 / (1 + exp(-x))
    return np.asarray(np.where(wide >= 0, 1.0 / (1.0 + e), e / (1.0 + e)), x.dtype)


sigmoid = defop("sigmoid", infer=unary_float_infer("sigmoid"), ref=_sigmoid_ref,
                vjp=lambda g, y, x: [g * y * (1.0 - y)],
                doc="1 / (1 + exp(-x)), in a form that never overflows (f16/bf16 computed in f32)",
                tags=("elementwise",))
relu = defop("relu", infer=_signed_infer, ref=_keep(lambda x: np.maximum(x, 0)),
             vjp=lambda g, y, x: [where(greater(x, 0.0), g, 0.0)],
             doc="max(x, 0) (NaN stays NaN; the gradient at 0 is 0)", tags=("elementwise",))
silu = defop("silu", infer=unary_float_infer("silu"), ref=lambda x: (x * _sigmoid_ref(x)).astype(x.dtype),
             vjp=lambda g, y, x: [g * (sigmoid(x) * (1.0 + x * (1.0 - sigmoid(x))))],
             doc="x * sigmoid(x) (SiLU, also called swish)", tags=("elementwise",))


def _gelu_ref(x, approximate):
    w = x if x.dtype.itemsize >= 4 else x.astype(np.float32)  # f16/bf16 math in f32
    c = w.dtype.type
    if approximate == "tanh":
        out = c(0.5) * w * (c(1.0) + np.tanh(c(_SQRT_2_OVER_PI) * (w + c(0.044715) * w * w * w)))
    else:
        out = c(0.5) * w * (c(1.0) + _erf(w * c(_INV_SQRT_2)))
    return out.astype(x.dtype, copy=False)


def _gelu_vjp(g, y, x, approximate):
    if approximate == "tanh":
        inner = _SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)
        t = tanh(inner)
        dinner = _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x)
        return [g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner)]
    cdf = 0.5 * (1.0 + erf(x * _INV_SQRT_2))
    pdf = exp(-0.5 * x * x) * float(1.0 / np.sqrt(2 * np.pi))
    return [g * (cdf + x * pdf)]


def _gelu_infer(x, approximate):
    require_float("gelu", x)
    if approximate not in ("none", "tanh"):
        raise TypeError_(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return x


gelu = defop("gelu", attrs={"approximate": "none"}, infer=_gelu_infer, ref=_gelu_ref, vjp=_gelu_vjp,
             doc="GELU, exact (erf) or the tanh approximation", tags=("elementwise",))


# -- comparisons and logic -------------------------------------------------------------------------
def _compare(name, fn, symbol):
    return defop(name, arity=2, infer=binary_infer(name, out_dtype=_dt.bool_), ref=fn,
                 differentiable=False, tags=("elementwise", "compare"),
                 doc=f"a {symbol} b, elementwise, as bool, broadcasting (with a NaN only != holds)")


equal = _compare("equal", np.equal, "==")
not_equal = _compare("not_equal", np.not_equal, "!=")
less = _compare("less", np.less, "<")
less_equal = _compare("less_equal", np.less_equal, "<=")
greater = _compare("greater", np.greater, ">")
greater_equal = _compare("greater_equal", np.greater_equal, ">=")


def _logic(name, fn, doc, arity=2):
    def infer(*types):
        for t in types:
            if not t.dtype.is_bool:
                raise TypeError_(f"takes bool inputs, got {types_str(*types)}", op=name,
                                 hint="compare first (x > 0) or cast with astype('bool')")
        return TensorType(broadcast_infer(name, *types), _dt.bool_)
    return defop(name, arity=arity, infer=infer, ref=fn, differentiable=False, doc=doc, tags=("elementwise",))


logical_and = _logic("logical_and", np.logical_and, "a and b on bools, broadcasting")
logical_or = _logic("logical_or", np.logical_or, "a or b on bools, broadcasting")
logical_not = _logic("logical_not", np.logical_not, "not x on bools", arity=1)


def _where_infer(c, a, b):
    if not c.dtype.is_bool:
        raise TypeError_(f"condition must be bool, got {c}", op="where",
                         hint="compare first, e.g. where(mask > 0, x, y)")
    dt = same_dtype("where", a, b)
    return TensorType(broadcast_infer("where", c, a, b), dt)


where = defop("where", arity=3, infer=_where_infer,
              ref=lambda c, a, b: np.where(c, a, b).astype(a.dtype),
              vjp=lambda g, y, c, a, b: [None, sum_to(where(c, g, 0.0), a.shape),
                                         sum_to(where(c, 0.0, g), b.shape)],
              types="cond bool; a and b one dtype, any → that dtype",
              doc="where(cond, a, b): a where cond holds, else b", tags=("elementwise",))


def _cast_ref(x, dtype, saturate=True, round_mode="up"):
    have = _dt.dtype(x.dtype)
    if have.storage:
        x = _storage.decode(x, have)
    if dtype.storage:
        return _storage.encode(x, dtype, saturate, round_mode)
    target = dtype.np
    if dtype.is_int and x.dtype.kind == "f":
        x = np.trunc(x)
    return x.astype(target)


def _cast_vjp(g, y, x, dtype, saturate, round_mode):
    if not x.dtype.is_float or x.dtype.storage or dtype.storage:
        return [None]   # storage values carry no gradient
    return [cast(g, dtype=x.dtype)]


def _cast_normalize(x, dtype, saturate, round_mode):
    if round_mode not in _dt.ROUND_MODES:
        raise TypeError_(f"round_mode={round_mode!r} is not one of {', '.join(_dt.ROUND_MODES)} ({x})",
                         hint="round_mode says how a cast to float8_e8m0fnu rounds; the default is 'up'")
    return {"dtype": _dt.dtype(dtype), "saturate": bool(saturate), "round_mode": round_mode}


cast = defop("cast", attrs={"dtype": REQUIRED, "saturate": True, "round_mode": "up"},
             normalize=_cast_normalize, takes_storage=True,
             infer=lambda x, dtype, saturate, round_mode: x.with_dtype(dtype), ref=_cast_ref, vjp=_cast_vjp,
             types="any dtype, storage dtypes included → the dtype attribute",
             doc="convert to another dtype: to a narrower float rounds to nearest, ties to even (NaN stays "
                 "NaN, past the largest finite value is inf); float to int truncates toward zero. To and "
                 "from the storage dtypes (float8, float4, int4, int2) as ONNX's Cast: saturate (float8) "
                 "and round_mode (float8_e8m0fnu) as there (graphdsl/ops/storage.py)",
             tags=("elementwise",))
