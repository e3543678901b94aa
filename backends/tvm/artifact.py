"""Compiled modules on disk: one directory that a fresh process loads without recompiling.

    DIR/meta.json     target, library versions, the calling convention (inputs, params with
                      their types, outputs) and the run-time checks
    DIR/graph.json    the graph (graph.to_json()), so the loaded executable checks its inputs
    DIR/module.so     the TVM VM executable (export_library needs a C compiler; loading does not)
    DIR/kernels.cu    cuda only: the CUDA source, and kernels.ptx when nvcc compiled it
    DIR/weights.safetensors   optional: the parameter values (``save(..., weights=params)``), so
                      ``backends.load(DIR)`` gives an executable that needs only the inputs

The compile cache (cache.py) stores its entries in this same format. Saving replaces an earlier
artifact in DIR in one rename, and refuses a DIR that holds anything else (it is not ours to delete).
Loading ``module.so`` runs native code: load artifacts you (or your cache) built, like any library.
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
WEIGHTS = "weights.safetensors"
_OURS = {"meta.json", "graph.json", MODULE, WEIGHTS, "kernels.cu", "kernels.ptx"}


def save(exe, directory, *, weights=None) -> Path:
    """Write ``exe`` (a TVMExecutable) to ``directory`` (created or replaced, atomically), with the
    parameter values ``weights`` (checked against the graph) when given."""
    directory = Path(directory)
    _check_replaceable(directory)
    if weights is not None:
        from graphdsl.weights import check_params
        weights = check_params(exe.graph, weights, "the weights to bundle")
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
        if weights is not None:
            from graphdsl.weights import write_arrays
            write_arrays(tmp / WEIGHTS, weights)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old.{os.getpid()}")
            os.replace(directory, old)       # our own artifact (checked above), out of the way
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _check_replaceable(directory: Path) -> None:
    """Only an empty directory or an artifact of ours (nothing else in it) may be replaced."""
    if not directory.exists():
        return
    if not directory.is_dir():
        raise GraphDSLError(f"cannot save a compiled module to {str(directory)!r}: it is a file",
                            hint="choose a new directory name")
    entries = {p.name for p in directory.iterdir()}
    if not entries:
        return
    others = sorted(entries - _OURS)
    if others or "meta.json" not in entries:
        raise GraphDSLError(f"cannot save a compiled module to {str(directory)!r}: it holds "
                            f"{', '.join(others[:5]) or 'files'} that are not a graphdsl artifact",
                            hint="choose a new or empty directory; graphdsl never deletes what it did not write")


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
    if (directory / WEIGHTS).exists():
        from graphdsl.weights import check_params, read_arrays
        exe.bind_weights(check_params(graph, read_arrays(directory / WEIGHTS, "bundled weights"),
                                      f"the weights in {directory / WEIGHTS}"))
    return exe
