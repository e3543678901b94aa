"""TVM rows for graphdsl/ops/elementwise.py: one Relax expression per op.

Transcendental functions of f16/bf16 inputs compute in f32 and cast back, as the references do;
so does bf16 arithmetic, so that each op's result is rounded to bf16 (common.cast says why TVM
would not). Relax's FuseOps later merges chains of these into single loops.

The edges follow the references (docs/semantics.md). TVM's max is ``a > b ? a : b``, so maximum,
minimum and relu are written to propagate NaN as NumPy's do. TVM compiles a float ``!=`` to an
ordered compare, false for NaN, so not_equal (and a cast to bool) also tests for NaN. TVM's
arithmetic simplifier folds ``x * 0`` and ``0 / x`` to 0 whatever x is, so a product with (or a
quotient of) a constant zero is NaN where x is NaN or infinite (or 0).
"""
from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax, te, tirx
from tvm.relax import op as R

from ..table import TVM
from .common import (acc_dtype, bool_equal, cast, dtype_of, isnan, logical_and, logical_not, logical_or, maximum, own_kernel,
                     minimum, scalar, upcast, wide)
from .common import decode_storage, decoded_dtype, encode_storage


def _binary(fn):
    """A binary op's row; one with a bf16 result computes in f32 and rounds once, like ml_dtypes."""
    def row(cx, node, a, b):
        dt = node.type.dtype.name
        if dt == "bfloat16":
            return cx.emit(cast(fn(upcast(a), upcast(b)), dt))
        return cx.emit(fn(a, b))
    return row


def _unary(fn):
    return lambda cx, node, x: cx.emit(fn(x))


for _op, _fn in [("add", R.add), ("sub", R.subtract), ("pow", R.power),
                 ("less", R.less), ("less_equal", R.less_equal), ("greater", R.greater),
                 ("greater_equal", R.greater_equal), ("logical_and", logical_and),
                 ("logical_or", logical_or)]:
    TVM.register(_op, _binary(_fn))
for _op, _fn in [("abs", R.abs), ("logical_not", logical_not)]:
    TVM.register(_op, _unary(_fn))


@TVM.register("neg")
def neg(cx, node, x):
    """-x; an unsigned -x is ~x + 1, wrapping as NumPy's does (TVM's negative of an unsigned
    dtype fails to build, multiplying by the constant -1, and it simplifies 0 - x to 0)."""
    dt = node.type.dtype
    if dt.is_unsigned:
        return cx.emit(R.add(R.bitwise_not(x), scalar(1, dt.name)))
    return cx.emit(R.negative(x))
for _op, _fn in [("exp", R.exp), ("log", R.log), ("sqrt", R.sqrt), ("rsqrt", R.rsqrt), ("tanh", R.tanh),
                 ("sin", R.sin), ("cos", R.cos), ("erf", R.erf)]:
    TVM.register(_op, wide(_fn))
TVM.register("maximum", lambda cx, node, a, b: cx.emit(maximum(a, b)))
TVM.register("minimum", lambda cx, node, a, b: cx.emit(minimum(a, b)))
TVM.register("where", lambda cx, node, c, a, b: cx.emit(R.where(c, a, b)))


def _is_zero(x: relax.Expr) -> bool:
    return isinstance(x, tvm.ir.expr.Constant) and not np.any(x.value.numpy())


@TVM.register("mul")
def mul(cx, node, a, b):
    if node.type.dtype.is_float and (_is_zero(a) or _is_zero(b)):
        x = b if _is_zero(a) else a       # x * 0 is 0 for finite x, else NaN
        dt = node.type.dtype.name
        zero = cx.emit(R.multiply(a, b))  # broadcast to the result's shape
        return cx.emit(R.where(R.isfinite(x), zero, scalar(np.nan, dt)))
    return _binary(R.multiply)(cx, node, a, b)


@TVM.register("div")
def div(cx, node, a, b):
    dt = node.type.dtype
    if dt.is_float:
        if _is_zero(a):                   # 0 / x is 0, but NaN for x NaN or 0
            zero = cx.emit(R.multiply(a, b))
            nan = logical_or(isnan(b), R.equal(b, scalar(0, dt.name)))
            return cx.emit(R.where(nan, scalar(np.nan, dt.name), zero))
        return _binary(R.divide)(cx, node, a, b)
    one, zero = scalar(1, dt.name), scalar(0, dt.name)
    if dt.is_unsigned:
        return cx.emit(R.floor_divide(a, R.where(R.equal(b, zero), one, b)))  # x // 0 is x // 1
    # MIN // -1 overflows, and x86's idiv traps on it (SIGFPE kills the process): x // -1 is -x,
    # which wraps to MIN as NumPy's result does
    minus_one = scalar(-1, dt.name)
    safe = R.where(logical_or(R.equal(b, zero), R.equal(b, minus_one)), one, b)
    return cx.emit(R.where(R.equal(b, minus_one), R.negative(a), R.floor_divide(a, safe)))


def _fmod_kernel(a: te.Tensor, b: te.Tensor) -> te.Tensor:
    """a fmod b elementwise (operands of one shape): TIR's float Mod is LLVM's exact frem."""
    return te.compute(a.shape, lambda *i: tirx.Mod(a(*i), b(*i)), name="fmod")


@TVM.register("fmod")
def fmod(cx, node, a, b):
    """C's fmod; bf16 operands in f32 (the remainder of two bf16 values is a bf16 value, so the
    cast back is exact). The kernel is kept out of fusion and vectorization: LLVM rejected the
    module TVM emitted for a vectorized float Mod fused with its neighbours ("Instruction does
    not dominate all uses")."""
    dt = node.type.dtype.name
    shape = cx.shape(node.type.shape)
    wa, wb = (cx.emit(R.broadcast_to(upcast(x) if dt == "bfloat16" else x, shape)) for x in (a, b))
    out = own_kernel(cx, cx.te(_fmod_kernel, wa, wb, name="fmod"), "fmod")
    return cx.emit(cast(out, dt))


@TVM.register("equal")
def equal(cx, node, a, b):
    """a == b; on bool compared as bytes: LLVM's == on i1 fails to compile (TVM emits an FCmp on i1)."""
    if node.inputs[0].type.dtype.name == "bool":
        return cx.emit(bool_equal(a, b))
    return cx.emit(R.equal(a, b))


@TVM.register("not_equal")
def not_equal(cx, node, a, b):
    """a != b, true where either is NaN: TVM's LLVM code generator compiles a float != to an
    ordered compare (false for NaN), so ``x != x`` was false for NaN."""
    dtype = node.inputs[0].type.dtype
    if dtype.name == "bool":   # LLVM's != on i1 fails to compile (an FCmp on i1): compare bytes
        return cx.emit(bool_equal(a, b, equal=False))
    if not dtype.is_float:
        return cx.emit(R.not_equal(a, b))
    return cx.emit(logical_or(R.not_equal(a, b), logical_or(isnan(a), isnan(b))))


def sigmoid(x: relax.Expr) -> relax.Expr:
    """The reference's two-sided form: exp(-|x|) never overflows, and the tail keeps subnormals."""
    dt = dtype_of(x)
    e = R.exp(R.negative(R.abs(x)))
    one = scalar(1, dt)
    return R.divide(R.where(R.greater_equal(x, scalar(0, dt)), one, e), R.add(one, e))


@TVM.register("sigmoid")
def sigmoid_row(cx, node, x):
    return cx.emit(cast(sigmoid(cx.emit(upcast(x))), node.type.dtype.name))


@TVM.register("silu")
def silu(cx, node, x):
    """x times its sigmoid rounded to x's dtype, as the reference (the product rounds once more)."""
    dt = node.type.dtype.name
    xf = cx.emit(upcast(x))
    s = cast(sigmoid(xf), dt)
    return cx.emit(cast(R.multiply(xf, upcast(s)), dt))


@TVM.register("gelu")
def gelu(cx, node, x):
    w = upcast(x)
    wt = acc_dtype(node.type.dtype.name)
    c = lambda v: scalar(v, wt)  # noqa: E731
    if node.attrs["approximate"] == "tanh":
        inner = R.multiply(c(math.sqrt(2.0 / math.pi)),
                           R.add(w, R.multiply(c(0.044715), R.multiply(R.multiply(w, w), w))))
        y = R.multiply(R.multiply(c(0.5), w), R.add(c(1.0), R.tanh(inner)))
    else:
        y = R.multiply(R.multiply(c(0.5), w), R.add(c(1.0), R.erf(R.multiply(w, c(1.0 / math.sqrt(2.0))))))
    return cx.emit(cast(y, node.type.dtype.name))


@TVM.register("cast")
def cast_row(cx, node, x):
    to, src = node.attrs["dtype"], node.inputs[0].type.dtype
    if src.storage:   # its bytes decoded to float32 (int32), which then casts as any value does
        x = cx.emit(decode_storage(x, src))
        src = decoded_dtype(src)
        if to == src:
            return x
    if to.storage:
        return cx.emit(encode_storage(x, to, node.attrs["saturate"], node.attrs["round_mode"]))
    if to.is_bool:  # NumPy's astype(bool) is x != 0 (so NaN is True)
        ne = R.not_equal(x, scalar(0, src.name))
        return cx.emit(logical_or(ne, isnan(x)) if src.is_float else ne)
    # to a narrower float: rounds to nearest even (cast rounds bf16 itself); float -> int truncates
    # toward zero, as np.trunc + astype
    return cx.emit(cast(x, to.name))


@TVM.register("relu")
def relu(cx, node, x):
    dt = node.type.dtype
    zero = scalar(0, dt.name)
    if not dt.is_float:
        return cx.emit(R.maximum(x, zero))
    return cx.emit(R.where(R.less(x, zero), zero, x))   # NaN is not < 0: it passes through
