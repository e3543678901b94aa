"""Calling a compiled graph with bad arrays: one InputError that names the input, its type and the shape.

The graph takes ``x: f32[batch,4]``, ``y: f32[batch,4]``, ``ids: i32[batch]`` and a parameter
``w: f32[4,4]``; each row breaks one thing about an otherwise good call.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import backends
import graphdsl
from graphdsl.errors import InputError


def _f(x, y, ids):
    return {"o": (x + y) @ W, "i": ids + 1}


W = graphdsl.Parameter((4, 4))


@pytest.fixture(scope="module")
def exe():
    g = graphdsl.trace(_f, name="f", params={"w": W}, x="f32[batch,4]", y="f32[batch,4]", ids="i32[batch]")
    return backends.compile(g, "numpy")


def _good(batch: int = 2) -> dict:
    return {"x": np.ones((batch, 4), np.float32), "y": np.ones((batch, 4), np.float32),
            "ids": np.arange(batch, dtype=np.int32), "w": np.eye(4, dtype=np.float32)}


def _with(**changes) -> dict:
    args = _good()
    for k, v in changes.items():
        if v is None:
            del args[k]
        else:
            args[k] = v
    return args


# (name, call arguments, fragments the message must contain, in order)
CASES = [
    ("missing input", _with(y=None), ["missing 'y'", "f32[batch,4]"]),
    ("missing param", _with(w=None), ["missing 'w'", "f32[4,4]"]),
    ("unknown input", _with(z=np.zeros((2, 4))), ["unknown 'z'", "shape [2, 4]",
                                                   "x: f32[batch,4], y: f32[batch,4], ids: i32[batch]"]),
    ("wrong rank", _with(x=np.ones(4, np.float32)), ["'x'", "f32[batch,4]", "rank 2", "shape [4]"]),
    ("wrong static dim", _with(x=np.ones((2, 5), np.float32)),
     ["'x'", "f32[batch,4]", "shape [2, 5]", "axis 1 is 5, not 4"]),
    ("wrong param shape", _with(w=np.ones((4, 3), np.float32)), ["'w'", "f32[4,4]", "shape [4, 3]"]),
    ("inconsistent symbolic dims", _with(y=np.ones((3, 4), np.float32)),
     ["'y'", "f32[batch,4]", "shape [3, 4]", "axis 0 is 3", "batch=2 was set by input 'x' axis 0"]),
    ("symbolic dim across dtypes", _with(ids=np.arange(5, dtype=np.int32)),
     ["'ids'", "i32[batch]", "shape [5]", "batch=2"]),
    ("float data for an int input", _with(ids=np.array([0.5, 1.5])),
     ["'ids'", "i32[batch]", "float64 array of shape [2]", "astype('int32')"]),
    ("float32 data for an int input", _with(ids=np.zeros(2, np.float32)),
     ["'ids'", "i32[batch]", "float32 array of shape [2]"]),
    ("string data", _with(x=np.array([["a"] * 4] * 2)),
     ["'x'", "f32[batch,4]", "array of shape [2, 4]"]),
    ("positional array", (np.ones((2, 4)),), ["named arrays"]),
]


@pytest.mark.parametrize("args,fragments", [pytest.param(a, f, id=n) for n, a, f in CASES])
def test_bad_call_is_one_input_error(exe, args, fragments):
    with pytest.raises(InputError) as info:
        exe(*args) if isinstance(args, tuple) else exe(**args)
    msg = str(info.value)
    pos = 0
    for frag in fragments:
        found = msg.find(frag, pos)
        assert found >= 0, f"{frag!r} not in message (after position {pos}):\n{msg}"
        pos = found + len(frag)


def test_good_calls_work(exe):
    out = exe(**_good(3))
    assert out["o"].shape == (3, 4) and out["i"].tolist() == [1, 2, 3]
    # same-kind data is converted: int64 ids for an i32 input, float64 for f32
    args = _good()
    args["ids"] = args["ids"].astype(np.int64)
    args["x"] = args["x"].astype(np.float64)
    out = exe(args)
    assert out["i"].dtype == np.int32 and out["o"].dtype == np.float32


def test_every_message_is_one_line_plus_hint(exe):
    with pytest.raises(InputError) as info:
        exe(**_with(y=np.ones((3, 4), np.float32)))
    lines = str(info.value).splitlines()
    assert len(lines) <= 2 and (len(lines) == 1 or re.match(r"\s+hint: ", lines[1]))


@pytest.mark.parametrize("target", ["numpy", "llvm"])
def test_compound_dims_bind_whatever_the_input_order(target):
    """An input typed [3*n] or [n+1] may be declared before the one typed [n] (the fuzzer found
    these refused with "cannot bind dim 3*n"); plain dims bind first, then a*n + b is solved or
    checked, and a size that fits no n is still an error naming the input."""
    graph = graphdsl.trace(lambda a, b, c: {"a": a.sum(), "b": b.sum(), "c": c.sum()},
                           a="f32[3*n]", b="f32[n+1]", c="f32[n]")
    exe = backends.compile(graph, target)
    got = exe(a=np.ones(6, np.float32), b=np.ones(3, np.float32), c=np.ones(2, np.float32))
    assert [float(got[k]) for k in "abc"] == [6.0, 3.0, 2.0]
    with pytest.raises(InputError, match=r"input 'b' expects f32\[n\+1\]"):
        exe(a=np.ones(6, np.float32), b=np.ones(4, np.float32), c=np.ones(2, np.float32))



def test_a_compound_dim_alone_is_solved_by_the_reference():
    alone = backends.compile(graphdsl.trace(lambda a: a * 2.0, a="f32[3*n]"), "numpy")
    np.testing.assert_array_equal(alone(a=np.ones(9, np.float32))["out"], np.full(9, 2.0, np.float32))
    with pytest.raises(InputError, match=r"cannot bind dim 3\*n"):
        alone(a=np.ones(7, np.float32))
