"""One semantics for shapes and inputs, fixed in the reference first (issue 11, items 6, 13 and 14).

- 0-d results are shape ``()`` on every backend, gradients of 0-d picks included;
- an axis out of range, an axis named twice and a negative size are errors when the graph is traced
  (a ShapeError naming the op and the bad value, with a hint, at the user's line), and when a graph
  holding one is loaded (the verifier re-runs ``normalize``);
- a call whose data would change value when converted to the input's dtype (wrap, overflow to inf)
  is an InputError naming the input, the value and both dtypes; exact conversions and float
  rounding are accepted.
"""
from __future__ import annotations

import json
import re

import ml_dtypes
import numpy as np
import pytest

import backends
import graphdsl as gd
from graphdsl import ops
from graphdsl.errors import GraphDSLError, GraphError, InputError, ShapeError
from graphdsl.graph import Graph


# -- item 6: shapes of 0-d results, on every backend -----------------------------------------------
def _zero_d_graph() -> Graph:
    """Outputs of rank 0 (and their gradient) that backends used to disagree on."""
    def f(x, s):
        return {"loss": x[25].sum() * 0.5,
                "bcast_0d": ops.broadcast_to(s, shape=()),
                "bcast_1d": ops.broadcast_to(s, shape=(3,)),
                "full_0d": ops.full(shape=(), value=2.5) + s}
    return gd.grad(gd.trace(f, name="zero_d", x="f32[48]", s="f32[]"), wrt=["x"])


def _zero_d_feed() -> dict:
    return {"x": np.arange(48, dtype=np.float32), "s": np.array(1.5, np.float32)}


def _zero_d_expected() -> dict:
    dx = np.zeros(48, np.float32)
    dx[25] = 0.5
    return {"loss": np.array(12.5, np.float32), "bcast_0d": np.array(1.5, np.float32),
            "bcast_1d": np.full(3, 1.5, np.float32), "full_0d": np.array(4.0, np.float32), "grad/x": dx}


def test_broadcast_to_a_0d_shape_is_0d_in_the_reference():
    g = gd.trace(lambda s: ops.broadcast_to(s, shape=()), s="f32[]")
    out = backends.compile(g, "numpy")(s=np.float32(3))["out"]
    assert out.shape == () and out == 3


def test_gradient_of_a_0d_pick_has_the_input_shape_in_the_reference():
    g = gd.grad(gd.trace(lambda x: {"loss": x[25].sum() * 0.5}, x="f32[48]"), wrt=["x"])
    dx = backends.compile(g, "numpy")(x=np.ones(48, np.float32))["grad/x"]
    assert dx.shape == (48,) and dx[25] == 0.5 and np.count_nonzero(dx) == 1


@pytest.mark.parametrize("target", ["numpy", "onnxruntime", "llvm"])
def test_0d_results_have_shape_and_values_of_the_reference_on_every_backend(target):
    g = _zero_d_graph()
    got = backends.compile(g, target)(_zero_d_feed())
    for name, want in _zero_d_expected().items():
        assert g.outputs[name].type.shape == want.shape, name
        assert np.shape(got[name]) == want.shape, f"{target}: {name} has shape {np.shape(got[name])}"
        np.testing.assert_allclose(got[name], want, rtol=1e-6, err_msg=f"{target}: {name}")


def test_a_backend_returning_another_shape_than_the_type_is_an_error():
    g = gd.trace(lambda s: s * 2.0, s="f32[]")

    class Wrong(backends.Executable):
        target = "wrong"

        def run(self, arrays, env):
            return {"out": np.atleast_1d(arrays["s"] * 2)}

    with pytest.raises(GraphDSLError, match=r"wrong backend returned output 'out' with shape \[1\], "
                                            r"but its type f32\[\] says \[\]"):
        Wrong(g)(s=np.float32(1))


# -- item 13: trace-time errors for bad axes and sizes ---------------------------------------------
# (name, function, input specs, fragments the message must contain in order)
TRACE_ERRORS = [
    ("transpose axis out of range", lambda x: x.transpose(0, 5), {"x": "f32[2,3]"},
     ["transpose:", "axis 5", "f32[2,3]"]),
    ("transpose negative axis out of range", lambda x: x.transpose(-3, 0), {"x": "f32[2,3]"},
     ["transpose:", "axis -3"]),
    ("transpose of a 0-d tensor", lambda x: x.transpose(0, 0), {"x": "f32[]"},
     ["transpose:", "axis 0", "rank 0"]),
    ("permute axis out of range", lambda x: x.permute(0, 5), {"x": "f32[2,3]"},
     ["transpose:", "perm (0, 5) is not a permutation", "axis 5 is out of range"]),
    ("permute repeated axis", lambda x: x.permute(1, -1), {"x": "f32[2,3]"},
     ["transpose:", "perm (1, -1) is not a permutation", "axis 1 twice"]),
    ("permute too few axes", lambda x: x.permute(1, 0), {"x": "f32[2,3,4]"},
     ["transpose:", "perm (1, 0) is not a permutation of the 3 axes", "it has 2"]),
    ("sum repeated axis", lambda x: x.sum(axis=(0, 0)), {"x": "f32[2,3]"},
     ["sum:", "axis=(0, 0)", "axis 0 twice"]),
    ("sum repeated axis, negative spelling", lambda x: x.sum(axis=(1, -1)), {"x": "f32[2,3]"},
     ["sum:", "axis=(1, -1)", "axes 1 and -1 (both axis 1) twice"]),
    ("mean repeated axis", lambda x: x.mean(axis=(0, 1, 0)), {"x": "f32[2,3]"},
     ["mean:", "axis 0 twice"]),
    ("max repeated axis", lambda x: x.max(axis=[1, 1]), {"x": "f32[2,3]"}, ["max:", "axis 1 twice"]),
    ("min repeated axis", lambda x: x.min(axis=(0, -2)), {"x": "f32[2,3]"}, ["min:", "twice"]),
    ("argmax repeated axis", lambda x: x.argmax(axis=(0, 0)), {"x": "f32[2,3]"}, ["argmax:", "twice"]),
    ("sum over an axis of a 0-d tensor", lambda x: x.sum(axis=0), {"x": "f32[]"},
     ["sum:", "axis 0 is out of range for rank 0"]),
    ("max over an axis of a 0-d tensor", lambda x: x.max(axis=0), {"x": "f32[]"},
     ["max:", "axis 0 is out of range for rank 0"]),
    ("unsqueeze axis out of range", lambda x: x.unsqueeze(3), {"x": "f32[2]"},
     ["unsqueeze:", "axis 3 is out of range for rank 2"]),
    ("one_hot negative depth", lambda i: ops.one_hot(i, depth=-3), {"i": "i64[2]"},
     ["one_hot:", "-3", "negative"]),
    ("reshape negative size", lambda x: x.reshape(-2, -3), {"x": "f32[2,3]"},
     ["reshape:", "negative size -2 at position 0"]),
    ("reshape two holes", lambda x: x.reshape(-1, -1), {"x": "f32[2,3]"}, ["reshape:", "one -1"]),
    ("zeros negative size", lambda x: ops.zeros((-2, 3)) + x, {"x": "f32[2,3]"},
     ["full:", "shape (-2, 3)", "negative size -2"]),
    ("full negative size", lambda: ops.full(shape=(4, -1), value=1.0), {},
     ["full:", "negative size -1 at position 1"]),
    ("arange negative length", lambda: ops.arange(-3), {}, ["iota:", "negative size -3"]),
    ("broadcast_to negative size", lambda x: x.expand(-1, 3), {"x": "f32[1,3]"},
     ["broadcast_to:", "negative size -1"]),
]


@pytest.mark.parametrize("fn,specs,fragments", [pytest.param(f, s, m, id=n) for n, f, s, m in TRACE_ERRORS])
def test_bad_axes_and_sizes_are_errors_at_trace_time(fn, specs, fragments):
    with pytest.raises(ShapeError) as info:
        gd.trace(fn, **specs)
    err, msg = info.value, str(info.value)
    pos = 0
    for frag in fragments:
        found = msg.find(frag, pos)
        assert found >= 0, f"{frag!r} not in message (after position {pos}):\n{msg}"
        pos = found + len(frag)
    assert err.hint, f"no hint in:\n{msg}"
    assert err.loc is not None and err.loc.file.endswith("test_semantics_shapes.py"), msg


@pytest.mark.parametrize("spec,fragments", [
    pytest.param("f32[-4]", ["input 'x'", "'f32[-4]'", "negative dim -4"], id="string"),
    pytest.param("f32[batch,-1]", ["input 'x'", "negative dim -1"], id="string with a symbol"),
    pytest.param(((3, -4), "f32"), ["input 'x'", "dim -4", "negative"], id="tuple"),
])
def test_a_negative_dim_in_an_input_type_is_refused(spec, fragments):
    with pytest.raises(ShapeError) as info:
        gd.trace(lambda x: x, x=spec)
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, msg
    assert info.value.hint and info.value.loc.file.endswith("test_semantics_shapes.py"), msg


def test_the_trace_error_shows_the_users_line():
    with pytest.raises(ShapeError) as info:
        gd.trace(lambda x: x.transpose(0, 5), x="f32[2,3]")
    assert "x.transpose(0, 5)" in str(info.value)


@pytest.mark.parametrize("fn,spec", [
    pytest.param(lambda x: x.transpose(-1, -2), "f32[2,3,4]", id="transpose negative axes"),
    pytest.param(lambda x: x.transpose(1, 1), "f32[2,3]", id="transpose an axis with itself"),
    pytest.param(lambda x: x.permute(-1, 0, 1), "f32[2,3,4]", id="permute negative axes"),
    pytest.param(lambda x: x.sum(axis=(-1, 0)), "f32[2,3]", id="sum distinct axes any order"),
    pytest.param(lambda x: x.sum(axis=()), "f32[2,3]", id="sum over no axes"),
    pytest.param(lambda x: x.sum(), "f32[]", id="sum of a 0-d tensor"),
    pytest.param(lambda x: x.reshape(0, -1), "f32[0,3]", id="reshape empty"),
    pytest.param(lambda x: ops.zeros((0, 3)) + x, "f32[0,3]", id="zeros with a 0 size"),
    pytest.param(lambda x: x.expand(2, 3), "f32[1,3]", id="expand"),
])
def test_valid_axes_and_sizes_still_trace_and_match_numpy(fn, spec):
    g = gd.trace(fn, x=spec)
    t = g.inputs["x"].type
    x = np.arange(int(np.prod(t.shape)), dtype=np.float32).reshape(tuple(t.shape))
    out = backends.compile(g, "numpy")(x=x)["out"]
    assert out.shape == tuple(g.outputs["out"].type.shape)


def _loaded(edit) -> str:
    def f(x):
        return {"t": ops.transpose(x, perm=(1, 0)), "s": ops.sum(x, axis=(0, 1)),
                "z": ops.zeros((2, 3)) + x}
    doc = json.loads(gd.trace(f, x="f32[2,3]").to_json())
    edit(doc)
    return json.dumps(doc)


def _set(op, key, value):
    def edit(doc):
        next(n for n in doc["nodes"] if n["op"] == op)["attrs"][key] = value
    return edit


@pytest.mark.parametrize("op,key,value,message", [
    ("transpose", "perm", [0, 5],
     r"transpose rejects its attributes: perm \(0, 5\) is not a permutation .*axis 5 is out of range"),
    ("transpose", "perm", [1, 1],
     r"transpose rejects its attributes: perm \(1, 1\) is not a permutation .*axis 1 twice"),
    ("sum", "axis", [0, 0], r"sum rejects its attributes: axis=\(0, 0\) names axis 0 twice"),
    ("full", "shape", [-2, 3], r"full rejects its attributes: shape \(-2, 3\) has the negative size -2"),
])
def test_a_loaded_graph_with_a_bad_axis_or_size_is_refused(op, key, value, message):
    with pytest.raises(GraphError, match=message):
        Graph.from_json(_loaded(_set(op, key, value)))


# -- item 14: call-time dtype conversion ---------------------------------------------------------
# (name, input type, given array, expected converted values or None when refused, fragments)
CONVERSIONS = [
    ("int64 in int32 range", "i32[2]", np.array([2**31 - 1, -2**31]), [2**31 - 1, -2**31], []),
    ("empty int64 for int32", "i32[0]", np.zeros(0, np.int64), [], []),
    ("int64 in uint32 range", "u32[2]", np.array([0, 2**32 - 1]), [0, 2**32 - 1], []),
    ("bool for int32", "i32[2]", np.array([True, False]), [1, 0], []),
    ("int32 for int64 (widening)", "i64[1]", np.array([-7], np.int32), [-7], []),
    ("f64 rounds to f32", "f32[1]", np.array([0.1]), [np.float32(0.1)], []),
    ("int64 rounds to f32", "f32[1]", np.array([2**24 + 1]), [2.0**24], []),
    ("f32 at the f16 maximum", "f16[1]", np.array([65504.0], np.float32), [65504.0], []),
    ("f32 that rounds down to the f16 maximum", "f16[1]", np.array([65519.0], np.float32), [65504.0], []),
    ("inf and nan pass through to f16", "f16[3]", np.array([np.inf, -np.inf, np.nan], np.float32),
     [np.inf, -np.inf, np.nan], []),
    ("f32 big but finite in bf16", "bf16[1]", np.array([3e38], np.float32),
     [np.float32(3e38).astype(ml_dtypes.bfloat16)], []),
    ("int64 beyond int32", "i32[1]", np.array([2**40]), None,
     ["input 'v'", "i32[1]", "value 1099511627776", "int64 array", "int32's range", "wrap"]),
    ("int64 below int32", "i32[2]", np.array([0, -2**31 - 1]), None, ["value -2147483649", "int32"]),
    ("negative int64 for uint32", "u32[2]", np.array([3, -1]), None, ["value -1", "int64", "uint32"]),
    ("negative int32 for uint32", "u32[1]", np.array([-1], np.int32), None, ["value -1", "int32", "uint32"]),
    ("uint32 beyond int32", "i32[1]", np.array([2**32 - 1], np.uint32), None,
     ["value 4294967295", "uint32", "int32"]),
    ("f32 overflows f16", "f16[1]", np.array([1e6], np.float32), None,
     ["input 'v'", "f16[1]", "value 1000000.0", "float32 array", "overflows float16", "inf"]),
    ("f32 that rounds up to f16 inf", "f16[1]", np.array([65520.0], np.float32), None, ["value 65520.0"]),
    ("f64 overflows f16, negative", "f16[2]", np.array([1.0, -1e6]), None, ["value -1000000.0", "float64"]),
    ("nan does not hide an overflow", "f16[2]", np.array([np.nan, 1e6], np.float32), None, ["value 1000000.0"]),
    ("inf does not hide an overflow", "f16[2]", np.array([np.inf, 1e6], np.float32), None, ["value 1000000.0"]),
    ("int64 overflows f16", "f16[1]", np.array([70000]), None, ["value 70000", "int64", "float16"]),
    ("f64 overflows f32", "f32[1]", np.array([1e300]), None, ["value 1e+300", "float32"]),
    ("f64 overflows bf16", "bf16[1]", np.array([-1e300]), None, ["value -1e+300", "bfloat16"]),
]


@pytest.mark.parametrize("spec,given,want,fragments",
                         [pytest.param(t, a, w, m, id=n) for n, t, a, w, m in CONVERSIONS])
def test_call_time_dtype_conversion_never_changes_a_value_silently(spec, given, want, fragments):
    exe = backends.compile(gd.trace(lambda v: v, v=spec), "numpy")
    if want is not None:
        out = exe(v=given)["out"]
        assert out.dtype == exe.graph.inputs["v"].type.dtype.np
        np.testing.assert_array_equal(out.astype(np.float64), np.asarray(want, np.float64))
        return
    with pytest.raises(InputError) as info:
        exe(v=given)
    msg, pos = str(info.value), 0
    for frag in fragments:
        found = msg.find(frag, pos)
        assert found >= 0, f"{frag!r} not in message (after position {pos}):\n{msg}"
        pos = found + len(frag)
    assert info.value.hint and ("astype" in info.value.hint or "wider dtype" in info.value.hint)


def test_parameters_bound_to_an_executable_are_checked_the_same_way():
    w = gd.Parameter((2,), "float16")
    g = gd.trace(lambda x: x * w, params={"w": w}, x="f16[2]")
    exe = backends.compile(g, "numpy").bind_weights({"w": np.array([1.0, 1e5])})
    with pytest.raises(InputError, match=r"input 'w' .* value 100000.0 .* overflows float16"):
        exe(x=np.ones(2, np.float16))


def test_a_large_in_range_array_converts():
    exe = backends.compile(gd.trace(lambda v: v, v="i32[n]"), "numpy")
    big = np.arange(2_000_000, dtype=np.int64)
    out = exe(v=big)["out"]
    assert out.dtype == np.int32 and out[0] == 0 and out[-1] == 1_999_999


def test_refusal_messages_are_one_line_plus_hint():
    exe = backends.compile(gd.trace(lambda v: v, v="i32[1]"), "numpy")
    with pytest.raises(InputError) as info:
        exe(v=np.array([2**40]))
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and re.match(r"\s+hint: ", lines[1])


@pytest.mark.parametrize("target", ["numpy", "llvm", "onnxruntime"])
def test_reshape_to_a_shape_with_a_zero_length_dim(target):
    """A 0 in the new shape is a dim of length 0 (Relax's reshape read it as "keep this input
    dim", and llvm refused [3,0,4] -> [0,3,5]; ONNX's reshape_allowzero_reordered)."""
    g = gd.trace(lambda x: {"y": x.reshape((0, 3, 5)), "z": x.reshape((4, 0, 3)) + 1.0}, x="f32[3,0,4]")
    out = backends.compile(g, target)(x=np.zeros((3, 0, 4), np.float32))
    assert np.asarray(out["y"]).shape == (0, 3, 5) and np.asarray(out["z"]).shape == (4, 0, 3)
    assert np.asarray(out["y"]).dtype == np.float32
