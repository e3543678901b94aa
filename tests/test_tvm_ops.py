"""Every op-table row on the llvm target against the NumPy reference, forward and gradient.

Compiling is what costs time, so every sample goes into ONE graph (sample k's inputs are named
``s<k>/x<i>``, its output ``s<k>``) built once per module; each sample is still its own test case,
reading its output from the shared run. The gradient graph likewise holds every differentiable
sample: the loss is the sum of the samples' ``sum(w * op(x))``, whose gradient with respect to
sample k's inputs is sample k's own gradient. tests/framework.py builds both graphs (all_samples_graph,
all_gradients_graph); tests/test_tvm_cuda.py builds them for cuda.
"""
from __future__ import annotations

import numpy as np
import pytest

import backends
from tests.framework import GRAD_SAMPLES, SAMPLES, all_gradients_graph, all_samples_graph, float_inputs, sample_key


@pytest.fixture(scope="module")
def forward_results():
    graph, feed = all_samples_graph()
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


@pytest.fixture(scope="module")
def gradient_results():
    graph, feed, _ = all_gradients_graph()
    return backends.compile(graph, "numpy")(feed), backends.compile(graph, "llvm")(feed)


@pytest.mark.parametrize("row,sample", GRAD_SAMPLES)
def test_llvm_gradient_matches_numpy(gradient_results, row, sample):
    want, got = gradient_results
    k = next(i for i, p in enumerate(GRAD_SAMPLES) if p.values[1] is sample)
    for i in float_inputs(sample):
        name = f"grad/{sample_key(k, i)}"
        np.testing.assert_allclose(got[name], want[name], atol=1e-8, rtol=1e-6,
                                   err_msg=f"d loss / d x{i} for {row.op}: llvm vs numpy")

