"""The pattern language and the rewrite driver, table-style: pattern, graph, expected match."""
from __future__ import annotations

from collections import Counter

import pytest

import graphdsl as gd
from graphdsl import ops
from passes import Pat, PassError, Rule, opt, rewrite
from passes.rewrite import Context

X2 = dict(x="f32[2,3]", y="f32[2,3]")


def _graph(fn, **specs):
    return gd.trace(fn, **(specs or X2))


_P = Pat("exp", Pat.any(), name="p")
NAN_GUARD = Pat("where", Pat("not_equal", _P, _P), Pat.const(value=0.0), _P)   # where(p != p, 0, p)

# (name, pattern, traced function, expected: {capture: op of the captured node} or None)
CASES = [
    ("op_and_wildcards", Pat("add", Pat.any("a"), Pat.any("b")), lambda x, y: x + y,
     {"a": "input", "b": "input"}),
    ("wrong_op", Pat("mul", Pat.any("a"), Pat.any("b")), lambda x, y: x + y, None),
    ("commutative_swap", Pat("mul", Pat("exp", Pat.any("e")), Pat.any("o", where=lambda n: n.op == "input")),
     lambda x, y: y * x.exp(), {"e": "input", "o": "input"}),
    ("non_commutative_no_swap", Pat("sub", Pat("exp", Pat.any()), Pat.any()), lambda x, y: y - x.exp(), None),
    ("alternatives", Pat("exp", Pat.any("x")) | Pat("log", Pat.any("x")), lambda x, y: x.log(),
     {"x": "input"}),
    ("optional_wrapper_absent", Pat("neg", opt("cast", Pat.any("x"), name="c")), lambda x, y: -x,
     {"x": "input"}),
    ("optional_wrapper_present", Pat("neg", opt("cast", Pat.any("x"), name="c")),
     lambda x, y: -(x.astype("float64")), {"x": "input", "c": "cast"}),
    ("same_name_same_node", Pat("mul", Pat.any("x"), Pat.any("x")), lambda x, y: x * x, {"x": "input"}),
    ("same_name_other_node", Pat("mul", Pat.any("x"), Pat.any("x")), lambda x, y: x * y, None),
    ("attr_value", Pat("softmax", Pat.any("x"), attrs={"axis": 1}), lambda x, y: x.softmax(-1),
     {"x": "input"}),
    ("attr_value_mismatch", Pat("softmax", Pat.any(), attrs={"axis": 0}), lambda x, y: x.softmax(-1), None),
    ("attr_predicate", Pat("sum", Pat.any(), attrs={"axis": lambda a: a == (1,)}), lambda x, y: x.sum(1),
     {}),
    ("type_predicate", Pat("add", Pat.any(), Pat.any(), where=lambda n: n.type.rank == 3),
     lambda x, y: x + y, None),
    ("dtype", Pat("cast", Pat.any(), dtype=gd.float16), lambda x, y: x.astype("float16"), {}),
    ("constant_value", Pat("mul", Pat.any("x"), Pat.const("c", 0.5)), lambda x, y: x * 0.5,
     {"x": "input", "c": "constant"}),
    ("constant_tolerance", Pat("mul", Pat.any(), Pat.const(value=0.7071, rtol=1e-4)),
     lambda x, y: x * 0.70710678, {}),
    ("constant_out_of_tolerance", Pat("mul", Pat.any(), Pat.const(value=0.7, rtol=1e-4)),
     lambda x, y: x * 0.70710678, None),
    ("nested", Pat("add", Pat("mul", Pat.any("x"), Pat.const()), Pat.any("y")), lambda x, y: y + x * 2.0,
     {"x": "input", "y": "input"}),
    ("arity_mismatch", Pat("where", Pat.any(), Pat.any()), lambda x, y: ops.where(x > y, x, y), None),
    ("one_capture_three_times", NAN_GUARD, lambda x, y: ops.where((e := x.exp()) != e, 0.0, e), {"p": "exp"}),
    ("one_capture_three_times_other_node", NAN_GUARD,
     lambda x, y: ops.where((e := x.exp()) != e, 0.0, y.exp()), None),
]


@pytest.mark.parametrize("name,pattern,fn,expected", CASES, ids=[c[0] for c in CASES])
def test_pattern(name, pattern, fn, expected):
    g = _graph(fn)
    root = g.outputs["out"]
    m = pattern.first(root)
    if expected is None:
        assert m is None
        return
    assert m is not None and m.root is root
    assert {k: m[k].op for k in expected} == expected


def test_one_use_and_contained_read_the_users():
    def fn(x, y):
        e = x.exp()
        return {"out": e + y, "also": e}

    g = _graph(fn)
    ctx = Context(g, counts=Counter())
    root = g.outputs["out"]
    assert Pat("add", Pat("exp", Pat.any()), Pat.any()).first(root, ctx) is not None
    assert Pat("add", Pat("exp", Pat.any(), one_use=True), Pat.any()).first(root, ctx) is None
    m = Pat("add", Pat("exp", Pat.any()), Pat.any()).first(root, ctx)
    assert not m.contained(), "exp is also a graph output"


def test_backtracking_tries_every_way():
    """The first way of matching ``x * c`` fails the predicate; the swapped one succeeds."""
    g = _graph(lambda x, y: 3.0 * x)
    pat = Pat("mul", Pat.any("a", where=lambda n: n.op == "input"), Pat.any("b"))
    assert pat.first(g.outputs["out"])["a"].op == "input"


# -- the driver ------------------------------------------------------------------------------------
def test_rewrite_runs_to_a_fixed_point_and_counts():
    # neg(neg(neg(neg(x)))) -> x, one pair per firing
    g = _graph(lambda x, y: -(-(-(-x))))
    rule = Rule("neg_neg", Pat("neg", Pat("neg", Pat.any("x"))), lambda m: m["x"])
    out, counts = rewrite(g, [rule])
    assert out.outputs["out"] is out.inputs["x"]
    assert counts["neg_neg"] == 2


def test_rewrite_declines_leave_the_graph_alone():
    g = _graph(lambda x, y: x + y)
    out, counts = rewrite(g, [Rule("never", Pat("add", Pat.any(), Pat.any()), lambda m: None)])
    assert out is g and not counts


def test_replacement_keeps_the_source_line():
    g = _graph(lambda x, y: x / 2.0)
    rule = Rule("half", Pat("div", Pat.any("x"), Pat.const()), lambda m: m.t("x") * 0.5)
    out, _ = rewrite(g, [rule])
    assert out.outputs["out"].op == "mul"
    assert out.outputs["out"].loc == g.outputs["out"].loc


def test_a_rule_that_changes_the_type_is_an_error():
    g = _graph(lambda x, y: x + y)
    rule = Rule("bad", Pat("add", Pat.any("a"), Pat.any()), lambda m: m.t("a").sum())
    with pytest.raises(PassError, match=r"rule 'bad' replaced a node of type f32\[2,3\]"):
        rewrite(g, [rule])


def test_rules_that_undo_each_other_do_not_loop_forever():
    g = _graph(lambda x, y: x.exp())
    rules = [Rule("exp_to_log", Pat("exp", Pat.any("x")), lambda m: m.t("x").log()),
             Rule("log_to_exp", Pat("log", Pat.any("x")), lambda m: m.t("x").exp())]
    with pytest.raises(PassError, match="fixed point"):
        rewrite(g, rules, max_sweeps=5)
