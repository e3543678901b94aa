"""Tracing: proxies, weak scalars, output forms, inlining, source lines and trace-time errors."""
import numpy as np
import pytest

import backends
import graphdsl as gd
from graphdsl import registry
from graphdsl.errors import GraphDSLError, GraphError, TypeError_, UnknownOpError


def run(g, **feed):
    return backends.compile(g, "numpy")(**feed)


def test_python_scalars_take_the_tensor_dtype():
    g = gd.trace(lambda x: x * 0.5 + 1, x="f16[3]")
    assert g.outputs["out"].type == gd.TensorType((3,), "f16")
    out = run(g, x=np.array([2, 4, 6], np.float16))["out"]
    assert out.dtype == np.float16 and out.tolist() == [2.0, 3.0, 4.0]


def test_float_scalar_with_int_tensor_is_an_error():
    with pytest.raises(TypeError_, match="float constant 0.5 meets an int32 tensor"):
        gd.trace(lambda x: x * 0.5, x="i32[3]")


def test_reflected_operators_keep_operand_order():
    g = gd.trace(lambda x: (1.0 - x, 2.0 / x, 3.0 ** x), x="f64[2]")
    out = run(g, x=np.array([1.0, 2.0]))
    np.testing.assert_allclose(out["out0"], [0.0, -1.0])
    np.testing.assert_allclose(out["out1"], [2.0, 1.0])
    np.testing.assert_allclose(out["out2"], [3.0, 9.0])


def test_output_forms():
    assert list(gd.trace(lambda x: x, x="f32[2]").outputs) == ["out"]
    assert list(gd.trace(lambda x: (x, -x), x="f32[2]").outputs) == ["out0", "out1"]
    assert list(gd.trace(lambda x: {"a": x, "b": -x}, x="f32[2]").outputs) == ["a", "b"]


def test_tensor_has_no_truth_value():
    with pytest.raises(GraphDSLError, match="no truth value"):
        gd.trace(lambda x: x if x > 0 else -x, x="f32[2]")


def test_ops_outside_tracing_say_how_to_trace():
    with pytest.raises(GraphDSLError, match="only while tracing"):
        gd.ops.exp(np.ones(3))


def test_unknown_op_suggests_close_names():
    with pytest.raises(UnknownOpError, match="did you mean matmul"):
        registry.get("matmull")


def test_nodes_record_the_user_line():
    def f(x):
        y = x.exp()  # the line we expect
        return y

    g = gd.trace(f, x="f32[2]")
    loc = g.outputs["out"].loc
    assert loc.file.endswith("test_tracing.py")
    assert "the line we expect" in loc.code


def test_inline_a_graph_into_another():
    inner = gd.trace(lambda x, w: {"y": x @ w}, x="f32[batch,3]", w="f32[3,2]")

    def outer(a, w):
        return inner(x=a * 2.0, w=w)["y"].sum()

    g = gd.trace(outer, a="f32[batch,3]", w="f32[3,2]")
    a, w = np.ones((4, 3), np.float32), np.ones((3, 2), np.float32)
    assert run(g, a=a, w=w)["out"] == pytest.approx(4 * 2 * 6.0)


def test_inline_checks_names_and_types():
    inner = gd.trace(lambda x: x + 1.0, x="f32[3]")
    with pytest.raises(GraphError, match="has no input or parameter"):
        gd.trace(lambda a: inner(z=a)["out"], a="f32[3]")
    with pytest.raises(TypeError_, match="expects f32\\[3\\]"):
        gd.trace(lambda a: inner(x=a)["out"], a="f32[4]")


def test_attribute_errors_are_clear():
    with pytest.raises(GraphDSLError, match="unknown attribute"):
        gd.trace(lambda x: gd.ops.reshape(x, shape=(3,), order="F"), x="f32[3]")
    with pytest.raises(GraphDSLError, match="takes 2 inputs, got 3"):
        gd.trace(lambda x: gd.ops.add(x, x, x), x="f32[3]")


def test_symbolic_reshape_runs_for_any_size():
    def f(x):
        b, s, h = x.shape
        return x.reshape(b * s, h).reshape(b, s, 2, h // 2)

    g = gd.trace(f, x="f32[batch,seq,8]")
    assert str(g.outputs["out"].type) == "f32[batch,seq,2,4]"
    exe = backends.compile(g, "numpy")
    for shape in [(1, 3, 8), (4, 5, 8)]:
        x = np.random.rand(*shape).astype(np.float32)
        np.testing.assert_array_equal(exe(x=x)["out"], x.reshape(shape[0], shape[1], 2, 4))


def test_nodes_made_inside_nn_modules_keep_the_module_line_too():
    from graphdsl import nn
    from graphdsl.graph import Graph

    lin = nn.Linear(4, 3)
    g = gd.trace(lambda x: lin(x), params=lin, x="f32[2,4]")  # the call line
    loc = g.outputs["out"].loc
    assert loc.file.endswith("test_tracing.py") and "the call line" in loc.code
    assert loc.inner is not None and loc.inner.file.startswith("graphdsl/nn/")
    assert "(nn/" in str(g)
    back = Graph.from_json(g.to_json())
    assert back.outputs["out"].loc == loc


def test_errors_inside_nn_modules_name_both_lines():
    from graphdsl import nn

    attn = nn.MultiHeadAttention(8, 2)
    mask = "f32[2,3,3]"  # cannot broadcast to [batch, heads, seq, seq] with batch 5
    with pytest.raises(GraphDSLError) as info:
        gd.trace(lambda x, m: attn(x, mask=m), params=attn, x="f32[5,4,8]", m=mask)
    text = str(info.value)
    assert "f32[5,2,4,4]" in text and "f32[2,3,3]" in text
    assert "at tests/test_tracing.py" in text and "in graphdsl/nn/" in text
