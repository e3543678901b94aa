"""Optimizers, clipping, schedules and the train-step graph, checked against plain NumPy.

Each reference below is written out from the published update rule (PyTorch's documented
pseudo-code for SGD, Adam and AdamW; ``clip_grad_norm_``; transformers' warm-up schedules),
independently of graphdsl.optim, and compared after every step.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

import backends
import graphdsl
from graphdsl import Parameter, ops
from graphdsl.errors import GraphDSLError, GraphError, TypeError_
from graphdsl.optim import (SGD, Adam, AdamW, Constant, LinearWarmupDecay, StepRunner, WarmupCosine,
                            clip_by_global_norm, make_train_step)
from graphdsl.tracing import as_tensor, current_builder

RNG = np.random.default_rng(0)
X = RNG.standard_normal((6, 3))
Y = RNG.standard_normal((6, 2))
W0 = RNG.standard_normal((3, 2))
B0 = RNG.standard_normal(2)


# -- the loss: linear regression, and its gradient by hand -----------------------------------------
def regression_graph(dtype=graphdsl.float64):
    P = {"w": Parameter((3, 2), dtype), "b": Parameter((2,), dtype)}

    def loss(x, y):
        r = x @ P["w"] + P["b"] - y
        return {"loss": (r * r).sum() * (1.0 / r.type.shape.numel()), "rows": y.sum() * 0.0 + 6.0, "r": r}

    t = graphdsl.TensorType
    return graphdsl.trace(loss, name="regression", params=P, x=t((6, 3), dtype), y=t((6, 2), dtype))


def regression_grads(p):
    r = X @ p["w"] + p["b"] - Y
    return {"w": 2.0 / r.size * X.T @ r, "b": 2.0 / r.size * r.sum(0)}


def run_steps(opt, n, dtype=graphdsl.float64, **kwargs):
    """Parameters after each of ``n`` steps of the compiled train step, and the metrics."""
    exe = backends.compile(make_train_step(regression_graph(dtype), opt, **kwargs), "numpy")
    np_dtype = dtype.np
    runner = StepRunner(exe, {"w": W0.astype(np_dtype), "b": B0.astype(np_dtype)})
    history = []
    for _ in range(n):
        metrics = runner.step({"x": X.astype(np_dtype), "y": Y.astype(np_dtype)})
        history.append(({k: v.copy() for k, v in runner.params.items()}, metrics))
    return history, runner


# -- NumPy references ---------------------------------------------------------------------------
def np_sgd(lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    def step(p, g, state, t):
        if weight_decay:
            g = g + weight_decay * p
        if momentum:
            state["buf"] = g if t == 1 else momentum * state["buf"] + g
            g = g + momentum * state["buf"] if nesterov else state["buf"]
        return p - lr * g
    return step


def np_adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    b1, b2 = betas

    def step(p, g, state, t):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        elif weight_decay:
            g = g + weight_decay * p
        state["m"] = b1 * state.get("m", 0.0) + (1 - b1) * g
        state["v"] = b2 * state.get("v", 0.0) + (1 - b2) * g * g
        m_hat = state["m"] / (1 - b1 ** t)
        v_hat = state["v"] / (1 - b2 ** t)
        return p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return step


def np_run(rule, n):
    params = {"w": W0.copy(), "b": B0.copy()}
    states = {"w": {}, "b": {}}
    history = []
    for t in range(1, n + 1):
        grads = regression_grads(params)
        params = {k: rule(params[k], grads[k], states[k], t) for k in params}
        history.append(params)
    return history


OPTIMIZERS = [
    # (id, graphdsl optimizer, NumPy rule, dtype, rtol)
    ("sgd", SGD(0.1), np_sgd(0.1), graphdsl.float64, 1e-12),
    ("sgd_momentum", SGD(0.1, momentum=0.9), np_sgd(0.1, 0.9), graphdsl.float64, 1e-12),
    ("sgd_nesterov", SGD(0.1, momentum=0.9, nesterov=True), np_sgd(0.1, 0.9, True), graphdsl.float64, 1e-12),
    ("sgd_weight_decay", SGD(0.1, momentum=0.5, weight_decay=0.1), np_sgd(0.1, 0.5, False, 0.1),
     graphdsl.float64, 1e-12),
    ("adam", Adam(0.05), np_adam(0.05), graphdsl.float64, 1e-12),
    ("adam_l2", Adam(0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
     np_adam(0.05, (0.8, 0.99), 1e-6, 0.1), graphdsl.float64, 1e-12),
    ("adamw", AdamW(0.05), np_adam(0.05, weight_decay=0.01, decoupled=True), graphdsl.float64, 1e-12),
    ("adamw_strong_decay", AdamW(0.05, betas=(0.5, 0.9), weight_decay=0.5),
     np_adam(0.05, (0.5, 0.9), 1e-8, 0.5, decoupled=True), graphdsl.float64, 1e-12),
    ("adamw_float32", AdamW(0.05), np_adam(0.05, weight_decay=0.01, decoupled=True), graphdsl.float32, 2e-6),
]


@pytest.mark.parametrize("opt,rule,dtype,rtol", [o[1:] for o in OPTIMIZERS], ids=[o[0] for o in OPTIMIZERS])
def test_optimizer_matches_numpy_rule(opt, rule, dtype, rtol):
    got, runner = run_steps(opt, 3, dtype)
    want = np_run(rule, 3)
    for t, ((params, _), expected) in enumerate(zip(got, want), 1):
        for k in expected:
            assert params[k].dtype == dtype.np
            np.testing.assert_allclose(params[k], expected[k], rtol=rtol, atol=rtol,
                                       err_msg=f"{opt!r}: parameter {k!r} after step {t}")
    assert runner.step_count == 3 and runner.state["step"].dtype == np.int64


def test_train_step_signature():
    g = make_train_step(regression_graph(), Adam(0.1), clip_norm=1.0, schedule=Constant())
    assert list(g.inputs) == ["x", "y", "state/step", "state/m/w", "state/m/b", "state/v/w", "state/v/b"]
    assert list(g.params) == ["w", "b"]
    assert list(g.outputs) == ["loss", "rows", "lr", "grad_norm", "update/w", "update/b", "state/step",
                               "state/m/w", "state/m/b", "state/v/w", "state/v/b"]
    assert g.inputs["state/step"].type == graphdsl.TensorType((), graphdsl.int64)
    assert g.outputs["update/w"].type == g.params["w"].type


def test_train_step_verifies_and_round_trips_through_json():
    g = make_train_step(regression_graph(), AdamW(0.1), clip_norm=1.0, schedule=WarmupCosine(2, 10))
    g.verify()
    again = graphdsl.Graph.from_json(g.to_json())
    feed = {"x": X, "y": Y, "w": W0, "b": B0, "state/step": np.int64(3),
            **{f"state/{s}/{k}": np.full_like(v, 0.1) for s in "mv" for k, v in (("w", W0), ("b", B0))}}
    want, got = backends.compile(g, "numpy")(feed), backends.compile(again, "numpy")(feed)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_metrics_and_loss_values():
    (params, metrics), = run_steps(SGD(0.1), 1)[0]
    r = X @ W0 + B0 - Y
    assert set(metrics) == {"loss", "rows", "lr"}  # the non-scalar output "r" is not a metric
    assert metrics["loss"] == pytest.approx(np.mean(r * r), rel=1e-12)
    assert metrics["rows"] == 6.0 and metrics["lr"] == pytest.approx(0.1)


# -- clipping -----------------------------------------------------------------------------------
def _clip_graph(types, max_norm):
    names = [f"g{i}" for i in range(len(types))]

    def f(**gs):
        clipped, norm = clip_by_global_norm(gs, max_norm)
        return {**{f"out/{k}": v for k, v in clipped.items()}, "norm": norm}

    return backends.compile(graphdsl.trace(f, name="clip", **dict(zip(names, types))), "numpy")


CLIPS = [
    # (id, gradients, max_norm, expected norm, expected scale)
    ("above", [np.array([3.0, 0.0]), np.array([[0.0, 4.0], [0.0, 0.0]])], 1.0, 5.0, 1.0 / (5.0 + 1e-6)),
    ("below", [np.array([3.0, 0.0]), np.array([[0.0, 4.0], [0.0, 0.0]])], 10.0, 5.0, 1.0),
    ("at_threshold", [np.array([0.6, 0.8])], 1.0, 1.0, 1.0 / (1.0 + 1e-6)),
    ("float16_no_overflow", [np.array([300.0, 400.0], np.float16)], 1000.0, 500.0, 1.0),
    ("float16_scaled", [np.array([300.0, 400.0], np.float16)], 50.0, 500.0, 50.0 / (500.0 + 1e-6)),
]


@pytest.mark.parametrize("grads,max_norm,norm,scale", [c[1:] for c in CLIPS], ids=[c[0] for c in CLIPS])
def test_clip_by_global_norm(grads, max_norm, norm, scale):
    exe = _clip_graph([graphdsl.TensorType(g.shape, graphdsl.dtypes.dtype(g.dtype)) for g in grads], max_norm)
    out = exe(**{f"g{i}": g for i, g in enumerate(grads)})
    rtol = 1e-12 if grads[0].dtype == np.float64 else 1e-3
    assert float(out["norm"]) == pytest.approx(norm, rel=rtol)
    for i, g in enumerate(grads):
        assert out[f"out/g{i}"].dtype == g.dtype
        np.testing.assert_allclose(out[f"out/g{i}"].astype(np.float64), g.astype(np.float64) * scale, rtol=rtol)


@pytest.mark.parametrize("clip", [0.05, 100.0], ids=["clipped", "unclipped"])
def test_train_step_clips_gradients(clip):
    (params, metrics), = run_steps(SGD(0.5), 1, clip_norm=clip)[0]
    grads = regression_grads({"w": W0, "b": B0})
    norm = math.sqrt(sum((g * g).sum() for g in grads.values()))
    scale = min(1.0, clip / (norm + 1e-6))
    assert metrics["grad_norm"] == pytest.approx(norm, rel=1e-12)
    np.testing.assert_allclose(params["w"], W0 - 0.5 * scale * grads["w"], rtol=1e-12)
    np.testing.assert_allclose(params["b"], B0 - 0.5 * scale * grads["b"], rtol=1e-12)


# -- schedules ----------------------------------------------------------------------------------
SCHEDULE_VALUES = [
    # (id, schedule, {step: hand-computed multiplier})
    ("constant", Constant(), {0: 1.0, 7: 1.0, 10_000: 1.0}),
    ("linear", LinearWarmupDecay(10, 110), {0: 0.0, 5: 0.5, 10: 1.0, 35: 0.75, 60: 0.5, 110: 0.0, 200: 0.0}),
    ("linear_no_warmup", LinearWarmupDecay(0, 4), {0: 1.0, 1: 0.75, 2: 0.5, 4: 0.0}),
    ("cosine", WarmupCosine(10, 110),
     {0: 0.0, 5: 0.5, 10: 1.0, 35: 0.5 * (1 + math.sqrt(0.5)), 60: 0.5, 85: 0.5 * (1 - math.sqrt(0.5)),
      110: 0.0, 500: 0.0}),
    ("cosine_floor", WarmupCosine(4, 14, min_ratio=0.1), {0: 0.0, 2: 0.5, 4: 1.0, 9: 0.55, 14: 0.1, 30: 0.1}),
]


@pytest.mark.parametrize("schedule,values", [s[1:] for s in SCHEDULE_VALUES], ids=[s[0] for s in SCHEDULE_VALUES])
def test_schedule_values(schedule, values):
    exe = backends.compile(graphdsl.trace(lambda step: {"out": schedule(step)}, step="i64[]"), "numpy")
    for step, want in values.items():
        assert schedule.value_at(step) == pytest.approx(want, abs=1e-12), f"{schedule!r}.value_at({step})"
    for step in sorted(set(values) | set(range(0, 130, 3))):
        got = exe(step=np.int64(step))["out"]
        assert got.dtype == np.float64
        assert float(got) == pytest.approx(schedule.value_at(step), abs=1e-12), f"{schedule!r} graph at {step}"


def test_train_step_reports_scheduled_lr_and_uses_it():
    history, _ = run_steps(SGD(0.2), 4, schedule=LinearWarmupDecay(2, 4))
    want_lr = [0.0, 0.1, 0.2, 0.1]  # 0.2 * (0/2, 1/2, 1, (4-3)/(4-2))
    assert [m["lr"] for _, m in history] == pytest.approx(want_lr, abs=1e-15)
    params = {"w": W0, "b": B0}
    for t, (got, _) in enumerate(history):
        grads = regression_grads(params)
        params = {k: params[k] - want_lr[t] * grads[k] for k in params}
        np.testing.assert_allclose(got["w"], params["w"], rtol=1e-12, err_msg=f"step {t}")


# -- per-parameter learning rates and frozen parameters --------------------------------------------
A = {"enc.w": np.array([1.0, 2.0]), "enc.b": np.array([3.0]), "head.w": np.array([[0.5, 1.5]])}


def quadratic_graph():
    """loss = sum over p of 0.5 * sum(a_p * p * p); its gradient is a_p * p."""
    P = {k: Parameter(a.shape, graphdsl.float64) for k, a in A.items()}

    def loss():
        consts = {k: current_builder().constant(a, graphdsl.float64) for k, a in A.items()}
        terms = [(as_tensor(P[k]) * as_tensor(P[k]) * consts[k]).sum() for k in A]
        return {"loss": (terms[0] + terms[1] + terms[2]) * 0.5}

    return graphdsl.trace(loss, name="quadratic", params=P)


P0 = {"enc.w": np.array([1.0, -1.0]), "enc.b": np.array([2.0]), "head.w": np.array([[-2.0, 0.5]])}


def test_lr_scale_longest_prefix_wins():
    opt = SGD(0.1, lr_scale={"enc.": 0.5, "enc.w": 0.1, "head": 2.0})
    assert [opt.scale_for(k) for k in ("enc.w", "enc.b", "head.w", "other")] == [0.1, 0.5, 2.0, 1.0]
    runner = StepRunner(backends.compile(make_train_step(quadratic_graph(), opt), "numpy"), P0)
    runner.step({})
    for name, scale in {"enc.w": 0.1, "enc.b": 0.5, "head.w": 2.0}.items():
        np.testing.assert_allclose(runner.params[name], P0[name] - 0.1 * scale * A[name] * P0[name], rtol=1e-12)


def test_frozen_parameters_keep_their_values():
    g = make_train_step(quadratic_graph(), Adam(0.1), wrt=["enc.w"])
    assert list(g.params) == ["enc.w", "enc.b", "head.w"]
    assert [k for k in g.outputs if k.startswith("update/")] == ["update/enc.w"]
    assert sorted(k for k in g.inputs if k.startswith("state/")) == ["state/m/enc.w", "state/step", "state/v/enc.w"]
    runner = StepRunner(backends.compile(g, "numpy"), P0)
    for _ in range(3):
        runner.step({})
    np.testing.assert_array_equal(runner.params["enc.b"], P0["enc.b"])
    np.testing.assert_array_equal(runner.params["head.w"], P0["head.w"])
    assert not np.allclose(runner.params["enc.w"], P0["enc.w"])


def test_runner_feeds_seed_from_step_counter():
    P = {"w": Parameter((1,), graphdsl.float64)}

    def loss(seed):
        d = as_tensor(P["w"]) - seed.astype("float64")
        return {"loss": (d * d).sum() * 0.5}  # gradient w - seed: SGD with lr 1 sets w to seed

    g = graphdsl.trace(loss, params=P, seed="i32[]")
    runner = StepRunner(backends.compile(make_train_step(g, SGD(1.0)), "numpy"), {"w": np.zeros(1)}, seed=10)
    runner.step({})
    assert runner.params["w"].tolist() == [10.0]
    runner.step({})
    assert runner.params["w"].tolist() == [11.0]
    runner.step({"seed": np.int32(3)})
    assert runner.params["w"].tolist() == [3.0]


# -- a small model trains ---------------------------------------------------------------------------
def test_mlp_regression_loss_falls_with_adamw():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 4)).astype(np.float32)
    y = np.tanh(x @ rng.standard_normal((4, 2))).astype(np.float32) * 2.0
    P = {"w1": Parameter((4, 16)), "b1": Parameter((16,)), "w2": Parameter((16, 2)), "b2": Parameter((2,))}

    def loss(x, y):
        h = ops.tanh(x @ P["w1"] + P["b1"])
        r = h @ P["w2"] + P["b2"] - y
        return {"loss": (r * r).sum() * (1.0 / 64)}

    g = graphdsl.trace(loss, params=P, x="f32[32,4]", y="f32[32,2]")
    step = make_train_step(g, AdamW(0.03), clip_norm=5.0, schedule=WarmupCosine(5, 50))
    init = {"w1": rng.standard_normal((4, 16)) * 0.5, "b1": np.zeros(16), "w2": rng.standard_normal((16, 2)) * 0.3,
            "b2": np.zeros(2)}
    runner = StepRunner(backends.compile(step, "numpy"), {k: v.astype(np.float32) for k, v in init.items()})
    losses = [runner.step({"x": x, "y": y})["loss"] for _ in range(50)]
    assert losses[-1] < losses[0] / 5, f"loss went from {losses[0]:.4f} to {losses[-1]:.4f}"
    assert all(v.dtype == np.float32 for v in runner.params.values())


# -- errors -------------------------------------------------------------------------------------
def _graph_with_input_named(name):
    return graphdsl.trace(lambda **xs: {"loss": xs[name].sum()}, **{name: "f32[2]"})


ERRORS = [
    # (id, thunk, error class, message regex)
    ("wrt_input", lambda: make_train_step(regression_graph(), SGD(0.1), wrt=["x"]), GraphError,
     r"'x' is an input of graph 'regression'"),
    ("wrt_unknown", lambda: make_train_step(regression_graph(), SGD(0.1), wrt=["nope"]), GraphError,
     r"'nope' is not a parameter"),
    ("state_name_clash", lambda: make_train_step(_graph_with_input_named("state/x"), SGD(0.1)), GraphError,
     r"input 'state/x' clashes"),
    ("metric_name_clash", lambda: make_train_step(
        graphdsl.trace(lambda x: {"loss": x.sum(), "lr": x.sum()}, x="f32[2]"), SGD(0.1)), GraphError,
     r"output 'lr' clashes"),
    ("missing_loss", lambda: make_train_step(regression_graph(), SGD(0.1), loss="cost"), GraphError,
     r"no output named 'cost'"),
    ("non_scalar_loss", lambda: make_train_step(regression_graph(), SGD(0.1), loss="r"), TypeError_,
     r"must be a float scalar"),
    ("runner_missing_params", lambda: StepRunner(
        backends.compile(make_train_step(regression_graph(), SGD(0.1)), "numpy"), {"w": W0}), GraphError,
     r"no initial value for parameters \['b'\]"),
    ("negative_lr", lambda: SGD(-0.1), GraphDSLError, r"learning rate must be >= 0"),
    ("nesterov_without_momentum", lambda: SGD(0.1, nesterov=True), GraphDSLError, r"nesterov momentum needs"),
    ("bad_betas", lambda: Adam(0.1, betas=(1.0, 0.9)), GraphDSLError, r"betas must lie in \[0, 1\)"),
    ("bad_clip", lambda: make_train_step(regression_graph(), SGD(0.1), clip_norm=0.0), GraphDSLError,
     r"max_norm must be positive"),
    ("warmup_after_total", lambda: LinearWarmupDecay(10, 5), GraphDSLError, r"warmup_steps <= total_steps"),
    ("bad_min_ratio", lambda: WarmupCosine(1, 5, min_ratio=2.0), GraphDSLError, r"min_ratio must lie in"),
]


@pytest.mark.parametrize("thunk,error,match", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors(thunk, error, match):
    with pytest.raises(error) as info:
        thunk()
    assert re.search(match, str(info.value)), f"message {str(info.value)!r} does not match {match!r}"
