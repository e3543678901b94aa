"""Whole models on llvm against NumPy: a 2-layer Transformer encoder's forward pass, its training
step (forward + backward + clipping + AdamW, with dropout drawing the same masks), and a few
optimizer steps following the same loss curve."""
from __future__ import annotations

import numpy as np
import pytest

import backends
import graphdsl as gd
from graphdsl import ops
from graphdsl.optim import AdamW, StepRunner, make_train_step
from tests.encoder_classifier import EncoderClassifier, padded_batch


@pytest.fixture(scope="module")
def model():
    return EncoderClassifier()


@pytest.fixture(scope="module")
def step_graph(model):
    def loss_fn(ids, mask, labels):
        return {"loss": ops.cross_entropy(model.train()(ids, mask), labels)}
    graph = gd.trace(loss_fn, params=model, ids="i64[batch,seq]", mask="i64[batch,seq]", labels="i64[batch]")
    return make_train_step(graph, AdamW(lr=3e-3), clip_norm=1.0)


@pytest.fixture(scope="module")
def step_exes(step_graph):
    return backends.compile(step_graph, "numpy"), backends.compile(step_graph, "llvm")


def test_forward_matches_numpy_for_several_shapes(model):
    """One build with symbolic batch and seq serves every shape."""
    graph = gd.trace(lambda ids, mask: model.eval()(ids, mask), params=model,
                     ids="i64[batch,seq]", mask="i64[batch,seq]")
    ref, exe = backends.compile(graph, "numpy"), backends.compile(graph, "llvm")
    params = model.init(seed=0)
    for n, seq in [(3, 10), (5, 4)]:
        batch = padded_batch(np.random.default_rng(n), n, seq)
        feed = {"ids": batch["ids"], "mask": batch["mask"], **params}
        np.testing.assert_allclose(exe(feed)["out"], ref(feed)["out"], atol=2e-5, rtol=1e-4)


def test_train_step_matches_numpy(model, step_graph, step_exes):
    ref, exe = step_exes
    runner = StepRunner(ref, model.init(seed=0))
    feed = {**padded_batch(np.random.default_rng(0)), **runner.params, "seed": np.int32(7),
            **{f"state/{k}": v for k, v in runner.state.items()}}
    want, got = ref(feed), exe(feed)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=2e-5, rtol=2e-4, err_msg=f"output {name}")


def test_optimizer_steps_follow_the_numpy_loss_curve(model, step_exes):
    ref, exe = step_exes
    batch = padded_batch(np.random.default_rng(1))
    curves = []
    for compiled in (ref, exe):
        runner = StepRunner(compiled, model.init(seed=0), seed=3)
        curves.append([runner.step(batch)["loss"] for _ in range(5)])
    np.testing.assert_allclose(curves[1], curves[0], rtol=1e-3)
    assert curves[1][-1] < curves[1][0]
