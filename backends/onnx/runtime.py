"""The ``onnxruntime`` target: export the graph, run it with ONNX Runtime's CPU provider.

ONNX Runtime is an implementation written by other people, so it is what the tests compare the
NumPy reference against. Parameters stay graph inputs, so one session serves every parameter
value; symbolic dims are dynamic axes, so it serves every batch size too.
"""
from __future__ import annotations

import functools

import numpy as np

from graphdsl import dtypes as _dt
from graphdsl.errors import GraphDSLError, TargetError
from graphdsl.graph import Graph

from ..base import Executable
from .emitter import KernelTable
from .export import DEFAULT_OPSET, export


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise TargetError("the onnxruntime target needs the onnxruntime package",
                          hint="pip install onnxruntime (it is in the [test] extra)") from None
    return onnxruntime


@functools.lru_cache(maxsize=1)
def ort_kernel_table() -> KernelTable:
    """The element types of every CPU kernel of ONNX Runtime's default domain, from its registry."""
    from onnxruntime.capi import _pybind_state as C
    entries: dict[str, list] = {}
    for k in C.get_all_opkernel_def():
        if k.provider != "CPUExecutionProvider" or k.domain not in ("", "ai.onnx"):
            continue
        start, end = k.version_range
        types = {c: set(ts) for c, ts in k.type_constraints.items()}
        entries.setdefault(k.op_name, []).append((start, end, types))
    return KernelTable(entries)


class OrtExecutable(Executable):
    target = "onnxruntime"

    def __init__(self, graph: Graph, model, session):
        super().__init__(graph)
        self.model = model
        self.session = session
        self._bf16_inputs = {k for k, n in {**graph.inputs, **graph.params}.items()
                             if n.type.dtype == _dt.bfloat16}

    def run(self, arrays, env):
        feed = {k: (a.astype(np.float32) if k in self._bf16_inputs else a) for k, a in arrays.items()}
        try:
            results = self.session.run(None, feed)
        except Exception as e:   # ONNX Runtime raises its own exception types
            raise GraphDSLError(f"onnxruntime failed to run graph {self.graph.name!r}: "
                                f"{str(e).strip()[:800]}") from None
        out = {}
        for (name, node), arr in zip(self.graph.outputs.items(), results):
            out[name] = np.asarray(arr).astype(node.type.dtype.np, copy=False)
        return out


def compile(graph: Graph, *, opset: int = DEFAULT_OPSET, contrib_ops: bool = False,
            threads: int | None = None, optimize: bool = True, **options) -> OrtExecutable:
    """Export ``graph`` (parameters as inputs) and open an ONNX Runtime CPU session on it.

    ``contrib_ops`` lowers attention to com.microsoft MultiHeadAttention where it fits;
    ``threads`` sets the intra-op thread count; ``optimize=False`` turns off ORT's graph rewrites.
    """
    if options:
        raise TargetError(f"the onnxruntime target takes no options {sorted(options)}",
                          hint="it takes opset, contrib_ops, threads and optimize")
    ort = _ort()
    model = export(graph, opset=opset, contrib_ops=contrib_ops, runtime="onnxruntime", check=False)
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
    return OrtExecutable(graph, model, session)
