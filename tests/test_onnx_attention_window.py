"""ONNX Attention's position rules: per-batch key lengths (nonpad_kv_seqlen) and sliding windows
(left_window_size / right_window_size), alone, with is_causal, with a past cache and with a mask.

Each model runs through graphdsl.from_onnx and is checked against ``expected`` below, the rules
written out one query and one key at a time, and then against ONNX's own reference evaluator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import backends
import graphdsl
from graphdsl.errors import GraphError, ShapeError

R = np.random.default_rng(7)
NAMES = ("Q", "K", "V", "attn_mask", "past_key", "past_value", "nonpad_kv_seqlen")
OUTPUTS = ("Y", "present_key", "present_value", "qk")


def expected(q, k, v, *, mask=None, past_key=None, past_value=None, lens=None, causal=False,
             left=-1, right=-1):
    """Y and the post-softmax probabilities, in float64, one (batch, head, query) row at a time.

    Query i sits at i + offset (the past length, or lens[b] - q_len with per-batch lengths);
    key j is attended when every rule holds: j <= pos (causal), j >= pos - left (left >= 0),
    j <= pos + right (right >= 0), j < lens[b], and the bool mask (broadcast) is True. A row with
    no key attended is zero."""
    if past_key is not None:
        k, v = np.concatenate([past_key, k], axis=2), np.concatenate([past_value, v], axis=2)
    batch, heads, q_len, head = q.shape
    kv_len = k.shape[2]
    group = heads // k.shape[1]
    m = None if mask is None else np.broadcast_to(mask, (batch, heads, q_len, kv_len))
    y = np.zeros((batch, heads, q_len, v.shape[-1]))
    probs = np.zeros((batch, heads, q_len, kv_len))
    for b in range(batch):
        offset = past_key.shape[2] if past_key is not None else 0
        if lens is not None:
            offset = int(lens[b]) - q_len
        for h in range(heads):
            for i in range(q_len):
                pos = i + offset
                keys = [j for j in range(kv_len)
                        if (not causal or j <= pos) and (left < 0 or j >= pos - left)
                        and (right < 0 or j <= pos + right) and (lens is None or j < lens[b])
                        and (m is None or m[b, h, i, j])]
                if not keys:
                    continue
                s = np.array([q[b, h, i].astype(np.float64) @ k[b, h // group, j] / math.sqrt(head)
                              for j in keys])
                p = np.exp(s - s.max())
                p /= p.sum()
                probs[b, h, i, keys] = p
                y[b, h, i] = p @ v[b, h // group, keys].astype(np.float64)
    return y, probs


@dataclass
class Model:
    """One Attention node over the given inputs (None: omitted), opset 25 (the window's)."""

    inputs: dict
    attrs: dict
    outputs: int = 1

    def proto(self):
        names = [n if self.inputs.get(n) is not None else "" for n in NAMES]
        while names and not names[-1]:
            names.pop()
        outs = [n if i in (0, 3) or self.inputs.get("past_key") is not None else "" for i, n in
                enumerate(OUTPUTS[:self.outputs])]
        node = helper.make_node("Attention", names, outs, **self.attrs)
        ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
               for n, a in self.feed().items()]
        outs_vi = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs if o]
        g = helper.make_graph([node], "attention", ins, outs_vi)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 25)])

    def feed(self):
        return {n: a for n, a in self.inputs.items() if a is not None}


def qkv(batch=3, heads=2, q_len=3, kv_len=6, head=4, kv_heads=None):
    f = lambda *s: R.standard_normal(s).astype(np.float32)  # noqa: E731
    kv_heads = kv_heads or heads
    return f(batch, heads, q_len, head), f(batch, kv_heads, kv_len, head), f(batch, kv_heads, kv_len, head)


def _run(model, target="numpy"):
    graph = graphdsl.from_onnx(model.proto())
    got = backends.compile(graph, target)(**model.feed())
    return [got[name] for name in graph.outputs]


def _check(model, want_y, want_probs=None, target="numpy", atol=1e-5):
    got = _run(model, target)
    np.testing.assert_allclose(got[0], want_y, atol=atol, rtol=1e-5, err_msg="Y against the loops")
    if want_probs is not None:
        np.testing.assert_allclose(got[-1], want_probs, atol=atol, rtol=1e-5, err_msg="probs against the loops")
    ref = ReferenceEvaluator(model.proto()).run(None, model.feed())
    for ours, theirs in zip(got, ref):
        np.testing.assert_allclose(ours, theirs, atol=atol, rtol=1e-5, err_msg="against ONNX's reference")
    return got


q, k, v = qkv()
LENS = np.array([0, 4, 6], np.int64)          # an empty batch, a padded one, a full one
PAST_K, PAST_V = R.standard_normal((2, 3, 5, 4)).astype(np.float32), R.standard_normal((2, 3, 5, 4)).astype(np.float32)
Q2, K2, V2 = qkv(batch=2, heads=3, q_len=4, kv_len=2)

CASES = {
    "lens": (dict(Q=q, K=k, V=v, nonpad_kv_seqlen=LENS), {}, dict(lens=LENS)),
    "lens_causal": (dict(Q=q, K=k, V=v, nonpad_kv_seqlen=np.array([6, 4, 2], np.int64)), {"is_causal": 1},
                    dict(lens=np.array([6, 4, 2]), causal=True)),   # 2 < q_len: leading rows empty
    "left": (dict(Q=q, K=k, V=v), {"left_window_size": 1}, dict(left=1)),
    "right": (dict(Q=q, K=k, V=v), {"right_window_size": 2}, dict(right=2)),
    "left_right": (dict(Q=q, K=k, V=v), {"left_window_size": 0, "right_window_size": 1},
                   dict(left=0, right=1)),
    "left_causal": (dict(Q=q, K=k, V=v), {"left_window_size": 2, "is_causal": 1}, dict(left=2, causal=True)),
    "left_right_causal": (dict(Q=q, K=k, V=v), {"left_window_size": 1, "right_window_size": 3, "is_causal": 1},
                          dict(left=1, right=3, causal=True)),   # causal wins on the right
    "left_causal_past": (dict(Q=Q2, K=K2, V=V2, past_key=PAST_K, past_value=PAST_V),
                         {"left_window_size": 2, "is_causal": 1},
                         dict(past_key=PAST_K, past_value=PAST_V, left=2, causal=True)),
    "right_past": (dict(Q=Q2, K=K2, V=V2, past_key=PAST_K, past_value=PAST_V), {"right_window_size": 0},
                   dict(past_key=PAST_K, past_value=PAST_V, right=0)),
    "left_causal_lens": (dict(Q=q, K=k, V=v, nonpad_kv_seqlen=np.array([5, 3, 6], np.int64)),
                         {"left_window_size": 1, "is_causal": 1},
                         dict(lens=np.array([5, 3, 6]), left=1, causal=True)),
}


@pytest.mark.parametrize("name", CASES)
def test_position_rules_match_the_loops_and_onnx_reference(name):
    inputs, attrs, rules = CASES[name]
    want_y, want_p = expected(inputs["Q"], inputs["K"], inputs["V"], **rules)
    _check(Model(inputs, {**attrs, "qk_matmul_output_mode": 3}, outputs=4), want_y, want_p)


def test_a_batch_of_key_length_zero_is_zero_in_y_and_probs():
    got = _run(Model(dict(Q=q, K=k, V=v, nonpad_kv_seqlen=LENS), {"qk_matmul_output_mode": 3}, outputs=4))
    assert not np.isnan(got[0]).any()
    assert (got[0][0] == 0).all() and (got[-1][0] == 0).all()
    np.testing.assert_allclose(got[-1][1:].sum(-1), 1.0, rtol=1e-6)


def test_a_short_bool_mask_with_lengths_masks_the_keys_past_it():
    """The mask covers 4 of the 6 keys (ONNX: the rest are masked), composed with the lengths."""
    mask = R.random((3, 1, 3, 4)) > 0.3
    mask[..., 0] = True
    full = np.concatenate([mask, np.zeros((3, 1, 3, 2), bool)], axis=-1)
    lens = np.array([2, 3, 6], np.int64)
    want_y, _ = expected(q, k, v, mask=full, lens=lens)
    _check(Model(dict(Q=q, K=k, V=v, attn_mask=mask, nonpad_kv_seqlen=lens), {}), want_y)


def test_mode_2_scores_carry_every_position_bias():
    """Mode 2 is the scaled scores plus the bias: -inf exactly where a rule drops the key."""
    lens = np.array([5, 3, 6], np.int64)
    got = _run(Model(dict(Q=q, K=k, V=v, nonpad_kv_seqlen=lens),
                     {"left_window_size": 1, "is_causal": 1, "qk_matmul_output_mode": 2}, outputs=4))[-1]
    scores = np.einsum("bhqd,bhkd->bhqk", q, k) / 2.0
    i, j = np.arange(3)[:, None], np.arange(6)[None, :]
    pos = i + (lens - 3)[:, None, None, None]
    kept = (j <= pos) & (j >= pos - 1) & (j < lens[:, None, None, None])
    kept = np.broadcast_to(kept, scores.shape)
    assert (np.isneginf(got) == ~kept).all()
    np.testing.assert_allclose(got[kept], scores[kept], rtol=1e-5, atol=1e-6)


def _symbolic_model(inputs, attrs, dims):
    """The node over inputs typed with ``dims`` (name -> shape, strings symbolic); Y only."""
    names = [n if n in inputs else "" for n in NAMES]
    while not names[-1]:
        names.pop()
    ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), dims[n])
           for n, a in inputs.items()]
    g = helper.make_graph([helper.make_node("Attention", names, ["Y"], **attrs)], "attention", ins,
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 25)])


@pytest.mark.parametrize("name", ["left_causal_lens", "left_causal_past"])
def test_symbolic_batch_and_lengths(name):
    """The offsets are computed at run time from symbolic batch, query, key and past lengths."""
    inputs, attrs, rules = CASES[name]
    heads = inputs["Q"].shape[1]
    dims = {"Q": ["b", heads, "s", 4], "K": ["b", heads, "t", 4], "V": ["b", heads, "t", 4],
            "past_key": ["b", heads, "p", 4], "past_value": ["b", heads, "p", 4], "nonpad_kv_seqlen": ["b"]}
    graph = graphdsl.from_onnx(_symbolic_model(inputs, attrs, dims))
    got = backends.compile(graph, "numpy")(**inputs)["Y"]
    want, _ = expected(inputs["Q"], inputs["K"], inputs["V"], **rules)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_llvm_runs_window_causal_and_lengths():
    inputs, attrs, rules = CASES["left_causal_lens"]
    want_y, want_p = expected(inputs["Q"], inputs["K"], inputs["V"], **rules)
    _check(Model(inputs, {**attrs, "qk_matmul_output_mode": 3}, outputs=4), want_y, want_p, target="llvm")


@pytest.mark.parametrize("inputs, attrs, error, message", [
    (dict(Q=Q2, K=K2, V=V2, past_key=PAST_K, past_value=PAST_V, nonpad_kv_seqlen=np.array([1, 2], np.int64)),
     {}, GraphError, "nonpad_kv_seqlen .* or past_key/past_value"),
    (dict(Q=q, K=k, V=v), {"left_window_size": -2}, GraphError, "left_window_size=-2"),
    (dict(Q=q, K=k, V=v, nonpad_kv_seqlen=np.array([1, 2], np.int64)), {}, ShapeError,
     r"nonpad_kv_seqlen is i64\[2\].*batch of 3"),
    (dict(Q=q, K=k, V=v, attn_mask=np.ones((3, 7), bool)), {}, ShapeError, "7 key positions, more than the 6 keys"),
], ids=["lens_and_past", "bad_window", "lens_batch", "long_mask"])
def test_refusals_name_the_input_and_the_sizes(inputs, attrs, error, message):
    model = Model(inputs, attrs).proto()
    # Y's type given in full: ONNX's shape inference, which rejects some of these, leaves it alone
    y_shape = (*inputs["Q"].shape[:-1], inputs["V"].shape[-1])
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("Y", TensorProto.FLOAT, y_shape))
    with pytest.raises(error, match=message):
        graphdsl.from_onnx(model)
