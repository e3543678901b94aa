"""GFLOP/s of our llvm matmul schedule against NumPy (OpenBLAS) on the same shapes, in one process.

Shapes: BERT-base's largest matmul (the FFN's [tokens, 768] @ [768, 3072]) at batch 1 and 8 (seq
128), and 1024^3. Each is traced with static sizes and, for the token axis, with a symbolic one
(how models are traced: one build for every batch size), so the cost of symbolic shapes shows.
Operands are 64-byte aligned, so both sides time the multiplication, not copies.

    .venv/bin/python benchmarks/tvm_matmul.py [--reps 20]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import backends
import graphdsl as gd

SHAPES = [(128, 768, 3072), (1024, 768, 3072), (1024, 1024, 1024)]


def aligned(arr: np.ndarray) -> np.ndarray:
    """A 64-byte aligned copy: the llvm executable then passes it to the kernel without copying."""
    buf = np.empty(arr.nbytes + 64, np.uint8)
    start = (-buf.ctypes.data) % 64
    out = buf[start:start + arr.nbytes].view(arr.dtype).reshape(arr.shape)
    out[...] = arr
    return out


def _median_s(fn, reps: int, warmup_s: float = 0.5) -> float:
    """Median seconds of ``reps`` calls, after ``warmup_s`` seconds of untimed calls: the target
    timed before keeps its worker threads spinning for a while (OpenBLAS's after a NumPy matmul),
    and without the warm-up the first llvm figures of a shape came out 1.5x too slow."""
    until = time.perf_counter() + warmup_s
    while time.perf_counter() < until:
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for m, k, n in SHAPES:
        a = aligned(rng.standard_normal((m, k)).astype(np.float32))
        b = aligned(rng.standard_normal((k, n)).astype(np.float32))
        gflop = 2 * m * k * n / 1e9
        t_np = _median_s(lambda: a @ b, args.reps)
        line = f"[{m},{k}] @ [{k},{n}]: numpy {gflop / t_np:6.0f} GFLOP/s"
        for rows in (str(m), "tokens"):
            graph = gd.trace(lambda x, w: x @ w, x=f"f32[{rows},{k}]", w=f"f32[{k},{n}]")
            exe = backends.compile(graph, "llvm", cache=False)
            assert np.allclose(exe(x=a, w=b)["out"], a @ b, rtol=1e-3, atol=1e-2)
            t = _median_s(lambda: exe(x=a, w=b), args.reps)
            kind = "static" if rows == str(m) else "symbolic rows"
            line += f" | llvm {kind} {gflop / t:6.0f} GFLOP/s ({t_np / t:.0%} of numpy)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
