"""Walk an ONNX graph node by node, building our Graph with the handlers of the IMPORT table.

Transformer exports compute shapes at run time (Shape -> Gather -> Concat -> Reshape). Here those
values are known at import time: a ``Sym`` (values.py) holds a small integer tensor whose entries
are ints or our symbolic dims, so ``Reshape(x, Concat(Shape(x)[0], Shape(x)[1], 12, 64))`` becomes
``reshape(x, shape=(batch, seq, 12, 64))``. Values computed from constants alone are folded with
the ops' reference implementations. Each node keeps its ONNX node as its source location, so an
error names the ONNX node it came from. Each ONNX node goes to its row of ``IMPORT`` (table.py;
handlers.py imports the modules that fill it) as ``handler(importer, onnx_node, *inputs)``, with
the node's attributes parsed into ``importer.attrs``.
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from graphdsl import dtypes as _dt
from graphdsl.errors import GraphDSLError, GraphError, SourceLoc
from graphdsl.graph import Graph, Node
from graphdsl.registry import get as get_op
from graphdsl.tracing import Builder, Tensor, tracing
from graphdsl.types import Dim, TensorType

from .handlers import IMPORT
from .values import Sym, dtype_of, has_dim, simplify

FOLD_LIMIT = 1 << 20   # fold constant subgraphs whose results have at most this many elements


class Importer:
    """The state of one import: the builder, the ONNX value environment and symbolic-dim sources."""

    def __init__(self, model: onnx.ModelProto, label: str, *, weights: str = "constants",
                 dims: Mapping[str, int] | None = None, constants: Mapping[str, np.ndarray] | None = None):
        if weights not in ("constants", "params"):
            raise GraphError(f"weights must be 'constants' or 'params', got {weights!r}")
        if model.functions:
            from onnx import inliner
            model = inliner.inline_local_functions(model)
        self.model = model
        self.label = label
        self.weights = weights
        self.fixed = dict(dims or {})
        self.constants = dict(constants or {})   # graph input -> the value it is fixed to
        self.opset = next(o.version for o in model.opset_import if (o.domain or "ai.onnx") == "ai.onnx")
        self.b = Builder()
        self.env: dict[str, Tensor | Sym] = {}
        self.params: dict[str, np.ndarray] = {}
        self.dim_sources: dict[str, tuple[Tensor, int]] = {}
        self._dim_names: dict[str, str] = {}
        self.attrs: dict = {}   # the attributes of the ONNX node being imported, as Python values
        self._folded: dict[Node, np.ndarray | None] = {}   # node -> its constant value, or None

    # -- the walk -------------------------------------------------------------------------
    def run(self) -> Graph:
        g = self.model.graph
        self._check_supported(g)
        with tracing(self.b):
            init_names = {t.name for t in g.initializer}
            names = {vi.name for vi in g.input if vi.name not in init_names}
            unknown = sorted(set(self.constants) - names)
            if unknown:
                raise GraphError(f"{self.label}: constants= names {unknown}, which are not graph inputs",
                                 hint=f"the graph inputs are {sorted(names)}")
            for vi in g.input:
                if vi.name in self.constants and vi.name not in init_names:
                    self._fixed_input(vi)
                elif vi.name not in init_names:
                    self._input(vi)
            for t in g.initializer:
                self._initializer(t)
            for index, node in enumerate(g.node):
                self._node(index, node)
            self.b.loc_override = None
            outputs = {}
            for vi in g.output:
                if vi.name not in self.env:
                    raise GraphError(f"{self.label}: graph output {vi.name!r} is computed by no node")
                outputs[vi.name] = self.tensor(self.env[vi.name]).node
        name = re.sub(r"\W", "_", g.name or "onnx_model") or "onnx_model"
        return Graph(outputs, name=name, sources=self.b.sources,
                     meta={"source": self.label, "onnx_opset": self.opset})

    def _check_supported(self, g) -> None:
        """One error listing every op type we cannot import (with counts), not just the first."""
        missing: dict[str, int] = {}
        for node in g.node:
            domain = node.domain or "ai.onnx"
            key = node.op_type if domain == "ai.onnx" else f"{domain}.{node.op_type}"
            if domain != "ai.onnx" or node.op_type not in IMPORT:
                missing[key] = missing.get(key, 0) + 1
        if missing:
            listed = ", ".join(f"{op} ({n} node{'s' if n > 1 else ''})" for op, n in sorted(missing.items()))
            raise GraphError(f"{self.label} uses ONNX ops graphdsl cannot import: {listed}",
                             hint=f"supported ops: {', '.join(IMPORT.keys())}")

    def _node(self, index: int, node) -> None:
        ins = [self.env[n] if n else None for n in node.input]
        for n in node.input:
            if n and n not in self.env:
                raise GraphError(f"{self.label}: node {index} ({node.op_type}) reads {n!r} before any "
                                 f"node computes it", hint="ONNX graphs must be topologically sorted")
        self.attrs = {a.name: _attr_value(a) for a in node.attribute}
        self.b.loc_override = SourceLoc(self.label, index, f"{node.op_type} {node.name}".strip())
        handler = IMPORT.choose(self, node, node.op_type).fn
        try:
            result = handler(self, node, *ins)
        except GraphDSLError as e:
            if e.loc is None:
                e.loc = self.b.loc_override
            e.message = f"ONNX {node.op_type} node {node.name!r}: {e.message}"
            e.args = (e._render(),)
            raise e.with_traceback(None) from None
        results = list(result) if isinstance(result, (list, tuple)) else [result]
        for name, value in zip(node.output, results):
            if name:
                self.env[name] = self.fold(value) if isinstance(value, Tensor) else value

    # -- sources --------------------------------------------------------------------------
    def _input(self, vi) -> None:
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
            raise GraphError(f"{self.label}: input {vi.name!r} has no tensor shape",
                             hint="export with shapes (dynamic axes are fine)")
        dtype = dtype_of(tt.elem_type, f"input {vi.name!r}")
        shape = [self._dim(vi.name, axis, d) for axis, d in enumerate(tt.shape.dim)]
        t = self.b.input(vi.name, TensorType(shape, dtype))
        for axis, d in enumerate(shape):
            if isinstance(d, Dim):
                self.dim_sources.setdefault(str(d), (t, axis))
        self.env[vi.name] = t

    def _fixed_input(self, vi) -> None:
        """A graph input fixed to a value at import (``constants=``): a constant of the graph, so
        values the importer must know (axes, shapes, k) are known. Checked against the input's
        declared element type and static dims."""
        tt = vi.type.tensor_type
        dtype = dtype_of(tt.elem_type, f"input {vi.name!r}")
        arr = np.asarray(self.constants[vi.name])
        if arr.dtype != dtype.np:
            raise GraphError(f"constants= gives input {vi.name!r} a {arr.dtype} array; the model declares "
                             f"{dtype.name}", hint=f"pass np.asarray(value, dtype='{dtype.name}')")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim] if tt.HasField("shape") else None
        if dims is not None and (len(dims) != arr.ndim or any(w is not None and w != g for w, g in zip(dims, arr.shape))):
            raise GraphError(f"constants= gives input {vi.name!r} shape {list(arr.shape)}; the model declares "
                             f"{['?' if w is None else w for w in dims]}")
        self.env[vi.name] = self.const(arr)

    def _dim(self, input_name: str, axis: int, d):
        if d.HasField("dim_value"):
            return int(d.dim_value)
        raw = d.dim_param or f"{input_name}_{axis}"
        if raw in self.fixed:
            return int(self.fixed[raw])
        if raw not in self._dim_names:
            name = re.sub(r"\W", "_", raw)
            if not re.match(r"[A-Za-z_]", name):
                name = "d_" + name
            while name in self._dim_names.values():
                name += "_"
            self._dim_names[raw] = name
        name = self._dim_names[raw]
        return int(self.fixed[name]) if name in self.fixed else Dim(name)

    def _initializer(self, t: onnx.TensorProto) -> None:
        dtype = dtype_of(t.data_type, f"initializer {t.name!r}")
        arr = numpy_helper.to_array(t).astype(dtype.np, copy=False)
        if self.weights == "params" and dtype.is_float and arr.ndim > 0:
            self.params[t.name] = arr
            self.env[t.name] = self.b.param(t.name, TensorType(arr.shape, dtype))
        else:
            self.env[t.name] = self.const(arr)

    # -- values ---------------------------------------------------------------------------
    def const(self, value, dtype=None) -> Tensor:
        arr = np.asarray(value)
        if dtype is not None:
            arr = arr.astype(_dt.dtype(dtype).np)
        elif arr.dtype == object:
            arr = arr.astype(np.int64)
        return self.b.constant(arr)

    def value(self, arr: np.ndarray, dtype) -> Tensor | Sym:
        """A Sym when ``arr`` holds symbolic dims, else a constant of ``dtype``."""
        dtype = _dt.dtype(dtype)
        arr = np.asarray(arr)
        if has_dim(arr):
            return Sym(np.vectorize(simplify, otypes=[object])(arr) if arr.size else arr, dtype)
        return self.const(arr.astype(np.int64) if arr.dtype == object else arr, dtype)

    def known(self, v) -> np.ndarray | None:
        """The value of ``v`` when known at import time (an object array for a Sym)."""
        if isinstance(v, Sym):
            return v.value
        if isinstance(v, Tensor) and v.node.op == "constant":
            return v.node.attrs["value"]
        return None

    def ints(self, v, what: str) -> list:
        """A known 1-D list of ints or dims (axes, starts, shapes)."""
        arr = self.known(v)
        if arr is None:
            raise self.unknown_value(v, what)
        return [simplify(x) for x in np.asarray(arr).reshape(-1).tolist()]

    def unknown_value(self, v, what: str) -> GraphError:
        """The error for a value needed at import time that only the run time knows, naming the
        graph inputs whose values it is computed from (shapes and constants are known)."""
        inputs = sorted(value_sources(v)) if isinstance(v, Tensor) else []
        where = f": it is computed from the graph input(s) {', '.join(map(repr, inputs))}" if inputs else ""
        hint = ("store those inputs as initializers or Constant nodes in the model, or fix their values "
                f"when importing: from_onnx(model, constants={{{inputs[0]!r}: value}}) (graphdsl keeps this "
                "value in the graph's types, so it cannot change from call to call)" if inputs else
                "compute it from constants or from the inputs' shapes")
        err = GraphError(f"{what} must be known when importing (a constant, an initializer or computed "
                         f"from shapes), but it depends on run-time values{where}", hint=hint)
        err.value_inputs = inputs     # for a caller that can fix them (backends/onnx/conformance.py)
        return err

    def tensor(self, v) -> Tensor:
        """``v`` as a graph value: a Sym becomes run-time arithmetic on input sizes."""
        if isinstance(v, Tensor):
            return v
        if isinstance(v, Sym):
            if not has_dim(v.value):
                return self.const(v.value, v.dtype)
            parts = [self.dim_tensor(d) for d in v.value.reshape(-1).tolist()]
            if v.value.ndim == 0:
                flat = parts[0]
            else:
                from graphdsl.ops import concat
                flat = parts[0].reshape(1) if len(parts) == 1 else concat([p.reshape(1) for p in parts], axis=0)
                if tuple(flat.shape) != v.value.shape:
                    flat = flat.reshape(v.value.shape)
            return flat if v.dtype == _dt.int64 else flat.astype(v.dtype)
        raise GraphError(f"expected a tensor, got {v!r}")

    def dim_tensor(self, d) -> Tensor:
        """An int64 scalar holding dim ``d`` at run time."""
        from graphdsl.ops import numel
        if isinstance(d, int):
            return self.const(np.int64(d))
        total = None
        for mono, coef in d.terms.items():
            term = self.const(np.int64(coef)) if coef != 1 or not mono else None
            for sym, power in mono:
                if sym not in self.dim_sources:
                    raise GraphError(f"symbolic dim {sym!r} is in no input's shape")
                src, axis = self.dim_sources[sym]
                for _ in range(power):
                    size = numel(src, axis=axis, dtype=_dt.int64)
                    term = size if term is None else term * size
            total = term if total is None else total + term
        return total

    def fold(self, t: Tensor) -> Tensor:
        """Replace a value computed from constants only by a constant (via the ops' references)."""
        if t.node.op == "constant" or t.node.is_source:
            return t
        try:
            result = self._constant_value(t.node)
        except GraphDSLError:
            return t   # a run-time check (an index out of range) fails: leave it to run time
        return t if result is None else self.b.constant(result.astype(t.dtype.np, copy=False))

    def _constant_value(self, node) -> np.ndarray | None:
        """The value of ``node`` if it depends on constants only (small results), else None.

        Memoized over the whole import, keyed by node: every node is evaluated at most once, and
        the recursion only descends into nodes that the current handler made, since earlier
        outputs are already memoized.
        """
        if node in self._folded:
            return self._folded[node]
        self._folded[node] = None
        value = None
        if node.op == "constant":
            value = node.attrs["value"]
        elif not node.is_source and node.type.shape.is_static \
                and int(np.prod(tuple(node.type.shape), dtype=np.int64)) <= FOLD_LIMIT \
                and not any(_symbolic(a) for a in node.attrs.values()):
            op = get_op(node.op)
            args = []
            for i in node.inputs:
                args.append(self._constant_value(i))
                if args[-1] is None:
                    break
            if op.ref is not None and len(args) == len(node.inputs) and all(a is not None for a in args):
                with np.errstate(all="ignore"):
                    value = np.asarray(op.ref(*args, **dict(node.attrs)))
        self._folded[node] = value
        return value


def _symbolic(v) -> bool:
    return isinstance(v, Dim) or (isinstance(v, tuple) and any(_symbolic(x) for x in v))


def _attr_value(attr):
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode("utf-8", "replace") for v in value]
    return value


def value_sources(t: Tensor) -> set[str]:
    """The names of the graph inputs whose values ``t`` is computed from."""
    seen, stack, found = set(), [t.node], set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "input":
            found.add(node.attrs["name"])
        stack.extend(node.inputs)
    return found
