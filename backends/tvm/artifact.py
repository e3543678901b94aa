"""Compiled modules on disk: one directory that a fresh process loads without recompiling.

    DIR/meta.json     target, library versions, the calling convention (inputs, params with
                      their types, outputs) and the run-time checks
    DIR/graph.json    the graph (graph.to_json()), so the loaded executable checks its inputs
    DIR/module.so     the TVM VM executable (export_library needs a C compiler; loading does not)
    DIR/kernels.cu    cuda only: the CUDA source, and kernels.ptx when nvcc compiled it
    DIR/weights.safetensors   optional: the parameter values (``save(..., weights=params)``), so
                      ``backends.load(DIR)`` gives an executable that needs only the inputs

``save`` writes one and ``read`` checks one; devices.load turns what ``read`` returns into the
executable class of its target (this module knows no executable class, so the executable's own
``save`` may call it). The compile cache (cache.py) stores its entries in this same format. Saving replaces an earlier
artifact in DIR in one rename, and refuses a DIR that holds anything else (it is not ours to delete).
Loading ``module.so`` runs native code: load artifacts you (or your cache) built, like any library.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from graphdsl.errors import GraphDSLError
from graphdsl.files import digest, fsync
from graphdsl.graph import Graph

from .. import checks as _checks
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
        for name, text in exe.extra_files().items():
            (tmp / name).write_text(text)
        if weights is not None:
            from graphdsl.weights import write_arrays
            write_arrays(tmp / WEIGHTS, weights)
        meta = _meta(exe)
        meta["files"] = {f.name: digest(f) for f in sorted(tmp.iterdir())}   # checked at load
        meta["meta_sha256"] = meta_digest(meta)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        for f in tmp.iterdir():
            fsync(f)
        fsync(tmp)
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
            "arch": exe.arch, "versions": versions(),
            "inputs": {k: str(n.type) for k, n in g.inputs.items()},
            "params": {k: str(n.type) for k, n in g.params.items()},
            "outputs": {k: str(n.type) for k, n in g.outputs.items()},
            "range_checks": _checks.to_json(exe.range_checks),
            "slice_checks": _checks.to_json(exe.slice_checks)}


_REQUIRED = {"format": str, "version": int, "target": str, "tvm_target": str, "versions": dict, "inputs": dict,
             "params": dict, "outputs": dict, "range_checks": list, "slice_checks": list, "files": dict,
             "meta_sha256": str}


def meta_digest(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def read_meta(directory: Path) -> dict:
    """meta.json of an artifact, checked: every key there with its type, its own digest, and the
    digest of every file it lists (so a truncated module.so is an error here, not a crash in TVM)."""
    hint = "recompile it: `graphdsl compile MODEL -o DIR` (or delete the compile cache entry)"
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise GraphDSLError(f"{directory} is not a compiled graphdsl module: meta.json cannot be read "
                            f"({type(e).__name__}: {e})"[:300],
                            hint="create one with `graphdsl compile MODEL --target llvm -o DIR`") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise GraphDSLError(f"{directory}/meta.json is not a {FORMAT} file", hint=hint)
    bad = [f"{k} ({'missing' if k not in meta else type(meta[k]).__name__})" for k, kind in _REQUIRED.items()
           if not isinstance(meta.get(k), kind)]
    if bad:
        raise GraphDSLError(f"{directory}/meta.json is damaged: {', '.join(bad)} where the artifact format "
                            f"needs each key with its type", hint=hint)
    if meta["meta_sha256"] != meta_digest(meta):
        raise GraphDSLError(f"{directory}/meta.json was edited or damaged after it was saved (its digest "
                            f"does not match)", hint=hint)
    for name, want in meta["files"].items():
        path = directory / name
        if not path.is_file():
            raise GraphDSLError(f"{path} is missing from the compiled module", hint=hint)
        if digest(path) != want:
            raise GraphDSLError(f"{path} is damaged: its sha256 is not the one recorded when it was saved",
                                hint=hint)
    return meta


def _check_convention(directory: Path, meta: dict, graph: Graph) -> None:
    """graph.json must have exactly the inputs, parameters and outputs the module was built for."""
    for kind, table in (("inputs", graph.inputs), ("params", graph.params), ("outputs", graph.outputs)):
        got = {k: str(n.type) for k, n in table.items()}
        if got != meta[kind]:
            raise GraphDSLError(f"{directory}: the graph's {kind} {got} are not those the module was built "
                                f"for {meta[kind]}", hint="the graph and the module come from different compiles")


@dataclass(frozen=True)
class Saved:
    """What an artifact directory holds, every file checked (``read``); devices.load makes it an
    executable of the class its target names."""

    directory: Path
    meta: dict
    graph: Graph
    range_checks: list
    slice_checks: list
    weights: dict | None      # the bundled parameter values, checked against the graph

    @property
    def target(self) -> str:
        return self.meta["target"]

    @property
    def module_path(self) -> Path:
        return self.directory / MODULE


def read(directory, *, graph: Graph | None = None, check_versions: bool = True) -> Saved:
    """Read and check an artifact saved by ``save``; nothing is loaded into TVM here.

    Everything is checked before a kernel can run: meta.json's keys and digest, every file's
    sha256, the library versions, and that the graph has the calling convention the module was
    built for. ``graph`` (equal to the saved one) is used instead of parsing graph.json, when given.
    """
    directory = Path(directory)
    meta = read_meta(directory)
    if check_versions and meta["versions"] != versions():
        raise GraphDSLError(f"{directory} was compiled with {meta['versions']}, this is {versions()}",
                            hint="recompile it with this installation")
    graph = graph or Graph.from_json((directory / "graph.json").read_text())
    _check_convention(directory, meta, graph)
    weights = None
    if (directory / WEIGHTS).exists():
        from graphdsl.weights import check_params, read_arrays
        weights = check_params(graph, read_arrays(directory / WEIGHTS, "bundled weights"),
                               f"the weights in {directory / WEIGHTS}")
    return Saved(directory, meta, graph,
                 range_checks=_checks.rebind(_checks.from_json(meta["range_checks"]), graph),
                 slice_checks=_checks.rebind(_checks.from_json(meta["slice_checks"]), graph),
                 weights=weights)
