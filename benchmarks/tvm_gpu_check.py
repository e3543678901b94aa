"""Every zoo model on the cuda target against the NumPy reference: forward and one training step.

Run by benchmarks/gpu_check.sh on a machine with an NVIDIA GPU. Compiling (TVM + dlight + nvcc)
is the slow part, so it runs first in parallel worker processes, each compiled module landing in
the compile cache; the main process then loads each from the cache, runs it on the GPU against
NumPy, and prints one line per case with the compile time, the latencies and the worst error.

    python benchmarks/tvm_gpu_check.py [--models bert-tiny,gpt-tiny] [--workers 8] [--reps 5]

Then the attention op alone with BERT-base's heads (q, k, v [batch, 12, seq, 64], a padding bias,
and causal; one build each, run at seq 128, 512, 1024), forward and gradients w.r.t. q, k, v: our FlashAttention kernels against the unfused
lowering (matmul + softmax + matmul, dlight-scheduled), both against NumPy, timed side by side.

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


ATTENTION_SHAPES = [(8, 128), (8, 512), (2, 1024)]   # (batch, seq) with 12 heads of 64, as BERT-base
HEADS, HEAD_DIM = 12, 64


def _attention_graph(causal: bool):
    """attention(q, k, v, padding bias or causal) and its gradients, for any batch and seq."""
    import graphdsl as gd
    from graphdsl.ops.attention import attention

    def body(q, k, v, bias, g):
        out = attention(q, k, v, None if causal else bias, scale=HEAD_DIM ** -0.5, causal=causal)
        return {"out": out, "loss": gd.ops.sum(out * g)}
    qkv = f"f32[batch,{HEADS},seq,{HEAD_DIM}]"
    forward = gd.trace(body, q=qkv, k=qkv, v=qkv, bias="f32[batch,1,1,seq]", g=qkv)
    return gd.grad(forward, wrt=["q", "k", "v"])


def _attention_check(reps: int, gpu: bool) -> int:
    """Flash kernels vs the unfused lowering for the attention op and its gradients."""
    from unittest import mock

    import numpy as np

    import backends
    from backends.tvm.rules import flash
    failures = 0
    for causal in (False, True):
        graph = _attention_graph(causal)
        t0 = time.perf_counter()
        fused = backends.compile(graph, "cuda", cache=False)
        t_fused = time.perf_counter() - t0
        with mock.patch.object(flash, "applies", lambda cx, node: False):
            unfused = backends.compile(graph, "cuda", cache=False)
        kind = "causal" if causal else "padding"
        if not gpu:
            print(f"attention {kind:<7} compile {t_fused:5.1f} s  (no GPU: not run)", flush=True)
            continue
        for b, s in ATTENTION_SHAPES:
            rng = np.random.default_rng(0)
            shape = (b, HEADS, s, HEAD_DIM)
            inputs = {n: rng.standard_normal(shape).astype(np.float32) for n in ("q", "k", "v", "g")}
            inputs["bias"] = np.zeros((b, 1, 1, s), np.float32)
            inputs["bias"][..., s * 3 // 4:] = -1e9
            want, ok = backends.compile(graph, "numpy")(inputs), True
            for exe in (fused, unfused):
                got = exe(inputs)
                ok &= all(np.allclose(got[k], want[k], atol=ATOL, rtol=RTOL) for k in want if k != "loss")
            t_f, t_u = _median_ms(fused, inputs, reps), _median_ms(unfused, inputs, reps)
            failures += not ok
            print(f"attention {kind:<7} b{b} s{s:<5} flash {t_f:7.2f} ms  unfused {t_u:7.2f} ms  "
                  f"ratio {t_f / t_u:4.2f}{'' if ok else '  DISAGREES'}", flush=True)
    return failures


def main() -> int:
    import models
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(models.names()))
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-attention", action="store_true", help="Skip the attention kernel section.")
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
    if not args.no_attention:
        failures += _attention_check(args.reps, gpu)
    print(f"total {time.perf_counter() - t0:.0f} s, {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
