"""The cuda target: CUDA kernels from dlight-scheduled TIR, inspectable and compiled without a GPU.

``backends.compile(graph, "cuda")`` (backends.tvm.compile_cuda) builds the whole graph for the GPU and, when ``nvcc`` is on
the PATH, compiles the generated CUDA C to PTX for ``arch`` (sm_90 by default) right away, so a
machine without a GPU still checks that the kernels compile. ``exe.cuda_source()`` and
``exe.ptx()`` give both texts; ``exe.save_source(path)`` writes the CUDA C.

Running needs a GPU. TVM's CUDA module holds the source and asks the ``tvm_callback_cuda_compile``
hook for a binary when it is first loaded on the GPU; ours hands back the PTX compiled here when
the GPU's architecture matches, and otherwise compiles with nvcc (or TVM's NVRTC path).
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from graphdsl.errors import GraphDSLError, TargetError
from graphdsl.graph import Graph

from .executable import TVMExecutable
from .target import CUDA_ARCH

_KNOWN_PTX: dict[str, tuple[str, str]] = {}   # sha256(source) -> (arch, ptx)
_hook_installed = False


def gpu_available() -> bool:
    """True when TVM sees a CUDA device 0."""
    import tvm
    try:
        return bool(tvm.cuda(0).exist)
    except Exception:  # no CUDA runtime library at all
        return False


def nvcc_available() -> bool:
    return shutil.which("nvcc") is not None


def compile_ptx(source: str, arch: str = CUDA_ARCH) -> str:
    """CUDA C -> PTX with ``nvcc --ptx -arch=<arch> -O3``."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise TargetError("nvcc is not on the PATH", hint="install the CUDA toolkit to compile CUDA source")
    with tempfile.TemporaryDirectory(prefix="graphdsl-nvcc-") as tmp:
        src, out = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.ptx"
        src.write_text(source)
        done = subprocess.run([nvcc, "--ptx", f"-arch={arch}", "-O3", "-o", str(out), str(src)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise GraphDSLError(f"nvcc failed to compile the generated CUDA source for {arch}:\n"
                                f"{done.stderr.strip()[-2000:]}")
        return out.read_text()


class CudaExecutable(TVMExecutable):
    """A module built for the GPU. Calling it needs a GPU; its source and PTX do not."""

    on_host = False

    def __init__(self, graph: Graph, vm_exec, *, arch: str | None = None, **kwargs):
        super().__init__(graph, vm_exec, arch=arch or CUDA_ARCH, **kwargs)
        self._source: str | None = None
        self._ptx: str | None = None

    @classmethod
    def device_present(cls) -> bool:
        return gpu_available()

    def compile_ahead(self) -> None:
        """Compile the kernels to PTX now, when nvcc is here: a machine without a GPU still checks
        that they compile."""
        if nvcc_available():
            self.ptx()

    @property
    def device(self):
        import tvm
        return tvm.cuda(0)

    def cuda_source(self) -> str:
        """The CUDA C of every kernel of the graph."""
        if self._source is None:
            if self.vm_exec is None:
                raise GraphDSLError("this cuda module was loaded without its kernels.cu")
            self._source = "\n".join(m.inspect_source("cuda") for m in _modules(self.vm_exec.mod)
                                     if m.kind == "cuda")
        return self._source

    def ptx(self) -> str:
        """The kernels compiled to PTX for ``self.arch`` with nvcc (compiled once, then kept)."""
        if self._ptx is None:
            self._ptx = compile_ptx(self.cuda_source(), self.arch)
            _KNOWN_PTX[_digest(self.cuda_source())] = (self.arch, self._ptx)
        return self._ptx

    def save_source(self, path) -> Path:
        path = Path(path)
        path.write_text(self.cuda_source())
        return path

    def run(self, arrays, env):
        if self.vm_exec is None or not gpu_available():
            raise TargetError("running a cuda module needs an NVIDIA GPU, and this machine has none",
                              hint="compile here, inspect exe.cuda_source() or exe.ptx(), run on a GPU host")
        _install_hook()
        return super().run(arrays, env)

    def extra_files(self) -> dict[str, str]:
        files = {"kernels.cu": self.cuda_source()}
        if self._ptx is not None:
            files["kernels.ptx"] = self._ptx
        return files

    def load_extra_files(self, directory: Path) -> None:
        src, ptx = directory / "kernels.cu", directory / "kernels.ptx"
        if src.exists():
            self._source = src.read_text()
        if ptx.exists():
            self._ptx = ptx.read_text()
            _KNOWN_PTX[_digest(self._source or "")] = (self.arch, self._ptx)


def _modules(mod):
    yield mod
    for m in mod.imports:
        yield from _modules(m)


def _digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def _install_hook() -> None:
    """Serve TVM's CUDA loader our PTX for sources we compiled (see the module docstring)."""
    global _hook_installed
    if _hook_installed:
        return
    import tvm
    import tvm_ffi
    fallback = tvm.get_global_func("tvm_callback_cuda_compile", allow_missing=True)

    def cuda_compile(code, *rest):
        major, minor = tvm.cuda(0).compute_version.split(".")
        known = _KNOWN_PTX.get(_digest(code))
        if known is not None and known[0] == f"sm_{major}{minor}":
            return known[1].encode()
        if nvcc_available():
            return compile_ptx(code, f"sm_{major}{minor}").encode()
        return fallback(code, *rest)

    tvm_ffi.register_global_func("tvm_callback_cuda_compile", cuda_compile, override=True)
    _hook_installed = True
