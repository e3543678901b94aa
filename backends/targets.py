"""The targets: ``compile(graph, target) -> Executable`` and ``load(DIR)``, from one table.

Heavy imports (tvm, onnxruntime) happen inside the backend module that needs them, when that
target is first compiled for.
"""
from __future__ import annotations

import importlib

from graphdsl.errors import TargetError
from graphdsl.graph import Graph

from .base import Executable

# target name -> "module:function" that compiles for it, ``function(graph, **options)``
TARGETS: dict[str, str] = {
    "numpy": "backends.numpy_backend:compile",
    "llvm": "backends.tvm:compile",
    "cuda": "backends.tvm:compile_cuda",
    "onnxruntime": "backends.onnx.runtime:compile",
}


def compile(graph: Graph, target: str = "numpy", **options) -> Executable:
    """Compile ``graph`` for ``target`` (one of ``backends.TARGETS``)."""
    if not isinstance(graph, Graph):
        raise TargetError(f"compile() takes a Graph, got {type(graph).__name__}",
                          hint="build one with graphdsl.trace(fn, x='f32[batch,16]')")
    if target not in TARGETS:
        raise TargetError(f"unknown target {target!r}", hint=f"available targets: {', '.join(TARGETS)}")
    module, _, function = TARGETS[target].partition(":")
    return getattr(importlib.import_module(module), function)(graph, **options)


def load(directory) -> Executable:
    """The executable saved in ``directory`` (``exe.save(DIR)``, ``graphdsl compile -o DIR``), without
    compiling. Weights bundled there (``graphdsl compile --weights``) are bound: the executable then
    needs only the inputs. Loading runs the native code in the directory: load what you built."""
    import json
    from pathlib import Path
    meta = Path(directory) / "meta.json"
    hint = "create one with `graphdsl compile MODEL --target llvm -o DIR`"
    if not meta.is_file():
        raise TargetError(f"{str(directory)!r} is not a compiled graphdsl module (it has no meta.json)", hint=hint)
    try:
        fmt = json.loads(meta.read_text()).get("format")
    except (OSError, ValueError, AttributeError) as e:
        raise TargetError(f"{str(directory)!r} is not a compiled graphdsl module: meta.json cannot be read "
                          f"({type(e).__name__}: {e})"[:300], hint=hint) from None
    if fmt == "graphdsl-tvm-artifact":
        from .tvm.devices import load as load_tvm
        return load_tvm(directory)
    raise TargetError(f"{meta}: unknown artifact format {fmt!r}")
