"""Every op-table row on the llvm target against the NumPy reference, forward and gradient.

Compiling is what costs time, so every sample goes into ONE graph (sample k's inputs are named
``s<k>/x<i>``, its output ``s<k>``) built once per module; each sample is still its own test case,
reading its output from the shared run. The gradient graph likewise holds every differentiable
sample: the loss is the sum of the samples' ``sum(w * op(x))``, whose gradient with respect to
sample k's inputs is sample k's own gradient.
"""
from __future__ import annotations

import numpy as np
import pytest

import backends
import graphdsl
from graphdsl import registry
from graphdsl.autodiff import grad
from graphdsl.types import TensorType
from tests.test_ops import SAMPLES, _float_inputs, _types


GRAD_SAMPLES = [p for p in SAMPLES if p.values[1].grad and registry.get(p.values[0].op).differentiable
                and _float_inputs(p.values[1])]


def test_every_op_has_a_tvm_lowering_or_a_decomposition():
    from backends.tvm.table import TABLE
    ops = registry.all_ops()
    missing = sorted(name for name, op in ops.items() if name not in TABLE and op.decompose is None)
    assert not missing, f"ops with neither a TVM lowering (backends/tvm/rules) nor a decomposition: {missing}"


def _key(k: int, i: int) -> str:
    return f"s{k}/x{i}"


def _forward_graph():
    """One graph computing every sample: output ``s<k>`` from inputs ``s<k>/x<i>``."""
    specs, feed = {}, {}
    for k, p in enumerate(SAMPLES):
        for i, (a, t) in enumerate(zip(p.values[1].inputs, _types(p.values[1].inputs))):
            specs[_key(k, i)], feed[_key(k, i)] = t, a

    def body(**xs):
        outs = {}
        for k, p in enumerate(SAMPLES):
            row, sample = p.values
            args = [xs[_key(k, i)] for i in range(len(sample.inputs))]
            outs[f"s{k}"] = row.fn()(*args, **sample.attrs)
        return outs
    return graphdsl.trace(body, name="all_samples", **specs), feed


@pytest.fixture(scope="module")
def forward_results():
    graph, feed = _forward_graph()
    want = backends.compile(graph, "numpy")(feed)
    got = backends.compile(graph, "llvm")(feed)
    return want, got


@pytest.mark.parametrize("row,sample", SAMPLES)
def test_llvm_matches_numpy(forward_results, row, sample):
    want, got = forward_results
    k = next(i for i, p in enumerate(SAMPLES) if p.values[1] is sample)
    w, g = want[f"s{k}"], got[f"s{k}"]
    assert g.dtype == w.dtype and g.shape == w.shape, f"llvm gave {g.dtype}{list(g.shape)}, numpy {w.dtype}{list(w.shape)}"
    if w.dtype.kind == "f":
        np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), atol=max(sample.atol, 1e-7),
                                   rtol=max(sample.rtol, 1e-6), err_msg=f"{row.op}: llvm vs numpy")
    else:
        np.testing.assert_array_equal(g, w, err_msg=f"{row.op}: llvm vs numpy")


def _gradient_graph():
    """grad of sum_k sum(w_k * op_k(x_k)) w.r.t. every float input of every differentiable sample."""
    specs, feed, wrt = {}, {}, []
    for k, p in enumerate(GRAD_SAMPLES):
        row, sample = p.values
        inputs = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in sample.inputs]
        for i, (a, t) in enumerate(zip(inputs, _types(inputs))):
            specs[_key(k, i)], feed[_key(k, i)] = t, a
        wrt += [_key(k, i) for i in _float_inputs(sample)]
        out_type = graphdsl.trace(lambda **xs: row.fn()(*xs.values(), **sample.attrs),
                                  **{f"x{i}": t for i, t in enumerate(_types(inputs))}).outputs["out"].type
        weights = np.random.default_rng(k).standard_normal(tuple(out_type.shape.evaluate({})))
        specs[f"s{k}/w"], feed[f"s{k}/w"] = TensorType(weights.shape, graphdsl.float64), weights

    def loss(**xs):
        total = 0.0
        for k, p in enumerate(GRAD_SAMPLES):
            row, sample = p.values
            out = row.fn()(*[xs[_key(k, i)] for i in range(len(sample.inputs))], **sample.attrs)
            total = total + (out * xs[f"s{k}/w"]).sum()
        return {"loss": total}
    return grad(graphdsl.trace(loss, name="all_gradients", **specs), wrt=wrt), feed, wrt


@pytest.fixture(scope="module")
def gradient_results():
    graph, feed, _ = _gradient_graph()
    return backends.compile(graph, "numpy")(feed), backends.compile(graph, "llvm")(feed)


@pytest.mark.parametrize("row,sample", GRAD_SAMPLES)
def test_llvm_gradient_matches_numpy(gradient_results, row, sample):
    want, got = gradient_results
    k = next(i for i, p in enumerate(GRAD_SAMPLES) if p.values[1] is sample)
    for i in _float_inputs(sample):
        name = f"grad/{_key(k, i)}"
        np.testing.assert_allclose(got[name], want[name], atol=1e-8, rtol=1e-6,
                                   err_msg=f"d loss / d x{i} for {row.op}: llvm vs numpy")

