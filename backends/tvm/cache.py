"""The compile cache: in this process, and on disk across processes.

An entry is keyed by the graph's JSON (graph.to_json(), which includes constants and source
lines), the full TVM target (CPU name, cores, GPU arch) and the library versions (TVM, its FFI,
and a digest of this backend's and the ops' source), so a change to any of them misses. Disk
entries are artifact directories (artifact.py) under ``$GRAPHDSL_CACHE_DIR/tvm`` (default
``~/.cache/graphdsl/tvm``); writing one needs a C compiler, and without one only the in-process
cache is used. ``STATS`` counts hits and compilations, so tests can see a hit skip compilation.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from graphdsl.errors import GraphDSLError
from graphdsl.graph import Graph

from .target import versions

STATS = {"memory_hits": 0, "disk_hits": 0, "compiles": 0}
_MEMORY: dict[str, object] = {}


def cache_dir() -> Path:
    root = os.environ.get("GRAPHDSL_CACHE_DIR") or Path.home() / ".cache" / "graphdsl"
    return Path(root) / "tvm"


def key(graph: Graph, target, **options) -> str:
    doc = {"graph": graph.to_json(), "target": str(target), "versions": versions(),
           **{k: v for k, v in options.items() if v}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def lookup(k: str, graph: Graph):
    """The cached executable for key ``k``, bound to ``graph``; None on a miss."""
    if k in _MEMORY:
        STATS["memory_hits"] += 1
        return _MEMORY[k].with_graph(graph)
    path = cache_dir() / k
    if (path / "meta.json").exists():
        from .artifact import load
        try:
            exe = load(path, graph=graph)
        except (GraphDSLError, OSError, RuntimeError):
            return None  # a stale or damaged entry: compile again and overwrite it
        STATS["disk_hits"] += 1
        _MEMORY[k] = exe
        return exe
    return None


def store(k: str, exe):
    """Keep ``exe`` in memory and on disk; returns the executable to use from now on.

    When the entry could be written, the executable returned runs the exported library: LLVM
    generates machine code once, for the export, instead of once more for TVM's in-process JIT.
    Without a C compiler (or with a read-only cache directory) ``exe`` itself is kept.
    """
    from .artifact import load, save
    try:
        path = save(exe, cache_dir() / k)
        loaded = load(path, graph=exe.graph)
        if loaded.vm_exec is not None:  # (a cuda module on a machine without a GPU loads as source only)
            exe = loaded
    except (OSError, RuntimeError, GraphDSLError):
        pass
    _MEMORY[k] = exe
    return exe


def clear_memory() -> None:
    _MEMORY.clear()
