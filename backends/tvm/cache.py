"""The compile cache: in this process, and on disk across processes.

An entry is keyed by the graph's structural hash (``graph.structural_hash()``: ops, attributes,
types, constants, wiring and names; not source lines, the graph's name or where it was traced
from, so an edit that changes no computation still hits), the full TVM target (CPU name, cores, GPU arch) and the library versions (TVM, its FFI,
and a digest of this backend's and the ops' source), so a change to any of them misses. Disk
entries are artifact directories (artifact.py) under ``$GRAPHDSL_CACHE_DIR/tvm`` (default
``~/.cache/graphdsl/tvm``); writing one needs a C compiler, and without one only the in-process
cache is used. ``STATS`` counts hits and compilations, so tests can see a hit skip compilation;
each lookup also logs one line on the ``graphdsl.cache`` logger (``graphdsl ... --verbose``
shows them) and sets ``LAST`` to "memory", "disk" or "miss".

A hit returns the cached module bound to the caller's graph, so input checks and the run-time
index checks name the caller's source lines (checks.rebind).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from graphdsl.errors import GraphDSLError
from graphdsl.graph import Graph

from .target import versions

STATS = {"memory_hits": 0, "disk_hits": 0, "compiles": 0}
LAST: dict[str, str | None] = {"event": None, "key": None}   # the latest lookup's outcome
_MEMORY: dict[str, object] = {}
log = logging.getLogger("graphdsl.cache")


def cache_dir() -> Path:
    root = os.environ.get("GRAPHDSL_CACHE_DIR") or Path.home() / ".cache" / "graphdsl"
    return Path(root) / "tvm"


def key(graph: Graph, target, **options) -> str:
    doc = {"graph": graph.structural_hash(), "target": str(target), "versions": versions(),
           **{k: v for k, v in options.items() if v}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def lookup(k: str, graph: Graph):
    """The cached executable for key ``k``, bound to ``graph``; None on a miss."""
    if k in _MEMORY:
        STATS["memory_hits"] += 1
        _note("memory", k, graph)
        return _MEMORY[k].with_graph(graph)
    path = cache_dir() / k
    if (path / "meta.json").exists():
        from .devices import load
        try:
            exe = load(path, graph=graph)
        except (GraphDSLError, OSError, RuntimeError):
            return None  # a stale or damaged entry: compile again and overwrite it
        STATS["disk_hits"] += 1
        _note("disk", k, graph, path)
        _MEMORY[k] = exe
        return exe
    _note("miss", k, graph)
    return None


def _note(event: str, k: str, graph: Graph, path: Path | None = None) -> None:
    LAST.update(event=event, key=k)
    where = {"memory": "hit in memory", "disk": f"hit on disk ({path})", "miss": "miss: compiling"}[event]
    log.info("compile cache %s for graph %r (key %s)", where, graph.name, k[:12])


def store(k: str, exe):
    """Keep ``exe`` in memory and on disk; returns the executable to use from now on.

    When the entry could be written, the executable returned runs the exported library: LLVM
    generates machine code once, for the export, instead of once more for TVM's in-process JIT.
    Without a C compiler (or with a read-only cache directory) ``exe`` itself is kept.
    """
    from .artifact import save
    from .devices import load
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
