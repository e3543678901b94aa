"""The fused llvm attention kernel (backends/tvm/kernels/attention.py) against a plain NumPy formula.

One graph holds every case (one build): no mask, causal with Sq == Sk and Sq < Sk, a [B,1,1,Sk]
padding bias with a fully masked row, a full [B,H,Sq,Sk] bias, and symbolic batch/seq run at two
shapes (one not a multiple of the kernel's row block and key padding). A last test checks that
the lowering really used the fused kernel. With dropout (the kernel redraws the reference's mask
from each element's index) the kernel is checked against the NumPy backend, at several seeds, and
inside a training graph differentiated by graphdsl.grad.
"""
from __future__ import annotations

import numpy as np
import pytest

import backends
import graphdsl as gd
from graphdsl import ops
from graphdsl.ops.attention import attention

H, D, SCALE = 3, 16, 0.3
STATIC = {"q": (2, H, 5, D), "k": (2, H, 9, D), "pad": (2, 1, 1, 9), "full": (2, H, 9, 9)}
TYPES = {"q": "f32[2,3,5,16]", "k": "f32[2,3,9,16]", "kl": "f32[2,3,9,16]", "pad": "f32[2,1,1,9]",
         "full": "f32[2,3,9,9]", "sq": "f32[batch,3,seq,16]", "sk": "f32[batch,3,kv,16]",
         "spad": "f32[batch,1,1,kv]"}
DROPOUT = {   # case -> names of q, k, v, bias in TYPES (or None), causal, dropout_p, salt
    "plain": ("q", "k", "k", None, False, 0.2, 0),
    "causal_padding": ("q", "k", "k", "pad", True, 0.3, 1),   # batch 0 sees no key
    "full_bias": ("kl", "kl", "kl", "full", False, 0.1, 5),
    "symbolic": ("sq", "sk", "sk", "spad", True, 0.5, 7),
}
SEEDS = [0, -123456, 987654321]


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
    return gd.trace(_body, **TYPES)


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


@pytest.fixture(scope="module")
def dropout_graph():
    def body(seed, **x):
        return {case: attention(x[q], x[k], x[v], x[bias] if bias else None, seed, scale=SCALE, causal=causal,
                                dropout_p=p, salt=salt)
                for case, (q, k, v, bias, causal, p, salt) in DROPOUT.items()}
    return gd.trace(body, seed="i32[]", **TYPES)


@pytest.fixture(scope="module")
def dropout_compiled(dropout_graph):
    return backends.compile(dropout_graph, "llvm"), backends.compile(dropout_graph, "numpy")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("b,s", [(2, 7), (3, 33)])
def test_fused_attention_with_dropout_matches_numpy(dropout_compiled, b, s, seed):
    feed = {**_feed(np.random.default_rng(b * 100 + s), b, s), "seed": np.array(seed, np.int32)}
    llvm, numpy = dropout_compiled
    got, want = llvm(feed), numpy(feed)
    assert set(got) == set(DROPOUT)
    for case in DROPOUT:
        assert got[case].dtype == np.float32 and got[case].shape == want[case].shape, case
        np.testing.assert_allclose(got[case], want[case], rtol=1e-4, atol=1e-5, err_msg=case)
    assert np.all(got["causal_padding"][0] == 0)   # fully masked rows are zeros, not NaN


def test_dropout_lowering_uses_the_fused_kernel(dropout_graph):
    from backends.tvm.build import schedule_report
    from backends.tvm.kernels.attention import RULE
    from backends.tvm.lower import lower
    from backends.tvm.target import make_target
    report = schedule_report(lower(dropout_graph, "llvm").mod, make_target("llvm"))
    assert list(report.values()).count(RULE) == len(DROPOUT), report
    assert not any("softmax" in name or "dropout" in name for name in report), report


def test_training_graph_with_dropout_matches_numpy():
    """attention with dropout inside a loss, differentiated by graphdsl.grad: the llvm build runs
    the forward in the fused kernel (the backward redraws the same mask) and matches NumPy."""
    from backends.tvm.build import schedule_report
    from backends.tvm.kernels.attention import RULE
    from backends.tvm.lower import lower
    from backends.tvm.target import make_target

    def loss(x, mask, seed, wq, wk, wv):
        split = [x.shape[0], x.shape[1], 2, 8]
        q, k, v = ((x @ w).reshape(split).transpose(1, 2) for w in (wq, wk, wv))
        out = attention(q, k, v, mask, seed, scale=8 ** -0.5, causal=True, dropout_p=0.2, salt=4)
        return {"loss": ops.sum(ops.tanh(out) * out)}
    graph = gd.grad(gd.trace(loss, x="f32[batch,seq,16]", mask="f32[batch,1,1,seq]", seed="i32[]",
                             wq="f32[16,16]", wk="f32[16,16]", wv="f32[16,16]"), wrt=["x", "wq", "wk", "wv"])
    report = schedule_report(lower(graph, "llvm").mod, make_target("llvm"))
    assert list(report.values()).count(RULE) == 1, report
    rng = np.random.default_rng(1)
    feed = {"x": rng.standard_normal((3, 11, 16)).astype(np.float32),
            "mask": np.zeros((3, 1, 1, 11), np.float32), "seed": np.array(-42, np.int32),
            **{w: (rng.standard_normal((16, 16)) / 4).astype(np.float32) for w in ("wq", "wk", "wv")}}
    feed["mask"][1, ..., 7:] = -np.inf
    want, got = backends.compile(graph, "numpy")(feed), backends.compile(graph, "llvm")(feed)
    assert set(got) == set(want) and "grad/wq" in got
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)
