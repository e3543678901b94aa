"""TVM rows for graphdsl/ops/shape.py: reshape, transpose and broadcast_to, one Relax op each."""
from __future__ import annotations

from tvm.relax import op as R

from ..table import TVM


@TVM.register("reshape")
def reshape(cx, node, x):
    return cx.emit(R.reshape(x, cx.shape(node.attrs["shape"])))


@TVM.register("transpose")
def transpose(cx, node, x):
    return cx.emit(R.permute_dims(x, list(node.attrs["perm"])))


@TVM.register("broadcast_to")
def broadcast_to(cx, node, x):
    return cx.emit(R.broadcast_to(x, cx.shape(node.attrs["shape"])))
