"""Export a Graph (forward or training step) to an ONNX model.

    model = export(graph, params=values, path="model.onnx")   # params become initializers
    model = export(graph)                                      # params stay graph inputs

The ``Exporter`` walks the graph as an ``Interpreter`` (its env maps each node to the ONNX name of
its value) and lowers every node through the one table, ``EXPORT`` (table.py, rows in
``lower/<group>.py``); an op without a row is expanded by its decomposition, whose nodes are
lowered the same way. Symbolic dims become named dynamic axes. Every value of the graph is annotated
with its type, and ONNX's strict shape inference must agree with them (``check=True``).
With ``runtime="onnxruntime"`` the model is adapted to ONNX Runtime's CPU kernels: dtypes a kernel
lacks are cast around it, and bfloat16 inputs and outputs travel as float32 (its Python API has no
bfloat16 arrays).

``export_checked`` is what the onnxruntime backend runs: the same model, plus the reference's
run-time index checks. ONNX wraps negative indices (Gather) and fails on large ones, where the
reference raises its own error; so there each checked op reads at clipped indices, and the
indices' [min, max] are extra outputs, verified after the call by the checks the TVM backend
uses too (backends/checks.py: plain data). A file written by ``export`` has none of this.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
from onnx import helper

import graphdsl
from graphdsl.errors import GraphDSLError, InputError, LoweringError
from graphdsl.graph import Graph, Node
from graphdsl.interpreter import Interpreter, bind_decomposition
from graphdsl.lowering import call_row
from graphdsl.registry import get as get_op
from graphdsl.types import parse_dim

from ..checks import RangeCheck, SliceCheck, index_check, loc_to_dict, slice_check_for
from .emitter import Emitter, KernelTable, onnx_dtype, ort_kernel_table, value_info
from .lower import EXPORT

DEFAULT_OPSET = 18   # BitwiseXor (the random ops' hash) needs 18
_BF16 = onnx.TensorProto.BFLOAT16


def export(graph: Graph, params: Mapping[str, np.ndarray] | None = None, path=None, *,
           opset: int = DEFAULT_OPSET, contrib_ops: bool = False, runtime: str | None = None,
           external_data: bool = False, check: bool = True) -> onnx.ModelProto:
    """The ONNX model of ``graph``; also written to ``path`` when given.

    ``params``: the parameter values, stored as initializers (every parameter needs one); without
    them the parameters are graph inputs. ``contrib_ops``: use ONNX Runtime's com.microsoft
    MultiHeadAttention for each fused ``attention`` op where its layout fits (lower/attention.py). The
    graph is exported as it is, no pass runs here: a traced graph has textbook attention (matmul,
    softmax, matmul), which stays standard ONNX, without an error. Fuse it first with
    ``passes.optimize(graph)``, or use ``optimize_file``, which runs the passes and exports.
    ``external_data``: weights in a separate ``<path>.data`` file (needed beyond 2 GB).
    """
    if not isinstance(graph, Graph):
        raise LoweringError(f"export() takes a Graph, got {type(graph).__name__}")
    max_opset = onnx.defs.onnx_opset_version()
    if not DEFAULT_OPSET <= opset <= max_opset:
        raise LoweringError(f"opset {opset} is not supported",
                            hint=f"use an opset from {DEFAULT_OPSET} to {max_opset}")
    kernels = None
    if runtime == "onnxruntime":
        kernels = ort_kernel_table()
    elif runtime is not None:
        raise LoweringError(f"unknown runtime {runtime!r}", hint="use runtime='onnxruntime' or None")
    model = Exporter(graph, opset, kernels, contrib_ops, f32_io=runtime is not None).export(params)
    if check:
        _check(model, graph)
    if path is not None:
        save(model, path, external_data=external_data)
    return model


def export_checked(graph: Graph, *, opset: int = DEFAULT_OPSET, contrib_ops: bool = False
                   ) -> tuple[onnx.ModelProto, list[RangeCheck], list[SliceCheck]]:
    """(model, range checks, slice checks): the model ``export(graph, runtime="onnxruntime")``
    makes, with the reference's index checks. Each checked op (checks.index_check) reads at its
    indices clipped into range (an ignored class target is kept), and the model's outputs are the
    graph's, then one int64 [2] per range check: its raw indices' [min, max]. The slice checks
    need only the symbolic dims' sizes, so they add no output."""
    if not isinstance(graph, Graph):
        raise LoweringError(f"export() takes a Graph, got {type(graph).__name__}")
    exporter = Exporter(graph, opset, ort_kernel_table(), contrib_ops, f32_io=True, checked=True)
    model = exporter.export(None)
    return model, [c for _, c in exporter.range_checks], exporter.slice_checks


def save(model: onnx.ModelProto, path, *, external_data: bool = False) -> None:
    """Write ``model`` atomically; with ``external_data`` its weights go to ``<name>.data`` beside it
    (both written aside, then renamed into place, the weights first)."""
    import os
    import shutil
    import tempfile

    from graphdsl.files import atomic_write
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    big = sum(t.ByteSize() for t in model.graph.initializer) > 1_800_000_000
    if not (external_data or big):
        atomic_write(path, lambda tmp: onnx.save_model(model, tmp))
        return
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        onnx.save_model(model, str(tmp / path.name), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
        for f in sorted(tmp.iterdir(), key=lambda f: f.name == path.name):
            os.replace(f, path.parent / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Exporter(Interpreter):
    """One export: the graph walked once, each node's value the ONNX name of its result.

    Sources and constants are emitted first (inputs in the graph's order, then the initializers),
    then every op node through ``lower``: its highest-priority row in ``EXPORT`` whose ``when``
    holds, else its decomposition, whose nodes are lowered the same way (``Decomposition``).
    """

    def __init__(self, graph: Graph, opset: int, kernels: KernelTable | None, contrib: bool,
                 f32_io: bool, checked: bool = False):
        super().__init__(graph)
        # checked: the runtime's own model, exact at every edge
        self.em = Emitter(opset, kernels, exact=checked, contrib_ops=contrib)
        self.f32_io = f32_io                  # bfloat16 inputs/outputs travel as float32
        self.checked = checked                # add the reference's index checks (export_checked)
        self.range_checks: list[tuple[str, RangeCheck]] = []    # ([min, max] value, its check)
        self.slice_checks: list[SliceCheck] = []
        self.position = {node: index for index, node in enumerate(graph.nodes)}
        self.outer: Node | None = None        # the graph node being lowered (its checks' place)
        self.inputs: list[onnx.ValueInfoProto] = []
        self.param_values: dict[str, np.ndarray] | None = None

    def export(self, params) -> onnx.ModelProto:
        g, em = self.graph, self.em
        for node in g.sources():
            em.fresh(node.attrs["name"])
        # ONNX names are SSA: an output named like an input (a train step's state/step) gets ".out"
        self.out_names = {k: em.fresh(k if k not in g.inputs and k not in g.params else k + ".out")
                          for k in g.outputs}
        self.param_values = _check_params(g, params) if params is not None else None
        for node in g.sources():
            self.env[node] = self.source(node)
        for node in g.nodes:
            if node.op == "constant":
                self.env[node] = self.constant(node)
        self.run()
        outputs = [self._output(name, node) for name, node in g.outputs.items()]
        outputs += [self._check_output(value) for value, _ in self.range_checks]
        annotations = [value_info(self.env[n], onnx_dtype(n.type.dtype), n.type.shape)
                       for n in g.nodes if not n.is_source and self.env[n] in em.dtypes
                       and em.dtypes[self.env[n]] == onnx_dtype(n.type.dtype)]
        onnx_graph = helper.make_graph(em.nodes, g.name or "graph", self.inputs, outputs,
                                       initializer=em.initializers, value_info=_dedup(annotations))
        imports = [helper.make_opsetid("", em.opset)]
        imports += [helper.make_opsetid(domain, 1) for domain in sorted(em.domains)]
        model = helper.make_model(onnx_graph, opset_imports=imports, producer_name="graphdsl",
                                  producer_version=graphdsl.__version__,
                                  doc_string=f"graphdsl graph {g.name!r}")
        model.ir_version = helper.find_min_ir_version_for(imports, ignore_unknown=True)
        helper.set_model_props(model, {"graphdsl.graph": g.name,
                                       "graphdsl.params": "initializers" if params is not None
                                       else "inputs"})
        return model

    # -- the interpreter's hooks ----------------------------------------------------------
    def source(self, node: Node) -> str:
        """A parameter with a value is an initializer; every other source is a graph input."""
        em, name = self.em, node.attrs["name"]
        if node.op == "param" and self.param_values is not None:
            return em.initializer(name, self.param_values[name])
        dtype = onnx_dtype(node.type.dtype)
        io_dtype = onnx.TensorProto.FLOAT if (dtype == _BF16 and self.f32_io) else dtype
        em.dtypes[name] = io_dtype
        self.inputs.append(value_info(name, io_dtype, node.type.shape))
        em.bind_dims(name, node.type.shape)
        return em.cast(name, dtype)

    def constant(self, node: Node) -> str:
        return self.em.const(node.attrs["value"])

    def call(self, node: Node, args: list[str]) -> str:
        self.outer = node
        return self.lower(node, args)

    # -- nodes --------------------------------------------------------------------------
    def lower(self, node: Node, ins: list[str]) -> str:
        """The ONNX name of ``node``'s result: its row, or else its decomposition lowered."""
        if self.checked:
            ins = self._checked_inputs(node, ins)
        try:
            row = EXPORT.choose(self.em, node)
            if row is not None:
                return call_row(row, self.em, node, ins)
            if get_op(node.op).decompose is not None:
                sub, env = bind_decomposition(node, ins)
                return Decomposition(sub, self).run(env=env)["out"]
        except GraphDSLError as e:
            if e.op is None:
                e.op = node.op
            raise e.with_loc(node.loc) from None
        raise LoweringError("has no ONNX lowering and no decomposition", op=node.op, loc=node.loc,
                            hint="add a row to backends/onnx/lower/<the op's group>.py")

    def _output(self, name: str, node: Node) -> onnx.ValueInfoProto:
        em = self.em
        value, name = self.env[node], self.out_names[name]
        dtype = onnx_dtype(node.type.dtype)
        if dtype == _BF16 and self.f32_io:
            value, dtype = em.cast(value, onnx.TensorProto.FLOAT), onnx.TensorProto.FLOAT
        em.nodes.append(helper.make_node("Identity", [value], [name], name=f"output:{name}"))
        em.dtypes[name] = dtype
        return value_info(name, dtype, node.type.shape)

    def _check_output(self, value: str) -> onnx.ValueInfoProto:
        name = self.em.fresh("check")
        self.em.nodes.append(helper.make_node("Identity", [value], [name], name=f"output:{name}"))
        return value_info(name, onnx.TensorProto.INT64, (2,))

    # -- run-time checks (export_checked) ------------------------------------------------
    def _checked_inputs(self, node: Node, ins: list[str]) -> list[str]:
        """``ins`` with the indices clipped into range, after recording their check. A node of a
        decomposition is checked at the graph node's line."""
        where = dict(node=self.position[self.outer], loc=loc_to_dict(self.outer.loc))
        sc = slice_check_for(node)
        if sc is not None:
            self.slice_checks.append(replace(sc, **where))
        found = index_check(node)
        if found is None:
            return ins
        pos, check = found
        lo_hi, clipped = self._range_of(ins[pos], check, node)
        self.range_checks.append((lo_hi, replace(check, **where)))
        return ins[:pos] + [clipped] + ins[pos + 1:]

    def _range_of(self, indices: str, check: RangeCheck, node: Node) -> tuple[str, str]:
        """(the indices' [min, max] as int64 [2], the indices clipped into [0, size)); a class
        target equal to ignore_index counts as 0 in the range and is kept as it is."""
        em, dt = self.em, self.em.dtypes[indices]
        i64 = onnx.TensorProto.INT64
        flat = em.op("Reshape", [em.cast(indices, i64), em.const(np.array([-1], np.int64))])
        last = em.op("Sub", [em.scalar(parse_dim(check.size), dt), em.const(1, dt)])
        clipped = em.op("Max", [em.op("Min", [indices, last]), em.const(0, dt)], hint="clipped")
        if check.kind == "target":
            flat = em.op("Where", [em.op("Equal", [flat, em.const(check.ignore_index, i64)]), em.const(0, i64), flat])
            kept = em.op("Equal", [indices, em.const(check.ignore_index, dt)])
            clipped = em.op("Where", [kept, indices, clipped], hint="clipped")
        lo_hi = [em.op(op, [flat], keepdims=1) for op in ("ReduceMin", "ReduceMax")]
        return em.op("Concat", lo_hi, axis=0, hint="index_range"), clipped


class Decomposition(Interpreter):
    """An op's decomposition graph, its inputs bound to the ONNX names of the node's inputs, each
    of its nodes lowered by the exporter that met the op (rows, checks and all)."""

    def __init__(self, graph: Graph, exporter: Exporter):
        super().__init__(graph)
        self.exporter = exporter

    def constant(self, node: Node) -> str:
        return self.exporter.constant(node)

    def call(self, node: Node, args: list[str]) -> str:
        return self.exporter.lower(node, args)


def _check_params(graph: Graph, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = [k for k in graph.params if k not in params]
    unknown = [k for k in params if k not in graph.params]
    if missing or unknown:
        parts = ([f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}"] if missing else []) + \
                ([f"unknown {unknown[:5]}"] if unknown else [])
        raise InputError(f"export of graph {graph.name!r}: parameter values " + "; ".join(parts),
                         hint="pass every parameter (model.init(seed)), or params=None to keep "
                              "them as graph inputs")
    out = {}
    for name, node in graph.params.items():
        arr = np.asarray(params[name])
        want = node.type
        if not want.shape.is_static or tuple(arr.shape) != tuple(want.shape):
            raise InputError(f"parameter {name!r} expects {want}, got shape {list(arr.shape)}")
        out[name] = arr.astype(want.dtype.np, copy=False)
    return out


def _check(model: onnx.ModelProto, graph: Graph) -> None:
    """onnx.checker, then strict shape inference against our annotated types."""
    try:
        onnx.checker.check_model(model)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise LoweringError(f"the exported model of graph {graph.name!r} fails ONNX's checks: "
                            f"{str(e).strip().splitlines()[0][:500]}",
                            hint="this is a bug in an ONNX lowering") from None


def _dedup(infos):
    seen, out = set(), []
    for vi in infos:
        if vi.name not in seen:
            seen.add(vi.name)
            out.append(vi)
    return out


__all__ = ["DEFAULT_OPSET", "Exporter", "export", "export_checked", "save"]
