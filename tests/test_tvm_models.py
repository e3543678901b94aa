"""Every tiny zoo model on llvm against NumPy: the forward pass and one whole training step
(forward, backward, clipping, AdamW), and a few steps following the same loss curve."""
from __future__ import annotations

import numpy as np
import pytest

import backends
import models
from graphdsl.cli.tvm_cmd import model_case
from graphdsl.optim import StepRunner


TINY = [n for n in models.names() if n.endswith("-tiny")]


@pytest.mark.parametrize("train", [False, True], ids=["forward", "train_step"])
@pytest.mark.parametrize("name", TINY)
def test_llvm_matches_numpy(name, train):
    graph, inputs = model_case(name, train=train)
    report = backends.compare(graph, ["numpy", "llvm"], inputs, repeat=0)
    llvm = report["targets"]["llvm"]
    assert "error" not in llvm, llvm.get("error")
    bad = {k: v for k, v in llvm["outputs"].items() if not v["ok"]}
    assert not bad, f"{name}: outputs beyond atol {llvm['atol']}, rtol {llvm['rtol']}: {bad}"


def test_optimizer_steps_follow_the_numpy_loss_curve():
    graph, inputs = model_case("gpt-tiny", train=True)
    params = {k: inputs[k] for k in graph.params}
    batch = {k: v for k, v in inputs.items() if k in graph.inputs and not k.startswith("state/")}
    curves = []
    for target in ("numpy", "llvm"):
        runner = StepRunner(backends.compile(graph, target), params, seed=1)
        curves.append([runner.step(batch)["loss"] for _ in range(4)])
    np.testing.assert_allclose(curves[1], curves[0], rtol=1e-4)
    assert curves[1][-1] < curves[1][0]
