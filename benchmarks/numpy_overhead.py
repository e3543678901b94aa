"""How much the NumPy reference backend costs over the same math written by hand in NumPy.

A BERT-mini encoder (4 layers, hidden 256, 4 heads, FFN 1024) forward on a [8, 128] batch with a
padding mask, run side by side with a hand-written NumPy version of the same layers, in one process,
alternating runs so machine noise hits both alike. Prints the median times and their ratio.

    .venv/bin/python benchmarks/numpy_overhead.py [--reps 7]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy.special import erf

import backends
import graphdsl as gd
from graphdsl import nn

LAYERS, HIDDEN, HEADS, FFN, BATCH, SEQ = 4, 256, 4, 1024, 8, 128


def hand_written(params: dict, x: np.ndarray, mask_bias: np.ndarray) -> np.ndarray:
    """The encoder in plain NumPy, float32 throughout, as one would write it by hand."""
    def linear(h, name):
        return h @ params[f"{name}.weight"] + params[f"{name}.bias"]

    def layer_norm(h, name, eps=1e-5):
        mu = h.mean(-1, keepdims=True)
        var = ((h - mu) ** 2).mean(-1, keepdims=True)
        return (h - mu) / np.sqrt(var + eps) * params[f"{name}.weight"] + params[f"{name}.bias"]

    dh = HIDDEN // HEADS
    for i in range(LAYERS):
        p = f"layers.{i}"
        heads = [linear(x, f"{p}.attn.{n}").reshape(BATCH, SEQ, HEADS, dh).transpose(0, 2, 1, 3)
                 for n in "qkv"]
        scores = heads[0] @ heads[1].transpose(0, 1, 3, 2) * np.float32(1 / np.sqrt(dh)) + mask_bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        attn = (probs @ heads[2]).transpose(0, 2, 1, 3).reshape(BATCH, SEQ, HIDDEN)
        x = layer_norm(x + linear(attn, f"{p}.attn.o"), f"{p}.norm1")
        h = linear(x, f"{p}.ffn.fc1")
        h = 0.5 * h * (1 + erf(h / np.float32(np.sqrt(2))))
        x = layer_norm(x + linear(h, f"{p}.ffn.fc2"), f"{p}.norm2")
    return x


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()

    encoder = nn.TransformerEncoder(LAYERS, d_model=HIDDEN, n_heads=HEADS, d_ff=FFN, dropout=0.0).eval()
    params = encoder.init(seed=0)
    graph = gd.trace(lambda x, bias: encoder(x, mask=bias), params=encoder,
                     x="f32[batch,seq,256]", bias="f32[batch,1,1,seq]")
    exe = backends.compile(graph, "numpy")

    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, SEQ, HIDDEN)).astype(np.float32)
    bias = np.zeros((BATCH, 1, 1, SEQ), np.float32)
    bias[:, :, :, 100:] = np.finfo(np.float32).min

    ours = exe(x=x, bias=bias, **params)["out"]
    ref = hand_written(params, x, bias)
    print(f"outputs agree: max abs diff {np.abs(ours - ref).max():.2e}")

    t_ours, t_hand = [], []
    for _ in range(args.reps):
        t0 = time.perf_counter(); exe(x=x, bias=bias, **params); t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); hand_written(params, x, bias); t_hand.append(time.perf_counter() - t0)
    a, b = statistics.median(t_ours), statistics.median(t_hand)
    print(f"BERT-mini forward [{BATCH}x{SEQ}], median of {args.reps}: graphdsl numpy {1e3 * a:.1f} ms, "
          f"hand-written numpy {1e3 * b:.1f} ms, ratio {a / b:.2f}")


if __name__ == "__main__":
    main()
