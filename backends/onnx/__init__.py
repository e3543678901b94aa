"""ONNX: export graphs (``export``) and run them on ONNX Runtime (the ``onnxruntime`` target).

``export(graph, params=..., path=...)`` writes a standard ONNX model; ``runtime.compile`` is the
``onnxruntime`` target of ``backends.compile``; ``optimize_file(src, dst)`` runs the passes on a
graph JSON or ONNX file and writes the result (what ONNX Runtime's transformer optimizer does).
Importing ONNX models into graphs lives in the core (``graphdsl.from_onnx``), since it needs
nothing from the backends. onnx is imported here, so ``import backends`` does not import this
package: the target table names it lazily.
"""
from .export import DEFAULT_OPSET, export, save
from .optimize import optimize_file
from .table import LOWERINGS, table

__all__ = ["DEFAULT_OPSET", "LOWERINGS", "export", "optimize_file", "save", "table"]
