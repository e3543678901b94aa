"""Shared checks for the pass tests: random feeds, and "the passes kept the numbers".

``assert_same_numbers(before, after, feed)`` runs both graphs on the NumPy backend and compares
every output; ``assert_same_gradients`` does the same for the gradient graphs of a loss graph,
differentiated as written (``grad(before)``) and optimized for training (fuse, then differentiate).
"""
from __future__ import annotations

import numpy as np

import backends
import passes
from backends.base import bind_inputs
from graphdsl.autodiff import grad
from graphdsl.graph import Graph

TOL = dict(rtol=2e-5, atol=2e-6)


def random_feed(graph: Graph, dims: dict | None = None, seed: int = 0, **given) -> dict:
    """Arrays for every input and parameter of ``graph``: ``given`` ones, else standard normals
    (floats), zeros (ints), True (bools); symbolic dims take their sizes from ``dims``."""
    rng = np.random.default_rng(seed)
    env = dict(dims or {})
    if given:
        known = {k: v for k, v in given.items() if k in graph.inputs or k in graph.params}
        env.update(_bound_dims(graph, known))
    feed = {}
    for name, node in {**graph.inputs, **graph.params}.items():
        if name in given:
            feed[name] = given[name]
            continue
        shape = node.type.shape.evaluate(env)
        dt = node.type.dtype
        if name == "seed":
            feed[name] = np.int32(seed + 7)
        elif dt.is_float:
            feed[name] = rng.standard_normal(shape).astype(dt.np)
        elif dt.is_bool:
            feed[name] = np.ones(shape, bool)
        else:
            feed[name] = np.zeros(shape, dt.np)
    return feed


def _bound_dims(graph: Graph, arrays: dict) -> dict:
    env = {}
    for name, arr in arrays.items():
        node = {**graph.inputs, **graph.params}[name]
        for dim, size in zip(node.type.shape, np.shape(arr)):
            if not isinstance(dim, int) and len(dim.symbols) == 1 and str(dim) in dim.symbols:
                env[str(dim)] = size
    return env


def run(graph: Graph, feed: dict) -> dict:
    names = set(graph.inputs) | set(graph.params)
    arrays, _ = bind_inputs(graph, (), {k: v for k, v in feed.items() if k in names})
    return backends.compile(graph, "numpy")(**arrays)


def assert_close(got: dict, want: dict, what: str, tol=None) -> None:
    tol = tol or TOL
    assert set(got) == set(want), f"{what}: outputs differ: {sorted(got)} vs {sorted(want)}"
    for k in want:
        a, b = np.asarray(got[k]), np.asarray(want[k])
        assert not np.isnan(a).any() or np.isnan(b).any(), f"{what}: {k} has NaN only after the passes"
        scale = float(np.abs(b.astype(np.float64)).max()) if b.size else 0.0
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64),
                                   rtol=tol["rtol"], atol=tol["atol"] + tol["rtol"] * scale,
                                   err_msg=f"{what}: output {k!r} changed")


def assert_same_numbers(before: Graph, after: Graph, feed: dict, tol=None) -> None:
    assert_close(run(after, feed), run(before, feed), "forward", tol)


def assert_same_gradients(loss_graph: Graph, feed: dict, wrt=None, level: int = 2, tol=None) -> Graph:
    """grad(loss_graph) vs passes.optimize_for_training(loss_graph); returns the optimized one."""
    fused = passes.optimize_for_training(loss_graph, level, wrt=wrt)
    assert_close(run(fused, feed), run(grad(loss_graph, wrt=wrt), feed), "gradients", tol)
    return fused


def count(graph: Graph, op: str) -> int:
    return graph.op_counts().get(op, 0)
