"""TVM rows for graphdsl/ops/fused.py, the ops the graph passes fuse: add_layer_norm, bias_activation.

add_layer_norm on llvm (static normalized axis) is one kernel: kernels/norm.py reads ``x`` and
``residual``, rounds their sum to the dtype as the reference does, and normalizes it in a row-local
buffer, so the sum is never stored. Elsewhere it is its decomposition: the add row, then the layer_norm rows.

bias_activation has no row of its own: its decomposition, ``act(x + bias)``, is elementwise, and
FuseOps folds it into the epilogue of the matmul that produces ``x`` (one kernel:
``fused_matmul_add_..._erf``; tests/test_tvm_fused_kernels.py counts them). A kernel of its own
would be opaque to FuseOps and cost one more pass over memory than the epilogue does.
"""
from __future__ import annotations

from ..table import TVM
from .common import decomposed
from .nn import layer_norm_kernel, row_kernel_applies


def add_layer_norm_kernel(cx, node, x, residual, w, b):
    """x + residual and its LayerNorm in one kernel (kernels/norm.layer_norm_rows)."""
    return layer_norm_kernel(cx, node, x, w, b, residual)


TVM.register("add_layer_norm", add_layer_norm_kernel, when=row_kernel_applies, priority=10)
TVM.register("add_layer_norm", decomposed)   # the add row, then the layer_norm rows
