"""The one-kernel LayerNorm (backends/tvm/kernels/norm.py) against the generic rows it replaces.

For each shape, ``add_layer_norm(x, residual, w, b)`` and ``layer_norm(x, w, b)`` compiled for
llvm twice in one process: with the kernel rows, and with them disabled (the residual add, then
Relax reductions that FuseOps makes two kernels). Calls of the two take turns in blocks so that
machine noise hits both alike; prints median microseconds and the ratio kernel / generic.

    .venv/bin/python benchmarks/tvm_layer_norm.py [--reps 200]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import backends
import graphdsl as gd
from backends.tvm.rules.fused import add_layer_norm_kernel
from backends.tvm.rules.nn import layer_norm_kernel
from backends.tvm.table import TVM
from graphdsl import ops

SHAPES = [(1, 128, 128), (8, 128, 256), (8, 128, 768), (32, 128, 768)]


def graphs(shape):
    b, s, h = shape
    x = f"f32[{b},{s},{h}]"
    return {"add_layer_norm": gd.trace(lambda x, r, w, b: ops.add_layer_norm(x, r, w, b), x=x, r=x,
                                       w=f"f32[{h}]", b=f"f32[{h}]"),
            "layer_norm": gd.trace(lambda x, w, b: ops.layer_norm(x, w, b), x=x, w=f"f32[{h}]", b=f"f32[{h}]")}


def timed(exe, feed, reps: int) -> list[float]:
    exe(feed)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        exe(feed)
        out.append(time.perf_counter() - t0)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'op':16} {'shape':>14} {'kernel us':>10} {'generic us':>11} {'ratio':>6}")
    for shape in SHAPES:
        for name, graph in graphs(shape).items():
            feed = {k: rng.standard_normal(tuple(n.type.shape)).astype(np.float32) for k, n in graph.inputs.items()}
            kernel = backends.compile(graph, "llvm", cache=False)
            with TVM.disabled(layer_norm_kernel, add_layer_norm_kernel):
                generic = backends.compile(graph, "llvm", cache=False)
            want = backends.compile(graph, "numpy")(feed)["out"]
            for exe in (kernel, generic):
                np.testing.assert_allclose(exe(feed)["out"], want, atol=1e-4, rtol=1e-4)
            times = {"kernel": [], "generic": []}
            for _ in range(10):   # blocks taking turns
                for k, exe in (("kernel", kernel), ("generic", generic)):
                    times[k] += timed(exe, feed, max(1, args.reps // 10))
            med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
            print(f"{name:16} {'x'.join(map(str, shape)):>14} {med['kernel']:10.1f} {med['generic']:11.1f} "
                  f"{med['kernel'] / med['generic']:6.2f}")


if __name__ == "__main__":
    main()
