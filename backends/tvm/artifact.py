"""Compiled modules on disk: one directory that a fresh process loads without recompiling.

    DIR/meta.json     target, library versions, the calling convention (inputs, params with
                      their types, outputs) and the run-time checks
    DIR/graph.json    the graph (graph.to_json()), so the loaded executable checks its inputs
    DIR/module.so     the TVM VM executable (export_library needs a C compiler; loading does not)
    DIR/kernels.cu    cuda only: the CUDA source, and kernels.ptx when nvcc compiled it

The compile cache (cache.py) stores its entries in this same format.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from graphdsl.errors import GraphDSLError
from graphdsl.graph import Graph

from . import checks as _checks
from .target import versions

FORMAT = "graphdsl-tvm-artifact"
MODULE = "module.so"


def save(exe, directory) -> Path:
    """Write ``exe`` (a TVMExecutable) to ``directory`` (created or replaced, atomically)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        if exe.artifact_dir is not None:  # loaded from a library (the cache): copy that library
            shutil.copy(Path(exe.artifact_dir) / MODULE, tmp / MODULE)
        else:
            exe.vm_exec.export_library(str(tmp / MODULE))
        (tmp / "graph.json").write_text(exe.graph.to_json())
        (tmp / "meta.json").write_text(json.dumps(_meta(exe), indent=1))
        for name, text in exe.extra_files().items():
            (tmp / name).write_text(text)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _meta(exe) -> dict:
    g = exe.graph
    return {"format": FORMAT, "version": 1, "target": exe.target, "tvm_target": exe.tvm_target,
            "arch": getattr(exe, "arch", None), "versions": versions(),
            "inputs": {k: str(n.type) for k, n in g.inputs.items()},
            "params": {k: str(n.type) for k, n in g.params.items()},
            "outputs": {k: str(n.type) for k, n in g.outputs.items()},
            "range_checks": _checks.to_json(exe.range_checks),
            "slice_checks": _checks.to_json(exe.slice_checks)}


def load(directory, *, graph: Graph | None = None, check_versions: bool = True):
    """Load an executable saved by ``save``; no compilation happens.

    ``graph`` (equal to the saved one) is used instead of parsing graph.json, when given. A cuda
    module loads on a machine without a GPU as source and PTX only (calling it raises).
    """
    import tvm
    from .cuda import CudaExecutable, gpu_available
    from .executable import TVMExecutable
    directory = Path(directory)
    try:
        meta = json.loads((directory / "meta.json").read_text())
        graph_text = (directory / "graph.json").read_text()
    except (OSError, ValueError) as e:
        raise GraphDSLError(f"{directory} is not a compiled graphdsl module: {e}",
                            hint="create one with `graphdsl compile MODEL --target llvm -o DIR`") from None
    if meta.get("format") != FORMAT:
        raise GraphDSLError(f"{directory}/meta.json is not a {FORMAT} file")
    if check_versions and meta["versions"] != versions():
        raise GraphDSLError(f"{directory} was compiled with {meta['versions']}, this is {versions()}",
                            hint="recompile it with this installation")
    cuda = meta["target"] == "cuda"
    module = None if cuda and not gpu_available() else tvm.runtime.load_module(str(directory / MODULE))
    graph = graph or Graph.from_json(graph_text)
    common = dict(target=meta["target"], tvm_target=meta["tvm_target"],
                  range_checks=_checks.rebind(_checks.from_json(meta["range_checks"]), graph),
                  slice_checks=_checks.rebind(_checks.from_json(meta["slice_checks"]), graph))
    exe = CudaExecutable(graph, module, arch=meta["arch"], **common) if cuda else TVMExecutable(graph, module, **common)
    exe.load_extra_files(directory)
    exe.artifact_dir = directory
    return exe
