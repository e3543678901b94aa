"""Our own ONNX exports fuse again: export, ``from_onnx``, ``passes.optimize`` -> attention ops.

Our exporter writes every softmax with a guard for rows of all -inf,
``where(max(x) == -inf, 0, softmax(x))`` (backends/onnx/lower/nn.py), and a broadcast causal
mask as row and column iotas expanded to the full grid. fuse_attention drops the guard (it is the
identity on our softmax) and fold_masks reads the expanded iotas as the causal flag. GUARDS are the
guard's forms, written by hand; NEAR_MISSES must not fuse; every zoo model's export must fuse
into as many attention ops as the model has blocks. Then ``optimize_file``, file in / file out,
and ``export(contrib_ops=True)``, which writes MultiHeadAttention for fused attention only.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import backends
import graphdsl as gd
import passes
from backends.onnx import export, optimize_file
from graphdsl import dtypes as _dt
from graphdsl import ops
from graphdsl.graph import Graph
from graphdsl.nn import functional as F
from tests.passes_check import assert_same_numbers, count, random_feed

onnx = pytest.importorskip("onnx")
import models  # noqa: E402

B, H, S, D = 2, 2, 5, 4
SCALE = 1.0 / math.sqrt(D)
QKV = {n: f"f32[{B},{H},{S},{D}]" for n in "qkv"}
KEEP_SPEC = dict(QKV, keep=f"bool[{B},1,1,{S}]")
KEEP = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], bool).reshape(B, 1, 1, S)  # row 1: all masked
MIN32 = _dt.finfo_min(_dt.float32)
NEG_INF = float("-inf")


def _scores(q, k, keep=None):
    s = (q @ k.mT) * SCALE
    return s if keep is None else s.masked_fill(~keep, NEG_INF)


def _dead(x):
    """True on rows of all -inf, as the exporter tests it."""
    return x.max(-1, keepdims=True) == NEG_INF


def _guarded(x):
    """What our exporter writes for softmax(x)."""
    return ops.where(_dead(x), 0.0, x.softmax(-1))


def _broadcast_causal(n):
    """The causal mask as our exporter writes F.causal_mask: iotas expanded to [n, n], compared."""
    i = ops.arange(n)
    cols = i.reshape(1, n).broadcast_to((n, n))
    rows = i.reshape(n, 1).broadcast_to((n, n))
    return cols <= rows


# -- the guard's forms: each is one attention op, same numbers (fully masked rows included) ------
GUARDS = [
    ("equal_guard", lambda q, k, v, keep: _guarded(_scores(q, k, keep)) @ v, KEEP_SPEC, True, False),
    ("not_equal_guard_swapped",
     lambda q, k, v, keep: ops.where((s := _scores(q, k, keep)).max(-1, keepdims=True) != NEG_INF,
                                     s.softmax(-1), 0.0) @ v, KEEP_SPEC, True, False),
    ("guard_over_a_where_mask_chain",  # fold_masks leaves it: the chain top also feeds the max
     lambda q, k, v, keep: _guarded(ops.where(keep, _scores(q, k), MIN32)) @ v, KEEP_SPEC, True, False),
    ("guard_with_expanded_iota_causal",
     lambda q, k, v: _guarded(ops.where(_broadcast_causal(S), _scores(q, k), MIN32)) @ v, QKV, False, True),
    ("guard_on_the_upcast_f16",
     lambda q, k, v, keep: _guarded(_scores(q, k, keep).astype("float32")).astype("float16") @ v,
     dict({n: f"f16[{B},{H},{S},{D}]" for n in "qkv"}, keep=KEEP_SPEC["keep"]), True, False),
]


@pytest.mark.parametrize("name,fn,specs,bias,causal", GUARDS, ids=[g[0] for g in GUARDS])
def test_guard_fuses_to_one_attention_op(name, fn, specs, bias, causal):
    g = gd.trace(fn, name=name, **specs)
    fused = passes.optimize(g, 2)
    assert fused.op_counts().get("attention") == 1, f"{name} did not fuse:\n{fused}"
    assert count(fused, "softmax") == 0 and count(fused, "max") == 0, fused.op_counts()
    (att,) = [n for n in fused.nodes if n.op == "attention"]
    assert (att.attrs["has_bias"], att.attrs["causal"]) == (bias, causal)
    feed = random_feed(g, **({"keep": KEEP} if "keep" in specs else {}))
    tol = dict(rtol=2e-3, atol=2e-3) if "f16" in name else None
    assert_same_numbers(g, fused, feed, tol)


def test_guarded_fully_masked_row_is_zero_before_and_after():
    g = gd.trace(GUARDS[0][1], **KEEP_SPEC)
    feed = random_feed(g, keep=KEEP)
    for graph in (g, passes.optimize(g)):
        out = backends.compile(graph, "numpy")(**feed)["out"]
        np.testing.assert_array_equal(out[1], 0.0)


# -- near misses: the guard is not the identity on this softmax, or the block is not contained -----
def _probs_also_returned(q, k, v, keep):
    p = (s := _scores(q, k, keep)).softmax(-1)
    return {"out": ops.where(_dead(s), 0.0, p) @ v, "probs": p}


def _guard_max_also_returned(q, k, v, keep):
    top = (s := _scores(q, k, keep)).max(-1, keepdims=True)
    return {"out": ops.where(top == NEG_INF, 0.0, s.softmax(-1)) @ v, "top": top.exp()}


NEAR_MISSES = [
    ("guard_tests_the_unmasked_scores",
     lambda q, k, v, keep: ops.where(_dead(_scores(q, k)), 0.0, _scores(q, k, keep).softmax(-1)) @ v),
    ("guard_fill_is_not_zero",
     lambda q, k, v, keep: ops.where(_dead(s := _scores(q, k, keep)), 1.0, s.softmax(-1)) @ v),
    ("guard_compares_with_finfo_min",
     lambda q, k, v, keep: ops.where((s := _scores(q, k, keep)).max(-1, keepdims=True) == MIN32, 0.0,
                                     s.softmax(-1)) @ v),
    ("guard_max_over_the_queries",
     lambda q, k, v, keep: ops.where((s := _scores(q, k, keep)).max(-2, keepdims=True) == NEG_INF, 0.0,
                                     s.softmax(-1)) @ v),
    ("softmax_also_returned", _probs_also_returned),
    ("guard_max_also_returned", _guard_max_also_returned),
]


@pytest.mark.parametrize("name,fn", NEAR_MISSES, ids=[n[0] for n in NEAR_MISSES])
def test_near_miss_does_not_fuse(name, fn):
    g = gd.trace(fn, name=name, **KEEP_SPEC)
    assert str(passes.run(g, ["fuse_attention"])) == str(g)
    optimized = passes.optimize(g, 2)
    assert count(optimized, "attention") == 0, optimized
    assert_same_numbers(g, optimized, random_feed(g, keep=KEEP))


def test_expanded_iota_with_another_offset_is_not_causal():
    """Query i sees keys <= i + 1: a mask, but not the op's causal alignment; it stays a bias."""
    def fn(q, k, v):
        i = ops.arange(S)
        cols, rows = i.reshape(1, S).broadcast_to((S, S)), i.reshape(S, 1).broadcast_to((S, S))
        return _guarded(ops.where(cols <= rows + 1, _scores(q, k), MIN32)) @ v

    g = gd.trace(fn, **QKV)
    fused = passes.optimize(g)
    (att,) = [n for n in fused.nodes if n.op == "attention"]
    assert not att.attrs["causal"] and att.attrs["has_bias"]
    assert_same_numbers(g, fused, random_feed(g))


# -- our exporter's forms, through ONNX and back ---------------------------------------------------
ROUND_TRIPS = [
    ("padding_neg_inf", lambda q, k, v, keep: _scores(q, k, keep).softmax(-1) @ v, KEEP_SPEC),
    ("causal_symbolic_seq",
     lambda q, k, v: F.apply_mask(_scores(q, k), F.causal_mask(q.shape[2], k.shape[2])).softmax(-1) @ v,
     {n: f"f32[batch,{H},seq,{D}]" for n in "qkv"}),
    ("f16_padding", lambda q, k, v, keep: _scores(q, k, keep).softmax(-1) @ v,
     dict({n: f"f16[{B},{H},{S},{D}]" for n in "qkv"}, keep=KEEP_SPEC["keep"])),
]


@pytest.mark.parametrize("name,fn,specs", ROUND_TRIPS, ids=[r[0] for r in ROUND_TRIPS])
def test_exported_block_fuses_as_the_traced_one(name, fn, specs):
    g = gd.trace(fn, name=name, **specs)
    back = gd.from_onnx(export(g))
    assert count(back, "max") == 1 and count(back, "attention") == 0   # the guard arrived
    fused, direct = passes.optimize(back), passes.optimize(g)
    assert count(fused, "attention") == 1 and count(fused, "softmax") == 0, fused
    attrs = lambda graph: [{k: n.attrs[k] for k in ("causal", "has_bias", "scale")}  # noqa: E731
                           for n in graph.nodes if n.op == "attention"]
    assert attrs(fused) == attrs(direct)
    feed = random_feed(back, dims={"batch": B, "seq": S}, **({"keep": KEEP} if "keep" in specs else {}))
    assert_same_numbers(back, fused, feed, dict(rtol=2e-3, atol=2e-3) if "f16" in name else None)


# -- the zoo -------------------------------------------------------------------------------------
TINY = [n for n in models.names() if n.endswith("-tiny")]


def _zoo(name):
    spec = models.get(name)
    module = spec.module()
    return spec, spec.forward(module.eval()), module.init(seed=0)


def _zoo_feed(spec, graph, seed=0) -> dict:
    """The example batch for the graph's inputs (masks padded from a third on in row 1); inputs
    the batch names otherwise (contrastive's images) are standard normals."""
    batch = spec.example_batch(batch_size=2, seed=seed)
    rng, sizes, feed = np.random.default_rng(seed), {"batch": 2}, {}
    for name, node in graph.inputs.items():
        if name in batch:
            feed[name] = batch[name].copy()
            sizes.update({str(d): n for d, n in zip(node.type.shape, batch[name].shape)})
            if "mask" in name and feed[name].ndim == 2:
                feed[name][1, feed[name].shape[1] // 3:] = 0
    for name, node in graph.inputs.items():
        if name not in feed:
            shape = tuple(d if isinstance(d, int) else sizes.get(str(d), 2) for d in node.type.shape)
            feed[name] = rng.standard_normal(shape).astype(node.type.dtype.np)
    return feed


@pytest.mark.parametrize("name", TINY)
def test_zoo_export_fuses_again(name):
    spec, forward, params = _zoo(name)
    back = gd.from_onnx(export(forward, params=params))
    fused = passes.optimize(back, 2)
    assert count(fused, "attention") == spec.attention_blocks, fused.op_counts()
    assert count(fused, "softmax") == 0
    flags = lambda graph: sorted((n.attrs["causal"], n.attrs["has_bias"])  # noqa: E731
                                 for n in graph.nodes if n.op == "attention")
    assert flags(fused) == flags(passes.optimize(forward, 2)), "the same fused ops as the traced graph"
    feed = _zoo_feed(spec, back)
    want = backends.compile(back, "numpy")(**feed)
    got = backends.compile(fused, "numpy")(**feed)
    for key, ref in want.items():
        np.testing.assert_allclose(got[key], ref, rtol=1e-5, atol=1e-5, err_msg=f"{name}: {key}")


def test_zoo_list_has_tiny_models():
    assert TINY


# -- export(contrib_ops=True) and optimize_file ----------------------------------------------------
def _mha_count(model) -> int:
    return sum(n.op_type == "MultiHeadAttention" for n in model.graph.node)


def test_contrib_ops_on_an_unfused_graph_stays_standard_onnx():
    spec, forward, params = _zoo("bert-tiny")
    plain = export(forward, params=params, contrib_ops=True)
    assert _mha_count(plain) == 0
    assert all(o.domain in ("", "ai.onnx") for o in plain.opset_import)
    fused = export(passes.optimize(forward), params=params, contrib_ops=True)
    assert _mha_count(fused) == spec.attention_blocks


@pytest.mark.parametrize("name", TINY)
def test_zoo_contrib_export_matches_numpy_on_onnxruntime(name):
    """Padding biases ([batch, 1, 1, Sk]) are expanded to ORT's layout, causal blocks are square:
    every fused block of the zoo is one MultiHeadAttention."""
    ort = pytest.importorskip("onnxruntime")
    spec, forward, params = _zoo(name)
    model = export(passes.optimize(forward), params=params, contrib_ops=True)
    assert _mha_count(model) == spec.attention_blocks
    feed = _zoo_feed(spec, forward)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    want = backends.compile(forward, "numpy")(**feed, **params)
    for out, (key, ref) in zip(got, want.items()):
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4, err_msg=f"{name}: {key}")


def test_optimize_file_onnx_with_contrib_ops_runs_on_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    spec, forward, params = _zoo("bert-tiny")
    src, dst = tmp_path / "bert.onnx", tmp_path / "bert.opt.onnx"
    export(forward, params=params, path=src)
    report = optimize_file(src, dst, contrib_ops=True)
    assert isinstance(report, passes.Report) and report.totals()["attention"] == spec.attention_blocks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bert.onnx", "bert.opt.onnx"]  # no temp left
    out = onnx.load(str(dst))
    assert _mha_count(out) == spec.attention_blocks
    assert {t.name for t in out.graph.initializer} >= set(params), "weights kept under their names"
    feed = _zoo_feed(spec, forward)

    def run(path):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)

    for got, want in zip(run(dst), run(src)):
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_optimize_file_to_graph_json(tmp_path):
    spec, forward, params = _zoo("bert-tiny")
    src = tmp_path / "bert.onnx"
    export(forward, params=params, path=src)
    optimize_file(src, tmp_path / "bert.json")
    g = Graph.load(tmp_path / "bert.json")
    assert count(g, "attention") == spec.attention_blocks and count(g, "softmax") == 0
    weights = dict(np.load(tmp_path / "bert.npz"))
    assert set(weights) == set(g.params)
    feed = _zoo_feed(spec, forward)
    got = backends.compile(g, "numpy")(**feed, **weights)
    want = backends.compile(forward, "numpy")(**feed, **params)
    for key, ref in want.items():
        np.testing.assert_allclose(got[key], ref, rtol=1e-5, atol=1e-5, err_msg=key)


def test_optimize_file_graph_json_in_place(tmp_path):
    spec, forward, _ = _zoo("gpt-tiny")
    path = tmp_path / "gpt.json"
    forward.save(path)
    optimize_file(path, path)
    g = Graph.load(path)
    assert count(g, "attention") == spec.attention_blocks and list(g.params) == list(forward.params)


def test_optimize_file_errors(tmp_path):
    spec, forward, _ = _zoo("gpt-tiny")
    forward.save(tmp_path / "gpt.json")
    with pytest.raises(gd.GraphDSLError, match="neither a graph .json nor an .onnx"):
        optimize_file(tmp_path / "gpt.json", tmp_path / "gpt.pt")
    with pytest.raises(gd.GraphDSLError, match="contrib_ops=True applies to ONNX output"):
        optimize_file(tmp_path / "gpt.json", tmp_path / "out.json", contrib_ops=True)
    assert not (tmp_path / "out.json").exists()
