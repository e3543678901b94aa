"""The ONNX export table: registry op name -> rows emitting the op as ONNX nodes.

A row is ``fn(em, node, *ins) -> str``: ``em`` is the Emitter, ``node`` the graph node (its attrs
and types), ``ins`` the ONNX names of its inputs (an op's optional inputs come by name, ``None``
when absent: ``attention(em, node, q, k, v, bias=None, seed=None)``); it returns the ONNX name of
the result, which must have the node's dtype. A row may carry ``when(em, node)``: the
com.microsoft MultiHeadAttention row of ``attention`` holds only with ``contrib_ops`` and a layout
that fits, and the standard row below it takes every other node.

The rows live in ``lower/<group>.py``, one module per op group of ``graphdsl/ops/<group>.py``;
importing ``backends.onnx.lower`` fills the table. An op without a row is lowered through its
decomposition (tests check that every op has one or the other).
"""
from __future__ import annotations

from graphdsl.lowering import LoweringTable

EXPORT = LoweringTable("onnx")
