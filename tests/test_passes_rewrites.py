"""Each pass other than attention: what it rewrites (op counts after), and the numbers stay.

A row: the graph as written, the passes to run, the ops expected after (a subset of the histogram:
``{"div": 0, "mul": 1}``) and the tolerance of the numeric comparison. NEGATIVE rows must come out
unchanged (same printed IR).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import graphdsl as gd
import passes
from graphdsl import ops
from graphdsl.nn import functional as F
from tests.passes_check import assert_same_gradients, assert_same_numbers, random_feed

X = dict(x="f32[2,3,8]")
X4 = dict(x="f32[2,3,4,5]")
XW = dict(x="f32[2,3,8]", w="f32[8]", b="f32[8]")
SQRT2 = math.sqrt(2.0)
C_TANH = math.sqrt(2.0 / math.pi)


def _ln_textbook(x, w, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / (var + 1e-5).sqrt() * w + b


def _ln_sum_div(x, w, b):
    mu = x.sum(-1, keepdims=True) / 8
    xc = x - mu
    var = (xc * xc).sum(-1, keepdims=True) / 8
    return w * (xc * (var + 1e-6).rsqrt()) + b


def _softmax(x, axis):
    e = (x - x.max(axis, keepdims=True)).exp()
    return e / e.sum(axis, keepdims=True)


def _ln_middle_axis(x):
    mu = x.mean(1, keepdims=True)
    xc = x - mu
    return xc * ((xc * xc).mean(1, keepdims=True) + 1e-5).rsqrt()


def _rms(x, w):
    return x * (x * x).mean(-1, keepdims=True).__add__(1e-6).rsqrt() * w


def _gelu_erf(x):
    return 0.5 * x * (1.0 + ops.erf(x / SQRT2))


def _gelu_erf_grouped(x):
    return x * (1 + ops.erf(x * 0.7071)) * 0.5


def _gelu_tanh_pow(x):
    return 0.5 * x * (1.0 + (C_TANH * (x + 0.044715 * x ** 3)).tanh())


def _gelu_tanh_xxx(x):
    return x * 0.5 * (1.0 + (0.79788 * (x + 0.044715 * x * x * x)).tanh())


def _gelu_tanh_distributed(x):
    return 0.5 * x * (1.0 + (C_TANH * x + C_TANH * 0.044715 * (x * x * x)).tanh())


ROWS = [
    # name, fn, specs, pass names, expected ops after, rtol
    ("div_by_constant_to_mul", lambda x: x / 4.0, X, ["canonicalize"], {"div": 0, "mul": 1}, 1e-6),
    ("constant_moves_right", lambda x: 2.0 * x + 1.0, X, ["canonicalize"], {"mul": 1, "add": 1}, 1e-6),
    ("scales_merge", lambda x: (x * 2.0) * 3.0, X, ["canonicalize"], {"mul": 1}, 1e-6),
    ("sum_times_inverse_count_is_mean", lambda x: x.sum(-1, keepdims=True) / 8, X, ["canonicalize"],
     {"mean": 1, "sum": 0}, 1e-6),
    ("double_transpose_cancels", lambda x: x.transpose(-1, -2).transpose(-1, -2) + 1.0, X, ["canonicalize"],
     {"transpose": 0}, 0),
    ("transposes_compose", lambda x: x.permute(1, 0, 2).transpose(-1, -2), X, ["canonicalize"],
     {"transpose": 1}, 0),
    ("reshapes_merge", lambda x: x.reshape(6, 8).reshape(2, 24), X, ["canonicalize"], {"reshape": 1}, 0),
    ("swap_under_regrouping_reshapes", lambda x: x.reshape(6, 4, 5).transpose(1, 2).reshape(2, 3, 5, 4), X4,
     ["canonicalize"], {"reshape": 0, "transpose": 1}, 0),
    ("mask_and_true", lambda x, m: ops.where(ops.logical_and(True, m), x, 0.0), dict(X, m="bool[2,3,8]"),
     ["canonicalize"], {"logical_and": 0}, 0),
    ("mask_or_false", lambda x, m: ops.where(ops.logical_or(m, False), x, 0.0), dict(X, m="bool[2,3,8]"),
     ["canonicalize"], {"logical_or": 0}, 0),
    ("identity_ops_drop", lambda x: (x.reshape(2, 3, 8).astype("float32") * 1.0 + 0.0).exp(), X,
     ["canonicalize"], {"reshape": 0, "cast": 0, "mul": 0, "add": 0}, 0),
    ("lossless_cast_round_trip", lambda x: x.astype("float64").astype("float32").exp(), X, ["canonicalize"],
     {"cast": 0}, 0),
    ("double_negation", lambda x: -(-x) * 3.0, X, ["canonicalize"], {"neg": 0}, 0),
    ("constants_fold", lambda x: x + (ops.full(shape=(8,), value=2.0) * 3.0).exp(), X, ["fold_constants"],
     {"full": 0, "exp": 0, "mul": 0, "add": 1}, 1e-6),
    ("iota_compare_folds", lambda x: ops.where(ops.iota(shape=(3, 8), axis=1) > 2, x, 0.0), X,
     ["fold_constants"], {"iota": 0, "greater": 0, "where": 1}, 0),
    ("cse_merges_repeats", lambda x: x.exp() + x.exp() + (1.0 + x) * (x + 1.0), X, ["canonicalize", "cse"],
     {"exp": 1, "add": 3}, 0),
    ("softmax_written_out", lambda x: _softmax(x, -1), X, ["fuse_softmax"], {"softmax": 1, "exp": 0}, 1e-6),
    ("layer_norm_textbook", _ln_textbook, XW, ["canonicalize", "cse", "fuse_layer_norm"],
     {"layer_norm": 1, "mean": 0, "sqrt": 0}, 1e-5),
    ("layer_norm_sum_div_rsqrt", _ln_sum_div, XW, ["canonicalize", "cse", "fuse_layer_norm"],
     {"layer_norm": 1, "sum": 0, "rsqrt": 0}, 1e-5),
    ("layer_norm_whose_mean_is_used_elsewhere_keeps_it",  # only the centered part normalizes
     lambda x, w, b: {"out": _ln_textbook(x, w, b), "mu": x.mean(-1, keepdims=True)}, XW,
     ["canonicalize", "cse", "fuse_layer_norm"], {"layer_norm": 0, "mean": 1, "rms_norm": 1}, 1e-5),
    ("rms_norm", _rms, dict(x="f32[2,3,8]", w="f32[8]"), ["canonicalize", "fuse_layer_norm"],
     {"rms_norm": 1, "mean": 0}, 1e-5),
    ("gelu_erf", _gelu_erf, X, ["canonicalize", "fuse_gelu"], {"gelu": 1, "erf": 0}, 1e-6),
    ("gelu_erf_other_grouping", _gelu_erf_grouped, X, ["canonicalize", "fuse_gelu"], {"gelu": 1, "erf": 0},
     1e-4),
    ("gelu_tanh_pow", _gelu_tanh_pow, X, ["canonicalize", "fuse_gelu"], {"gelu": 1, "tanh": 0}, 1e-6),
    ("gelu_tanh_x_x_x", _gelu_tanh_xxx, X, ["canonicalize", "fuse_gelu"], {"gelu": 1, "tanh": 0}, 1e-4),
    ("gelu_tanh_distributed", _gelu_tanh_distributed, X, ["canonicalize", "fuse_gelu"],
     {"gelu": 1, "tanh": 0}, 1e-5),
    ("bias_gelu", lambda x, b: ops.gelu(x + b), dict(x="f32[2,3,8]", b="f32[8]"), ["fuse_bias_activation"],
     {"bias_activation": 1, "gelu": 0, "add": 0}, 1e-6),
    ("bias_relu_bias_first", lambda x, b: (b + x).relu(), dict(x="f32[2,3,8]", b="f32[8]"),
     ["fuse_bias_activation"], {"bias_activation": 1}, 0),
    ("residual_layer_norm", lambda x, y, w, b: ops.layer_norm(x + y, w, b),
     dict(x="f32[2,3,8]", y="f32[2,3,8]", w="f32[8]", b="f32[8]"), ["fuse_add_layer_norm"],
     {"add_layer_norm": 1, "layer_norm": 0, "add": 0}, 1e-6),
    ("matmul_of_two_transposes", lambda a, c: a.mT @ c.mT, dict(a="f32[2,4,3]", c="f32[2,5,4]"),
     ["fold_transposes"], {"transpose": 1, "matmul": 1}, 1e-6),
    ("masks_fold_to_one_bias",
     lambda s, keep, am: (ops.where(keep, s + F.padding_mask_bias(am), -1e9)).softmax(-1),
     dict(s="f32[2,2,3,3]", keep="bool[3,3]", am="i64[2,3]"), ["fold_masks"], {"where": 1, "add": 1}, 1e-6),
]

NEGATIVE = [
    ("integer_division_stays", lambda n: ops.div(n, 2), dict(n="i64[4]"), ["canonicalize"]),
    ("lossy_cast_round_trip_stays", lambda x: x.astype("float16").astype("float32"), X, ["canonicalize"]),
    ("reshapes_that_move_the_swapped_axes", lambda x: x.reshape(6, 5, 4).transpose(1, 2).reshape(2, 3, 4, 5),
     X4, ["canonicalize"]),
    ("reshapes_to_other_leading_dims", lambda x: x.reshape(6, 4, 5).transpose(1, 2).reshape(3, 2, 5, 4), X4,
     ["canonicalize"]),
    ("mask_and_a_broadcast_true", lambda m: ops.logical_and(m, np.ones((2, 3), bool)), dict(m="bool[3]"),
     ["canonicalize"]),
    ("normalized_over_a_middle_axis", _ln_middle_axis, X, ["canonicalize", "cse", "fuse_layer_norm"]),
    ("softmax_over_a_middle_axis", lambda x: _softmax(x, 1), X, ["fuse_softmax"]),
    ("gelu_wrong_constant", lambda x: 0.5 * x * (1.0 + ops.erf(x * 0.6)), X, ["canonicalize", "fuse_gelu"]),
    ("bias_sum_used_twice", lambda x, b: {"out": (x + b).relu(), "pre": x + b},
     dict(x="f32[2,3,8]", b="f32[8]"), ["cse", "fuse_bias_activation"]),
    ("bias_not_over_last_axis", lambda x, b: (x + b).relu(), dict(x="f32[2,8,3]", b="f32[8,1]"),
     ["fuse_bias_activation"]),
    ("residual_sum_used_twice", lambda x, y, w, b: {"out": ops.layer_norm(x + y, w, b), "sum": x + y},
     dict(x="f32[2,3,8]", y="f32[2,3,8]", w="f32[8]", b="f32[8]"), ["cse", "fuse_add_layer_norm"]),
    ("one_transpose_only", lambda a, c: a.mT @ c, dict(a="f32[2,4,3]", c="f32[2,4,5]"), ["fold_transposes"]),
    ("softmax_of_plain_logits", lambda s, b: (s + b).softmax(-1), dict(s="f32[2,3]", b="f32[3]"),
     ["fold_masks"]),
]


@pytest.mark.parametrize("name,fn,specs,names,expected,rtol", ROWS, ids=[r[0] for r in ROWS])
def test_rewrite(name, fn, specs, names, expected, rtol):
    g = gd.trace(fn, name=name, **specs)
    out = passes.run(g, names)
    counts = out.op_counts()
    assert {op: counts.get(op, 0) for op in expected} == expected, f"\n{g}\n->\n{out}"
    feed = random_feed(g, keep=np.tril(np.ones((3, 3), bool)), am=np.array([[1, 1, 0], [0, 0, 0]]))
    tol = dict(rtol=rtol, atol=rtol * 0.1)
    assert_same_numbers(g, out, feed, tol if rtol else dict(rtol=0, atol=0))


@pytest.mark.parametrize("name,fn,specs,names", NEGATIVE, ids=[r[0] for r in NEGATIVE])
def test_no_rewrite(name, fn, specs, names):
    prepared = passes.run(gd.trace(fn, name=name, **specs), names[:-1])
    assert str(passes.run(prepared, names[-1:])) == str(prepared)


def test_fused_norms_and_activations_differentiate_alike():
    def loss(x, w, b, w2):
        h = F.activation(x @ w2 + b, "gelu")
        return {"loss": (ops.layer_norm(h + x, w, b) * 1.5).sum()}

    g = gd.trace(loss, x="f64[2,3,8]", w="f64[8]", b="f64[8]", w2="f64[8,8]")
    train = assert_same_gradients(g, random_feed(g), wrt=["x", "w", "b", "w2"],
                                  tol=dict(rtol=1e-10, atol=1e-12))
    assert train.op_counts().get("add_layer_norm") == 1 and train.op_counts().get("bias_activation") == 1


def test_cse_shares_the_padding_bias_between_layers():
    def fn(s1, s2, am):
        return {"a": F.apply_mask(s1, F.padding_mask_bias(am)),
                "b": F.apply_mask(s2, F.padding_mask_bias(am))}

    g = gd.trace(fn, s1="f32[2,2,3,3]", s2="f32[2,2,3,3]", am="i64[2,3]")
    out = passes.run(g, ["cse"])
    assert out.op_counts()["cast"] == 1 and out.op_counts()["reshape"] == 1
    assert out.outputs["a"].inputs[1] is out.outputs["b"].inputs[1]


def test_dce_counts_what_it_removed():
    g = gd.trace(lambda x: x.exp(), x="f32[2]")
    report = passes.report(g, names=["dce"])
    assert report.passes[0].counts == {} and report.passes[0].nodes_after == report.passes[0].nodes_before
