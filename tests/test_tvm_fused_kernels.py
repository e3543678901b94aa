"""The llvm kernels of the norms and the fused ops, against the NumPy reference and by kernel count.

layer_norm and add_layer_norm with a static normalized axis are one kernel each on llvm
(backends/tvm/kernels/norm.py; the generic lowering is two reduction kernels, and add_layer_norm's
sum was stored once more). bias_activation has no kernel of its own: FuseOps puts ``act(x + b)``
in the epilogue of the matmul that makes ``x``. Every case compiles into one shared graph per
shape kind (static, symbolic) so the module builds once.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import backends
import graphdsl as gd
from graphdsl import ops

DTYPES = {"f64": (1e-12, 1e-12), "f32": (2e-6, 1e-5), "f16": (2e-3, 2e-3), "bf16": (1.6e-2, 1.6e-2)}
# (leading axes, normalized size): sizes below, at and past one vector of 16 lanes, not multiples too
STATIC = [((), 4), ((3,), 20), ((2, 5), 16), ((2, 3), 33), ((1, 4), 128)]


def _cases():
    for dt in DTYPES:
        for lead, n in STATIC:
            yield dt, lead, n


CASES = list(_cases())


def _case_name(dt, lead, n) -> str:
    return f"{dt}_{'x'.join(map(str, lead)) or 'row'}_{n}"


def _spec(dt, shape) -> str:
    return f"{dt}[{','.join(map(str, shape))}]"


def _feed(graph, rng, nan_rows: bool = False) -> dict:
    feed = {}
    for name, node in graph.inputs.items():
        t = node.type
        shape = tuple(t.shape)
        a = rng.standard_normal(shape) * 2.0 + 0.5
        if nan_rows and name.endswith("/x") and len(shape) >= 2:
            a[0, 0] = np.nan            # a row holding a NaN ...
            a[-1, -1] = np.inf          # ... and one holding an infinity (shape[0] >= 2 or the same row)
        feed[name] = a.astype(t.dtype.np)
    return feed


@pytest.fixture(scope="module")
def static_run():
    """Every case's layer_norm and add_layer_norm in one graph, on llvm and on the reference."""
    specs = {}
    for dt, lead, n in CASES:
        key = _case_name(dt, lead, n)
        specs[f"{key}/x"] = _spec(dt, (*lead, n))
        specs[f"{key}/r"] = _spec(dt, (*lead, n))
        specs[f"{key}/w"] = _spec(dt, (n,))
        specs[f"{key}/b"] = _spec(dt, (n,))

    def body(**a):
        out = {}
        for dt, lead, n in CASES:
            k = _case_name(dt, lead, n)
            x, r, w, b = (a[f"{k}/{s}"] for s in "xrwb")
            out[f"{k}/ln"] = ops.layer_norm(x, w, b, eps=1e-5)
            out[f"{k}/addln"] = ops.add_layer_norm(x, r, w, b, eps=0.25)
        return out
    graph = gd.trace(body, **specs)
    feed = _feed(graph, np.random.default_rng(0), nan_rows=True)
    return graph, backends.compile(graph, "numpy")(feed), backends.compile(graph, "llvm")(feed)


@pytest.mark.parametrize("op", ["ln", "addln"])
@pytest.mark.parametrize("dt,lead,n", CASES, ids=[_case_name(*c) for c in CASES])
def test_the_norm_kernel_matches_the_reference(static_run, op, dt, lead, n):
    _, want, got = static_run
    key = f"{_case_name(dt, lead, n)}/{op}"
    w, g = want[key], got[key]
    assert g.dtype == w.dtype and g.shape == w.shape
    atol, rtol = DTYPES[dt]
    w64, g64 = w.astype(np.float64), g.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(g64), np.isnan(w64), err_msg=f"{key}: NaN rows differ")
    if lead:   # the NaN and infinity rows are NaN throughout, the others are not
        assert np.isnan(w64[(0,) * len(lead)]).all() and not np.isnan(w64).all()
    keep = ~np.isnan(w64)
    np.testing.assert_allclose(g64[keep], w64[keep], atol=atol, rtol=rtol, err_msg=key)


def test_every_norm_of_the_static_graph_is_one_kernel(static_run):
    graph = static_run[0]
    rules = _schedule_rules(graph)
    norms = sum(n.op in ("layer_norm", "add_layer_norm") for n in graph.nodes)
    assert list(rules.values()).count("layer_norm_rows") == norms
    assert "dlight.Reduction" not in rules.values(), rules


def test_symbolic_rows_use_the_kernel_and_a_symbolic_normalized_axis_the_generic_lowering():
    def body(x, r, w, b, y, wy, by):
        return {"addln": ops.add_layer_norm(x, r, w, b), "ln": ops.layer_norm(y, wy, by)}
    graph = gd.trace(body, x="f32[batch,seq,24]", r="f32[batch,seq,24]", w="f32[24]", b="f32[24]",
                     y="f32[rows,n]", wy="f32[n]", by="f32[n]")
    rng = np.random.default_rng(1)
    exe, ref = backends.compile(graph, "llvm"), backends.compile(graph, "numpy")
    for batch, seq, rows, n in ((2, 7, 3, 5), (1, 1, 4, 40)):
        feed = {"x": rng.standard_normal((batch, seq, 24)), "r": rng.standard_normal((batch, seq, 24)),
                "w": rng.standard_normal(24), "b": rng.standard_normal(24),
                "y": rng.standard_normal((rows, n)), "wy": rng.standard_normal(n), "by": rng.standard_normal(n)}
        feed = {k: v.astype(np.float32) for k, v in feed.items()}
        got, want = exe(feed), ref(feed)
        for k in ("addln", "ln"):
            np.testing.assert_allclose(got[k], want[k], atol=2e-6, rtol=1e-5, err_msg=f"{k} at {batch},{seq}")
    rules = _schedule_rules(graph)
    assert rules.get("add_layer_norm") == "layer_norm_rows"
    assert "layer_norm" not in rules      # the symbolic one: the generic reductions


def _schedule_rules(graph) -> dict[str, str]:
    from backends.tvm.build import schedule_report
    from backends.tvm.lower import lower
    from backends.tvm.target import make_target
    return schedule_report(lower(graph, "llvm").mod, make_target("llvm"))


def test_bert_tiny_norms_are_one_kernel_each_and_bias_gelu_is_the_matmul_epilogue():
    """The profile of issue 12: BERT-tiny's level-2 graph, every LayerNorm one kernel (it was 3 with
    the residual add), every bias_activation inside its matmul's kernel."""
    import models
    import passes
    spec = models.get("bert-tiny")
    config = dataclasses.replace(spec.config, dropout=0.0)
    graph = passes.optimize(spec.forward(spec.build(config).eval()), level=2)
    counts = {op: sum(n.op == op for n in graph.nodes) for op in ("layer_norm", "add_layer_norm", "bias_activation")}
    assert counts["add_layer_norm"] >= 4 and counts["bias_activation"] >= 2, counts
    rules = _schedule_rules(graph)
    assert list(rules.values()).count("layer_norm_rows") == counts["layer_norm"] + counts["add_layer_norm"]
    assert not [k for k in rules if "mean" in k], f"a LayerNorm left as reductions: {sorted(rules)}"
    activations = [k for k in rules if "erf" in k or "tanh" in k]   # gelu's erf, the pooler's tanh
    assert activations and all(k.startswith("fused_matmul") and rules[k] == "matmul" for k in activations), \
        f"a bias activation outside its matmul's kernel: {sorted(rules)}"
