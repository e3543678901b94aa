"""ONNX rows of the fused ops the passes make (graphdsl/ops/fused.py): bias_activation, add_layer_norm.

Standard ONNX has no fused node for either, so each row emits the Add and then the same nodes as
the activation's or the LayerNorm's own row (elementwise.ACTIVATIONS, nn.layer_norm): exactly the
model the op's decomposition would give, written here so that a reader finds the row by the op's
name. Fusing them further is left to the runtime's own graph optimizer.
"""
from __future__ import annotations

from graphdsl.ops.fused import ACTIVATIONS as FUSED_ACTIVATIONS

from ..table import EXPORT
from .elementwise import ACTIVATIONS
from .nn import layer_norm


@EXPORT.register("bias_activation")
def _bias_activation(em, node, x, bias):
    op, attrs = FUSED_ACTIVATIONS[node.attrs["activation"]]
    return ACTIVATIONS[op](em, em.op("Add", [x, bias], hint="add"), node.type.dtype, **attrs)


@EXPORT.register("add_layer_norm")
def _add_layer_norm(em, node, x, residual, weight, bias):
    summed = em.op("Add", [x, residual], hint="add")
    return layer_norm(em, summed, weight, bias, node.attrs["eps"], node.type.dtype)
