"""Every zoo model on the cuda target against the NumPy reference: forward and one training step.

Run by benchmarks/gpu_check.sh on a machine with an NVIDIA GPU. Compiling (TVM + dlight + nvcc)
is the slow part, so it runs first in parallel worker processes, each compiled module landing in
the compile cache; the main process then loads each from the cache, runs it on the GPU against
NumPy, and prints one line per case with the compile time, the latencies and the worst error.

    python benchmarks/tvm_gpu_check.py [--models bert-tiny,gpt-tiny] [--workers 8] [--reps 5]

Without a GPU it still compiles everything (CUDA source and PTX) and says that it ran nothing.
Exit status 1 when any case fails to compile or disagrees with NumPy beyond atol 1e-3, rtol 1e-2
(fp32 accumulation order differs on the GPU), else 0.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ATOL, RTOL = 1e-3, 1e-2


def _compile_case(name: str, train: bool) -> tuple[str, bool, float, str]:
    """In a worker: build the case's graph and compile it for cuda (into the shared cache)."""
    import backends
    from graphdsl.cli.tvm_cmd import model_case
    t0 = time.perf_counter()
    try:
        graph, _ = model_case(name, train=train)
        backends.compile(graph, "cuda")
    except Exception as e:  # report every failure, keep checking the other models
        return name, train, time.perf_counter() - t0, f"{type(e).__name__}: {str(e).splitlines()[0]}"
    return name, train, time.perf_counter() - t0, ""


def _median_ms(exe, inputs, reps: int) -> float:
    exe(inputs)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        exe(inputs)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _run_case(name: str, train: bool, reps: int, gpu: bool) -> tuple[bool, str]:
    import numpy as np

    import backends
    from graphdsl.cli.tvm_cmd import model_case
    graph, inputs = model_case(name, train=train)
    exe = backends.compile(graph, "cuda")              # a cache hit: compiled by a worker
    if not gpu:
        return True, f"PTX {len(exe.ptx()) // 1024} KiB (no GPU: not run)"
    ref = backends.compile(graph, "numpy")
    want, got = ref(inputs), exe(inputs)
    worst, ok = 0.0, True
    for k in want:
        w, g = np.asarray(want[k], np.float64), np.asarray(got[k], np.float64)
        worst = max(worst, float(np.max(np.abs(g - w), initial=0.0)))
        ok &= bool(np.allclose(g, w, atol=ATOL, rtol=RTOL, equal_nan=True))
    t_gpu, t_np = _median_ms(exe, inputs, reps), _median_ms(ref, inputs, max(1, reps // 2))
    return ok, f"cuda {t_gpu:8.2f} ms  numpy {t_np:8.1f} ms  max abs err {worst:.2e}"


def main() -> int:
    import models
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(models.names()))
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    names = [m for m in args.models.split(",") if m]
    cases = [(n, train) for n in names for train in (False, True)]

    from backends.tvm.cuda import gpu_available
    gpu = gpu_available()
    print(f"{len(cases)} cases, {args.workers} compile workers, GPU: {'yes' if gpu else 'NO (compile only)'}",
          flush=True)
    t0 = time.perf_counter()
    compiled = {}
    with cf.ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for name, train, seconds, error in pool.map(_compile_case, *zip(*cases)):
            compiled[(name, train)] = (seconds, error)
    print(f"compiled in {time.perf_counter() - t0:.0f} s", flush=True)

    failures = 0
    for name, train in cases:
        seconds, error = compiled[(name, train)]
        label = f"{name:<18} {'train step' if train else 'forward':<10} compile {seconds:6.1f} s"
        if error:
            failures += 1
            print(f"{label}  FAILED to compile: {error}", flush=True)
            continue
        ok, line = _run_case(name, train, args.reps, gpu)
        failures += not ok
        print(f"{label}  {line}{'' if ok else '  DISAGREES'}", flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s, {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
