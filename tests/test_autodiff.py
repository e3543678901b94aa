"""Reverse-mode autodiff: gradients of composite graphs vs central differences, errors, locations.

Per-op gradients are checked by the op table (tests/test_ops.py); these tests check what only a
whole graph shows: shared subexpressions, a value used twice, broadcasting, unused parameters,
gradients with respect to inputs, the forward outputs kept, and source lines on gradient nodes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

import backends
import graphdsl
from graphdsl import Parameter, ops
from graphdsl.autodiff import grad
from graphdsl.errors import GraphError, TypeError_
from graphdsl.tracing import as_tensor


def _rand(*shape, seed=0, low=None):
    rng = np.random.default_rng(seed)
    if low is not None:
        return rng.uniform(low, low + 1.5, shape)
    return rng.standard_normal(shape)


@dataclass
class Case:
    """A loss over inputs (``inputs``) and parameters (``params``), and the names to differentiate."""

    name: str
    fn: Callable                 # fn(P, **inputs) -> scalar Tensor or dict with "loss"
    inputs: dict
    params: dict = field(default_factory=dict)
    wrt: tuple = ()


def _shared_subexpression(P, x):
    t = x * P["w"]                      # used by three consumers
    return (t * t + ops.exp(t) - t / 3.0).sum()


def _value_used_twice(P, x):
    return (x * x).sum() + (P["w"] * P["w"] * x).sum()


def _broadcast_adds(P, x):
    h = x + P["b"] + P["c"]             # [3,4] + [4] + [3,1]
    return (ops.tanh(h) * x).sum()


def _mlp(P, x):
    h = ops.tanh(x @ P["w1"] + P["b1"])
    y = h @ P["w2"]
    return (y * y).sum() * 0.5


def _shape_ops(P, x):
    y = (x.reshape(2, 6).transpose(-1, -2) @ P["w"]).broadcast_to((3, 6, 2))
    return (ops.sqrt(y * y + 1.0) / (P["w"].sum() + 5.0)).sum()


def _where_max(P, x):
    m = ops.maximum(x, P["w"])          # inputs chosen away from ties
    return ops.where(x > 0.0, m * m, -m).sum()


def _unused_param(P, x):
    return (x * P["w"]).sum()           # P["u"] is declared but never used


def _wrt_input(P, x, y):
    return ((x @ P["w"] - y) * (x @ P["w"] - y)).sum()


CASES = [
    Case("shared_subexpression", _shared_subexpression, {"x": _rand(3, 4)},
         {"w": _rand(3, 4, seed=1)}, ("w", "x")),
    Case("value_used_twice", _value_used_twice, {"x": _rand(2, 3)}, {"w": _rand(2, 3, seed=1)}, ("w", "x")),
    Case("broadcast_adds", _broadcast_adds, {"x": _rand(3, 4)},
         {"b": _rand(4, seed=1), "c": _rand(3, 1, seed=2)}, ("b", "c", "x")),
    Case("mlp", _mlp, {"x": _rand(5, 3)},
         {"w1": _rand(3, 4, seed=1), "b1": _rand(4, seed=2), "w2": _rand(4, 2, seed=3)}, ("w1", "b1", "w2")),
    Case("shape_ops", _shape_ops, {"x": _rand(3, 4)}, {"w": _rand(2, 2, seed=1)}, ("w", "x")),
    Case("where_max", _where_max, {"x": np.array([[-1.5, 0.7], [2.0, -0.3]])},
         {"w": np.array([[0.5, -1.0], [1.0, 0.4]])}, ("w", "x")),
    Case("unused_param", _unused_param, {"x": _rand(2, 2)}, {"w": _rand(2, 2, seed=1), "u": _rand(3, seed=2)},
         ("w", "u")),
    Case("wrt_input_only", _wrt_input, {"x": _rand(4, 3), "y": _rand(4, 2, seed=1)},
         {"w": _rand(3, 2, seed=2)}, ("x", "y")),
]


def _trace(case: Case) -> graphdsl.Graph:
    P = {k: Parameter(v.shape, graphdsl.float64) for k, v in case.params.items()}

    def loss(**xs):
        params = {k: as_tensor(p) for k, p in P.items()}  # declares every parameter, used or not
        out = case.fn(params, **xs)
        return out if isinstance(out, dict) else {"loss": out}

    specs = {k: graphdsl.TensorType(v.shape, graphdsl.float64) for k, v in case.inputs.items()}
    return graphdsl.trace(loss, name=case.name, params=P, **specs)


def _central_differences(fwd, feed, name, eps=1e-6):
    x = feed[name]
    out = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += eps
        minus[idx] -= eps
        out[idx] = (fwd(**{**feed, name: plus})["loss"] - fwd(**{**feed, name: minus})["loss"]) / (2 * eps)
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_gradient_matches_central_differences(case):
    g = _trace(case)
    fwd = backends.compile(g, "numpy")
    got = backends.compile(grad(g, wrt=case.wrt), "numpy")(**case.inputs, **case.params)
    feed = {**case.inputs, **case.params}
    for name in case.wrt:
        numeric = _central_differences(fwd, feed, name)
        np.testing.assert_allclose(got[f"grad/{name}"], numeric, rtol=1e-6, atol=1e-7,
                                   err_msg=f"{case.name}: d loss / d {name}, analytic vs central differences")


def test_unused_parameter_gets_zero_gradient_of_its_type():
    case = next(c for c in CASES if c.name == "unused_param")
    gg = grad(_trace(case), wrt=["u"])
    assert gg.outputs["grad/u"].type == graphdsl.TensorType((3,), graphdsl.float64)
    out = backends.compile(gg, "numpy")(**case.inputs, **case.params)
    np.testing.assert_array_equal(out["grad/u"], np.zeros(3))


def test_default_wrt_is_every_float_parameter():
    case = next(c for c in CASES if c.name == "mlp")
    gg = grad(_trace(case))
    assert sorted(k for k in gg.outputs if k.startswith("grad/")) == ["grad/b1", "grad/w1", "grad/w2"]


def test_grad_graph_keeps_forward_outputs():
    P = {"w": Parameter((3,), graphdsl.float64)}

    def f(x):
        y = x * P["w"]
        return {"loss": (y * y).sum(), "y": y, "total": x.sum()}

    g = graphdsl.trace(f, params=P, x="f64[3]")
    gg = grad(g, wrt=["w"])
    assert list(gg.outputs) == ["loss", "y", "total", "grad/w"]
    feed = {"x": np.array([1.0, 2.0, -1.0]), "w": np.array([0.5, -2.0, 3.0])}
    fwd, both = backends.compile(g, "numpy")(**feed), backends.compile(gg, "numpy")(**feed)
    for k in fwd:
        np.testing.assert_array_equal(both[k], fwd[k])
    np.testing.assert_allclose(both["grad/w"], 2 * feed["x"] ** 2 * feed["w"])
    only_loss = grad(g, wrt=["w"], keep_outputs=False)
    assert list(only_loss.outputs) == ["loss", "grad/w"]


def _two_outputs(x):
    return {"a": x.sum(), "b": (x * 2.0).sum()}


ERRORS = [
    # (name, traced fn, input spec, grad kwargs, error class, message regex)
    ("non_scalar_loss", lambda x: {"loss": x * 2.0}, "f32[3]", {"wrt": ["x"]}, TypeError_,
     r"loss 'loss' must be a float scalar, got f32\[3\]"),
    ("int_loss", lambda x: {"loss": x.sum()}, "i32[3]", {"wrt": []}, TypeError_, r"must be a float scalar"),
    ("unknown_wrt", lambda x: {"loss": x.sum()}, "f32[3]", {"wrt": ["nope"]}, GraphError,
     r"'nope' is not an input or parameter"),
    ("int_wrt", lambda x, n: {"loss": x.sum() + n.astype("float32").sum()}, ("f32[3]", "i64[3]"),
     {"wrt": ["n"]}, TypeError_, r"cannot differentiate with respect to 'n' of type i64\[3\]"),
    ("ambiguous_loss", _two_outputs, "f32[3]", {"wrt": ["x"]}, GraphError, r"which output is the loss\?"),
    ("missing_loss", lambda x: {"loss": x.sum()}, "f32[3]", {"wrt": ["x"], "loss": "cost"}, GraphError,
     r"no output named 'cost'"),
]


@pytest.mark.parametrize("name,fn,spec,kwargs,error,match", ERRORS, ids=[e[0] for e in ERRORS])
def test_grad_errors(name, fn, spec, kwargs, error, match):
    specs = dict(zip(["x", "n"], spec if isinstance(spec, tuple) else (spec,)))
    g = graphdsl.trace(fn, name=name, **specs)
    with pytest.raises(error) as info:
        grad(g, **kwargs)
    assert re.search(match, str(info.value)), f"message {str(info.value)!r} does not match {match!r}"


def test_single_output_is_the_loss_by_default():
    g = graphdsl.trace(lambda x: (x * x).sum(), name="sq", x="f64[2]")
    out = backends.compile(grad(g, wrt=["x"]), "numpy")(x=np.array([1.0, -3.0]))
    np.testing.assert_allclose(out["grad/x"], [2.0, -6.0])


def test_gradient_nodes_carry_the_forward_source_line():
    P = {"w": Parameter((3,), graphdsl.float64)}

    def f(x):
        t = ops.tanh(x * P["w"])  # forward-op-line
        return {"loss": (t * t).sum()}

    g = graphdsl.trace(f, params=P, x="f64[3]")
    line = next(i for i, text in enumerate(open(__file__), 1) if text.rstrip().endswith("# forward-op-line"))
    forward = {id(n) for n in g.nodes}
    gg = grad(g, wrt=["w", "x"])
    for out in ("grad/w", "grad/x"):
        loc = gg.outputs[out].loc
        assert loc is not None and loc.file.endswith("test_autodiff.py") and loc.line == line, \
            f"{out} is located at {loc}, want the forward op's line {line}"
    tanh_grads = [n for n in gg.nodes if n.op == "mul" and id(n) not in forward and n.loc.line == line]
    assert tanh_grads, "the tanh and mul gradient nodes should point at the forward line"


def test_accumulated_gradients_point_at_a_forward_line():
    def f(x):
        a = ops.exp(x)  # first-use-line
        return {"loss": (a * 2.0).sum() + (a * a).sum()}  # second-use-line

    g = graphdsl.trace(f, x="f64[3]")
    lines = {i for i, text in enumerate(open(__file__), 1)
             if text.rstrip().endswith(("# first-use-line", "# second-use-line"))}
    gg = grad(g, wrt=["x"])
    forward = {id(n) for n in g.nodes}
    for n in gg.nodes:
        if id(n) in forward or n.is_source or n.op in ("full", "constant"):
            continue
        assert n.loc is not None and n.loc.line in lines, f"{n.op} node located at {n.loc}, want one of {lines}"
