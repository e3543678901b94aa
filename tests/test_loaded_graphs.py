"""The boundary between loaded data and the kernels: a graph JSON edited by hand is verified before any
backend sees it, attribute by attribute (type, range, canonical form), in one error naming each."""
from __future__ import annotations

import json

import pytest

import graphdsl as gd
from graphdsl import ops
from graphdsl.errors import GraphError
from graphdsl.graph import Graph


def _graph():
    def f(x):
        a = ops.slice(x, axis=0, start=1, stop=3)
        b = ops.sum(x, axis=(0, 2))
        c = ops.transpose(x, perm=(2, 1, 0))
        d = ops.softmax(x, axis=2)
        return {"a": a, "b": b, "c": c, "d": d}
    return gd.trace(f, x="f32[4,5,6]")


def _edited(op: str, key: str, value) -> str:
    doc = json.loads(_graph().to_json())
    node = next(n for n in doc["nodes"] if n["op"] == op)
    node["attrs"][key] = value
    return json.dumps(doc)


def test_the_unedited_graph_loads():
    g = Graph.from_json(_graph().to_json())
    assert g.op_counts() == {"slice": 1, "softmax": 1, "sum": 1, "transpose": 1}


@pytest.mark.parametrize("op, key, value, message", [
    ("slice", "start", -2, r"slice attribute start=-2 is not in canonical form: it means 2"),
    ("sum", "axis", [0, 0, 2], r"sum rejects its attributes: axis=\(0, 0, 2\) names axis 0 twice"),
    ("sum", "axis", [2, 0], r"sum attribute axis=\(2, 0\) is not in canonical form: it means \(0, 2\)"),
    ("transpose", "perm", [-1, 1, 0], r"transpose attribute perm=\(-1, 1, 0\) is not in canonical form"),
    ("softmax", "axis", None, r"softmax rejects its attributes \(axis=None\): TypeError"),
    ("softmax", "axis", True, r"softmax attribute axis=True is not in canonical form: it means 1"),
    ("softmax", "axis", "one", r"softmax rejects its attributes \(axis='one'\): ValueError"),
    ("softmax", "axis", 1.0, r"softmax attribute axis=1.0 is not in canonical form: it means 1"),
    ("softmax", "axis", [1], r"softmax rejects its attributes \(axis=\(1,\)\): TypeError"),
    ("softmax", "axis", 7, r"softmax rejects its attributes: axis 7 is out of range"),
])
def test_an_edited_attribute_is_refused_at_load(op, key, value, message):
    with pytest.raises(GraphError, match=message):
        Graph.from_json(_edited(op, key, value))
