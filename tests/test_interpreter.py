"""The one graph walker (graphdsl.interpreter) and what stands on it: hooks, pre-bound envs,
decomposition graphs, named op inputs, and walks that stay right when node ids are reused.

The last tests rebuild the situation that made three walkers carry id-reuse workarounds: many
graphs built and dropped in a loop, so the garbage collector hands the freed nodes' ids to new
nodes. A walker keyed by ``id(node)`` can then confuse two nodes; one keyed by ``Node`` cannot.
"""
from __future__ import annotations

import gc

import numpy as np
import pytest

import backends
import graphdsl as gd
from graphdsl import ops
from graphdsl.autodiff import grad
from graphdsl.errors import GraphDSLError, LoweringError, UnknownOpError
from graphdsl.interpreter import Interpreter, Replay, bind_decomposition, decomposition_graph, inline
from graphdsl.registry import get

RNG = np.random.default_rng(0)


def _affine():
    return gd.trace(lambda x, w: {"y": x @ w + 1.0, "s": (x * x).sum()}, x="f32[2,3]", w="f32[3,4]")


class Reference(Interpreter):
    """The smallest useful interpreter: every op by its NumPy reference, every visit counted."""

    def __init__(self, graph):
        super().__init__(graph)
        self.visited = []

    def visit(self, node):
        self.visited.append(node)
        return super().visit(node)

    def call(self, node, args):
        return get(node.op).ref(*args, **dict(node.attrs))


def test_hooks_compute_every_output_by_name():
    g = _affine()
    x, w = RNG.standard_normal((2, 3)).astype(np.float32), RNG.standard_normal((3, 4)).astype(np.float32)
    walk = Reference(g)
    out = walk.run({"x": x, "w": w})
    assert set(out) == {"y", "s"}
    np.testing.assert_allclose(out["y"], x @ w + 1.0, rtol=1e-6)
    np.testing.assert_allclose(out["s"], (x * x).sum(), rtol=1e-6)
    assert walk.visited == list(g.nodes)                   # each node once, in node order
    assert set(walk.env) == set(g.nodes)                   # the env is keyed by Node


def test_source_and_constant_hooks_can_be_overridden():
    class Doubled(Reference):
        def source(self, node):
            return 2 * self.values[node.attrs["name"]]

        def constant(self, node):
            return node.attrs["value"] * 0   # every constant reads as zero

    g = _affine()
    x, w = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    out = Doubled(g).run({"x": x, "w": w})
    np.testing.assert_allclose(out["y"], (2 * x) @ (2 * w))   # the 1.0 became 0


def test_a_source_without_a_value_is_an_error():
    with pytest.raises(GraphDSLError, match="no value for input 'w'"):
        Reference(_affine()).run({"x": np.ones((2, 3), np.float32)})


def test_prebound_nodes_are_not_visited():
    g = _affine()
    matmul = next(n for n in g.nodes if n.op == "matmul")
    walk = Reference(g)
    out = walk.run({"x": np.ones((2, 3), np.float32), "w": np.ones((3, 4), np.float32)},
                   env={matmul: np.full((2, 4), 10.0, np.float32)})
    assert matmul not in walk.visited
    np.testing.assert_allclose(out["y"], 11.0)             # the pre-bound value was used
    np.testing.assert_allclose(out["s"], 6.0)              # the rest ran as usual


def test_decomposition_graph_names_inputs_x0_x1_and_its_output_out():
    g = gd.trace(lambda x, r, w, b: ops.add_layer_norm(x, r, w, b, eps=1e-5),
                 x="f32[2,8]", r="f32[2,8]", w="f32[8]", b="f32[8]")
    node = g.outputs["out"]
    sub = decomposition_graph(node)
    assert list(sub.inputs) == ["x0", "x1", "x2", "x3"] and list(sub.outputs) == ["out"]
    assert [n.type for n in sub.inputs.values()] == [i.type for i in node.inputs]
    assert "add_layer_norm" not in sub.op_counts()
    args = [RNG.standard_normal(tuple(i.type.shape)).astype(np.float32) for i in node.inputs]
    want = get("add_layer_norm").ref(*args, eps=1e-5)
    got = backends.compile(sub, "numpy")(**{f"x{i}": a for i, a in enumerate(args)})["out"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_bind_decomposition_binds_the_inputs_to_the_given_values():
    g = gd.trace(lambda x, b: ops.bias_activation(x, b, activation="relu"), x="f32[3,4]", b="f32[4]")
    x, b = RNG.standard_normal((3, 4)).astype(np.float32), RNG.standard_normal(4).astype(np.float32)
    sub, env = bind_decomposition(g.outputs["out"], [x, b])
    assert set(env) == {sub.inputs["x0"], sub.inputs["x1"]}
    out = Reference(sub).run(env=env)["out"]
    np.testing.assert_allclose(out, np.maximum(x + b, 0))


def test_an_op_without_a_decomposition_raises_lowering_error():
    g = gd.trace(lambda x: x + 1.0, x="f32[2]")
    with pytest.raises(LoweringError, match="add.*has no decomposition"):
        decomposition_graph(g.outputs["out"])


def _attention_graph(bias: bool, dropout: float):
    def f(q, k, v, b):
        seed = gd.tracing.current_builder().seed() if dropout else None
        return ops.attention(q, k, v, b if bias else None, seed, dropout_p=dropout)
    return gd.trace(f, q="f32[1,2,4,8]", k="f32[1,2,4,8]", v="f32[1,2,4,8]", b="f32[1,1,4,4]")


@pytest.mark.parametrize("bias,dropout", [(False, 0.0), (True, 0.0), (False, 0.1), (True, 0.1)])
def test_node_arg_names_the_inputs_an_attention_node_has(bias, dropout):
    g = _attention_graph(bias, dropout)
    node = g.outputs["out"]
    assert node.arg("q") is g.inputs["q"] and node.arg("v") is g.inputs["v"]
    assert node.arg("bias") is (g.inputs["b"] if bias else None)
    assert node.arg("seed") is (g.inputs["seed"] if dropout else None)
    want = ["q", "k", "v"] + (["bias"] if bias else []) + (["seed"] if dropout else [])
    assert list(node.args()) == want
    assert list(node.args().values()) == list(node.inputs)
    with pytest.raises(KeyError, match="attention has no input 'mask'"):
        node.arg("mask")


def test_the_gradient_node_names_its_cotangent_g_last():
    g = grad(gd.trace(lambda q, k, v, b: ops.attention(q, k, v, b).sum(),
                      q="f32[1,4,8]", k="f32[1,4,8]", v="f32[1,4,8]", b="f32[1,4,4]"), wrt=["q", "b"])
    nodes = [n for n in g.nodes if n.op == "attention_grad"]
    assert {n.attrs["wrt"] for n in nodes} >= {"q", "bias"}
    for n in nodes:
        assert list(n.args()) == ["q", "k", "v", "bias", "g"] and n.arg("seed") is None
        assert n.arg("g") is n.inputs[-1]


def test_opdef_input_names_follow_the_attributes():
    attention = get("attention")
    assert attention.input_names({"has_bias": False, "dropout_p": 0.0}) == ["q", "k", "v"]
    assert attention.input_names({"has_bias": True, "dropout_p": 0.0}) == ["q", "k", "v", "bias"]
    assert attention.input_names({"has_bias": True, "dropout_p": 0.5}) == ["q", "k", "v", "bias", "seed"]
    assert attention.required_inputs == ("q", "k", "v") and attention.optional_inputs == ("bias", "seed")
    assert get("attention_grad").input_names({"has_bias": False, "dropout_p": 0.1}) == ["q", "k", "v", "seed", "g"]
    with pytest.raises(UnknownOpError, match="'add' does not name its inputs"):
        get("add").input_names({})


def test_replay_copies_nodes_and_keeps_their_lines():
    inner = gd.trace(lambda x: (x * 3.0).exp(), x="f32[2]")

    def outer(y):
        return inline(inner, x=y + 1.0)["out"]
    g = gd.trace(outer, y="f32[2]")
    copied = [n for n in g.nodes if n.op in ("mul", "exp")]
    originals = [n for n in inner.nodes if n.op in ("mul", "exp")]
    assert [n.loc for n in copied] == [n.loc for n in originals]
    assert not set(copied) & set(inner.nodes)              # copies, never the inner graph's nodes
    y = np.array([0.0, 0.5], np.float32)
    np.testing.assert_allclose(backends.compile(g, "numpy")(y=y)["out"], np.exp((y + 1) * 3), rtol=1e-6)


def test_replay_without_a_binding_names_the_source():
    with pytest.raises(GraphDSLError, match="nothing is bound to input 'x'"):
        with gd.tracing.tracing():
            Replay(gd.trace(lambda x: x + 1.0, x="f32[2]")).run()


# -- the id-reuse scenario ------------------------------------------------------------------------
def _mlp(scale: float):
    """A small loss graph whose numbers depend on ``scale`` (a constant node)."""
    def f(x, w1, w2):
        h = (x @ w1 * scale).tanh()
        return {"loss": ((h @ w2) * (h @ w2)).mean(), "h": h}
    return gd.trace(f, x="f32[4,3]", w1="f32[3,5]", w2="f32[5,2]")


def _mlp_numbers(scale, x, w1, w2):
    h = np.tanh(x @ w1 * scale)
    out = h @ w2
    d_out = 2 * out / out.size
    d_h = d_out @ w2.T * (1 - h * h)
    return {"loss": (out * out).mean(), "h": h, "grad/w1": x.T @ d_h * scale, "grad/w2": h.T @ d_out}


X, W1, W2 = (RNG.standard_normal((4, 3)).astype(np.float32), RNG.standard_normal((3, 5)).astype(np.float32),
             RNG.standard_normal((5, 2)).astype(np.float32))


def _graphs_built_and_dropped(rounds: int = 40):
    """``(scale, graph)`` for graphs built one after another, each dropped and collected before the
    next but one: new nodes then get the ids of dead ones (asserted, so the scenario is real)."""
    seen: set[int] = set()
    reused = 0
    for i in range(rounds):
        graph = _mlp(0.5 + i / rounds)
        ids = {id(n) for n in graph.nodes}
        reused += len(ids & seen)
        seen |= ids
        yield 0.5 + i / rounds, graph
        del graph
        gc.collect()
    assert reused, "no node id was reused: the test no longer builds the scenario it is about"


def _check(out, want, names):
    for name in names:
        np.testing.assert_allclose(out[name], want[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_numpy_backend_is_right_when_node_ids_are_reused():
    for scale, graph in _graphs_built_and_dropped():
        _check(backends.compile(graph, "numpy")(x=X, w1=W1, w2=W2), _mlp_numbers(scale, X, W1, W2),
               ["loss", "h"])


def test_autodiff_is_right_when_node_ids_are_reused():
    for scale, graph in _graphs_built_and_dropped():
        g = grad(graph, wrt=["w1", "w2"], loss="loss")
        _check(backends.compile(g, "numpy")(x=X, w1=W1, w2=W2), _mlp_numbers(scale, X, W1, W2),
               ["loss", "grad/w1", "grad/w2"])


def test_inline_is_right_when_node_ids_are_reused():
    for scale, inner in _graphs_built_and_dropped():
        def outer(x, w1, w2):
            first = inner(x=x, w1=w1, w2=w2)
            return {"loss": first["loss"] + inline(inner, x=x, w1=w1, w2=w2)["loss"], "h": first["h"]}
        g = gd.trace(outer, x="f32[4,3]", w1="f32[3,5]", w2="f32[5,2]")
        want = _mlp_numbers(scale, X, W1, W2)
        want["loss"] = 2 * want["loss"]
        _check(backends.compile(g, "numpy")(x=X, w1=W1, w2=W2), want, ["loss", "h"])
