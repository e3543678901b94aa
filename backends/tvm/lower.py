"""Graph -> Relax IRModule: walk the nodes in order and apply each op's rule from the lowering table.

The Relax function ``main`` takes the graph's inputs then its parameters (declaration order) and
returns a tuple: the graph's outputs, then one small tensor per run-time check (index ranges),
which the executable inspects after the call and strips. Symbolic dims become ``int64`` TIR
variables, so one build serves every size of ``batch`` or ``seq``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import tvm
from tvm import relax, tirx

from graphdsl.errors import GraphDSLError, LoweringError
from graphdsl.graph import Graph, Node
from graphdsl.types import Dim

from .checks import RangeCheck, SliceCheck


@dataclass
class Lowered:
    """What lowering produced: the module, and how to read the outputs of ``main``.

    ``main`` returns the graph's outputs, then one [min, max] tensor per RangeCheck.
    """

    mod: tvm.IRModule
    range_checks: list[RangeCheck] = field(default_factory=list)
    slice_checks: list[SliceCheck] = field(default_factory=list)


class Ctx:
    """What a lowering rule sees: the block builder, dims as TIR expressions, and helpers."""

    def __init__(self, target_kind: str, gpu_kernels_on_cpu: bool = False):
        self.bb = relax.BlockBuilder()
        self.target_kind = target_kind
        self.gpu_kernels_on_cpu = gpu_kernels_on_cpu   # llvm: GPU kernels in their emulated form
        self.memo: dict = {}                           # values rules share between nodes
        self.symbols: dict[str, tirx.Var] = {}
        self.checks: list[tuple[relax.Expr, RangeCheck]] = []
        self.slice_checks: list[SliceCheck] = []
        self.vals: dict[int, relax.Expr] = {}      # id(node) -> its lowered value
        self.users: dict[int, list[Node]] = {}     # id(node) -> nodes using it
        self.outputs: set[int] = set()             # ids of the graph's output nodes
        self.node_index: int | None = None         # position in graph.nodes of the node being lowered

    def value(self, node: Node) -> relax.Expr:
        """The lowered value of an earlier node (for rules that look through their inputs)."""
        return self.vals[id(node)]

    def only_used_by(self, node: Node, user: Node) -> bool:
        """Whether ``user`` is the one consumer of ``node`` (which is not a graph output)."""
        return id(node) not in self.outputs and [id(u) for u in self.users.get(id(node), [])] == [id(user)]

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
        return self.bb.emit_te(fn, *args, primfunc_name_hint=name or fn.__name__, **kwargs)

    def add_check(self, lo_hi: relax.Expr, check: RangeCheck) -> None:
        """Return ``lo_hi`` (the indices' [min, max]) as an extra output, verified after every call."""
        self.checks.append((lo_hi, replace(check, node=self.node_index)))

    def add_slice_check(self, check: SliceCheck) -> None:
        """Check a symbolic slice's bounds before every call."""
        self.slice_checks.append(replace(check, node=self.node_index))


def lower(graph: Graph, target_kind: str = "llvm", *, gpu_kernels_on_cpu: bool = False) -> Lowered:
    """Lower ``graph`` to a Relax module whose ``main`` follows the executable's calling convention.

    ``gpu_kernels_on_cpu`` (llvm only): lower with the GPU's own kernels (kernels/flash.py) in their
    emulated CPU form, so that their numbers can be checked on a machine without a GPU."""
    from .table import lower_value
    cx = Ctx(target_kind, gpu_kernels_on_cpu)
    sources = list(graph.inputs.values()) + list(graph.params.values())
    params = [relax.Var(_var_name(n.attrs["name"]), relax.TensorType(cx.shape(n.type.shape), n.type.dtype.name))
              for n in sources]
    vals = cx.vals
    vals.update({id(n): p for n, p in zip(sources, params)})
    cx.users, cx.outputs = graph.users(), {id(n) for n in graph.outputs.values()}
    with cx.bb.function("main", params):
        with cx.bb.dataflow():
            for index, node in enumerate(graph.nodes):
                if id(node) in vals:
                    continue
                cx.node_index = index
                args = [vals[id(i)] for i in node.inputs]
                try:
                    vals[id(node)] = lower_value(cx, node, args)
                except GraphDSLError as e:
                    raise e.with_loc(node.loc) from None
                except Exception as e:  # TVM's own errors, from type inference or TE
                    types = ", ".join(str(i.type) for i in node.inputs)
                    raise LoweringError(f"TVM rejected the lowering of ({types}) -> {node.type}: "
                                        f"{_first_line(e)}", op=node.op, loc=node.loc) from e
            outs = [vals[id(n)] for n in graph.outputs.values()] + [v for v, _ in cx.checks]
            result = cx.bb.emit_output(relax.Tuple(outs))
        cx.bb.emit_func_output(result)
    return Lowered(cx.bb.get(), [c for _, c in cx.checks], cx.slice_checks)


def _var_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def _first_line(err: Exception) -> str:
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__
