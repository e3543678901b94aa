"""Small helpers the lowering rules share: accumulation dtypes, casts, scalar constants."""
from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax import op as R

from graphdsl import dtypes as _dt

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
    return x if dtype_of(x) == dtype else R.astype(x, dtype)


def upcast(x: relax.Expr) -> relax.Expr:
    """f16/bf16 to f32; other dtypes unchanged."""
    return cast(x, "float32") if dtype_of(x) in NARROW else x


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
