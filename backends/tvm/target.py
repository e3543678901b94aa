"""TVM targets for our target names, the thread count, and the versions a compile cache keys on.

Plain "llvm" emits SSE-only code: the host CPU name (``mcpu``) turns on its vector ISA (AVX-512
here), and ``num-cores`` sizes the parallel loops. TVM's runtime pool reads ``TVM_NUM_THREADS``
when it starts, so we set it (to the usable cores) before the first run unless the user did.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from graphdsl.errors import TargetError

CUDA_ARCH = "sm_90"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


os.environ.setdefault("TVM_NUM_THREADS", str(usable_cores()))


def make_target(kind: str, **options):
    """A ``tvm.target.Target`` for ``"llvm"`` (this host's CPU) or ``"cuda"`` (host code for this CPU)."""
    import tvm
    host = {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(),
            "num-cores": int(options.pop("num_cores", usable_cores()))}
    if kind == "llvm":
        return tvm.target.Target(host)
    if kind == "cuda":
        arch = options.pop("arch", CUDA_ARCH)
        return tvm.target.Target({"kind": "cuda", "arch": arch, "max_num_threads": 1024}, host=host)
    raise TargetError(f"the TVM backend has no target {kind!r}", hint="use 'llvm' or 'cuda'")


@functools.lru_cache(maxsize=None)
def versions() -> dict[str, str]:
    """What a compiled artifact depends on: TVM, its FFI, this backend's and the ops' source."""
    import tvm
    import tvm_ffi

    import graphdsl.ops
    digest = hashlib.sha256()
    for root in (Path(__file__).parent, Path(graphdsl.ops.__file__).parent):
        for path in sorted(root.rglob("*.py")):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return {"tvm": tvm.__version__, "tvm_ffi": getattr(tvm_ffi, "__version__", "?"),
            "backend": digest.hexdigest()[:16]}
