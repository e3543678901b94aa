"""The ``onnxruntime`` target: export the graph, run it with ONNX Runtime's CPU provider.

ONNX Runtime is an implementation written by other people, so it is what the tests compare the
NumPy reference against. Parameters stay graph inputs, so one session serves every parameter
value; symbolic dims are dynamic axes, so it serves every batch size too.

It follows the reference where ONNX differs: the model it runs (``export_checked``) reads at
clipped indices and returns their [min, max], and symbolic slices are checked against the call's
sizes, so a negative or too-large index or a slice that does not fit raises the reference's error
(ONNX would wrap, fail, or return an empty slice). A call that ONNX Runtime refuses is run on the
reference, whose error (an index into an empty axis, ...) is the one raised when it has one.
"""
from __future__ import annotations

import re

import numpy as np

from graphdsl import dtypes as _dt
from graphdsl.errors import GraphDSLError, TargetError
from graphdsl.graph import Graph

from ..base import Executable
from ..checks import NanCheck, call_sizes, is_allocation_failure, out_of_memory
from .export import DEFAULT_OPSET, export_checked


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise TargetError("the onnxruntime target needs the onnxruntime package",
                          hint="pip install onnxruntime (it is in the [test] extra)") from None
    return onnxruntime


class OrtExecutable(Executable):
    """``exe(x=..., **params) -> {output: array}`` on an ONNX Runtime session.

    The session's outputs are the graph's, then one [min, max] per range check (export_checked).
    ``check_nan``: the reference's check_nan errors, found after the call (checks.NanCheck).
    """

    target = "onnxruntime"

    def __init__(self, graph: Graph, model, session, *, range_checks=(), slice_checks=(),
                 check_nan: bool = False):
        super().__init__(graph)
        self.model = model
        self.session = session
        self.range_checks = list(range_checks)
        self.slice_checks = list(slice_checks)
        self.check_nan = NanCheck(graph, self.target) if check_nan else None
        self._bf16_inputs = {k for k, n in {**graph.inputs, **graph.params}.items()
                             if n.type.dtype == _dt.bfloat16}

    def run(self, arrays, env):
        for check in self.slice_checks:
            check.verify(env)
        if self.check_nan is not None:
            self.check_nan.before(arrays, env)
        feed = {k: (a.astype(np.float32) if k in self._bf16_inputs else a) for k, a in arrays.items()}
        try:
            results = self.session.run(None, feed)
        except Exception as e:   # ONNX Runtime raises its own exception types
            raise self._failed(str(e).strip(), arrays, env) from None
        n = len(self.graph.outputs)
        for check, lo_hi in zip(self.range_checks, results[n:]):
            check.verify(lo_hi, env)
        out = {}
        for (name, node), arr in zip(self.graph.outputs.items(), results):
            out[name] = np.asarray(arr).astype(node.type.dtype.np, copy=False)
        if self.check_nan is not None:
            self.check_nan.after(arrays, env, out)
        return out

    def _failed(self, text: str, arrays, env) -> GraphDSLError:
        """The error for a call ONNX Runtime refused: out of memory, or the reference's own error
        for this call (ONNX Runtime says ``indices element out of data bounds`` where the
        reference names the op, the index and the line), or else what ONNX Runtime said."""
        if is_allocation_failure(text):
            said = re.search(r"failed to allocate[^\n]*", text, re.IGNORECASE)
            node = re.search(r"Name:'([^']*)'", text)
            detail = (said.group(0) if said else text.splitlines()[0])[:300]
            return out_of_memory(self.graph, self.target, env,
                                 f"onnxruntime: {detail}" + (f" at node {node.group(1)!r}" if node else ""))
        from ..numpy_backend import NumpyExecutable
        try:
            NumpyExecutable(self.graph).run(arrays, env)
        except GraphDSLError as e:
            return e
        return GraphDSLError(f"onnxruntime failed to run graph {self.graph.name!r} with {call_sizes(env)}: "
                             f"{text[:800]}", hint="the NumPy reference runs this call: this is a bug "
                                                   "in an ONNX lowering or in ONNX Runtime")


def compile(graph: Graph, *, opset: int = DEFAULT_OPSET, contrib_ops: bool = False,
            threads: int | None = None, optimize: bool = True, check_nan: bool = False,
            **options) -> OrtExecutable:
    """Export ``graph`` (parameters as inputs) and open an ONNX Runtime CPU session on it.

    ``contrib_ops`` lowers attention to com.microsoft MultiHeadAttention where it fits;
    ``threads`` sets the intra-op thread count; ``optimize=False`` turns off ORT's graph rewrites;
    ``check_nan`` raises the NumPy backend's check_nan errors: ONNX Runtime runs the whole graph,
    so after a call whose inputs or outputs hold a NaN the reference is re-run on the same inputs
    to name the first op that made it (checks.NanCheck).
    """
    if options:
        raise TargetError(f"the onnxruntime target takes no options {sorted(options)}",
                          hint="it takes opset, contrib_ops, threads, optimize and check_nan")
    ort = _ort()
    model, range_checks, slice_checks = export_checked(graph, opset=opset, contrib_ops=contrib_ops)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads is not None:
        so.intra_op_num_threads = threads
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise GraphDSLError(f"onnxruntime could not load the exported graph {graph.name!r}: "
                            f"{str(e).strip()[:800]}",
                            hint="an ONNX lowering emitted a node ONNX Runtime cannot run") from None
    return OrtExecutable(graph, model, session, range_checks=range_checks, slice_checks=slice_checks,
                         check_nan=check_nan)
