"""The import table: ONNX op type -> the handler building our ops (rows in ops_math, ops_shape).

A handler is ``fn(imp, onnx_node, *ins) -> value or list of values``: ``imp`` is the Importer
(its helpers turn values into tensors or known ints; ``imp.attrs`` holds the node's attributes as
Python values), ``onnx_node`` the ONNX node, ``ins`` its input values (None for an omitted
optional input; trailing omitted ones are not passed, so handlers give them defaults). Handlers
are registered with ``IMPORT.register("OpType")``, the one registration verb of every backend's
table (graphdsl.lowering); handlers.py imports the modules that hold them.
"""
from __future__ import annotations

from graphdsl.lowering import LoweringTable

IMPORT = LoweringTable("onnx-import")
