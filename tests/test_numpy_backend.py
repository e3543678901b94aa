"""The reference backend's own behaviour: NaN checking, value freeing, option errors."""
import numpy as np
import pytest

import backends
import graphdsl as gd
from graphdsl.errors import GraphDSLError, InputError, TargetError


def test_check_nan_names_the_op_and_line():
    def f(x):
        y = x * 2.0
        return (y - 1.0).log()  # NaN for x < 0.5

    exe = backends.compile(gd.trace(f, x="f32[3]"), "numpy", check_nan=True)
    np.testing.assert_allclose(exe(x=np.array([1.0, 2.0, 3.0], np.float32))["out"], np.log([1.0, 3.0, 5.0]),
                               rtol=1e-6)
    with pytest.raises(GraphDSLError) as info:
        exe(x=np.array([1.0, 0.1, 3.0], np.float32))
    text = str(info.value)
    assert text.startswith("log: produced NaN at [1]") and "test_numpy_backend.py" in text and "NaN for x" in text


def test_check_nan_rejects_nan_inputs_and_is_off_by_default():
    g = gd.trace(lambda x: x + 1.0, x="f32[2]")
    x = np.array([np.nan, 1.0], np.float32)
    with pytest.raises(InputError, match="input 'x' contains NaN at \\[0\\]"):
        backends.compile(g, "numpy", check_nan=True)(x=x)
    assert np.isnan(backends.compile(g, "numpy")(x=x)["out"][0])


def test_masked_infinities_are_not_nan():
    g = gd.trace(lambda x: gd.ops.softmax(x.masked_fill(x < 0, float("-inf"))), x="f32[2,2]")
    out = backends.compile(g, "numpy", check_nan=True)(x=np.array([[1.0, -1.0], [-1.0, -2.0]], np.float32))
    np.testing.assert_allclose(out["out"], [[1.0, 0.0], [0.0, 0.0]])


def test_unknown_options_and_targets():
    g = gd.trace(lambda x: x + 1.0, x="f32[2]")
    with pytest.raises(GraphDSLError, match="no options other than check_nan"):
        backends.compile(g, "numpy", opt_level=3)
    with pytest.raises(TargetError, match="unknown target 'tpu'"):
        backends.compile(g, "tpu")
    with pytest.raises(TargetError, match="takes a Graph"):
        backends.compile(lambda x: x, "numpy")


def test_outputs_survive_value_freeing():
    def f(x):
        a = x * 2.0
        return {"a": a, "b": a + 1.0, "x": x}

    out = backends.compile(gd.trace(f, x="f32[2]"), "numpy")(x=np.ones(2, np.float32))
    assert out["a"].tolist() == [2.0, 2.0] and out["b"].tolist() == [3.0, 3.0] and out["x"].tolist() == [1.0, 1.0]
