"""TVM rows for graphdsl/ops/linalg.py: matmul.

A plain Relax matmul, or our TE matmul (kernels/linalg.py) when an operand is a last-two-axes
transpose (``x.mT``), which the kernel reads in place instead of copying. ``operand`` and
``te_matmul`` are public because reduce.sum folds a weight gradient's batch sum into the matmul.
"""
from __future__ import annotations

from tvm.relax import op as R

from graphdsl.types import broadcast_shapes

from ..kernels.linalg import matmul as matmul_kernel
from ..table import TVM


@TVM.register("matmul")
def matmul(cx, node, a, b):
    (va, ta), (vb, tb) = operand(cx, node.inputs[0]), operand(cx, node.inputs[1])
    if not (ta or tb):
        if node.type.dtype.name == "float16":   # sum in float32, as the reference (NumPy) does
            return cx.emit(R.astype(R.matmul(a, b, out_dtype="float32"), "float16"))
        return cx.emit(R.matmul(a, b))
    return te_matmul(cx, node, va, ta, vb, tb)


def operand(cx, node):
    """(value, stored transposed?) of a matmul operand, looking through a last-two-axes transpose."""
    perm = node.attrs.get("perm") if node.op == "transpose" else None
    r = node.type.rank
    if perm is not None and r >= 2 and tuple(perm) == tuple(range(r - 2)) + (r - 1, r - 2):
        return cx.value(node.inputs[0]), True
    return cx.value(node), False


def te_matmul(cx, mm, va, ta, vb, tb, summed=(), keepdims=False):
    """The matmul node ``mm`` as our TE kernel on operands ``va``/``vb`` (``ta``/``tb``: read
    transposed), also contracting the batch axes ``summed``."""
    at, bt = mm.inputs[0].type, mm.inputs[1].type
    batch = cx.shape(broadcast_shapes(at.shape[:-2], bt.shape[:-2]))
    acc = "float32" if mm.type.dtype.name == "float16" else None   # as the reference sums float16
    return cx.te(matmul_kernel, va, vb, trans_a=ta, trans_b=tb, batch=batch, summed=tuple(summed),
                 keepdims=keepdims, acc=acc, name="matmul")
