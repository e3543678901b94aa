"""The TVM backend: graph -> Relax (our lowering table) -> schedules -> LLVM or CUDA kernels.

``backends.compile(graph, "llvm")`` lands in ``compile`` here, ``"cuda"`` in ``compile_cuda``; both
go through ``compile_for``, and devices.py picks the executable class (the one place llvm and cuda
part; cuda.py holds what only the GPU needs). TVM is
imported only when this package is (when a TVM target is first compiled for).

Options: ``num_cores`` (llvm: threads the kernels are built for; default the usable cores),
``arch`` (cuda: default sm_90), ``cache`` (default True: reuse a module compiled before for the
same graph, target and library versions, from this process or from disk; see cache.py),
``gpu_kernels_on_cpu`` (llvm, default False: build the GPU's own attention kernels in their
emulated CPU form, to check their numbers on a machine without a GPU; slow, for tests),
``check_nan`` (default False: raise the NumPy backend's check_nan errors; the kernels run the
whole graph, so after a call whose inputs or outputs hold a NaN the NumPy reference is re-run on
the same inputs to name the first op that made it; see checks.NanCheck).
"""
from __future__ import annotations

from graphdsl.errors import TargetError
from graphdsl.graph import Graph

from ..checks import NanCheck
from .target import make_target


def compile(graph: Graph, **options):
    """Compile ``graph`` for this host's CPU; returns a TVMExecutable."""
    return compile_for("llvm", graph, **options)


def compile_cuda(graph: Graph, **options):
    """Build ``graph`` for the GPU (and its PTX, when nvcc is present; see cuda.py); returns a
    CudaExecutable, whose source and PTX need no GPU (calling it does)."""
    return compile_for("cuda", graph, **options)


def compile_for(kind: str, graph: Graph, *, cache: bool = True, check_nan: bool = False, **options):
    """Compile for ``kind`` ("llvm" or "cuda"), through the compile cache unless ``cache=False``."""
    from . import cache as _cache
    target_options = {k: options.pop(k) for k in ("num_cores", "arch") if k in options}
    emulate = bool(options.pop("gpu_kernels_on_cpu", False))
    if options or (emulate and kind != "llvm"):
        unknown = sorted(options) or ["gpu_kernels_on_cpu"]
        raise TargetError(f"unknown option(s) for the {kind} target: {unknown}",
                          hint="the TVM targets take num_cores (llvm), arch (cuda), cache, check_nan "
                               "and gpu_kernels_on_cpu (llvm)")
    arch = target_options.get("arch")
    target = make_target(kind, **target_options)
    k = _cache.key(graph, target, gpu_kernels_on_cpu=emulate) if cache else None
    exe = _cache.lookup(k, graph) if cache else None
    if exe is None:
        exe = _build(kind, graph, target, arch, emulate)
        _cache.STATS["compiles"] += 1
        if cache:
            exe = _cache.store(k, exe)
    if check_nan:   # on a copy: the cached executable serves calls without the check too
        exe = exe.with_graph(graph)
        exe.check_nan = NanCheck(graph, kind)
    return exe


def _build(kind: str, graph: Graph, target, arch, emulate: bool = False):
    from .build import build
    from .devices import executable_class
    from .lower import lower
    lowered = lower(graph, kind, gpu_kernels_on_cpu=emulate)
    vm_exec = build(lowered.mod, target)
    exe = executable_class(kind)(graph, vm_exec, target=kind, tvm_target=str(target), arch=arch,
                                 range_checks=lowered.range_checks, slice_checks=lowered.slice_checks)
    exe.compile_ahead()
    return exe
