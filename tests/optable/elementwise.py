"""Rows for graphdsl/ops/elementwise.py. Expected values come from plain formulas (math module, NumPy)."""
import math

import ml_dtypes
import numpy as np

from graphdsl.errors import ShapeError, TypeError_
from tests.opinfo import ErrorCase, OpInfo, Sample, randn, uniform

A = randn(2, 3, seed=1)
B = randn(2, 3, seed=2)
ROW = randn(3, seed=3)
NANS = np.array([[np.nan, 1.0, -np.inf], [2.0, np.nan, np.inf]])   # NaN against NaN, numbers, infinities
POS = uniform(2, 3, seed=4)
# keep away from the kinks of relu/abs/max so central differences are valid
KINKLESS = A + np.sign(A) * 0.1

_vec = np.vectorize

BIN_ERRORS = [
    ErrorCase(["f32[2,3]", "f32[4]"], {}, ShapeError, r"do not broadcast.*f32\[2,3\].*f32\[4\]", "broadcast"),
    ErrorCase(["f32[2,3]", "f16[2,3]"], {}, TypeError_, r"dtypes differ", "dtype"),
]


def binary(op, formula, **kw):
    return OpInfo(op, [
        Sample([A, B], expected=formula, name="same"),
        Sample([A, ROW], expected=formula, name="broadcast"),
        Sample([A.astype(np.float32), B.astype(np.float32)], expected=formula, grad=False, name="f32",
               atol=1e-5, rtol=1e-5),
    ], BIN_ERRORS, **kw)


def unary(op, formula, x=A, **kw):
    return OpInfo(op, [
        Sample([x], expected=formula, name="f64"),
        Sample([x.astype(np.float32)], expected=formula, grad=False, name="f32", atol=1e-5, rtol=1e-5),
    ], [ErrorCase(["i32[3]"], {}, TypeError_, r"floating-point", "int")] if kw.pop("float_only", True) else [],
        **kw)


def _gelu_erf(x):
    return _vec(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))(x)


def _gelu_tanh(x):
    return _vec(lambda v: 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))))(x)


def compare(op, formula, bools: bool = False):
    ints = (A * 3).astype(np.int32)
    samples = [Sample([A, B], expected=formula, name="float"),
               Sample([A, np.float64(0.0) * ROW], expected=formula, name="broadcast"),
               Sample([ints, np.flip(ints, 1).copy()], expected=formula, name="int"),
               Sample([NANS, np.flip(NANS).copy()], expected=formula, name="nan")]
    if bools:
        samples.append(Sample([A > 0, B > 0], expected=formula, name="bool"))
        bf16 = ml_dtypes.bfloat16   # TVM has no isnan on bf16: the NaN test goes through float32
        samples.append(Sample([NANS.astype(bf16), np.flip(NANS).astype(bf16)], expected=formula, name="nan_bf16"))
    return OpInfo(op, samples, BIN_ERRORS)


BOOLS_A = A > 0
BOOLS_B = B > 0

OPS = [
    binary("add", lambda a, b: a + b),
    binary("sub", lambda a, b: a - b),
    binary("mul", lambda a, b: a * b),
    OpInfo("div", [Sample([A, POS], expected=lambda a, b: a / b, name="float"),
                   Sample([np.array([7, -7, 9], np.int32), np.array([2, 2, 0], np.int32)],
                          expected=np.array([3, -4, 9]), name="int_floor")], BIN_ERRORS),
    OpInfo("fmod", [Sample([A, POS], expected=lambda a, b: np.array(
                        [math.fmod(x, y) for x, y in np.broadcast(a, b)]).reshape(np.broadcast(a, b).shape),
                        name="float"),
                    Sample([np.array([5.5, -5.5, 7.0, -0.0]), np.array([2.0, 2.0, -np.inf, 3.0])],
                           expected=np.array([1.5, -1.5, 7.0, -0.0]), grad=False, name="signs")],
           [ErrorCase(["i32[2]", "i32[2]"], {}, TypeError_, r"does not take int32")]),
    OpInfo("pow", [Sample([POS, B], expected=lambda a, b: a ** b, name="float"),
                   Sample([POS, np.array(2.0)], expected=lambda a, b: a * a, name="square")],
           [ErrorCase(["i32[2]", "i32[2]"], {}, TypeError_, r"does not take int32")]),
    binary("maximum", lambda a, b: np.maximum(a, b)),
    binary("minimum", lambda a, b: np.minimum(a, b)),
    unary("neg", lambda x: -x, float_only=False),
    unary("abs", lambda x: np.abs(x), x=KINKLESS, float_only=False),
    unary("exp", _vec(math.exp)),
    unary("log", _vec(math.log), x=POS),
    unary("sqrt", _vec(math.sqrt), x=POS),
    unary("rsqrt", _vec(lambda v: 1 / math.sqrt(v)), x=POS),
    unary("tanh", _vec(math.tanh)),
    unary("erf", _vec(math.erf)),
    unary("sin", _vec(math.sin)),
    unary("cos", _vec(math.cos)),
    unary("sigmoid", _vec(lambda v: 1 / (1 + math.exp(-v)))),
    OpInfo("sigmoid", [Sample([np.array([-800.0, -3.0, 0.0, 3.0, 800.0])], name="saturates",
                              expected=np.array([0.0, 1 / (1 + math.exp(3)), 0.5, 1 / (1 + math.exp(-3)), 1.0])),
                       Sample([A.astype(np.float16)], expected=_vec(lambda v: 1 / (1 + math.exp(-v))),
                              grad=False, name="f16", atol=1e-3, rtol=1e-3)]),
    unary("relu", lambda x: np.where(x > 0, x, 0), x=KINKLESS, float_only=False),
    unary("silu", _vec(lambda v: v / (1 + math.exp(-v)))),
    OpInfo("gelu", [Sample([A], expected=_gelu_erf, name="erf"),
                    Sample([A], {"approximate": "tanh"}, expected=_gelu_tanh, name="tanh"),
                    Sample([A.astype(np.float16)], expected=_gelu_erf, grad=False, name="f16", atol=3e-3, rtol=3e-3)],
           [ErrorCase(["f32[2]"], {"approximate": "fast"}, TypeError_, r"approximate must be"),
            ErrorCase(["f32[2]"], {"alpha": 1.0}, Exception, r"unknown attribute")]),
    compare("equal", lambda a, b: a == b, bools=True),
    compare("not_equal", lambda a, b: a != b, bools=True),
    compare("less", lambda a, b: a < b),
    compare("less_equal", lambda a, b: a <= b),
    compare("greater", lambda a, b: a > b),
    compare("greater_equal", lambda a, b: a >= b),
    OpInfo("logical_and", [Sample([BOOLS_A, BOOLS_B], expected=lambda a, b: a & b)],
           [ErrorCase(["f32[2]", "bool[2]"], {}, TypeError_, r"takes bool inputs")]),
    OpInfo("logical_or", [Sample([BOOLS_A, BOOLS_B], expected=lambda a, b: a | b)],
           [ErrorCase(["i32[2]", "bool[2]"], {}, TypeError_, r"takes bool inputs")]),
    OpInfo("logical_not", [Sample([BOOLS_A], expected=lambda a: ~a)],
           [ErrorCase(["f32[2]"], {}, TypeError_, r"takes bool inputs")]),
    OpInfo("where", [Sample([BOOLS_A, A, B], expected=lambda c, a, b: np.where(c, a, b), name="same"),
                     Sample([BOOLS_A[:1], A, ROW], expected=lambda c, a, b: np.where(c, a, b), name="broadcast")],
           [ErrorCase(["f32[2]", "f32[2]", "f32[2]"], {}, TypeError_, r"condition must be bool"),
            ErrorCase(["bool[2]", "f32[2]", "i32[2]"], {}, TypeError_, r"dtypes differ")]),
    OpInfo("cast", [Sample([A], {"dtype": "float32"}, expected=lambda x: x.astype(np.float32), name="f64_f32",
                           grad=False, atol=1e-6, rtol=1e-6),
                    Sample([A], {"dtype": "float64"}, expected=lambda x: x, name="f64_f64"),
                    Sample([A * 3], {"dtype": "int32"}, expected=lambda x: np.trunc(x), name="to_int", grad=False),
                    Sample([BOOLS_A], {"dtype": "float32"}, expected=lambda x: x.astype(np.float32), name="from_bool"),
                    Sample([A], {"dtype": "bfloat16"}, expected=lambda x: x, name="bf16", grad=False,
                           atol=2e-2, rtol=1e-2)],
           [ErrorCase(["f32[2]"], {"dtype": "float8"}, TypeError_, r"unknown dtype")]),
]
