"""The fused llvm attention kernel (backends/tvm/kernels/attention.py) against a plain NumPy formula.

One graph holds every case (one build): no mask, causal with Sq == Sk and Sq < Sk, a [B,1,1,Sk]
padding bias with a fully masked row, a full [B,H,Sq,Sk] bias, and symbolic batch/seq run at two
shapes (one not a multiple of the kernel's row block and key padding). A last test checks that
the lowering really used the fused kernel.
"""
from __future__ import annotations

import numpy as np
import pytest

import backends
import graphdsl as gd
from graphdsl.ops.attention import attention

H, D, SCALE = 3, 16, 0.3
STATIC = {"q": (2, H, 5, D), "k": (2, H, 9, D), "pad": (2, 1, 1, 9), "full": (2, H, 9, 9)}


def _body(q, k, kl, pad, full, sq, sk, spad):
    """kl is k of the same length as itself (Sq == Sk cases); sq/sk/spad have symbolic sizes."""
    return {
        "plain": attention(q, k, k, scale=SCALE),
        "causal_square": attention(kl, kl, kl, scale=SCALE, causal=True),
        "causal_short_q": attention(q, k, k, scale=SCALE, causal=True),
        "padding_bias": attention(q, k, k, pad, scale=SCALE),
        "full_bias": attention(kl, kl, kl, full, scale=SCALE, causal=True),
        "symbolic": attention(sq, sk, sk, spad, scale=SCALE, causal=True),
    }


def _expected(q, k, v, bias, causal):
    """softmax(SCALE * q k^T + bias, masked) @ v, row by row; rows with no visible key give zeros."""
    sq, sk = q.shape[-2], k.shape[-2]
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for idx in np.ndindex(*q.shape[:-2]):
        for i in range(sq):
            s = np.array([SCALE * float(np.dot(q[idx][i], k[idx][j])) for j in range(sk)])
            if bias is not None:
                b = bias[tuple(0 if n == 1 else x for n, x in zip(bias.shape, idx))]
                s = s + b[0 if b.shape[0] == 1 else i]
            if causal:
                s[np.arange(sk) > i + sk - sq] = -np.inf
            if np.isneginf(s.max()):
                continue
            w = np.exp(s - s.max())
            out[idx][i] = (w / w.sum()) @ v[idx].astype(np.float64)
    return out


def _feed(rng, b, s):
    x = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in
         [("q", STATIC["q"]), ("k", STATIC["k"]), ("kl", (2, H, 9, D)), ("full", STATIC["full"]),
          ("sq", (b, H, s, D)), ("sk", (b, H, s + 3, D))]}
    pad = np.zeros(STATIC["pad"], np.float32)
    pad[1, ..., 4:] = -np.inf      # batch 1: keys 4.. hidden
    pad[0, ..., :] = -np.inf       # batch 0: every key hidden -> its rows are zeros
    spad = np.zeros((b, 1, 1, s + 3), np.float32)
    spad[-1, ..., -2:] = -1e9
    return {**x, "pad": pad, "spad": spad}


def _cases(x):
    return {
        "plain": (x["q"], x["k"], x["k"], None, False),
        "causal_square": (x["kl"], x["kl"], x["kl"], None, True),
        "causal_short_q": (x["q"], x["k"], x["k"], None, True),
        "padding_bias": (x["q"], x["k"], x["k"], x["pad"], False),
        "full_bias": (x["kl"], x["kl"], x["kl"], x["full"], True),
        "symbolic": (x["sq"], x["sk"], x["sk"], x["spad"], True),
    }


@pytest.fixture(scope="module")
def graph():
    return gd.trace(_body, q="f32[2,3,5,16]", k="f32[2,3,9,16]", kl="f32[2,3,9,16]", pad="f32[2,1,1,9]",
                    full="f32[2,3,9,9]", sq="f32[batch,3,seq,16]", sk="f32[batch,3,kv,16]",
                    spad="f32[batch,1,1,kv]")


@pytest.fixture(scope="module")
def compiled(graph):
    return backends.compile(graph, "llvm")


@pytest.mark.parametrize("b,s", [(2, 7), (3, 33)])
@pytest.mark.parametrize("case", ["plain", "causal_square", "causal_short_q", "padding_bias", "full_bias",
                                  "symbolic"])
def test_fused_attention_matches_numpy(compiled, case, b, s):
    feed = _feed(np.random.default_rng(b * 100 + s), b, s)
    got = compiled(feed)[case]
    want = _expected(*_cases(feed)[case])
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    if case == "padding_bias":
        assert np.all(got[0] == 0)   # fully masked rows are zeros, not NaN


def test_lowering_uses_the_fused_kernel(graph):
    from backends.tvm.build import schedule_report
    from backends.tvm.kernels.attention import RULE
    from backends.tvm.lower import lower
    from backends.tvm.target import make_target
    report = schedule_report(lower(graph, "llvm").mod, make_target("llvm"))
    fused = [name for name, rule in report.items() if rule == RULE]
    assert len(fused) == 6, report
    assert not any("softmax" in name for name in report), report
