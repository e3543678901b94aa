"""The TVM lowering table: one row per way of lowering an op to Relax (graphdsl.lowering).

The rule modules (backends/tvm/rules/<group>.py, one per graphdsl/ops/<group>.py) fill it with
``@TVM.register("op")``; importing ``backends.tvm.rules`` imports them all. A row is
``fn(cx, node, *relax_inputs, **optional_inputs) -> relax.Expr`` (see lower.Ctx); rows for one op
are tried highest priority first (attention: flash, then the fused CPU kernel, then the generic
lowering). An op without a row that has a decomposition is lowered through it
(lower.Ctx.lower_via_decomposition); tests/test_tvm_ops.py fails for an op with neither, and for a
row whose op no longer exists.

This module holds the table alone and imports no rule, so a rule module may import it freely.
"""
from __future__ import annotations

from graphdsl.lowering import LoweringTable

TVM = LoweringTable("tvm")
