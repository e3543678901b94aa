"""TVM rows for graphdsl/ops/shape.py: reshape, transpose and broadcast_to, one Relax op each."""
from __future__ import annotations

from tvm.relax import op as R

from ..table import TVM


@TVM.register("reshape")
def reshape(cx, node, x):
    """R.reshape reads a 0 in the new shape as "this input dim" (ONNX's allowzero=0): a result
    with a zero-length dim has no elements to move, so it is an empty tensor of its shape."""
    shape = node.attrs["shape"]
    if any(d == 0 for d in shape if isinstance(d, int)):
        return cx.emit(R.zeros(cx.shape(shape), node.type.dtype.name))
    return cx.emit(R.reshape(x, cx.shape(shape)))


@TVM.register("transpose")
def transpose(cx, node, x):
    return cx.emit(R.permute_dims(x, list(node.attrs["perm"])))


@TVM.register("broadcast_to")
def broadcast_to(cx, node, x):
    return cx.emit(R.broadcast_to(x, cx.shape(node.attrs["shape"])))
