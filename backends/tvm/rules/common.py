"""Helpers the TVM rule modules share: accumulation dtypes, casts, scalar constants, the
NaN-propagating maximum/minimum (docs/semantics.md), our own kernels' marking (own_kernel), and the
run-time index checks (backends/checks.py) that the indexing and loss rows register.

Casts to bfloat16 round explicitly. TVM computes bf16 in f32 (its BF16ComputeLegalize pass) and
keeps a kernel's bf16 intermediates as f32, turning a cast to bf16 into a cast to f32: a value cast
to bf16 and used again in the same fused kernel (``x.astype(bf16).astype(f32)``, every
``wide`` rule's result feeding the next op) was never rounded. ``cast`` therefore rounds to the
nearest bf16, ties to even, in integer arithmetic on the f32 bits (as ml_dtypes does) before the
cast, which leaves TVM's own conversion nothing to round.
"""
from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx
from tvm.relax import op as R

from graphdsl import dtypes as _dt

from ...checks import index_check, range_check, slice_check_for
from ..schedule import RULE_ATTR, RULE_ERRORS

NARROW = ("float16", "bfloat16")


def tensor_type(expr: relax.Expr) -> relax.TensorType:
    """The Relax type of an expression (nested calls are normalized first)."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType):
        ty = relax.BlockBuilder.current().normalize(expr).ty
    return ty


def dtype_of(expr: relax.Expr) -> str:
    return str(tensor_type(expr).dtype)


def acc_dtype(dtype: str) -> str:
    """The dtype references compute in: float64 for float64, float32 for every other float."""
    return "float64" if dtype == "float64" else "float32"


def scalar(value, dtype: str) -> relax.Constant:
    return relax.const(np.asarray(value, dtype=_dt.dtype(dtype).np), dtype)


def cast(x: relax.Expr, dtype: str) -> relax.Expr:
    have = dtype_of(x)
    if have == dtype:
        return x
    if dtype == "bfloat16":
        bb = relax.BlockBuilder.current()
        return bb.call_te(_round_to_bf16, bb.normalize(x), primfunc_name_hint="cast_bf16")
    return R.astype(x, dtype)


_EXACT_IN_F32 = ("float16", "bfloat16", "bool", "int8", "int16", "uint8", "uint16")


def _u32(value: int) -> tirx.PrimExpr:
    return tirx.const(value, "uint32")


def _f32_to_odd(v: tirx.PrimExpr) -> tirx.PrimExpr:
    """float64 -> float32 rounded to odd (toward zero, last bit set when inexact): rounding that
    to bf16 equals rounding the float64 to bf16 once, as ml_dtypes does."""
    y = v.astype("float32")
    bits = tirx.reinterpret("uint32", y)
    back = y.astype("float64")
    bits = tirx.Select(tirx.abs(back) > tirx.abs(v), bits - _u32(1), bits)   # rounded away: step back
    bits = tirx.Select(back != v, bits | _u32(1), bits)
    return tirx.reinterpret("float32", bits)


def _bf16_value(v: tirx.PrimExpr, src: str) -> tirx.PrimExpr:
    """``v`` (of dtype ``src``) rounded to the nearest bfloat16, ties to even; NaN -> quiet NaN."""
    if src == "float32":
        f = v
    elif src in _EXACT_IN_F32:
        f = v.astype("float32")
    else:   # float64 and wide ints (via float64: exact up to 2**53)
        f = _f32_to_odd(v.astype("float64"))
    bits = tirx.reinterpret("uint32", f)
    even = (bits + _u32(0x7FFF) + ((bits >> _u32(16)) & _u32(1))) & _u32(0xFFFF0000)
    quiet = (bits & _u32(0x80000000)) | _u32(0x7FC00000)
    return tirx.reinterpret("float32", tirx.Select(tirx.isnan(f), quiet, even)).astype("bfloat16")


def _round_to_bf16(x: te.Tensor) -> te.Tensor:
    return te.compute(x.shape, lambda *i: _bf16_value(x(*i), str(x.dtype)), name="round_bf16")


# -- storage dtypes (float8, float4, int4, int2) -----------------------------------------------------
# TVM 0.27's own float8 casts on LLVM are wrong (float32 1e9 -> e4m3fn gave 0.234, fnuz was treated
# as fn, float4 did not build) and it packs int4 two to a byte where ml_dtypes keeps one per byte.
# So on TVM every storage value is its ml_dtypes byte, a uint8 (``tvm_dtype``; the executable views
# arrays at the boundary), and casts to and from them are written here in integer arithmetic on the
# float32 bits, rule for rule as graphdsl/ops/storage.py (docs/semantics.md, "Casts").
def tvm_dtype(dt: _dt.DType) -> str:
    """The TVM dtype holding values of ``dt``: its own name, or uint8 for a storage dtype."""
    return "uint8" if dt.storage else dt.name


def decode_storage(x: relax.Expr, have: _dt.DType) -> relax.Expr:
    """The values of ``x`` (bytes of storage dtype ``have``): float32, int32 for the integer types."""
    bb = relax.BlockBuilder.current()
    return bb.call_te(lambda t: te.compute(t.shape, lambda *i: _decode(t(*i), have), name="decode"),
                      bb.normalize(x), primfunc_name_hint=f"from_{have.name}")


def decoded_dtype(have: _dt.DType) -> _dt.DType:
    """The dtype ``decode_storage`` gives for ``have``."""
    return _dt.int32 if have.is_int else _dt.float32


def encode_storage(x: relax.Expr, to: _dt.DType, saturate: bool, round_mode: str) -> relax.Expr:
    """``x`` (a non-storage value) cast to the storage dtype ``to``, as its bytes."""
    bb = relax.BlockBuilder.current()
    src = dtype_of(x)
    return bb.call_te(lambda t: te.compute(t.shape, lambda *i: _encode(t(*i), src, to, saturate, round_mode),
                                           name="encode"),
                      bb.normalize(x), primfunc_name_hint=f"to_{to.name}")


def _i32(value: int) -> tirx.PrimExpr:
    return tirx.const(value, "int32")


def _f32_bits(value: int) -> tirx.PrimExpr:
    return tirx.reinterpret("float32", _u32(value))


def _to_f32(v: tirx.PrimExpr, src: str) -> tirx.PrimExpr:
    """``v`` as a float32 that rounds to every storage format as ``v`` itself does: exact from the
    narrow types, rounded to odd from float64 and wide ints (a magnitude from 2**128 on is inf)."""
    if src == "float32":
        return v
    if src in _EXACT_IN_F32:
        return v.astype("float32")
    d = v.astype("float64")
    return tirx.Select(tirx.abs(d) >= tirx.const(2.0 ** 128, "float64"), d.astype("float32"), _f32_to_odd(d))


def _fields(f: tirx.PrimExpr):
    """(negative, exponent field, fraction field) of a float32, the fields as int32."""
    bits = tirx.reinterpret("uint32", f)
    return ((bits >> _u32(31)) != _u32(0), ((bits >> _u32(23)) & _u32(0xFF)).astype("int32"),
            (bits & _u32(0x7FFFFF)).astype("int32"))


def _encode(v: tirx.PrimExpr, src: str, to: _dt.DType, saturate: bool, round_mode: str) -> tirx.PrimExpr:
    if to.is_int:
        code = _encode_int(v, src, to)
    elif to.name == "float8_e8m0fnu":
        code = _encode_e8m0(_to_f32(v, src), saturate, round_mode)
    else:
        code = _encode_minifloat(_to_f32(v, src), _dt.MINIFLOAT[to.name], saturate)
    return code.astype("uint8")


def _encode_minifloat(f: tirx.PrimExpr, fmt: _dt.Minifloat, saturate: bool) -> tirx.PrimExpr:
    negative, E, F = _fields(f)
    nan, inf = (E == _i32(255)) & (F != _i32(0)), (E == _i32(255)) & (F == _i32(0))
    sig = F | tirx.Select(E > _i32(0), _i32(0x800000), _i32(0))   # value = sig * 2**(max(E, 1) - 150)
    e = tirx.max(E, _i32(1)) - _i32(127)                            # its leading digit's exponent (normal f32)
    shift = tirx.min(_i32(23 - fmt.mbits) + tirx.max(_i32(1 - fmt.bias) - e, _i32(0)), _i32(26))
    n = sig >> shift
    rem, half = sig & ((_i32(1) << shift) - _i32(1)), _i32(1) << (shift - _i32(1))
    n = n + tirx.Select((rem > half) | ((rem == half) & ((n & _i32(1)) == _i32(1))), _i32(1), _i32(0))
    code = (tirx.max(e + _i32(fmt.bias), _i32(1)) << _i32(fmt.mbits)) + n - _i32(1 << fmt.mbits)
    over = inf | (code > _i32(fmt.max_code))
    top = 1 << (fmt.bits - 1)
    sign = tirx.Select(negative, _i32(top), _i32(0))
    nan_code = tirx.Select(negative, _i32(fmt.nan_code(True)), _i32(fmt.nan_code(False)))
    if saturate or fmt.nan == "none":
        big = sign | _i32(fmt.max_code)
    elif fmt.has_inf:
        big = sign | _i32(fmt.inf_code)
    else:
        big = nan_code
    if fmt.nan == "uz":
        sign = tirx.Select(code == _i32(0), _i32(0), sign)          # no -0: its bits are the NaN
    return tirx.Select(nan, nan_code, tirx.Select(over, big, sign | code))


def _encode_e8m0(f: tirx.PrimExpr, saturate: bool, round_mode: str) -> tirx.PrimExpr:
    _, E, F = _fields(f)
    nan, inf, zero = (E == _i32(255)) & (F != _i32(0)), (E == _i32(255)) & (F == _i32(0)), (E == _i32(0)) & (F == _i32(0))
    # a float32 subnormal times 2**64 is normal (exactly): its fields, the exponent less 64
    scaled = tirx.abs(f) * tirx.const(2.0 ** 64, "float32")
    _, E2, F2 = _fields(tirx.Select(E == _i32(0), scaled, tirx.abs(f)))
    E2 = E2 - tirx.Select(E == _i32(0), _i32(64), _i32(0))
    if round_mode == "up":
        E2 = E2 + tirx.Select(F2 != _i32(0), _i32(1), _i32(0))
    elif round_mode == "nearest":
        E2 = E2 + tirx.Select(F2 >= _i32(0x400000), _i32(1), _i32(0))
    over, under = inf | (E2 > _i32(0xFE)), zero | (E2 < _i32(0))
    out = tirx.Select(over, _i32(0xFE if saturate else 0xFF),
                      tirx.Select(under, _i32(0 if saturate else 0xFF), E2))
    return tirx.Select(nan, _i32(0xFF), out)


def _encode_int(v: tirx.PrimExpr, src: str, to: _dt.DType) -> tirx.PrimExpr:
    mask = (1 << to.bits) - 1
    if src.startswith(("float", "bfloat")):   # truncated; out of range (NaN, inf) is 0
        wide = "float64" if src == "float64" else "float32"
        t = tirx.trunc(v.astype(wide))
        lo, hi = _dt.int_range(to)
        fits = (t >= tirx.const(lo, wide)) & (t <= tirx.const(hi, wide))
        return tirx.Select(fits, t, tirx.const(0, wide)).astype("int32") & _i32(mask)
    if src == "bool":
        return v.astype("int32")
    return (v & tirx.const(mask, src)).astype("int32")   # the low bits: integers wrap


def _decode(b: tirx.PrimExpr, have: _dt.DType) -> tirx.PrimExpr:
    b = b.astype("int32") & _i32((1 << have.bits) - 1)
    if have.is_int:
        if have.is_unsigned:
            return b
        top = _i32(1 << (have.bits - 1))
        return (b ^ top) - top
    nan = _f32_bits(0x7FC00000)
    if have.name == "float8_e8m0fnu":
        power = tirx.reinterpret("float32", (b << _i32(23)).astype("uint32"))
        return tirx.Select(b == _i32(0xFF), nan, tirx.Select(b == _i32(0), _f32_bits(0x00400000), power))
    fmt = _dt.MINIFLOAT[have.name]
    top = 1 << (fmt.bits - 1)
    negative, mag = b >= _i32(top), b & _i32(top - 1)
    e, m = mag >> _i32(fmt.mbits), mag & _i32((1 << fmt.mbits) - 1)
    normal = (((e + _i32(127 - fmt.bias)) << _i32(23)) | (m << _i32(23 - fmt.mbits))).astype("uint32")
    value = tirx.Select(e == _i32(0), m.astype("float32") * tirx.const(2.0 ** (1 - fmt.bias - fmt.mbits), "float32"),
                        tirx.reinterpret("float32", normal))
    value = tirx.Select(negative, -value, value)
    if fmt.nan == "ieee":
        special = tirx.Select(m == _i32(0), tirx.Select(negative, _f32_bits(0xFF800000), _f32_bits(0x7F800000)), nan)
        return tirx.Select(e == _i32((1 << fmt.ebits) - 1), special, value)
    if fmt.nan == "ones":
        return tirx.Select(mag == _i32(top - 1), nan, value)
    if fmt.nan == "uz":
        return tirx.Select(b == _i32(top), nan, value)
    return value


def upcast(x: relax.Expr) -> relax.Expr:
    """f16/bf16 to f32; other dtypes unchanged."""
    return cast(x, "float32") if dtype_of(x) in NARROW else x


def isnan(x: relax.Expr) -> relax.Expr:
    """R.isnan, through float32 for bf16 (TVM 0.27 has no isnan on bf16; a bf16 is exact in f32)."""
    return R.isnan(upcast(x) if dtype_of(x) == "bfloat16" else x)


# -- boolean logic -----------------------------------------------------------------------------
# TVM 0.27's LLVM code generator stores bool as a byte but computes it as i1: in a vectorized kernel
# that keeps a bool intermediate in a buffer (dlight's reduction schedules do), a loaded <N x i8>
# meets a computed <N x i1> and the module fails LLVM's verifier, or `not` of the byte flips all
# eight bits and is always true (a where then took one branch everywhere). So the logic on bools is
# done on bytes, compared back to bool: every operand is a clean 0 or 1.
def _byte(x: relax.Expr) -> relax.Expr:
    return R.astype(x, "int8")


def _nonzero(x: relax.Expr) -> relax.Expr:
    return R.not_equal(x, relax.const(0, "int8"))


def logical_not(x: relax.Expr) -> relax.Expr:
    return R.equal(_byte(x), relax.const(0, "int8"))


def logical_and(a: relax.Expr, b: relax.Expr) -> relax.Expr:
    return _nonzero(R.minimum(_byte(a), _byte(b)))


def logical_or(a: relax.Expr, b: relax.Expr) -> relax.Expr:
    return _nonzero(R.maximum(_byte(a), _byte(b)))


def bool_equal(a: relax.Expr, b: relax.Expr, equal: bool = True) -> relax.Expr:
    return (R.equal if equal else R.not_equal)(_byte(a), _byte(b))


def maximum(a: relax.Expr, b: relax.Expr) -> relax.Expr:
    """np.maximum: NaN when either is NaN (TVM's max is ``a > b ? a : b``, which drops a NaN ``a``)."""
    if not _is_float(a):
        return R.maximum(a, b)
    return R.where(isnan(a), a, R.where(R.greater(a, b), a, b))


def minimum(a: relax.Expr, b: relax.Expr) -> relax.Expr:
    """np.minimum: NaN when either is NaN."""
    if not _is_float(a):
        return R.minimum(a, b)
    return R.where(isnan(a), a, R.where(R.less(a, b), a, b))


def _is_float(x: relax.Expr) -> bool:
    return dtype_of(x).startswith(("float", "bfloat"))


def wide(fn):
    """A unary rule computing ``fn`` in f32 for f16/bf16 inputs and casting back."""
    def rule(cx, node, x):
        return cx.emit(cast(fn(upcast(x)), node.type.dtype.name))
    return rule


OPAQUE = 8   # TVM's kOpaque op pattern: FuseOps never fuses the kernel with its neighbours


def own_kernel(cx, out: relax.Expr, rule: str, schedule=None) -> relax.Expr:
    """Give the kernel that computed ``out`` (one of ours, emitted with ``cx.te``) its own schedule
    (``schedule(func) -> func``; None: its TIR is already scheduled) and mark it scheduled by
    ``rule`` and opaque, so that FuseOps and the generic schedule rules leave it whole. A schedule
    that fails (RULE_ERRORS) leaves the kernel to the generic rules instead."""
    gv = cx.bb.lookup_binding(out).args[0]
    func = cx.bb.get()[gv]
    if schedule is not None:
        try:
            func = schedule(func)
        except RULE_ERRORS:   # e.g. a symbolic head dim
            return out
    cx.bb.update_func(gv, func.with_attr("tirx.is_scheduled", True).with_attr(RULE_ATTR, rule)
                      .with_attr("op_pattern", OPAQUE))
    return out


def axes_list(axis) -> list[int] | None:
    return None if axis is None else list(axis)


# -- run-time checks -------------------------------------------------------------------------------
def check_range(cx, node, indices: relax.Expr, size, axis: int, kind: str = "index",
                ignore_index: int | None = None) -> None:
    """After each call, raise the reference's error when an index falls outside [0, size)."""
    _add_range_check(cx, indices, range_check(node, axis, size, kind, ignore_index))


def check_indices(cx, node, indices: relax.Expr) -> None:
    """The run-time check of ``node``'s indices that checks.index_check describes."""
    _add_range_check(cx, indices, index_check(node)[1])


def _add_range_check(cx, indices: relax.Expr, check) -> None:
    """Return the indices' [min, max] as an extra output. For empty indices it is garbage (a TVM
    reduction initialises in its first iteration), which the check knows from its ``count``."""
    i64 = cast(indices, "int64")
    lo_hi = R.concat([R.reshape(R.min(i64), [1]), R.reshape(R.max(i64), [1])], axis=0)
    cx.add_check(cx.emit(lo_hi), check)


def check_slice(cx, node) -> None:
    """A slice typed on a symbolic dim assumed the dim was large enough: check it per call."""
    check = slice_check_for(node)
    if check is not None:
        cx.add_slice_check(check)


# -- the decomposition as a row --------------------------------------------------------------------
def decomposed(cx, node, *required, **optional):
    """A row lowering ``node`` through its op's decomposition (lower.Ctx.lower_via_decomposition),
    for an op whose other rows are conditional. The decomposition takes the node's inputs in
    order, which are the lowered values of ``node.inputs``, whatever names they came in by."""
    return cx.lower_via_decomposition(node, [cx.value(i) for i in node.inputs])
