"""llvm or cuda: the one place the two TVM targets part.

Compiling (``backends.tvm.compile_for``) and loading a saved module (``load``, used by the compile
cache and ``backends.load``) both ask ``executable_class`` which class runs a target; the class
itself knows its device (``device_present``, ``on_host``). Everything else in this package is
target-neutral or, for cuda, lives in cuda.py.
"""
from __future__ import annotations

from graphdsl.graph import Graph

from . import artifact
from .cuda import CudaExecutable
from .executable import TVMExecutable

EXECUTABLE_CLASSES = {"llvm": TVMExecutable, "cuda": CudaExecutable}


def executable_class(kind: str) -> type[TVMExecutable]:
    """The executable class that runs modules built for target ``kind``."""
    try:
        return EXECUTABLE_CLASSES[kind]
    except KeyError:
        from graphdsl.errors import TargetError
        raise TargetError(f"no TVM executable runs target {kind!r}",
                          hint=f"the TVM targets are {', '.join(EXECUTABLE_CLASSES)}") from None


def load(directory, *, graph: Graph | None = None, check_versions: bool = True) -> TVMExecutable:
    """Load an executable saved by ``artifact.save`` (``exe.save(DIR)``); no compilation happens.

    artifact.read checks every file first. A cuda module loads on a machine without a GPU as
    source and PTX only (calling it raises). Loading module.so runs the native code in it: load
    only artifacts you (or your compile cache) built.
    """
    saved = artifact.read(directory, graph=graph, check_versions=check_versions)
    cls = executable_class(saved.target)
    module = None
    if cls.device_present():
        import tvm
        module = tvm.runtime.load_module(str(saved.module_path))
    meta = saved.meta
    exe = cls(saved.graph, module, target=meta["target"], tvm_target=meta["tvm_target"], arch=meta.get("arch"),
              range_checks=saved.range_checks, slice_checks=saved.slice_checks)
    exe.load_extra_files(saved.directory)
    exe.artifact_dir = saved.directory
    if saved.weights is not None:
        exe.bind_weights(saved.weights)
    return exe
