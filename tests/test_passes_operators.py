"""Patterns written with operators build the same tree, and find the same matches, as the
constructor form; and the passes' own rules are the trees they were written as before."""
from __future__ import annotations

import math

import numpy as np
import pytest

import graphdsl as gd
from graphdsl import ops
from passes import Pat, activations, norms
from passes.pattern import erf, exactly, exp, lift, max_, mean, rsqrt, softmax, sqrt, sum_, tanh, where
from passes.predicates import reduces_last_axis

X, Y, M = Pat.any("x"), Pat.any("y"), Pat.any("m")
C = Pat.const("c")

# (name, written with operators, the constructor form)
SAME_TREE = [
    ("add", X + Y, Pat("add", X, Y)),
    ("number_right", X * 0.5, Pat("mul", X, Pat.const(value=0.5))),
    ("number_left", 1 - X, Pat("sub", Pat.const(value=1.0), X)),
    ("div", X / 2, Pat("div", X, Pat.const(value=2.0))),
    ("rdiv", 2.0 / X, Pat("div", Pat.const(value=2.0), X)),
    ("matmul", X @ Y, Pat("matmul", X, Y)),
    ("pow", X ** 2, Pat("pow", X, Pat.const(value=2.0))),
    ("neg", -(-X), Pat("neg", Pat("neg", X))),
    ("numpy_scalar", np.float32(0.5) * X, Pat("mul", Pat.const(value=0.5), X)),
    ("gelu_erf", X * 0.5 * (erf(X * C) + 1),
     Pat("mul", Pat("mul", X, Pat.const(value=0.5)),
         Pat("add", Pat("erf", Pat("mul", X, C)), Pat.const(value=1.0)))),
    ("op_function_attrs", softmax(X, axis=1, name="p"), Pat("softmax", X, attrs={"axis": 1}, name="p")),
    ("where", where(M, X, exactly(0.0)), Pat("where", M, X, Pat.const(value=0.0, rtol=0))),
    ("reduction_options", sum_(X, where=reduces_last_axis, one_use=True),
     Pat("sum", X, where=reduces_last_axis, one_use=True)),
    ("having", (X + Y).having(name="s", one_use=True), Pat("add", X, Y, name="s", one_use=True)),
    ("alternatives", tanh(X) | X * 2, Pat("tanh", X) | Pat("mul", X, Pat.const(value=2.0))),
    ("number_alternative", 0 | X, Pat.const(value=0.0) | X),
    ("alternatives_having", (tanh(X) | -X).having(name="t"), Pat("tanh", X, name="t") | Pat("neg", X, name="t")),
]


@pytest.mark.parametrize("name,written,constructed", SAME_TREE, ids=[r[0] for r in SAME_TREE])
def test_operators_build_the_constructor_tree(name, written, constructed):
    assert written.signature() == constructed.signature(), f"{written!r} != {constructed!r}"


def _matches(pattern, graph):
    """Every (root, captures) the pattern finds anywhere in ``graph``."""
    return [(n, m.caps) for n in graph.nodes for m in pattern.match(n)]


GRAPHS = [
    ("gelu", lambda x: 0.5 * x * (1.0 + ops.erf(x * 0.70710678))),
    ("gelu_grouped", lambda x: x * (1 + ops.erf(x * 0.7071)) * 0.5),
    ("softmax", lambda x: (e := (x - x.max(-1, keepdims=True)).exp()) / e.sum(-1, keepdims=True)),
    ("rms", lambda x: x * ((x * x).mean(-1, keepdims=True) + 1e-6).rsqrt()),
]
ERF_C = Pat.const(value=1 / math.sqrt(2.0), rtol=1e-4)
HALF = Pat.const(value=0.5, rtol=1e-4)
E_WRITTEN = exp(X - max_(X, where=reduces_last_axis), name="e")
E_BUILT = Pat("exp", Pat("sub", X, Pat("max", X, where=reduces_last_axis)), name="e")
# (written with operators, the constructor form, the graphs it must match)
PAIRS = [
    ((0.5 * X) * (erf(X * ERF_C) + 1) | X * (1 + erf(ERF_C * X)) * HALF,
     Pat("mul", Pat("mul", X, HALF), Pat("add", Pat("erf", Pat("mul", X, ERF_C)), Pat.const(value=1.0)))
     | Pat("mul", Pat("mul", X, Pat("add", Pat("erf", Pat("mul", X, ERF_C)), Pat.const(value=1.0))), HALF),
     {"gelu", "gelu_grouped"}),
    (E_WRITTEN / sum_(E_WRITTEN, where=reduces_last_axis),
     Pat("div", E_BUILT, Pat("sum", E_BUILT, where=reduces_last_axis)), {"softmax"}),
    (X * rsqrt(mean(X * X, where=reduces_last_axis) + Pat.const("eps")) | X / sqrt(Pat.any()),
     Pat("mul", X, Pat("rsqrt", Pat("add", Pat("mean", Pat("mul", X, X), where=reduces_last_axis),
                                    Pat.const("eps")))) | Pat("div", X, Pat("sqrt", Pat.any())),
     {"rms"}),
]


@pytest.mark.parametrize("graph", GRAPHS, ids=[g[0] for g in GRAPHS])
@pytest.mark.parametrize("written,constructed,matching", PAIRS, ids=["gelu", "softmax", "rms"])
def test_operator_patterns_find_the_same_matches(graph, written, constructed, matching):
    g = gd.trace(graph[1], x="f32[2,8]")
    found = _matches(written, g)
    assert found == _matches(constructed, g)
    assert bool(found) == (graph[0] in matching)


def test_commutative_ops_match_either_order():
    left, right = gd.trace(lambda x: 0.5 * x, x="f32[3]"), gd.trace(lambda x: x * 0.5, x="f32[3]")
    for pattern in (0.5 * X, X * 0.5):
        for g in (left, right):
            m = pattern.first(g.outputs["out"])
            assert m is not None and m["x"].op == "input"
    assert (1 - X).first(gd.trace(lambda x: x - 1.0, x="f32[3]").outputs["out"]) is None


def test_numbers_become_constants_with_the_default_tolerance():
    g = gd.trace(lambda x: x * 0.5000001, x="f32[3]")
    assert (X * 0.5).first(g.outputs["out"]) is not None
    assert (X * exactly(0.5)).first(g.outputs["out"]) is None


def test_bad_pattern_inputs_and_options_are_errors():
    with pytest.raises(TypeError, match="a pattern input must be a Pat or a number, not str"):
        lift("x")
    with pytest.raises(TypeError, match="unknown pattern options"):
        X.having(once=True)


def test_the_passes_rules_are_the_trees_they_replace():
    """fuse_gelu and fuse_layer_norm, as the constructor form spelled them before operators."""
    x, c = activations.X, lambda v: Pat.const(value=v, rtol=activations.GELU_RTOL)

    def half_x_times(inner):
        return (Pat("mul", Pat("mul", x, c(0.5)), inner) | Pat("mul", Pat("mul", x, inner), c(0.5))
                | Pat("mul", x, Pat("mul", inner, c(0.5))))

    gelu = half_x_times(Pat("add", Pat("erf", Pat("mul", x, c(1 / math.sqrt(2.0)))), c(1.0)))
    assert activations.GELU_RULES[0].pattern.signature() == gelu.signature()
    k, a = activations.SQRT_2_OVER_PI, activations.CUBIC
    cube = Pat("pow", x, c(3.0)) | Pat("mul", Pat("mul", x, x), x)
    cubic = Pat("mul", cube, c(a)) | Pat("mul", Pat("mul", Pat("mul", x, c(a)), x), x)
    arg = (Pat("mul", Pat("add", x, cubic), c(k))
           | Pat("add", Pat("mul", x, c(k)), Pat("mul", cube, c(k * a))))
    gelu_tanh = half_x_times(Pat("add", Pat("tanh", arg), c(1.0)))
    assert activations.GELU_RULES[1].pattern.signature() == gelu_tanh.signature()

    nx, eps = norms.X, norms.EPS
    xc = Pat("sub", nx, Pat("mean", nx, where=reduces_last_axis), name="xc")
    plus_eps = Pat("add", Pat("mean", Pat("mul", xc, xc) | Pat("pow", xc, Pat.const(value=2.0)),
                              where=reduces_last_axis), eps)
    layer_norm = (Pat("mul", xc, Pat("rsqrt", plus_eps)) | Pat("div", xc, Pat("sqrt", plus_eps))
                  | Pat("mul", xc, Pat("pow", plus_eps, Pat.const(value=-0.5))))
    assert norms.LN_RULES[0].pattern.signature() == layer_norm.signature()
