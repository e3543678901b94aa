"""Optimize a model file into another, as ONNX Runtime's transformer optimizer does.

    report = optimize_file("bert.onnx", "bert.opt.onnx", contrib_ops=True)
    print(report)                                   # what each pass did

The source is a graph JSON (``Graph.save``) or an ONNX file; the graph goes through
``passes.report(graph, level)`` and is written as graph JSON or ONNX, chosen by the destination's
suffix. Files are written into a temporary sibling folder and renamed into place, so a failure
never leaves half a file where a good one was (and ``src`` may be ``dst``). ``passes`` is imported
on the first call: ``import backends.onnx`` does not depend on it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from graphdsl.errors import GraphDSLError
from graphdsl.graph import Graph

from .export import export, save

if TYPE_CHECKING:
    import passes

SUFFIXES = (".json", ".onnx")


def optimize_file(src, dst, *, level: int = 2, contrib_ops: bool = False,
                  dims: Mapping[str, int] | None = None) -> passes.Report:
    """Load ``src``, run the passes of ``level``, write the optimized graph to ``dst``; the report.

    ``src``: a ``.json`` graph or an ``.onnx`` model. An ONNX model's weights come back from the
    importer as *parameters* with their values (``graphdsl.onnx.import_onnx``, as the CLI's MODEL
    argument reads ``.onnx``; 0-d and integer initializers stay constants), so no pass folds them.
    A graph JSON has no parameter values: its parameters stay parameters without values.

    ``dst``: ``.onnx`` writes the parameters with values as initializers under their own names
    (parameters without values are graph inputs); ``contrib_ops=True`` writes each fused
    ``attention`` op whose layout fits as ``com.microsoft.MultiHeadAttention`` (lower/attention.py).
    ``.json`` writes the graph, and the parameter values, when there are any, beside it as
    ``<dst stem>.npz`` (what ``--weights`` takes).

    ``dims`` fixes an ONNX model's named dynamic axes (``{"batch": 1}``), as in ``from_onnx``.
    """
    src, dst = Path(src), Path(dst)
    _check_suffix(src, "source")
    _check_suffix(dst, "destination")
    if contrib_ops and dst.suffix == ".json":
        raise GraphDSLError(f"contrib_ops=True applies to ONNX output, not to {dst.name}",
                            hint="write a .onnx file, or drop contrib_ops")
    graph, values = _load(src, dims)
    return optimize_graph(graph, values, dst, level=level, contrib_ops=contrib_ops)


def optimize_graph(graph: Graph, values: Mapping | None, dst, *, level: int = 2,
                   contrib_ops: bool = False) -> passes.Report:
    """``optimize_file`` for a graph in memory (``values``: its parameter values, or None)."""
    dst = Path(dst)
    _check_suffix(dst, "destination")
    if contrib_ops and dst.suffix == ".json":
        raise GraphDSLError(f"contrib_ops=True applies to ONNX output, not to {dst.name}",
                            hint="write a .onnx file, or drop contrib_ops")
    import passes   # backends depend on graphdsl only; this one function also runs the passes
    report = passes.report(graph, level)
    out = report.graph
    values = {k: v for k, v in (values or {}).items() if k in out.params}
    if dst.suffix == ".onnx":
        model = export(out, params=values or None, contrib_ops=contrib_ops)
        _replace(dst, lambda path: save(model, path))   # > 2 GB: weights in <name>.data beside it
    else:
        _replace(dst, out.save)
        if values:
            from graphdsl.weights import write_arrays
            write_arrays(dst.with_suffix(".npz"), values)
    return report


def _check_suffix(path: Path, what: str) -> None:
    if path.suffix not in SUFFIXES:
        raise GraphDSLError(f"optimize_file: the {what} {str(path)!r} is neither a graph .json nor an "
                            f".onnx file", hint="name files model.json (Graph.save) or model.onnx")


def _load(src: Path, dims) -> tuple[Graph, dict]:
    if src.suffix == ".onnx":
        from graphdsl.onnx import import_onnx
        return import_onnx(str(src), dims=dims)
    if dims:
        raise GraphDSLError(f"dims={dict(dims)} fixes an ONNX model's dynamic axes; the graph {src.name} "
                            f"has its own types", hint="drop dims for a .json source")
    return Graph.load(src), {}


def _replace(dst: Path, write: Callable[[Path], None]) -> None:
    """``write(path)`` into a temporary sibling folder, then ``os.replace`` each file it wrote into
    ``dst``'s folder: side files (external data) first, ``dst`` itself last."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        write(tmp / dst.name)
        for f in sorted(tmp.iterdir(), key=lambda f: f.name == dst.name):
            os.replace(f, dst.parent / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["optimize_file", "optimize_graph"]
