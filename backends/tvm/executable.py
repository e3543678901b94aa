"""The compiled TVM module behind the common Executable calling convention (the llvm target's
class; cuda.CudaExecutable extends it, and backends/tvm/__init__.executable_class picks one)."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from graphdsl import dtypes as _dt
from graphdsl.errors import GraphDSLError
from graphdsl.graph import Graph

from ..base import Executable
from ..checks import NanCheck, call_sizes, is_allocation_failure, out_of_memory

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

    The crossing is per-call overhead that small models feel (BERT-tiny at batch 1 spent half
    its 1 ms call here, 40 of its 49 parameters being unaligned): a staging buffer is filled
    through a NumPy view of it (0.4 us, against 5 us for TVM's ``copyfrom``), and the array each
    input was last given (kept alive until the next call) is remembered with its TVM view or its
    need of a copy, so passing the same arrays again costs a lookup (and the copies) per input.

    ``check_nan`` (a NanCheck, or None): the reference's check_nan errors, after the call. An
    error inside the VM (an allocation that fails, ...) is a GraphDSLError naming the graph and
    the sizes of the call, never TVM's own exception.
    """

    on_host = True   # the kernels' buffers are host memory, which NumPy can view

    def __init__(self, graph: Graph, vm_exec, *, target: str, tvm_target: str = "", arch: str | None = None,
                 range_checks=(), slice_checks=(), check_nan: bool = False):
        super().__init__(graph)
        self.target = target
        self.tvm_target = tvm_target
        self.arch = arch          # the GPU architecture the kernels are built for (None: the CPU)
        self.vm_exec = vm_exec
        self.artifact_dir = None  # the directory this module was loaded from, if any
        self.range_checks = list(range_checks)
        self.slice_checks = list(slice_checks)
        self.check_nan = NanCheck(graph, target) if check_nan else None
        self._vm = None
        self._order = list(graph.inputs) + list(graph.params)
        self._staging: dict[str, tuple] = {}     # name -> what _stage returned
        self._staged_ptrs: set[int] = set()      # data pointers of the staging buffers
        self._last: dict[str, tuple] = {}       # name -> (array, shape, dtype, its TVM view or None)

    @classmethod
    def device_present(cls) -> bool:
        """Whether this machine has the device the modules of this class run on."""
        return True

    def compile_ahead(self) -> None:
        """Work a fresh build does before its first call (the CPU's code is ready: none)."""

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
        if self.check_nan is not None:
            self.check_nan.before(arrays, env)
        args = [self._to_device(k, _as_bytes(arrays[k])) for k in self._order]
        try:
            raw = self.vm["main"](*args)
        except Exception as e:   # TVM's errors: tvm.error.InternalError (std::bad_alloc), ValueError, ...
            raise self._failed(e, env) from None
        results = [self._to_numpy(r) for r in raw]
        n = len(self.graph.outputs)
        for check, lo_hi in zip(self.range_checks, results[n:]):
            check.verify(lo_hi, env)
        outputs = {name: _from_bytes(arr, node.type.dtype)
                   for (name, node), arr in zip(self.graph.outputs.items(), results[:n])}
        if self.check_nan is not None:
            self.check_nan.after(arrays, env, outputs)
        return outputs

    def _failed(self, err: Exception, env: dict) -> GraphDSLError:
        """The error a user sees when the VM raised: for a failed allocation the bytes of the
        graph's largest value (TVM's message says only std::bad_alloc), else what TVM said; both
        with the graph and the sizes of the call."""
        text = _first_line(err)
        if is_allocation_failure(text):
            return out_of_memory(self.graph, self.target, env, f"{type(err).__name__}: {text}")
        return GraphDSLError(f"graph {self.graph.name!r} on {self.target} with {call_sizes(env)}: the compiled "
                             f"module failed at run time: {type(err).__name__}: {text}",
                             hint="this is a bug in the TVM backend; backends.compile(graph, 'numpy') "
                                  "runs the reference")

    def _to_device(self, name: str, arr: np.ndarray):
        last = self._last.get(name)
        if last is not None and last[0] is arr and last[1] == arr.shape and last[2] == arr.dtype:
            view = last[3]   # the array this input was given last time: the same verdict
        else:
            view = self._view(arr)
            self._last[name] = (arr, arr.shape, arr.dtype, view)
        return view if view is not None else self._copy_in(name, arr)

    def _view(self, arr: np.ndarray):
        """A TVM tensor sharing ``arr``'s memory, or None where the kernels need a copy of it."""
        if not self.on_host or not arr.flags.c_contiguous or arr.size == 0:
            return None   # (NumPy gives an empty array strides of 0, which TVM refuses as not compact)
        try:
            view = tvm_ffi.from_dlpack(arr)
        except BufferError:  # bfloat16 has no DLPack code
            return None
        return view if view.data_ptr() % ALIGNMENT == 0 else None

    def _copy_in(self, name: str, arr: np.ndarray):
        """``arr`` copied into the staging buffer of input ``name``."""
        staged = self._staging.get(name)
        if staged is None or staged[2] != arr.shape or staged[3] != arr.dtype:
            staged = self._stage(name, arr)
        buf, host = staged[:2]
        if host is not None:
            host[...] = arr
        else:
            buf.copyfrom(_contiguous(arr))
        return buf

    def _stage(self, name: str, arr: np.ndarray) -> tuple:
        """(buffer, NumPy view, shape, dtype): a new staging buffer for input ``name`` shaped like
        ``arr``, with a view of it where NumPy can write into it directly (host memory, a dtype
        DLPack knows)."""
        old = self._staging.get(name)
        if old is not None:
            self._staged_ptrs.discard(old[0].data_ptr())
        buf = tvm.runtime.empty(arr.shape, str(arr.dtype), self.device)
        host = None
        if self.on_host:
            try:
                host = np.from_dlpack(buf)
            except (BufferError, TypeError, RuntimeError):   # bfloat16: NumPy has no DLPack code
                host = None
        staged = self._staging[name] = (buf, host, arr.shape, arr.dtype)
        self._staged_ptrs.add(buf.data_ptr())
        return staged

    def _to_numpy(self, tensor) -> np.ndarray:
        if not self.on_host or tensor.data_ptr() in self._staged_ptrs or str(tensor.dtype) == "bfloat16":
            return tensor.numpy()  # (an output that is a staging buffer would change on the next call)
        return np.from_dlpack(tensor)

    def with_graph(self, graph: Graph) -> "TVMExecutable":
        """The same compiled module, checking calls against ``graph`` (an equal graph)."""
        from ..checks import rebind
        other = copy.copy(self)
        other.graph, other._vm = graph, None
        other.range_checks, other.slice_checks = rebind(self.range_checks, graph), rebind(self.slice_checks, graph)
        other.check_nan = None if self.check_nan is None else NanCheck(graph, self.target)
        other._staging, other._staged_ptrs, other._last = {}, set(), {}
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


def _first_line(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return (lines[0] if lines else type(err).__name__)[:300]


def _as_bytes(arr: np.ndarray) -> np.ndarray:
    """A storage dtype's array (float8, int4, ...: ml_dtypes, a byte each) as the uint8 bytes the
    module takes (rules/common.tvm_dtype); any other array as it is."""
    return arr.view(np.uint8) if arr.dtype in _STORAGE else arr


_STORAGE = frozenset(d.np for d in _dt.STORAGE)


def _from_bytes(arr: np.ndarray, dtype) -> np.ndarray:
    return arr.view(dtype.np) if dtype.storage else arr


def _contiguous(arr: np.ndarray) -> np.ndarray:
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)  # keeps 0-d arrays 0-d
