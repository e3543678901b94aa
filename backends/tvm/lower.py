"""Graph -> Relax IRModule: walk the nodes in order and lower each through the TVM table.

The walk is a graphdsl Interpreter whose env is ``Ctx.vals`` (node -> its Relax value): each op
node is lowered by the row ``TVM.choose(cx, node)`` picks (backends/tvm/rules/, one module per op
group), constants inline, and an op without a row through its decomposition
(``Ctx.lower_via_decomposition``: the op's ``decompose`` traced on the node's input types, whose
nodes are lowered through the same table). An error names the node's source line.

The Relax function ``main`` takes the graph's inputs then its parameters (declaration order) and
returns a tuple: the graph's outputs, then one small tensor per run-time check (index ranges),
which the executable inspects after the call and strips. Symbolic dims become ``int64`` TIR
variables, so one build serves every size of ``batch`` or ``seq``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import tvm
from tvm import relax, tirx

from graphdsl.errors import GraphDSLError, LoweringError
from graphdsl.graph import Graph, Node
from graphdsl.interpreter import Interpreter, bind_decomposition
from graphdsl.lowering import call_row
from graphdsl.registry import get
from graphdsl.types import Dim

from ..checks import RangeCheck, SliceCheck
from . import rules  # noqa: F401  (importing the rule modules fills the table)
from .rules.common import scalar, tvm_dtype
from .table import TVM


@dataclass
class Lowered:
    """What lowering produced: the module, and how to read the outputs of ``main``.

    ``main`` returns the graph's outputs, then one [min, max] tensor per RangeCheck.
    """

    mod: tvm.IRModule
    range_checks: list[RangeCheck] = field(default_factory=list)
    slice_checks: list[SliceCheck] = field(default_factory=list)


class Ctx:
    """What a lowering row sees: the block builder, every lowered value, dims as TIR expressions."""

    def __init__(self, target_kind: str, gpu_kernels_on_cpu: bool = False):
        self.bb = relax.BlockBuilder()
        self.target_kind = target_kind
        self.gpu_kernels_on_cpu = gpu_kernels_on_cpu   # llvm: GPU kernels in their emulated form
        self.symbols: dict[str, tirx.Var] = {}
        self.checks: list[tuple[relax.Expr, RangeCheck]] = []
        self.slice_checks: list[SliceCheck] = []
        self.vals: dict[Node, relax.Expr] = {}     # node -> its lowered value (the walk's env)
        self.users: dict[Node, list[Node]] = {}    # node -> the graph's nodes using it
        self.outputs: set[Node] = set()            # the graph's output nodes
        self.node_index: int | None = None         # position in graph.nodes of the node being lowered
        self._shared: dict[Hashable, Any] = {}

    def value(self, node: Node) -> relax.Expr:
        """The lowered value of an earlier node (for rows that look through their inputs)."""
        return self.vals[node]

    def only_used_by(self, node: Node, user: Node) -> bool:
        """Whether ``user`` is the one consumer of ``node`` (which is not a graph output)."""
        users = self.users.get(node, [])
        return node not in self.outputs and len(users) == 1 and users[0] is user

    def shared(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """``make()``, made once per ``key`` (a tuple of nodes and attrs): how the nodes of one
        computation with several results (the attention_grad nodes of one attention) share the
        kernels that compute them all."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    def lower_via_decomposition(self, node: Node, args: list) -> relax.Expr:
        """``node`` lowered as its op's decomposition on the values ``args`` (its inputs', in
        order): each node of the decomposition through the table, like the graph's own."""
        sub, env = bind_decomposition(node, args)
        return _NodeLowering(sub, self).run(env=env)["out"]

    # -- dims ---------------------------------------------------------------------------------
    def sym(self, name: str) -> tirx.Var:
        if name not in self.symbols:
            self.symbols[name] = tirx.Var(name, "int64")
        return self.symbols[name]

    def dim(self, d):
        """An int stays an int; a Dim polynomial becomes an int64 PrimExpr over the symbols."""
        if not isinstance(d, Dim):
            return int(d)
        total = None
        for mono, coeff in sorted(d.terms.items()):
            term = tirx.const(coeff, "int64")
            for s, p in mono:
                for _ in range(p):
                    term = term * self.sym(s)
            total = term if total is None else total + term
        return total if total is not None else 0

    def shape(self, dims) -> list:
        return [self.dim(d) for d in dims]

    # -- emitting -----------------------------------------------------------------------------
    def emit(self, expr: relax.Expr) -> relax.Var:
        return self.bb.emit(expr)

    def item(self, result: relax.Expr, index: int) -> relax.Var:
        """Item ``index`` of a multi-output kernel's result. Bound as an output of the dataflow
        block, so FuseOps never pulls it into its consumers' group: TVM 0.27's FuseOps builds a
        broken function for a group that takes two such tuples (which one depends on hash order)."""
        return self.bb.emit_output(relax.TupleGetItem(result, index))

    def te(self, fn, *args, name: str | None = None, **kwargs) -> relax.Var:
        """Emit our own TE kernel ``fn(*te_tensors_or_values)`` as a PrimFunc call."""
        args = [self.emit(a) if isinstance(a, relax.Call) else a for a in args]
        kwargs = {k: self.emit(a) if isinstance(a, relax.Call) else a for k, a in kwargs.items()}
        return self.bb.emit_te(fn, *args, primfunc_name_hint=name or fn.__name__, **kwargs)

    def add_check(self, lo_hi: relax.Expr, check: RangeCheck) -> None:
        """Return ``lo_hi`` (the indices' [min, max]) as an extra output, verified after every call."""
        self.checks.append((lo_hi, replace(check, node=self.node_index)))

    def add_slice_check(self, check: SliceCheck) -> None:
        """Check a symbolic slice's bounds before every call."""
        self.slice_checks.append(replace(check, node=self.node_index))


def lower_node(cx: Ctx, node: Node, args: list) -> relax.Expr:
    """One op node's Relax value: the table's row for it, else its op's decomposition."""
    row = TVM.choose(cx, node)
    if row is not None:
        return call_row(row, cx, node, args)
    if get(node.op).decompose is not None:
        return cx.lower_via_decomposition(node, args)
    raise LoweringError("has no TVM lowering and no decomposition", op=node.op,
                        hint="add a row to backends/tvm/rules/ or a decompose= to the op's defop")


class _NodeLowering(Interpreter):
    """Lowers the nodes of ``graph`` into ``cx``: its env is ``cx.vals``, so rows can look at the
    values of earlier nodes (``cx.value``) of the graph and of the decompositions inside it."""

    def __init__(self, graph: Graph, cx: Ctx):
        super().__init__(graph)
        self.cx = cx
        self.env = cx.vals

    def constant(self, node: Node) -> relax.Expr:
        if node.type.dtype.storage:   # held as its bytes (rules/common.tvm_dtype)
            return relax.const(np.ascontiguousarray(node.attrs["value"]).view(np.uint8), "uint8")
        return scalar(node.attrs["value"], node.type.dtype.name)

    def call(self, node: Node, args: list) -> relax.Expr:
        return lower_node(self.cx, node, args)


class _GraphLowering(_NodeLowering):
    """The walk over the graph itself: each node's position is recorded (run-time checks name
    their node by it) and an error is reported at the node's source line."""

    def __init__(self, graph: Graph, cx: Ctx):
        super().__init__(graph, cx)
        self.index = {node: i for i, node in enumerate(graph.nodes)}

    def visit(self, node: Node) -> relax.Expr:
        self.cx.node_index = self.index[node]
        try:
            return super().visit(node)
        except GraphDSLError as e:
            raise e.with_loc(node.loc) from None
        except Exception as e:  # TVM's own errors, from type inference or TE
            types = ", ".join(str(i.type) for i in node.inputs)
            raise LoweringError(f"TVM rejected the lowering of ({types}) -> {node.type}: "
                                f"{_first_line(e)}", op=node.op, loc=node.loc) from e


def lower(graph: Graph, target_kind: str = "llvm", *, gpu_kernels_on_cpu: bool = False) -> Lowered:
    """Lower ``graph`` to a Relax module whose ``main`` follows the executable's calling convention.

    ``gpu_kernels_on_cpu`` (llvm only): lower with the GPU's own kernels (kernels/flash.py) in their
    emulated CPU form, so that their numbers can be checked on a machine without a GPU."""
    cx = Ctx(target_kind, gpu_kernels_on_cpu)
    sources = list(graph.inputs.values()) + list(graph.params.values())
    params = [relax.Var(_var_name(n.attrs["name"]), relax.TensorType(cx.shape(n.type.shape), tvm_dtype(n.type.dtype)))
              for n in sources]
    cx.users, cx.outputs = graph.users(), set(graph.outputs.values())
    with cx.bb.function("main", params):
        with cx.bb.dataflow():
            outs = list(_GraphLowering(graph, cx).run(env=dict(zip(sources, params))).values())
            result = cx.bb.emit_output(relax.Tuple(outs + [v for v, _ in cx.checks]))
        cx.bb.emit_func_output(result)
    return Lowered(cx.bb.get(), [c for _, c in cx.checks], cx.slice_checks)


def _var_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def _first_line(err: Exception) -> str:
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__
