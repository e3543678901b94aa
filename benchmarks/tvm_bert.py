"""llvm vs NumPy on a BERT-mini encoder forward, side by side in one process.

The encoder of benchmarks/numpy_overhead.py (4 layers, hidden 256, 4 heads, FFN 1024, padding
mask), batch 8, seq 128, float32, compiled once for the NumPy reference and once for llvm; runs
take turns in blocks so machine noise hits both alike (see _timed). Prints compile time, median
latencies and the ratio.

    .venv/bin/python benchmarks/tvm_bert.py [--reps 15] [--layers 4] [--batch 8] [--seq 128] [--train] [--static]

``--train`` times one AdamW training step of the same encoder (mean of the squared output as the
loss). The graph is traced with symbolic batch and seq (one build serves every shape) unless
``--static`` fixes them: kernels with static shapes get LLVM's alias analysis (TVM passes their
buffers as noalias pointers), which keeps matmul accumulators in registers.
TVM_NUM_THREADS (default: the usable cores) sets the llvm threads.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import backends
import graphdsl as gd
from graphdsl import nn
from graphdsl.optim import AdamW, make_train_step, zero_state

HIDDEN, HEADS, FFN = 256, 4, 1024


def build(layers: int, train: bool, shape: tuple[str, str] = ("batch", "seq")):
    encoder = nn.TransformerEncoder(layers, d_model=HIDDEN, n_heads=HEADS, d_ff=FFN, dropout=0.0).eval()
    params = encoder.init(seed=0)
    b, s = shape
    if train:
        graph = gd.trace(lambda x, bias: {"loss": (encoder(x, mask=bias) ** 2.0).mean()}, params=encoder,
                         x=f"f32[{b},{s},{HIDDEN}]", bias=f"f32[{b},1,1,{s}]")
        graph = make_train_step(graph, AdamW(lr=1e-3))
    else:
        graph = gd.trace(lambda x, bias: encoder(x, mask=bias), params=encoder,
                         x=f"f32[{b},{s},{HIDDEN}]", bias=f"f32[{b},1,1,{s}]")
    return graph, params


def _timed(exe, feed, calls: int) -> list[float]:
    """Seconds of each call after the first of ``calls`` back-to-back calls. The runtimes take
    turns in blocks (three each): after a call OpenBLAS's worker threads spin for ~0.1 s on the
    same two cores, so calls alternating one by one measure each runtime's interference with the
    other more than the runtime itself (llvm measured 2x slower that way)."""
    exe(feed)
    out = []
    for _ in range(calls - 1):
        t0 = time.perf_counter()
        exe(feed)
        out.append(time.perf_counter() - t0)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=15, help="timed calls per target")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--static", action="store_true",
                        help="trace with the batch and seq sizes fixed instead of symbolic")
    args = parser.parse_args()

    shape = (str(args.batch), str(args.seq)) if args.static else ("batch", "seq")
    graph, params = build(args.layers, args.train, shape)
    rng = np.random.default_rng(0)
    feed = {"x": rng.standard_normal((args.batch, args.seq, HIDDEN)).astype(np.float32),
            "bias": np.zeros((args.batch, 1, 1, args.seq), np.float32), **params}
    feed["bias"][:, :, :, args.seq * 3 // 4:] = np.finfo(np.float32).min
    if args.train:
        feed.update({f"state/{k}": v for k, v in zero_state(graph).items()})

    t0 = time.perf_counter()
    llvm = backends.compile(graph, "llvm", cache=False)
    compile_s = time.perf_counter() - t0
    ref = backends.compile(graph, "numpy")

    want, got = ref(feed), llvm(feed)
    err = max(float(np.abs(got[k] - want[k]).max()) for k in want)
    print(f"outputs agree: max abs diff {err:.2e}; llvm compile {compile_s:.1f} s")

    t_llvm, t_np = [], []
    for _ in range(3):
        t_llvm += _timed(llvm, feed, args.reps // 3 + 1)
        t_np += _timed(ref, feed, args.reps // 3 + 1)
    a, b = statistics.median(t_llvm), statistics.median(t_np)
    what = "train step (AdamW)" if args.train else "forward"
    dims = "static" if args.static else "symbolic"
    print(f"BERT-mini encoder {what} [{args.batch}x{args.seq}] ({dims} dims), {args.layers} layers, median of {len(t_llvm)}: "
          f"llvm {1e3 * a:.1f} ms, numpy {1e3 * b:.1f} ms, llvm/numpy {a / b:.2f}")


if __name__ == "__main__":
    main()
