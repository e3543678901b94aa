"""TVM rows for graphdsl/ops/creation.py: full and iota (no inputs; the shape is an attribute).

A ``full`` whose value is a symbolic dim (the 1/n of a mean's gradient) and ``iota`` are our TE
kernels (kernels/indexing.py); a constant ``full`` is Relax's.
"""
from __future__ import annotations

from tvm.relax import op as R

from graphdsl.types import Dim

from ..kernels import indexing as K
from ..table import TVM
from .common import scalar


@TVM.register("full")
def full(cx, node):
    dt, value = node.attrs["dtype"].name, node.attrs["value"]
    if isinstance(value, Dim):
        return cx.te(K.fill, cx.shape(node.attrs["shape"]), cx.dim(value), dt)
    return cx.emit(R.full(cx.shape(node.attrs["shape"]), scalar(value, dt), dt))


@TVM.register("iota")
def iota(cx, node):
    return cx.te(K.iota, cx.shape(node.attrs["shape"]), node.attrs["axis"], node.attrs["dtype"].name)
