"""Counter-based random numbers, dropout and the fused attention op, beyond what the op tables check.

Random bits are compared with the hash computed in plain Python ints; attention with the textbook
softmax(q k^T * s + b) v written in NumPy; gradients with central differences; symbolic dims with
concrete runs.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import backends
import graphdsl
from graphdsl import ops
from graphdsl.autodiff import grad
from graphdsl.dtypes import finfo_min, float16
from graphdsl.errors import GraphDSLError
from tests.optable.random import py_uniform


def run(fn, **inputs):
    """Trace ``fn`` over the given arrays, run it on the NumPy backend, return the outputs."""
    specs = {k: (np.shape(v), np.asarray(v).dtype) for k, v in inputs.items()}
    g = graphdsl.trace(fn, **specs)
    return backends.compile(g, "numpy")(**inputs)


def uniform_draw(shape, seed, salt=0):
    return run(lambda s: ops.random_uniform(s, shape, salt=salt), s=np.int32(seed))["out"]


# -- random_uniform -------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,salt", [(0, 0), (42, 0), (42, 7), (-1, 3), (2 ** 31 - 1, 2 ** 20)])
def test_uniform_matches_the_hash_in_python_ints(seed, salt):
    u = uniform_draw((50, 40), seed, salt)
    assert u.dtype == np.float32
    for index in (0, 1, 2, 41, 999, 1999):
        want = py_uniform(index, seed & 0xFFFFFFFF, salt)
        assert u.ravel()[index] == np.float32(want), f"index {index}: {u.ravel()[index]} vs {want}"


def test_uniform_accepts_a_python_int_seed():
    u = run(lambda x: x + ops.random_uniform(5, (3,)), x=np.zeros(3, np.float32))["out"]
    assert u.tolist() == [np.float32(py_uniform(i, 5, 0)) for i in range(3)]


def test_uniform_is_uniform():
    u = uniform_draw((200_000,), 2024).astype(np.float64)
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005
    hist, _ = np.histogram(u, bins=20, range=(0.0, 1.0))
    np.testing.assert_allclose(hist / u.size, 1 / 20, atol=0.003)
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01, "neighbouring draws must not correlate"


def test_seeds_and_salts_give_different_streams():
    base = uniform_draw((1000,), 1, 0)
    for other in (uniform_draw((1000,), 2, 0), uniform_draw((1000,), 1, 1)):
        assert np.mean(base == other) < 0.01
    np.testing.assert_array_equal(base, uniform_draw((1000,), 1, 0))


def test_uniform_uses_the_row_major_index():
    flat = uniform_draw((24,), 9, 4)
    np.testing.assert_array_equal(uniform_draw((2, 3, 4), 9, 4).ravel(), flat)


# -- dropout --------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_keeps_one_minus_p_and_scales(p):
    x = np.full((400, 250), 2.0, np.float32)
    y = run(lambda x: ops.dropout(x, 77, p=p, salt=3), x=x)["out"]
    kept = y != 0
    assert abs(kept.mean() - (1 - p)) < 0.01
    np.testing.assert_allclose(y[kept], 2.0 / (1 - p), rtol=1e-6)
    u = uniform_draw(x.shape, 77, 3).astype(np.float64)
    np.testing.assert_array_equal(kept, u >= p)


def test_dropout_gradient_uses_the_forward_mask():
    x = np.random.default_rng(0).standard_normal((6, 7))
    w = np.random.default_rng(1).standard_normal((6, 7))
    g = graphdsl.trace(lambda x, w, seed: {"loss": (ops.dropout(x, seed, p=0.5, salt=4) * w).sum()},
                       x="f64[6,7]", w="f64[6,7]", seed="i32[]")
    out = backends.compile(grad(g, wrt=["x"]), "numpy")(x=x, w=w, seed=np.int32(11))
    keep = uniform_draw((6, 7), 11, 4).astype(np.float64) >= 0.5
    np.testing.assert_allclose(out["grad/x"], w * keep / 0.5)


def test_apply_dropout_uses_the_graph_seed_and_fresh_salts():
    def body(x):
        return ops.apply_dropout(x, 0.5), ops.apply_dropout(x, 0.5), ops.apply_dropout(x, 0.0)

    g = graphdsl.trace(body, x="f32[64,64]")
    assert g.inputs["seed"].type == graphdsl.TensorType((), "int32")
    salts = [n.attrs["salt"] for n in g.nodes if n.op == "dropout"]
    assert len(salts) == 2 and salts[0] != salts[1]
    out = backends.compile(g, "numpy")(x=np.ones((64, 64), np.float32), seed=np.int32(3))
    assert not np.array_equal(out["out0"], out["out1"])
    np.testing.assert_array_equal(out["out2"], 1.0)


def test_apply_dropout_off_when_not_training():
    g = graphdsl.trace(lambda x: ops.apply_dropout(x, 0.5, training=False), x="f32[4]")
    assert "seed" not in g.inputs and g.op_counts() == {}


# -- attention against the textbook -------------------------------------------------------------
def textbook(q, k, v, bias=None, scale=None, causal=False, keep=None, p=0.0):
    """softmax(q k^T * scale + bias) v in NumPy, masked rows as zeros, optional dropout mask."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.einsum("...id,...jd->...ij", q, k) * scale
    if bias is not None:
        s = s + bias
    if causal:
        sq, sk = s.shape[-2:]
        s = np.where(np.tril(np.ones((sq, sk), bool), k=sk - sq), s, -np.inf)
    m = s.max(-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(m), m, 0))
    total = e.sum(-1, keepdims=True)
    probs = np.divide(e, total, out=np.zeros_like(e), where=total > 0)
    if keep is not None:
        probs = probs * keep / (1 - p)
    return np.einsum("...ij,...jd->...id", probs, v)


def _qkv(b=2, h=3, sq=4, sk=6, d=8, dv=5, seed=0):
    r = np.random.default_rng(seed)
    return (r.standard_normal((b, h, sq, d)), r.standard_normal((b, h, sk, d)),
            r.standard_normal((b, h, sk, dv)))


def _attention(**kw):
    return lambda q, k, v, bias=None: ops.attention(q, k, v, bias, **kw)


CASES = {
    "plain": ({}, None),
    "bias": ({}, "bias"),
    "padding_mask": ({}, "padding"),
    "causal_square": ({"causal": True}, None),
    "causal_kv_cache": ({"causal": True}, None),
    "causal_bias_scale": ({"causal": True, "scale": 0.2}, "bias"),
}


def _bias(kind, q, k):
    r = np.random.default_rng(5)
    if kind == "bias":
        return r.standard_normal(q.shape[:-1] + (k.shape[-2],))
    if kind == "padding":  # [B, 1, 1, Sk]: the last two keys of batch 1 are padding
        mask = np.zeros((q.shape[0], 1, 1, k.shape[-2]))
        mask[1, ..., -2:] = finfo_min(graphdsl.float64)
        return mask
    return None


@pytest.mark.parametrize("name", list(CASES))
def test_attention_matches_textbook(name):
    kw, bias_kind = CASES[name]
    q, k, v = _qkv(sq=6 if name == "causal_square" else 4)
    bias = _bias(bias_kind, q, k)
    feeds = {"q": q, "k": k, "v": v} | ({"bias": bias} if bias is not None else {})
    out = run(_attention(**kw), **feeds)["out"]
    np.testing.assert_allclose(out, textbook(q, k, v, bias, **kw), atol=1e-12, rtol=1e-12)


def test_attention_dropout_matches_a_manual_mask():
    q, k, v = _qkv()
    out = run(lambda q, k, v: ops.attention(q, k, v, seed=99, dropout_p=0.3, salt=5), q=q, k=k, v=v)["out"]
    keep = uniform_draw(q.shape[:-1] + (k.shape[-2],), 99, 5).astype(np.float64) >= 0.3
    assert 0.5 < keep.mean() < 0.9
    np.testing.assert_allclose(out, textbook(q, k, v, keep=keep, p=0.3), atol=1e-12)


def test_attention_dropout_needs_a_seed():
    with pytest.raises(GraphDSLError, match=r"needs a seed") as info:
        graphdsl.trace(lambda q: ops.attention(q, q, q, dropout_p=0.1), q="f32[2,4,8]")
    assert "test_random_attention.py" in str(info.value)


def test_attention_broadcasts_batch_dims():
    r = np.random.default_rng(3)
    q, k, v = r.standard_normal((2, 3, 4, 8)), r.standard_normal((2, 1, 5, 8)), r.standard_normal((1, 3, 5, 2))
    out = run(_attention(), q=q, k=k, v=v)["out"]
    assert out.shape == (2, 3, 4, 2)
    np.testing.assert_allclose(out, textbook(q, k, v), atol=1e-12)


def _graph_and_grads(fn, feeds, wrt):
    specs = {k: (np.shape(a), np.asarray(a).dtype) for k, a in feeds.items()}
    w = np.random.default_rng(7).standard_normal(graphdsl.trace(fn, **specs).outputs["out"].type.shape)

    def loss(w, **xs):
        return {"loss": (fn(**xs) * w).sum()}

    g = graphdsl.trace(loss, w=(w.shape, "float64"), **specs)
    return backends.compile(g, "numpy"), backends.compile(grad(g, wrt=wrt), "numpy"), {**feeds, "w": w}


def central_differences(fwd, feeds, name, eps=1e-6):
    x = feeds[name]
    out = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += eps
        minus[idx] -= eps
        out[idx] = (fwd(**{**feeds, name: plus})["loss"] - fwd(**{**feeds, name: minus})["loss"]) / (2 * eps)
    return out


@pytest.mark.parametrize("kw", [{}, {"causal": True}, {"dropout_p": 0.25, "seed": 8, "salt": 2}],
                         ids=["plain", "causal", "dropout"])
def test_attention_gradient_matches_central_differences(kw):
    q, k, v = _qkv(b=1, h=2, sq=3, sk=4, d=3, dv=2, seed=4)
    bias = np.random.default_rng(6).standard_normal((1, 1, 3, 4))
    fwd, bwd, feeds = _graph_and_grads(_attention(**kw), {"q": q, "k": k, "v": v, "bias": bias},
                                       ["q", "k", "v", "bias"])
    got = bwd(**feeds)
    for name in ("q", "k", "v", "bias"):
        np.testing.assert_allclose(got[f"grad/{name}"], central_differences(fwd, feeds, name),
                                   atol=1e-6, rtol=1e-5, err_msg=f"d loss / d {name}")


def test_fully_masked_rows_give_zeros_and_finite_gradients():
    q, k, v = _qkv(b=1, h=1, sq=4, sk=4, d=3, dv=2)
    bias = np.zeros((1, 1, 4, 4))
    bias[..., 2, :] = -np.inf       # query 2 sees nothing through the bias
    fn = _attention(causal=True)
    out = run(fn, q=q, k=k[..., :2, :], v=v[..., :2, :])["out"]  # Sq = 4 > Sk = 2: rows 0, 1 see nothing
    np.testing.assert_array_equal(out[..., :2, :], 0.0)
    assert np.isfinite(out).all()
    fwd, bwd, feeds = _graph_and_grads(_attention(), {"q": q, "k": k, "v": v, "bias": bias},
                                       ["q", "k", "v", "bias"])
    assert np.isfinite(fwd(**feeds)["loss"])
    got = bwd(**feeds)
    for name in ("q", "k", "v", "bias"):
        assert np.isfinite(got[f"grad/{name}"]).all(), name
    np.testing.assert_array_equal(got["grad/q"][..., 2, :], 0.0)
    np.testing.assert_array_equal(got["grad/bias"][..., 2, :], 0.0)


def test_finfo_min_mask_in_float16_has_no_nan():
    q, k, v = (a.astype(np.float16) for a in _qkv(b=1, h=1, sq=3, sk=3, d=4, dv=2))
    bias = np.full((1, 1, 3, 3), finfo_min(float16), np.float16)
    bias[..., 0, :2] = 0
    out = run(_attention(causal=True), q=q, k=k, v=v, bias=bias)["out"]
    assert out.dtype == np.float16 and np.isfinite(out).all()
    np.testing.assert_allclose(out.astype(np.float64)[..., 0, :], v.astype(np.float64)[..., 0, :], atol=2e-3)


# -- the backward op and the decompositions --------------------------------------------------------
def test_the_gradient_graph_uses_attention_grad_and_no_softmax():
    g = graphdsl.trace(lambda q, k, v, b: {"loss": ops.attention(q, k, v, b, seed=3, dropout_p=0.2).sum()},
                       q="f32[2,4,8]", k="f32[2,5,8]", v="f32[2,5,8]", b="f32[4,5]")
    counts = grad(g, wrt=["q", "k", "v", "b"]).op_counts()
    assert counts["attention_grad"] == 4 and "softmax" not in counts, counts


DECOMPOSED = {  # name: (attention kwargs, bias shape or None, seed or None, q/k/v dtype)
    "plain": ({"scale": 0.3}, None, None, np.float64),
    "broadcast_bias": ({}, (4, 5), None, np.float64),
    "causal": ({"causal": True}, (2, 1, 4, 5), None, np.float64),
    "dropout": ({"dropout_p": 0.3, "salt": 4}, (1, 1, 1, 5), 21, np.float64),
    "f16": ({"causal": True}, (1, 1, 4, 5), None, np.float16),
}


@pytest.mark.parametrize("name,wrt", [
    pytest.param(name, wrt, id=f"{wrt or 'forward'}-{name}") for name, case in DECOMPOSED.items()
    for wrt in (None, "q", "k", "v", "bias") if wrt != "bias" or case[1] is not None])
def test_decompositions_compute_the_references(name, wrt):
    """What a backend without a lowering runs is what the NumPy reference computes."""
    kw, bias_shape, seed, dtype = DECOMPOSED[name]
    r = np.random.default_rng(8)
    feeds = {"q": r.standard_normal((2, 3, 4, 6)), "k": r.standard_normal((2, 1, 5, 6)),
             "v": r.standard_normal((1, 3, 5, 2))}
    if bias_shape is not None:
        feeds["bias"] = r.standard_normal(bias_shape)
    if seed is not None:
        feeds["seed"] = np.int32(seed)
    if wrt is not None:
        feeds["g"] = r.standard_normal((2, 3, 4, 2))
    feeds = {n: a.astype(dtype) if a.dtype.kind == "f" else a for n, a in feeds.items()}
    op = ops.attention_grad if wrt is not None else ops.attention_op
    attrs = {"scale": 0.4, "causal": False, "dropout_p": 0.0, "salt": 0, **kw}
    attrs.update({"has_bias": bias_shape is not None}, **({"wrt": wrt} if wrt is not None else {}))
    specs = {n: (a.shape, a.dtype) for n, a in feeds.items()}
    ref = run(lambda **xs: op(*xs.values(), **attrs), **feeds)["out"]
    decomposed = run(lambda **xs: op.decompose(*xs.values(), **attrs), **feeds)["out"]
    graph = graphdsl.trace(lambda **xs: op.decompose(*xs.values(), **attrs), **specs)
    assert graph.op_counts()["softmax"] == 1 and op.name not in graph.op_counts()
    assert decomposed.dtype == ref.dtype and decomposed.shape == ref.shape
    tol = 2e-3 if dtype == np.float16 else 1e-12
    np.testing.assert_allclose(decomposed.astype(np.float64), ref.astype(np.float64), atol=tol, rtol=tol)


# -- symbolic dims ----------------------------------------------------------------------------------
def _symbolic_grads(fn, specs, feeds, wrt):
    g = graphdsl.trace(lambda **xs: {"loss": (fn(**xs) * 1.0).sum()}, **specs)
    return backends.compile(grad(g, wrt=wrt), "numpy")(**feeds)


def test_causal_attention_with_symbolic_lengths():
    """Sk - Sq is only known at run time: the mask offset and the gradient use numel."""
    q, k, v = _qkv(b=1, h=2, sq=3, sk=5, d=4, dv=4, seed=9)
    data = {"q": q, "k": k, "v": v}
    specs = {"q": "f64[1,2,sq,4]", "k": "f64[1,2,sk,4]", "v": "f64[1,2,sk,4]"}
    g = graphdsl.trace(_attention(causal=True), **specs)
    out = backends.compile(g, "numpy")(**data)["out"]
    np.testing.assert_allclose(out, textbook(q, k, v, causal=True), atol=1e-12)
    got = _symbolic_grads(_attention(causal=True), specs, data, ["q", "k", "v"])
    want = _symbolic_grads(_attention(causal=True), {n: (a.shape, a.dtype) for n, a in data.items()}, data,
                           ["q", "k", "v"])
    for name in data:
        np.testing.assert_allclose(got[f"grad/{name}"], want[f"grad/{name}"], atol=1e-12)


@pytest.mark.parametrize("op,specs,feeds", [
    ("layer_norm", {"x": "f64[batch,5]", "w": "f64[5]", "b": "f64[5]"},
     lambda r: {"x": r.standard_normal((3, 5)), "w": r.standard_normal(5), "b": r.standard_normal(5)}),
    ("mse", {"x": "f64[batch,4]", "t": "f64[batch,4]"},
     lambda r: {"x": r.standard_normal((3, 4)), "t": r.standard_normal((3, 4))}),
    ("cross_entropy", {"x": "f64[batch,vocab]", "t": "i64[batch]"},
     lambda r: {"x": r.standard_normal((3, 6)), "t": np.array([1, 5, -100])}),
])
def test_symbolic_gradients_equal_static_ones(op, specs, feeds):
    fn = {"layer_norm": lambda x, w, b: ops.layer_norm(x, w, b),
          "mse": lambda x, t: ops.mse(x, t),
          "cross_entropy": lambda x, t: ops.cross_entropy(x, t, label_smoothing=0.1)}[op]
    data = feeds(np.random.default_rng(2))
    static_specs = {k: (a.shape, a.dtype) for k, a in data.items()}
    wrt = [k for k, a in data.items() if a.dtype.kind == "f"]
    got = _symbolic_grads(fn, specs, data, wrt)
    want = _symbolic_grads(fn, static_specs, data, wrt)
    for name in wrt:
        np.testing.assert_allclose(got[f"grad/{name}"], want[f"grad/{name}"], atol=1e-12)
