"""The fused llvm attention kernel vs the previous lowering (matmul + masked softmax + matmul).

BERT-mini-shaped attention: q, k, v [8, 4, 128, 64] f32 with a [8, 1, 1, 128] padding bias
(the last quarter of the keys hidden), traced with symbolic batch/seq (as the zoo does) and with
static sizes. Both lowerings are built side by side in one process (the previous one by turning
the fused path off in backends/tvm/rules/attention.py) and timed in alternating blocks.
``--dropout P`` gives the attention dropout (the fused kernel redraws the mask from indices; the
previous lowering applies the dropout op to the [.., Sq, Sk] probabilities).

    .venv/bin/python benchmarks/tvm_attention.py [--reps 30] [--causal] [--dropout P]
    .venv/bin/python benchmarks/tvm_attention.py --encoder [--reps 15]
    .venv/bin/python benchmarks/tvm_attention.py --backward [--reps 30] [--causal] [--dropout P]

``--encoder`` times the BERT-mini encoder forward of benchmarks/tvm_bert.py (batch 8, seq 128,
symbolic dims) with its attention core written as the ``attention`` op (as the fusion pass will
produce it; the encoder itself writes matmul + softmax), fused kernel vs previous lowering.

``--backward`` times the gradients of the same attention w.r.t. q, k and v (three
``attention_grad`` nodes, as graphdsl.grad makes them), symbolic and static dims: the fused
backward kernel (kernels/attention_grad.py; one call for the three) vs the decomposition
lowering (softmax + matmuls per gradient), by turning the fused path off in
backends/tvm/rules/attention_grad.py (``--dropout P`` as for the forward).
"""
from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import numpy as np

import sys
from pathlib import Path

import backends
import graphdsl as gd
from backends.tvm.rules import attention as rule
from backends.tvm.rules import attention_grad as grad_rule
from graphdsl.nn.attention import MultiHeadAttention
from graphdsl.ops.attention import attention, attention_grad

B, H, S, D = 8, 4, 128, 64


def _graph(static: bool, causal: bool, dropout: float = 0.0):
    b, s = (str(B), str(S)) if static else ("batch", "seq")
    qkv = f"f32[{b},{H},{s},{D}]"
    seed = {"seed": "i32[]"} if dropout else {}

    def attend(q, k, v, bias, seed=None):
        return attention(q, k, v, bias, seed, scale=D ** -0.5, causal=causal, dropout_p=dropout)
    return gd.trace(attend, q=qkv, k=qkv, v=qkv, bias=f"f32[{b},1,1,{s}]", **seed)


def _grad_graph(static: bool, causal: bool, dropout: float = 0.0):
    """The gradients of _graph's attention (with ``dropout``) w.r.t. q, k and v, given the output
    cotangent g."""
    b, s = (str(B), str(S)) if static else ("batch", "seq")
    qkv = f"f32[{b},{H},{s},{D}]"
    seed = {"seed": "i32[]"} if dropout else {}

    def grads(q, k, v, bias, g, seed=None):
        rest = [bias] + ([seed] if dropout else []) + [g]
        return {w: attention_grad(q, k, v, *rest, wrt=w, scale=D ** -0.5, causal=causal, dropout_p=dropout)
                for w in "qkv"}
    return gd.trace(grads, q=qkv, k=qkv, v=qkv, bias=f"f32[{b},1,1,{s}]", g=qkv, **seed)


def _timed(exe, feed, calls: int) -> list[float]:
    exe(feed)
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        exe(feed)
        out.append(time.perf_counter() - t0)
    return out


def _attend_fused(self, q, k, v, mask, causal_mask):
    """MultiHeadAttention._attend with its core as the attention op (float mask, no dropout)."""
    out = attention(q, k, v, mask, scale=self.head_dim ** -0.5, causal=causal_mask is not None)
    return self.o(out.transpose(1, 2).reshape(q.shape[0], q.shape[2], self.d_model))


def encoder(reps: int) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import tvm_bert
    with mock.patch.object(MultiHeadAttention, "_attend", _attend_fused):
        graph, params = tvm_bert.build(4, False)
    assert any(n.op == "attention" for n in graph.nodes)
    rng = np.random.default_rng(0)
    feed = {"x": rng.standard_normal((B, S, tvm_bert.HIDDEN)).astype(np.float32),
            "bias": np.zeros((B, 1, 1, S), np.float32), **params}
    feed["bias"][..., S * 3 // 4:] = np.finfo(np.float32).min
    _compare(graph, feed, reps, "BERT-mini encoder forward [8x128] (symbolic dims), attention op")


def _compare(graph, feed, reps: int, what: str, off=rule, baseline: str = "previous") -> None:
    """Time ``graph`` fused against ``baseline``: the build with ``off``'s fused path turned off."""
    want = backends.compile(graph, "numpy")(feed)
    fused = backends.compile(graph, "llvm", cache=False)
    with mock.patch.object(off, "_fusable", lambda *args: False):
        before = backends.compile(graph, "llvm", cache=False)
    for name, exe in (("fused", fused), (baseline, before)):
        got = exe(feed)
        err = max(float(np.abs(got[n] - want[n]).max()) for n in want)
        print(f"{name}: max abs diff vs numpy {err:.1e}")
    times = {"fused": [], baseline: []}
    for _ in range(3):
        for name, exe in (("fused", fused), (baseline, before)):
            times[name] += _timed(exe, feed, max(reps // 3, 1))
    f, p = (1e3 * statistics.median(times[n]) for n in ("fused", baseline))
    print(f"{what}: fused {f:.2f} ms, {baseline} {p:.2f} ms, {baseline}/fused {p / f:.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--encoder", action="store_true", help="the BERT-mini encoder forward instead")
    parser.add_argument("--backward", action="store_true", help="the gradients w.r.t. q, k, v instead")
    parser.add_argument("--dropout", type=float, default=0.0, help="attention dropout P")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    feed = {n: rng.standard_normal((B, H, S, D)).astype(np.float32) for n in "qkv"}
    feed["bias"] = np.zeros((B, 1, 1, S), np.float32)
    feed["bias"][..., S * 3 // 4:] = np.finfo(np.float32).min
    if args.encoder:
        encoder(args.reps)
        return
    if args.backward:
        feed["g"] = rng.standard_normal((B, H, S, D)).astype(np.float32)   # the output's cotangent
    if args.dropout:
        feed["seed"] = np.array(1234, np.int32)
    what = (f"[{B},{H},{S},{D}] + padding bias{' causal' if args.causal else ''}"
            f"{f' dropout {args.dropout}' if args.dropout else ''}")
    for static in (False, True):
        dims = "static" if static else "symbolic"
        if args.backward:
            _compare(_grad_graph(static, args.causal, args.dropout), feed, args.reps,
                     f"attention grads w.r.t. q, k, v {what} ({dims} dims)", grad_rule, "decomposition")
        else:
            _compare(_graph(static, args.causal, args.dropout), feed, args.reps,
                     f"attention {what} ({dims} dims)")


if __name__ == "__main__":
    main()
