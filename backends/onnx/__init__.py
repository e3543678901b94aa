"""ONNX: export graphs (``export``) and run them on ONNX Runtime (the ``onnxruntime`` target).

``export(graph, params=..., path=...)`` writes a standard ONNX model; ``runtime.compile`` is the
``onnxruntime`` target of ``backends.compile``; ``optimize_file(src, dst)`` runs the passes on a
graph JSON or ONNX file and writes the result (what ONNX Runtime's transformer optimizer does).
``EXPORT`` is the lowering table (rows in lower/<group>.py). Importing ONNX models into graphs
lives in the core (``graphdsl.from_onnx``), since it needs nothing from the backends. onnx is
imported here, so ``import backends`` does not import this package: the target table names it
lazily.
"""
from .export import DEFAULT_OPSET, export, save
from .lower import EXPORT
from .optimize import optimize_file

__all__ = ["DEFAULT_OPSET", "EXPORT", "export", "optimize_file", "save"]
