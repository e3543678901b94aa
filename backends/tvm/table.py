"""The TVM lowering table: registry op name -> rule, in one dict merged from rules/*.

A rule is ``rule(cx, node, *relax_args) -> relax.Expr`` (see lower.Ctx). An op without a rule that
has a decomposition is lowered by tracing its decomposition and lowering the nodes it made; an op
with neither is a LoweringError (and tests/test_tvm_ops.py fails for it).
"""
from __future__ import annotations

from graphdsl.errors import LoweringError
from graphdsl.registry import get

from .rules import attention, attention_grad, elementwise, losses, nn, tensor

TABLE: dict = {**elementwise.RULES, **tensor.RULES, **nn.RULES, **attention.RULES, **attention_grad.RULES,
               **losses.RULES}


def rule_for(op: str):
    """The rule lowering ``op``: its table entry, else its decomposition, else a LoweringError."""
    if op in TABLE:
        return TABLE[op]
    opdef = get(op)
    if opdef.decompose is not None:
        return _via_decomposition
    raise LoweringError("has no TVM lowering and no decomposition", op=op,
                        hint="add a rule to backends/tvm/rules/ or a decompose= to the op's defop")


def lower_value(cx, node, args):
    """One node's Relax value: a constant inline, every other op through its rule."""
    if node.op == "constant":
        from .rules._util import scalar
        return scalar(node.attrs["value"], node.type.dtype.name)
    return rule_for(node.op)(cx, node, *args)


def _via_decomposition(cx, node, *args):
    """Trace the op's decomposition on the node's input types, then lower the nodes it produced."""
    import graphdsl
    from graphdsl.tracing import Tensor

    names = [f"x{i}" for i in range(len(node.inputs))]
    opdef = get(node.op)

    def body(**xs):
        out = opdef.decompose(*[xs[n] for n in names], **dict(node.attrs))
        if not isinstance(out, Tensor):
            raise LoweringError("its decomposition returns several tensors; a node has one output",
                                op=node.op)
        return out

    sub = graphdsl.trace(body, name=node.op, **{n: i.type for n, i in zip(names, node.inputs)})
    vals = {id(sub.inputs[n]): a for n, a in zip(names, args)}
    for inner in sub.nodes:
        if id(inner) in vals:
            continue
        cx.vals.update(vals)  # rules may look up earlier values (cx.value)
        vals[id(inner)] = lower_value(cx, inner, [vals[id(i)] for i in inner.inputs])
    for key in vals:  # the inner nodes die with ``sub``, and Python may reuse their ids
        cx.vals.pop(key, None)
    return vals[id(sub.outputs["out"])]
