"""The fused llvm attention backward (backends/tvm/kernels/attention_grad.py) against a plain NumPy
formula.

One graph holds every case (one build): the gradients w.r.t. q, k and v of attention with no
mask, causal with Sq == Sk and Sq < Sk, a [B,1,1,Sk] padding bias with fully masked rows, a full
[B,H,Sq,Sk] bias, and symbolic batch/seq run at two shapes (rows and keys not multiples of the
kernel's row block and key tile); plus two attentions whose graph wants only some of the
gradients (the kernel computes just those). Head dims differ (D 16, Dv 32) so that q/k and v
mix-ups show. Then: the lowering used one fused kernel per attention, and a whole training graph
(attention inside a loss, differentiated by graphdsl.grad) matches the NumPy backend.

Dropout has a graph of its own (DROPOUT), checked against the NumPy backend, whose reference
stores the mask: the kernel must redraw exactly that mask from the element indices, for two
seeds (one negative) and symbolic dims at two shapes.
"""
from __future__ import annotations

import numpy as np
import pytest

import backends
import graphdsl as gd
from graphdsl import ops
from graphdsl.ops.attention import attention, attention_grad
from tests.attention_formula import attention_f64

H, D, DV, SCALE = 3, 16, 32, 0.3
TYPES = {"q": "f32[2,3,5,16]", "ql": "f32[2,3,9,16]", "k": "f32[2,3,9,16]", "v": "f32[2,3,9,32]",
         "g": "f32[2,3,5,32]", "gl": "f32[2,3,9,32]", "pad": "f32[2,1,1,9]", "full": "f32[2,3,9,9]",
         "sq": "f32[batch,3,seq,16]", "sk": "f32[batch,3,kv,16]", "sv": "f32[batch,3,kv,32]",
         "sg": "f32[batch,3,seq,32]", "spad": "f32[batch,1,1,kv]"}
CASES = ["plain", "causal_square", "causal_short_q", "padding_bias", "full_bias", "symbolic"]
SUBSETS = {"only_k": ("k",), "q_and_v": ("q", "v")}   # attentions of scale 2 * SCALE, no bias
DROPOUT = {   # case -> names of q, k, v, bias, g in TYPES, causal, dropout_p, salt, the gradients wanted
    "causal_padding": ("q", "k", "v", "pad", "g", True, 0.3, 0, "qkv"),   # batch 0: rows fully masked
    "symbolic": ("sq", "sk", "sv", "spad", "sg", True, 0.5, 11, "qkv"),
    "only_v": ("ql", "k", "v", "full", "gl", False, 0.2, 5, "v"),         # dropped p without ds
    "q_and_k": ("ql", "k", "v", None, "gl", True, 0.2, 5, "qk"),          # dropped dp without dv
}
SEEDS = (7, -123456789)


def _operands(x: dict) -> dict:
    """case -> (q, k, v, bias, g, causal), for the graph (tensors) and the formula (arrays) alike."""
    return {
        "plain": (x["q"], x["k"], x["v"], None, x["g"], False),
        "causal_square": (x["ql"], x["k"], x["v"], None, x["gl"], True),
        "causal_short_q": (x["q"], x["k"], x["v"], None, x["g"], True),
        "padding_bias": (x["q"], x["k"], x["v"], x["pad"], x["g"], False),
        "full_bias": (x["ql"], x["k"], x["v"], x["full"], x["gl"], True),
        "symbolic": (x["sq"], x["sk"], x["sv"], x["spad"], x["sg"], True),
        "only_k": (x["q"], x["k"], x["v"], None, x["g"], True),
        "q_and_v": (x["ql"], x["k"], x["v"], None, x["gl"], False),
    }


def _body(**x):
    out = {}
    for case, (q, k, v, bias, g, causal) in _operands(x).items():
        rest = [bias] if bias is not None else []
        scale = 2 * SCALE if case in SUBSETS else SCALE
        for wrt in SUBSETS.get(case, "qkv"):
            out[f"{case}/{wrt}"] = attention_grad(q, k, v, *rest, g, wrt=wrt, scale=scale, causal=causal)
    return out


def _expected(q, k, v, bias, g, causal, scale):
    """{q, k, v: gradient} in float64 (tests/attention_formula.py)."""
    full = attention_f64(q, k, v, bias, causal, scale, g)
    return {w: full[w] for w in "qkv"}


def _feed(b: int, s: int) -> dict:
    rng = np.random.default_rng(b * 100 + s)
    shapes = {n: [int(d) for d in t[4:-1].split(",")] for n, t in TYPES.items() if "batch" not in t}
    shapes.update(sq=[b, H, s, D], sk=[b, H, s + 3, D], sv=[b, H, s + 3, DV], sg=[b, H, s, DV],
                  spad=[b, 1, 1, s + 3])
    x = {n: rng.standard_normal(shape).astype(np.float32) for n, shape in shapes.items()}
    x["pad"][0] = -np.inf             # batch 0: every key hidden, its rows give nothing
    x["pad"][1, ..., 4:] = -np.inf    # batch 1: keys 4.. hidden
    x["spad"][-1, ..., -2:] = -1e9
    return x


@pytest.fixture(scope="module")
def graph():
    return gd.trace(_body, **TYPES)


@pytest.fixture(scope="module")
def compiled(graph):
    return backends.compile(graph, "llvm")


@pytest.fixture(scope="module")
def dropout_graph():
    def body(seed, **x):
        out = {}
        for case, (q, k, v, bias, g, causal, p, salt, wanted) in DROPOUT.items():
            rest = ([x[bias]] if bias else []) + [seed, x[g]]
            for wrt in wanted:
                out[f"{case}/{wrt}"] = attention_grad(x[q], x[k], x[v], *rest, wrt=wrt, scale=SCALE,
                                                      causal=causal, dropout_p=p, salt=salt)
        return out
    return gd.trace(body, seed="i32[]", **TYPES)


@pytest.fixture(scope="module")
def dropout_compiled(dropout_graph):
    return backends.compile(dropout_graph, "llvm"), backends.compile(dropout_graph, "numpy")


@pytest.mark.parametrize("b,s", [(2, 7), (3, 33)])
def test_fused_attention_grad_matches_numpy(compiled, b, s):
    feed = _feed(b, s)
    got = compiled(feed)
    for case, (q, k, v, bias, g, causal) in _operands(feed).items():
        want = _expected(q, k, v, bias, g, causal, 2 * SCALE if case in SUBSETS else SCALE)
        for wrt in SUBSETS.get(case, "qkv"):
            out = got[f"{case}/{wrt}"]
            assert out.dtype == np.float32 and out.shape == want[wrt].shape, f"{case}/{wrt}"
            np.testing.assert_allclose(out, want[wrt], rtol=1e-4, atol=1e-5, err_msg=f"{case}/{wrt}")
    for wrt in "qkv":   # batch 0 of the padding case sees no key: zeros, not NaN
        assert np.all(got[f"padding_bias/{wrt}"][0] == 0)


def test_lowering_uses_one_fused_kernel_per_attention(graph):
    from backends.tvm.build import schedule_report
    from backends.tvm.kernels.attention_grad import RULE
    from backends.tvm.lower import lower
    from backends.tvm.target import make_target
    report = schedule_report(lower(graph, "llvm").mod, make_target("llvm"))
    fused = [name for name, rule in report.items() if rule == RULE]
    assert len(fused) == len(CASES) + len(SUBSETS), report
    assert not any("softmax" in name for name in report), report


@pytest.mark.parametrize("dropout_p", [0.0, 0.25])
def test_training_graph_matches_numpy(dropout_p):
    """attention inside a loss, differentiated by graphdsl.grad: the llvm build uses the fused
    kernel for the backward and matches the NumPy backend (with dropout: the backward redraws
    the forward's mask)."""
    from backends.tvm.build import schedule_report
    from backends.tvm.kernels.attention_grad import RULE
    from backends.tvm.lower import lower
    from backends.tvm.target import make_target

    def loss(x, mask, wq, wk, wv):
        split = [x.shape[0], x.shape[1], 2, 8]
        q, k, v = ((x @ w).reshape(split).transpose(1, 2) for w in (wq, wk, wv))
        out = attention(q, k, v, mask, seed=-5 if dropout_p else None, scale=8 ** -0.5, causal=True,
                        dropout_p=dropout_p, salt=3)
        return {"loss": ops.sum(ops.tanh(out) * out)}
    graph = gd.grad(gd.trace(loss, x="f32[batch,seq,16]", mask="f32[batch,1,1,seq]", wq="f32[16,16]",
                             wk="f32[16,16]", wv="f32[16,16]"), wrt=["x", "wq", "wk", "wv"])
    report = schedule_report(lower(graph, "llvm").mod, make_target("llvm"))
    assert list(report.values()).count(RULE) == 1, report
    rng = np.random.default_rng(0)
    feed = {"x": rng.standard_normal((3, 11, 16)).astype(np.float32),
            "mask": np.zeros((3, 1, 1, 11), np.float32),
            **{w: (rng.standard_normal((16, 16)) / 4).astype(np.float32) for w in ("wq", "wk", "wv")}}
    feed["mask"][1, ..., 7:] = -np.inf
    want, got = backends.compile(graph, "numpy")(feed), backends.compile(graph, "llvm")(feed)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("b,s", [(2, 7), (3, 33)])
def test_fused_attention_grad_with_dropout_matches_numpy(dropout_compiled, b, s, seed):
    feed = {**_feed(b, s), "seed": np.array(seed, np.int32)}
    llvm, numpy = dropout_compiled
    got, want = llvm(feed), numpy(feed)
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == np.float32 and got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)
    for wrt in "qkv":   # batch 0 sees no key: zeros, not NaN
        assert np.all(got[f"causal_padding/{wrt}"][0] == 0)


def test_dropout_lowering_uses_the_fused_kernel(dropout_graph):
    from backends.tvm.build import schedule_report
    from backends.tvm.kernels.attention_grad import RULE
    from backends.tvm.lower import lower
    from backends.tvm.target import make_target
    report = schedule_report(lower(dropout_graph, "llvm").mod, make_target("llvm"))
    assert list(report.values()).count(RULE) == len(DROPOUT), report
    assert not any("softmax" in name or "dropout" in name for name in report), report
