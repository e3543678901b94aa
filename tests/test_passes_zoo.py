"""Every model of the zoo, traced as written (no attention op in it), after ``optimize(level=2)``.

For every model: as many attention ops as the spec says attention blocks, and no softmax left.
For the tiny ones (each family's smallest config: the same code as the larger ones, quick to
run): the same outputs on the model's example batch, and the same gradients of the pretraining
loss, differentiated as written and optimized for training (fused, then differentiated); that
training graph has attention_grad ops for the backward and no softmax but the loss gradient's.
"""
from __future__ import annotations

import numpy as np
import pytest

import models
import passes
from backends.base import bind_inputs
from graphdsl.autodiff import grad
from tests.passes_check import assert_close, count, random_feed, run

NAMES = models.names()
RUNNABLE = [n for n in NAMES if n.endswith("-tiny")]
TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_attention_blocks_fuse(name):
    spec = models.get(name)
    forward = spec.forward(spec.module().eval())
    assert count(forward, "attention") == 0, "the zoo writes attention out; the passes fuse it"
    fused = passes.optimize(forward, level=2)
    assert count(fused, "attention") == spec.attention_blocks, passes.report(forward)
    assert count(fused, "softmax") == 0


def assert_backward_is_fused(train, blocks: int) -> None:
    """The attention backward is attention_grad ops (one per q, k, v and, when the bias needs one,
    bias); the only softmax left is the cross-entropy gradient's, softmax(logits) - onehot."""
    grads = [n for n in train.nodes if n.op == "attention_grad"]
    assert 3 * blocks <= len(grads) <= 4 * blocks, train.op_counts()
    assert {n.attrs["wrt"] for n in grads} >= {"q", "k", "v"}
    logits = {id(n.inputs[0]) for n in train.nodes if n.op == "cross_entropy"}
    stray = [n for n in train.nodes if n.op == "softmax" and id(n.inputs[0]) not in logits]
    assert not stray, f"softmax left in the training graph: {stray}"


def _feeds(spec, module):
    params = module.init(0)
    loss_graph = spec.loss(module.train())
    batch = spec.example_batch(2)
    feed = random_feed(loss_graph, seed=1, **batch, **params)
    _, dims = bind_inputs(loss_graph, (), feed)
    return loss_graph, feed, dims, params, batch


@pytest.mark.parametrize("name", RUNNABLE)
def test_numbers_and_gradients_match(name):
    spec = models.get(name)
    module = spec.module()
    loss_graph, feed, dims, params, batch = _feeds(spec, module)
    forward = spec.forward(module.eval())
    fwd_feed = random_feed(forward, dims=dims, seed=2, **{k: v for k, v in {**batch, **params}.items()
                                                          if k in forward.inputs or k in forward.params})
    assert_close(run(passes.optimize(forward), fwd_feed), run(forward, fwd_feed), f"{name} forward", TOL)

    wrt = [k for k, n in loss_graph.params.items() if n.type.dtype.is_float]
    train = passes.optimize_for_training(loss_graph, wrt=wrt)
    assert count(train, "attention") == spec.attention_blocks
    assert_backward_is_fused(train, spec.attention_blocks)
    want = run(grad(loss_graph, wrt=wrt), feed)
    got = run(train, feed)
    assert_close(got, want, f"{name} training", TOL)
    assert np.isfinite(got["loss"])
