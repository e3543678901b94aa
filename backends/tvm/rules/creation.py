"""TVM rows for graphdsl/ops/creation.py: full and iota (no inputs; the shape is an attribute).

A ``full`` whose value is a symbolic dim (the 1/n of a mean's gradient) or not finite (TVM cannot
legalize an R.full of inf or NaN) and ``iota`` are our TE kernels (kernels/indexing.py); any other
constant ``full`` is Relax's.
"""
from __future__ import annotations

import math

from tvm import tirx
from tvm.relax import op as R

from graphdsl.types import Dim

from ..kernels import indexing as K
from ..table import TVM
from .common import cast, scalar


@TVM.register("full")
def full(cx, node):
    dt, value = node.attrs["dtype"].name, node.attrs["value"]
    if isinstance(value, Dim):
        return cx.te(K.fill, cx.shape(node.attrs["shape"]), cx.dim(value), dt)
    if isinstance(value, float) and not math.isfinite(value):
        # TVM 0.27 cannot legalize an R.full of inf or NaN ("PrimType is not iterable"): our fill
        # (in float32 for bf16, then rounded: exact for inf and NaN)
        fill_dt = "float32" if dt == "bfloat16" else dt
        out = cx.te(K.fill, cx.shape(node.attrs["shape"]), tirx.const(value, fill_dt), fill_dt)
        return cx.emit(cast(out, dt)) if fill_dt != dt else out
    return cx.emit(R.full(cx.shape(node.attrs["shape"]), scalar(value, dt), dt))


@TVM.register("iota")
def iota(cx, node):
    return cx.te(K.iota, cx.shape(node.attrs["shape"]), node.attrs["axis"], node.attrs["dtype"].name)
