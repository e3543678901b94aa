"""fuse_attention and fold_masks on attention written the ways people write it.

Each row of VARIANTS is one differently written attention block. After ``optimize(level=2)`` it
must be exactly one ``attention`` op (with the expected causal flag and bias), no softmax left,
and the same numbers as the graph as written on the NumPy backend -- including fully masked rows,
which the feeds contain wherever a mask allows them. Rows marked ``grads`` also compare the
gradients of a training graph, whose backward must be ``attention_grad`` ops with no softmax left.
The last rows are the forms torch.onnx exports (tests/test_onnx_transformers.py runs the real
exports). NEAR_MISSES must not fuse, and leave the graph unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

import graphdsl as gd
import passes
from graphdsl import dtypes as _dt
from graphdsl import nn, ops
from graphdsl.autodiff import grad
from graphdsl.nn import functional as F
from tests.passes_check import assert_same_gradients, assert_same_numbers, count, random_feed, run

B, H, S, D = 2, 2, 5, 4
SCALE = 1.0 / math.sqrt(D)
QKV = dict(q=f"f32[{B},{H},{S},{D}]", k=f"f32[{B},{H},{S},{D}]", v=f"f32[{B},{H},{S},{D}]")
BSHD = dict(q=f"f32[{B},{S},{H},{D}]", k=f"f32[{B},{S},{H},{D}]", v=f"f32[{B},{S},{H},{D}]")
X3 = dict(xq=f"f32[{B},{S},{H * D}]", xk=f"f32[{B},{S},{H * D}]", xv=f"f32[{B},{S},{H * D}]")
MIN32 = _dt.finfo_min(_dt.float32)

# masks with a fully masked batch row (row 1), a partly masked one (row 0)
AM = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], np.int64)
KEEP = AM.astype(bool).reshape(B, 1, 1, S)
LEFT_PAD = np.array([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]], np.int64)  # with causal: rows fully masked
RIGHT_PAD = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int64)  # with causal: every row sees a key
TRIL = np.tril(np.ones((S, S), bool))


def _heads(x):
    return x.reshape(B, S, H, D).transpose(1, 2)


def _softmax_by_hand(s):
    e = (s - s.max(-1, keepdims=True)).exp()
    return e / e.sum(-1, keepdims=True)


def _merge(o):
    return o.transpose(1, 2).reshape(B, S, H * D)


# -- the forms torch.onnx exports (BERT and GPT-2 from transformers, legacy and dynamo exporters) --
ZERO, NEG_INF, MIN_ARR = (np.array([c], np.float32) for c in (0.0, -np.inf, MIN32))


def _nan_guard(p):
    """where(isnan(p), 0, p); isnan imports from ONNX as p != p."""
    return ops.where(p != p, 0.0, p)


def _k_transposed_by_reshapes(k):
    """k^T as the dynamo exporter writes it: heads merged into the batch, a 3-D transpose, split again."""
    return k.reshape(B * H, S, D).transpose(1, 2).reshape(B, H, D, S)


def _iota_causal(q, k):
    """The exported causal mask: 1-D iotas unsqueezed to [1, 1, Sq, 1] and [1, 1, 1, Sk], compared."""
    rows = ops.arange(q.shape[2]).unsqueeze(0).unsqueeze(1).unsqueeze(3)
    cols = ops.arange(k.shape[2]).unsqueeze(0).unsqueeze(1).unsqueeze(2)
    return cols <= rows


def _torch_mask(q, k, keep, fill):
    """where(causal & padding, 0, fill), added to the scores."""
    return ops.where(_iota_causal(q, k) & keep, ZERO, fill)


def _sdpa_export(xq, xk, xv, keep):
    """The whole block as exported: sqrt(scale) on q and on k^T, k^T by reshapes, the padding mask
    as where(keep, 0, -inf) added, the NaN guard after the softmax."""
    c = SCALE ** 0.5
    q, kt = _heads(xq) * c, _k_transposed_by_reshapes(_heads(xk)) * c
    return _merge(_nan_guard((q @ kt + ops.where(keep, ZERO, NEG_INF)).softmax(-1)) @ _heads(xv))


@dataclass
class Variant:
    name: str
    fn: Callable
    specs: dict
    feed: dict = field(default_factory=dict)
    causal: bool = False
    bias: bool = False
    grads: bool = False
    dropout: bool = False
    tol: dict | None = None
    scale: float | None = SCALE     # the fused op's scale attribute (None: not checked)
    grad_feed: dict | None = None   # masks for the gradient check, when ``feed`` has rows whose
    #                                 score gradient is a rounding artifact (see docs/passes.md)


VARIANTS = [
    Variant("mul_scale_on_scores", lambda q, k, v: ((q @ k.mT) * SCALE).softmax(-1) @ v, QKV, grads=True),
    Variant("div_by_sqrt_d", lambda q, k, v: ((q @ k.transpose(-1, -2)) / math.sqrt(D)).softmax(-1) @ v, QKV),
    Variant("constant_on_the_left", lambda q, k, v: (SCALE * (q @ k.mT)).softmax(-1) @ v, QKV),
    Variant("scale_on_q", lambda q, k, v: ((q * SCALE) @ k.mT).softmax(-1) @ v, QKV, grads=True),
    Variant("scale_on_k", lambda q, k, v: (q @ (k / math.sqrt(D)).mT).softmax(-1) @ v, QKV),
    Variant("scale_split_over_q_and_k",
            lambda q, k, v: ((q * D ** -0.25) @ (k * D ** -0.25).transpose(-2, -1)).softmax(-1) @ v, QKV),
    Variant("permute_from_bshd",
            lambda q, k, v: ((q.permute(0, 2, 1, 3) @ k.permute(0, 2, 3, 1)) * SCALE).softmax(-1)
            @ v.permute(0, 2, 1, 3), BSHD),
    Variant("head_split_and_merge",
            lambda xq, xk, xv: _merge(((_heads(xq) @ _heads(xk).mT) * SCALE).softmax(-1) @ _heads(xv)), X3,
            grads=True),
    Variant("scale_before_head_split",
            lambda xq, xk, xv: _merge((_heads(xq * SCALE) @ _heads(xk).mT).softmax(-1) @ _heads(xv)), X3),
    Variant("learned_temperature", lambda q, k, v, temp: ((q @ k.mT) * temp).softmax(-1) @ v,
            dict(QKV, temp="f32[]"), grads=True, scale=1.0),
    Variant("computed_transposed",  # (p @ v)^T written as v^T @ p^T
            lambda q, k, v: (v.mT @ ((q @ k.mT) * SCALE).softmax(-1).mT).mT, QKV),
    Variant("softmax_written_out", lambda q, k, v: _softmax_by_hand((q @ k.mT) * SCALE) @ v, QKV,
            grads=True),
    Variant("batched_3d",
            lambda q, k, v: ((q @ k.mT) * SCALE).softmax(-1) @ v,
            dict(q=f"f32[{B * H},{S},{D}]", k=f"f32[{B * H},{S},{D}]", v=f"f32[{B * H},{S},{D}]")),
    Variant("k_stored_transposed", lambda q, kt, v: ((q @ kt) * SCALE).softmax(-1) @ v,
            dict(q=QKV["q"], kt=f"f32[{B},{H},{D},{S}]", v=QKV["v"])),
    Variant("additive_padding_bias",
            lambda q, k, v, am: F.apply_mask((q @ k.mT) * SCALE, F.padding_mask_bias(am)).softmax(-1) @ v,
            dict(QKV, am=f"i64[{B},{S}]"), feed={"am": AM}, bias=True, grads=True),
    Variant("boolean_mask_where_min",
            lambda q, k, v, keep: ops.where(keep, (q @ k.mT) * SCALE, MIN32).softmax(-1) @ v,
            dict(QKV, keep=f"bool[{B},1,1,{S}]"), feed={"keep": KEEP}, bias=True),
    Variant("masked_fill_neg_inf",
            lambda q, k, v, keep: ((q @ k.mT) * SCALE).masked_fill(~keep, float("-inf")).softmax(-1) @ v,
            dict(QKV, keep=f"bool[{B},1,1,{S}]"), feed={"keep": KEEP}, bias=True, grads=True),
    Variant("hf_minus_1e4_additive",
            lambda q, k, v, am: ((q @ k.mT) * SCALE + (1.0 - am.astype("float32")).reshape(B, 1, 1, S)
                                 * -10000.0).softmax(-1) @ v,
            dict(QKV, am=f"i64[{B},{S}]"), feed={"am": AM}, bias=True),
    Variant("where_fill_minus_1e4",
            lambda q, k, v, keep: ops.where(keep, (q @ k.mT) * SCALE, -1e4).softmax(-1) @ v,
            dict(QKV, keep=f"bool[{B},1,1,{S}]"), feed={"keep": KEEP}, bias=True),
    Variant("causal_iota_compare",
            lambda q, k, v: F.apply_mask((q @ k.mT) * SCALE, F.causal_mask(S, S)).softmax(-1) @ v, QKV,
            causal=True, grads=True),
    Variant("causal_tril_constant",
            lambda q, k, v: ops.where(TRIL, (q @ k.mT) * SCALE, MIN32).softmax(-1) @ v, QKV, causal=True),
    Variant("causal_triu_neg_inf_bias",
            lambda q, k, v: ((q @ k.mT) * SCALE + np.triu(np.full((S, S), -np.inf, np.float32), 1))
            .softmax(-1) @ v, QKV, causal=True),
    Variant("causal_float_tril_masked_fill",
            lambda q, k, v: ((q @ k.mT) * SCALE)
            .masked_fill(np.tril(np.ones((S, S), np.float32)) == 0, float("-inf")).softmax(-1) @ v,
            QKV, causal=True),
    Variant("causal_arange_broadcast",
            lambda q, k, v: ops.where(ops.arange(S)[:, None] >= ops.arange(S)[None, :], (q @ k.mT) * SCALE,
                                      MIN32).softmax(-1) @ v, QKV, causal=True),
    Variant("causal_symbolic_seq",
            lambda q, k, v: F.apply_mask((q @ k.mT) * SCALE, F.causal_mask(q.shape[2], k.shape[2]))
            .softmax(-1) @ v, {n: "f32[batch,2,seq,4]" for n in "qkv"}, causal=True),
    Variant("causal_kv_longer_than_q",
            lambda q, k, v: F.apply_mask((q @ k.mT) * SCALE, F.causal_mask(3, S)).softmax(-1) @ v,
            dict(q=f"f32[{B},{H},3,{D}]", k=QKV["k"], v=QKV["v"]), causal=True),
    Variant("padding_bias_and_causal_left_padded",
            lambda q, k, v, am: F.apply_mask(F.apply_mask((q @ k.mT) * SCALE, F.padding_mask_bias(am)),
                                             F.causal_mask(S, S)).softmax(-1) @ v,
            dict(QKV, am=f"i64[{B},{S}]"), feed={"am": LEFT_PAD}, bias=True, grads=True,
            grad_feed={"am": RIGHT_PAD}),
    Variant("padding_and_causal_neg_inf",
            lambda q, k, v, keep: ((q @ k.mT) * SCALE).masked_fill(~keep, float("-inf"))
            .masked_fill(~F.causal_mask(S, S), float("-inf")).softmax(-1) @ v,
            dict(QKV, keep=f"bool[{B},1,1,{S}]"), feed={"keep": LEFT_PAD.astype(bool).reshape(B, 1, 1, S)},
            causal=True, bias=True),
    Variant("cross_attention_bool_mask",
            lambda q, k, v, keep: F.apply_mask((q @ k.mT) * SCALE, keep).softmax(-1) @ v,
            dict(q=f"f32[{B},{H},3,{D}]", k=QKV["k"], v=f"f32[{B},{H},{S},6]", keep=f"bool[{B},1,1,{S}]"),
            feed={"keep": KEEP}, bias=True),
    Variant("casts_around_softmax_f16",
            lambda q, k, v: ((q @ k.mT) * SCALE).astype("float32").softmax(-1).astype("float16") @ v,
            {n: f"f16[{B},{H},{S},{D}]" for n in "qkv"}, tol=dict(rtol=2e-3, atol=2e-3)),
    Variant("dropout_on_probabilities",
            lambda q, k, v, seed: ops.dropout(((q @ k.mT) * SCALE).softmax(-1), seed, p=0.25, salt=3) @ v,
            dict(QKV, seed="i32[]"), dropout=True, grads=True),
    Variant("float64", lambda q, k, v: ((q @ k.mT) / math.sqrt(D)).softmax(-1) @ v,
            {n: f"f64[{B},{H},{S},{D}]" for n in "qkv"}, grads=True, tol=dict(rtol=1e-12, atol=1e-13)),
    # the forms torch.onnx exports
    Variant("nan_guard_after_softmax",
            lambda q, k, v, keep: _nan_guard(((q @ k.mT) * SCALE).masked_fill(~keep, float("-inf"))
                                             .softmax(-1)) @ v,
            dict(QKV, keep=f"bool[{B},1,1,{S}]"), feed={"keep": KEEP}, bias=True, grads=True),
    Variant("nan_guard_then_dropout",
            lambda q, k, v, seed: ops.dropout(_nan_guard(((q @ k.mT) * SCALE).softmax(-1)), seed, p=0.25,
                                              salt=3) @ v,
            dict(QKV, seed="i32[]"), dropout=True, grads=True),
    Variant("scale_on_q_and_on_k_transposed",
            lambda q, k, v: ((q * D ** -0.25) @ (k.mT * D ** -0.25)).softmax(-1) @ v, QKV, grads=True),
    Variant("k_transposed_by_reshapes",
            lambda q, k, v: ((q @ _k_transposed_by_reshapes(k)) * SCALE).softmax(-1) @ v, QKV, grads=True),
    Variant("additive_where_finfo_min",
            lambda q, k, v, keep: ((q @ k.mT) * SCALE + ops.where(keep, ZERO, MIN_ARR)).softmax(-1) @ v,
            dict(QKV, keep=f"bool[{B},1,1,{S}]"), feed={"keep": KEEP}, bias=True),
    Variant("causal_and_padding_where_neg_inf",   # -inf: the causal part becomes the flag
            lambda q, k, v, keep: ((q @ k.mT) * SCALE + _torch_mask(q, k, keep, NEG_INF)).softmax(-1) @ v,
            dict(QKV, keep=f"bool[{B},1,1,{S}]"), feed={"keep": LEFT_PAD.astype(bool).reshape(B, 1, 1, S)},
            causal=True, bias=True, grads=True),
    Variant("causal_and_padding_where_neg_inf_symbolic",   # the iota comparison itself, not folded
            lambda q, k, v, keep: ((q @ k.mT) * SCALE + _torch_mask(q, k, keep, NEG_INF)).softmax(-1) @ v,
            dict({n: f"f32[batch,{H},seq,{D}]" for n in "qkv"}, keep="bool[batch,1,1,seq]"),
            feed={"keep": LEFT_PAD.astype(bool).reshape(B, 1, 1, S)}, causal=True, bias=True),
    Variant("causal_and_padding_where_finfo_min",   # a finite fill: all of it stays in the bias
            lambda q, k, v, keep: ((q @ k.mT) * SCALE + _torch_mask(q, k, keep, MIN_ARR)).softmax(-1) @ v,
            dict({n: f"f32[batch,{H},seq,{D}]" for n in "qkv"}, keep="bool[batch,1,1,seq]"),
            feed={"keep": LEFT_PAD.astype(bool).reshape(B, 1, 1, S)}, bias=True),
    Variant("masked_fill_causal_or_padding_neg_inf",   # one hide mask: ~causal | ~keep
            lambda q, k, v, keep: ((q @ k.mT) * SCALE).masked_fill(~F.causal_mask(S, S) | ~keep, float("-inf"))
            .softmax(-1) @ v,
            dict(QKV, keep=f"bool[{B},1,1,{S}]"), feed={"keep": LEFT_PAD.astype(bool).reshape(B, 1, 1, S)},
            causal=True, bias=True, grads=True),
    Variant("torch_sdpa_export", _sdpa_export, dict(X3, keep=f"bool[{B},1,1,{S}]"), feed={"keep": KEEP},
            bias=True, grads=True),
]


def _module_variant():
    mha = nn.MultiHeadAttention(H * D, H, dropout=0.1)

    def fn(x, am):
        return mha(x, mask=F.padding_mask(am), causal=True)

    return Variant("nn_multi_head_attention", fn, dict(x=f"f32[{B},{S},{H * D}]", am=f"i64[{B},{S}]"),
                   feed={"am": LEFT_PAD}, bias=True, dropout=True, grads=True,
                   grad_feed={"am": RIGHT_PAD}), mha


def _trace(variant: Variant, params=None):
    return gd.trace(variant.fn, name=variant.name, params=params, **variant.specs)


def _attention_node(graph):
    (node,) = [n for n in graph.nodes if n.op == "attention"]
    return node


def _check(variant: Variant, params=None):
    g = _trace(variant, params)
    assert count(g, "attention") == 0
    fused = passes.optimize(g, level=2)
    assert count(fused, "attention") == 1, f"{variant.name} did not fuse:\n{fused}"
    assert count(fused, "softmax") == 0
    att = _attention_node(fused)
    assert att.attrs["causal"] == variant.causal
    assert att.attrs["has_bias"] == variant.bias
    assert (att.attrs["dropout_p"] > 0) == variant.dropout
    if variant.scale is not None:
        assert math.isclose(att.attrs["scale"], variant.scale, rel_tol=1e-6), att.attrs["scale"]
    feed = random_feed(g, dims={"batch": B, "seq": S}, **variant.feed)
    assert_same_numbers(g, fused, feed, variant.tol)
    if variant.grads:
        out_type = g.outputs["out"].type
        w = np.random.default_rng(3).standard_normal(tuple(out_type.shape)).astype(out_type.dtype.np)

        def loss(**kw):
            return {"loss": (variant.fn(**{k: v for k, v in kw.items() if k != "w"}) * w).sum()}

        float_inputs = [n for n, t in variant.specs.items() if t[0] == "f"]
        lg = gd.trace(loss, name=variant.name + "_loss", params=params, **variant.specs)
        wrt = float_inputs + list(lg.params)
        grad_feed = random_feed(g, dims={"batch": B, "seq": S}, **(variant.grad_feed or variant.feed))
        train = assert_same_gradients(lg, {**random_feed(lg, seed=1), **grad_feed}, wrt=wrt, tol=variant.tol)
        assert count(train, "attention") == 1
        assert count(train, "softmax") == 0 and count(train, "attention_grad") >= 3, train.op_counts()


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_variant_fuses_to_one_attention_op(variant):
    _check(variant)


def test_nn_multi_head_attention_fuses():
    variant, module = _module_variant()
    _check(variant, module)


def test_at_least_fifteen_variants():
    assert len(VARIANTS) + 1 >= 15


def test_fully_masked_rows_are_defined_and_unchanged():
    """Row 1 of AM masks every key: uniform weights with a finite fill, zeros with -inf."""
    for name, expect in (("additive_padding_bias", "uniform"), ("masked_fill_neg_inf", "zeros")):
        variant = next(v for v in VARIANTS if v.name == name)
        g = _trace(variant)
        feed = random_feed(g, **variant.feed)
        out = run(passes.optimize(g), feed)["out"][1]
        assert not np.isnan(out).any()
        want = feed["v"][1].mean(axis=-2, keepdims=True) if expect == "uniform" else 0.0
        np.testing.assert_allclose(out, np.broadcast_to(want, out.shape), atol=1e-6)


def test_fully_masked_rows_gradients():
    """Where a row masks every key with a finite fill, its output is the mean of v whatever q and k
    are; d/dv is the same before and after, and so is d/dq of every row that sees a key. (d/dq of
    the fully masked rows is a rounding artifact that depends on how the mask was spelled.)"""
    variant = next(v for v in VARIANTS if v.name == "padding_bias_and_causal_left_padded")
    w = np.random.default_rng(3).standard_normal((B, H, S, D)).astype(np.float32)
    lg = gd.trace(lambda q, k, v, am: {"loss": (variant.fn(q, k, v, am) * w).sum()}, **variant.specs)
    feed = random_feed(lg, am=LEFT_PAD)
    want = run(grad(lg, wrt=["q", "k", "v"]), feed)
    got = run(passes.optimize_for_training(lg, wrt=["q", "k", "v"]), feed)
    np.testing.assert_allclose(got["grad/v"], want["grad/v"], rtol=1e-5, atol=1e-6)
    sees_a_key = (np.cumsum(LEFT_PAD, axis=1) > 0)[:, None, :, None]   # [B, 1, S, 1]: query i, causal
    np.testing.assert_allclose(np.where(sees_a_key, got["grad/q"], 0),
                               np.where(sees_a_key, want["grad/q"], 0), rtol=1e-5, atol=1e-6)


# -- near misses: must not fuse, graph unchanged --------------------------------------------------
def _probs_used_twice(q, k, v):
    p = ((q @ k.mT) * SCALE).softmax(-1)
    return {"out": p @ v, "probs": p}


def _scores_used_twice(q, k, v):
    s = (q @ k.mT) * SCALE
    return {"out": s.softmax(-1) @ v, "scores": s}


NEAR_MISSES = [
    ("probabilities_also_an_output", _probs_used_twice, QKV),
    ("scores_also_an_output", _scores_used_twice, QKV),
    ("softmax_over_queries", lambda q, k, v: ((q @ k.mT) * SCALE).softmax(-2) @ v, QKV),
    ("where_fill_is_not_a_mask",
     lambda q, k, v, keep: ops.where(keep, (q @ k.mT) * SCALE, -1.0).softmax(-1) @ v,
     dict(QKV, keep=f"bool[{B},1,1,{S}]")),
    ("per_head_scale_tensor", lambda q, k, v, w: ((q @ k.mT) * w).softmax(-1) @ v,
     dict(QKV, w=f"f32[1,{H},1,1]")),
    ("bias_added_after_upcast",
     lambda q, k, v, bias: ((q @ k.mT).astype("float32") + bias).softmax(-1).astype("float16") @ v,
     dict({n: f"f16[{B},{H},{S},{D}]" for n in "qkv"}, bias=f"f32[{B},1,1,{S}]")),
    ("two_score_matmuls", lambda q, k, v, r: ((q @ k.mT + q @ r.mT) * SCALE).softmax(-1) @ v,
     dict(QKV, r=f"f32[{B},{H},{S},{D}]")),
    ("nan_guard_fill_is_not_zero",
     lambda q, k, v: ops.where((p := ((q @ k.mT) * SCALE).softmax(-1)) != p, 1.0, p) @ v, QKV),
    ("nan_guard_tests_the_scores",
     lambda q, k, v: ops.where((s := (q @ k.mT) * SCALE) != s, 0.0, s.softmax(-1)) @ v, QKV),
    ("causal_offset_wrong_way",  # query i sees keys <= i + 1: not the op's bottom-right alignment
     lambda q, k, v: ops.where(ops.iota(shape=(S, S), axis=1) <= ops.iota(shape=(S, S), axis=0) + 1,
                               (q @ k.mT) * SCALE, MIN32).softmax(-1) @ v, QKV),
]


@pytest.mark.parametrize("name,fn,specs", NEAR_MISSES, ids=[n[0] for n in NEAR_MISSES])
def test_near_miss_does_not_fuse(name, fn, specs):
    g = gd.trace(fn, name=name, **specs)
    if name == "causal_offset_wrong_way":  # fuses, with the mask as a bias: no causal flag
        fused = passes.optimize(g)
        assert not _attention_node(fused).attrs["causal"]
        assert_same_numbers(g, fused, random_feed(g))
        return
    same = passes.run(g, ["fuse_attention"])
    assert str(same) == str(g)
    optimized = passes.optimize(g, level=2)
    assert count(optimized, "attention") == 0
    assert_same_numbers(g, optimized, random_feed(g))


def test_kv_cache_decode_step_fuses_with_the_causal_flag():
    """One generation step over a symbolic-length cache: the causal offset is the cache length."""
    mha = nn.MultiHeadAttention(H * D, H)

    def step(x, past_k, past_v):
        out, (k, v) = mha.forward_cached(x, (past_k, past_v))
        return {"out": out, "k": k, "v": v}

    cache = f"f32[{B},{H},past,{D}]"
    g = gd.trace(step, params=mha, x=f"f32[{B},2,{H * D}]", past_k=cache, past_v=cache)
    fused = passes.optimize(g)
    assert _attention_node(fused).attrs["causal"] and count(fused, "softmax") == 0
    for past in (0, 3):
        assert_same_numbers(g, fused, random_feed(g, dims={"past": past}, **mha.init(0)))


# -- nn Transformer stacks -------------------------------------------------------------------------
def test_transformer_encoder_two_layers():
    enc = nn.TransformerEncoder(2, d_model=H * D, n_heads=H, d_ff=16, dropout=0.1)

    def loss(x, am, w):
        return {"loss": (enc(x, mask=F.padding_mask_bias(am)) * w).sum()}

    x = f"f32[batch,{S},{H * D}]"
    g = gd.trace(loss, params=enc, x=x, am=f"i64[batch,{S}]", w=x)
    fused = passes.optimize(g)
    assert count(fused, "attention") == 2 and count(fused, "softmax") == 0
    biases = {id(n.inputs[3]) for n in fused.nodes if n.op == "attention"}
    assert len(biases) == 1, "the padding bias is computed once and shared by both layers"
    feed = random_feed(g, am=AM, x=np.random.default_rng(0).standard_normal((B, S, H * D)).astype(np.float32),
                       **{k: v for k, v in enc.init(0).items()})
    assert_same_numbers(g, fused, feed)
    train = assert_same_gradients(g, feed)
    assert count(train, "attention") == 2 and count(train, "softmax") == 0


def test_transformer_decoder_two_layers():
    dec = nn.TransformerDecoder(2, d_model=H * D, n_heads=H, d_ff=16, dropout=0.0, norm_first=True)

    def loss(x, mem, am, w):
        out = dec(x, mem, memory_mask=F.padding_mask(am))
        return {"loss": (out * w).sum()}

    g = gd.trace(loss, params=dec, x=f"f32[{B},4,{H * D}]", mem=f"f32[{B},{S},{H * D}]", am=f"i64[{B},{S}]",
                 w=f"f32[{B},4,{H * D}]")
    fused = passes.optimize(g)
    assert count(fused, "attention") == 4 and count(fused, "softmax") == 0
    atts = [n for n in fused.nodes if n.op == "attention"]
    assert sum(n.attrs["causal"] for n in atts) == 2, "self-attention gets the causal flag"
    feed = random_feed(g, am=np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int64), **dec.init(0))
    assert_same_numbers(g, fused, feed)
    assert_same_gradients(g, feed)
