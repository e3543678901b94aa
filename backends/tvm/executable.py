"""The compiled TVM module behind the common Executable calling convention."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from graphdsl.graph import Graph

from ..base import Executable

ALIGNMENT = 64  # bytes: what TVM's generated kernels assume of every buffer


class TVMExecutable(Executable):
    """``exe(x=..., **params) -> {output: array}``, like every backend; runs the Relax VM.

    ``main`` takes the inputs then the parameters, in declaration order, and returns the outputs
    followed by one [min, max] tensor per range check (see checks.py).

    Arrays cross without copies where they can: a C-contiguous array whose data is 64-byte aligned
    (TVM's kernels assume that alignment; outputs of an earlier call are) is passed as it is,
    and outputs come back as NumPy views of TVM's buffers. Other arrays are copied into staging
    buffers kept per input between calls, because fresh memory costs more than the copy. So an
    executable is not safe to call from two threads at once.
    """

    def __init__(self, graph: Graph, vm_exec, *, target: str, tvm_target: str = "",
                 range_checks=(), slice_checks=()):
        super().__init__(graph)
        self.target = target
        self.tvm_target = tvm_target
        self.vm_exec = vm_exec
        self.artifact_dir = None  # the directory this module was loaded from, if any
        self.range_checks = list(range_checks)
        self.slice_checks = list(slice_checks)
        self._vm = None
        self._order = list(graph.inputs) + list(graph.params)
        self._staging: dict[str, tvm.runtime.Tensor] = {}

    @property
    def device(self):
        return tvm.cpu(0)

    @property
    def vm(self) -> relax.VirtualMachine:
        if self._vm is None:
            self._vm = relax.VirtualMachine(self.vm_exec, self.device)
        return self._vm

    def run(self, arrays, env):
        for check in self.slice_checks:
            check.verify(env)
        args = [self._to_device(k, arrays[k]) for k in self._order]
        staged = {t.data_ptr() for t in self._staging.values()}
        results = [self._to_numpy(r, staged) for r in self.vm["main"](*args)]
        n = len(self.graph.outputs)
        for check, lo_hi in zip(self.range_checks, results[n:]):
            check.verify(lo_hi, env)
        return dict(zip(self.graph.outputs, results[:n]))

    def _to_device(self, name: str, arr: np.ndarray):
        if self.target != "cuda" and arr.flags.c_contiguous and arr.ctypes.data % ALIGNMENT == 0:
            try:
                return tvm_ffi.from_dlpack(arr)
            except BufferError:  # bfloat16 has no DLPack code: copy it instead
                pass
        buf = self._staging.get(name)
        if buf is None or tuple(buf.shape) != arr.shape or str(buf.dtype) != str(arr.dtype):
            buf = self._staging[name] = tvm.runtime.empty(arr.shape, str(arr.dtype), self.device)
        buf.copyfrom(_contiguous(arr))
        return buf

    def _to_numpy(self, tensor, staged: set) -> np.ndarray:
        if self.target == "cuda" or tensor.data_ptr() in staged or str(tensor.dtype) == "bfloat16":
            return tensor.numpy()  # (an output that is a staging buffer would change on the next call)
        return np.from_dlpack(tensor)

    def with_graph(self, graph: Graph) -> "TVMExecutable":
        """The same compiled module, checking calls against ``graph`` (an equal graph)."""
        other = copy.copy(self)
        other.graph, other._vm, other._staging = graph, None, {}
        return other

    # -- artifacts ----------------------------------------------------------------------------
    def save(self, directory) -> Path:
        """Write this module, its graph and calling convention to ``directory`` (see artifact.py)."""
        from .artifact import save
        return save(self, directory)

    def extra_files(self) -> dict[str, str]:
        """Files besides the module that an artifact directory keeps (the CUDA source)."""
        return {}

    def load_extra_files(self, directory: Path) -> None:
        """Read back what ``extra_files`` wrote."""


def _contiguous(arr: np.ndarray) -> np.ndarray:
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)  # keeps 0-d arrays 0-d
