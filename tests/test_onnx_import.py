"""Import of ONNX models: one small model per supported ONNX op (ONNX Runtime's answer vs ours on the
NumPy backend), shape subgraphs folded to symbolic dims, unsupported ops listed in one error."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import backends
import graphdsl
from graphdsl.errors import GraphError
from graphdsl.onnx import import_onnx
from graphdsl.onnx.handlers import IMPORT

ort = pytest.importorskip("onnxruntime")

R = np.random.default_rng(0)
X = R.standard_normal((2, 3, 4)).astype(np.float32)
M = R.standard_normal((4, 5)).astype(np.float32)
POS = R.uniform(0.5, 2.0, (2, 3, 4)).astype(np.float32)
I = np.array([[3, -7, 8], [-9, 4, 5]], np.int64)
J = np.array([[2, 2, -3], [4, -4, 5]], np.int64)
B = np.array([[True, False, True], [False, False, True]])
QH = R.standard_normal((2, 4, 3, 4)).astype(np.float32)    # [batch, heads, seq, head]
KH = R.standard_normal((2, 4, 5, 4)).astype(np.float32)
C = np.array([[False, True, True], [False, True, False]])


def i64(*v):
    return np.array(v, np.int64)


@dataclass
class Case:
    op: str
    inputs: dict                      # name -> array, or None for an omitted optional input
    attrs: dict = field(default_factory=dict)
    consts: tuple = ()                # inputs stored as initializers (known at import time)
    symbolic: tuple = ()              # inputs whose dims are all dynamic (named <input>_<axis>)
    out: int | None = None            # output element type (default: the first input's)
    outputs: int = 1
    opset: int = 18
    name: str = ""


CASES = [
    Case("Add", {"a": X, "b": M[0, :4].copy()}), Case("Sub", {"a": X, "b": X[:1]}), Case("Mul", {"a": X, "b": X}),
    Case("Div", {"a": X, "b": POS}), Case("Div", {"a": I, "b": J}, name="int_truncates"),
    Case("Pow", {"a": POS, "b": X}), Case("Pow", {"a": POS, "b": i64(2)}, name="int_exponent"),
    Case("Pow", {"a": i64(1, 2, 3, -2), "b": i64(4, 5, 6, 3)}, name="int64"),
    Case("Pow", {"a": np.array([1, 2, 3], np.int32), "b": np.array([4.0, 5.0, 0.5], np.float32)},
         name="int32_float_exponent"),
    Case("Max", {"a": X, "b": X[0], "c": X[:, :1]}), Case("Min", {"a": X, "b": -X}),
    Case("Sum", {"a": X, "b": X, "c": X}),
    Case("Equal", {"a": I, "b": J}, out=TensorProto.BOOL), Case("Less", {"a": X, "b": -X}, out=TensorProto.BOOL),
    Case("LessOrEqual", {"a": I, "b": J}, out=TensorProto.BOOL),
    Case("Greater", {"a": X, "b": -X}, out=TensorProto.BOOL),
    Case("GreaterOrEqual", {"a": I, "b": J}, out=TensorProto.BOOL),
    Case("And", {"a": B, "b": C}), Case("Or", {"a": B, "b": C}), Case("Xor", {"a": B, "b": C}), Case("Not", {"a": B}),
    Case("Xor", {"a": B, "b": C}, opset=7, name="opset_7"), Case("Not", {"a": B}, opset=9, name="opset_9"),
    Case("Neg", {"x": X}), Case("Abs", {"x": X}), Case("Sqrt", {"x": POS}), Case("Exp", {"x": X}),
    Case("Log", {"x": POS}), Case("Tanh", {"x": X}), Case("Sigmoid", {"x": X}), Case("Relu", {"x": X}),
    Case("Erf", {"x": X}), Case("Sin", {"x": X}), Case("Cos", {"x": X}), Case("Reciprocal", {"x": POS}),
    Case("IsNaN", {"x": np.array([1.0, np.nan, np.inf], np.float32)}, out=TensorProto.BOOL),
    Case("IsInf", {"x": np.array([1.0, -np.inf, np.inf], np.float32)}, {"detect_negative": 0},
         out=TensorProto.BOOL),
    Case("Gelu", {"x": X}, {"approximate": "tanh"}, opset=20), Case("LeakyRelu", {"x": X}, {"alpha": 0.2}),
    Case("Clip", {"x": X, "lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)}),
    Case("MatMul", {"a": X, "b": M}), Case("MatMul", {"a": M[:, 0].copy(), "b": M}, name="vector"),
    Case("MatMul", {"a": M[:, 0].copy(), "b": M[:, 1].copy()}, name="dot"),
    Case("Gemm", {"a": M, "b": M, "c": M[:1, :]}, {"transA": 1, "alpha": 0.5, "beta": 2.0},
         name="trans_a"),
    Case("Gemm", {"a": X[0], "b": M.T.copy()}, {"transB": 1}, name="trans_b"),
    Case("Softmax", {"x": X}, {"axis": 1}), Case("LogSoftmax", {"x": X}),
    Case("LayerNormalization", {"x": X, "w": M[0, :4].copy(), "b": M[1, :4].copy()}, {"epsilon": 1e-3}),
    Case("LayerNormalization", {"x": X, "w": M[:3, :4].copy()}, {"axis": 1}, name="two_axes"),
    Case("LayerNormalization", {"x": X, "w": M[0, :4].copy(), "b": M[1, :4].copy()}, outputs=3,
         name="mean_and_inv_std_dev"),
    Case("LayerNormalization", {"x": X, "w": M[:3, :4].copy()}, {"axis": -2}, outputs=3,
         name="statistics_two_axes"),
    Case("ReduceSum", {"x": X, "axes": i64(0, 2)}, {"keepdims": 0}, consts=("axes",)),
    Case("ReduceMean", {"x": X, "axes": i64(-1)}, consts=("axes",)),
    Case("ReduceMax", {"x": X}, {"keepdims": 0}), Case("ReduceMin", {"x": X, "axes": i64(1)}, consts=("axes",)),
    Case("ReduceMean", {"x": X}, {"axes": [1]}, opset=17, name="axes_attribute"),
    Case("ReduceProd", {"x": i64(2, 3, 4)}, consts=("x",)),
    Case("TopK", {"x": I, "k": i64(2)}, {"axis": 1}, consts=("k",), outputs=2),
    Case("Einsum", {"a": X, "b": M}, {"equation": "bij,jk->bik"}),
    Case("Einsum", {"x": X[:, :3, :3].copy()}, {"equation": "...ii->...i"}, name="diagonal"),
    Case("ArgMax", {"x": X}, {"axis": 1, "keepdims": 0}, out=TensorProto.INT64),
    Case("ArgMin", {"x": X}, {"axis": 1, "keepdims": 0}, out=TensorProto.INT64),
    Case("CumSum", {"x": X, "a": np.array(-1, np.int64)}, {"exclusive": 1, "reverse": 1}, consts=("a",)),
    Case("CumSum", {"x": I, "a": np.array(0, np.int32)}, consts=("a",), name="int"),
    Case("ArgMin", {"x": np.array([[3, -2**63, 5], [2**63 - 1, 7, 7]], np.int64)}, {"axis": 1},
         out=TensorProto.INT64, name="int64_extremes"),
    Case("Mod", {"a": I, "b": J}, name="python_sign"),
    Case("Mod", {"a": I, "b": J}, {"fmod": 1}, name="c_fmod"),
    Case("NegativeLogLikelihoodLoss", {"x": X, "t": np.array([[0, 2, 1, 2], [1, 1, 0, 2]], np.int64)},
         out=TensorProto.FLOAT),
    Case("NegativeLogLikelihoodLoss", {"x": X, "t": np.array([[0, 2, 1, 2], [1, 1, 0, 2]], np.int64),
                                       "w": np.array([0.5, 2.0, 1.0], np.float32)},
         {"ignore_index": 1, "reduction": "mean"}, out=TensorProto.FLOAT, name="weight_ignore_index"),
    Case("SoftmaxCrossEntropyLoss", {"x": X, "t": np.array([[0, 2, 1, 2], [1, 1, 0, 2]], np.int64),
                                     "w": np.array([0.5, 2.0, 1.0], np.float32)},
         {"reduction": "sum"}, out=TensorProto.FLOAT, outputs=2, name="weight_log_prob"),
    Case("SoftmaxCrossEntropyLoss", {"x": X[0], "t": np.array([3, 0, 2], np.int64)}, {"reduction": "none"},
         out=TensorProto.FLOAT, name="none"),
    Case("Attention", {"q": QH, "k": KH, "v": KH * 0.5}, {"is_causal": 1}, opset=23, name="4d_causal"),
    Case("Attention", {"q": QH.transpose(0, 2, 1, 3).reshape(2, 3, 16).copy(),
                       "k": KH[:, :2].transpose(0, 2, 1, 3).reshape(2, 5, 8).copy(),
                       "v": KH[:, :2].transpose(0, 2, 1, 3).reshape(2, 5, 8).copy(),
                       "m": np.array([[True, True, False, True, True]] * 3)},
         {"q_num_heads": 4, "kv_num_heads": 2, "scale": 0.3}, opset=23, name="3d_gqa_bool_mask"),
    Case("Attention", {"q": QH, "k": KH[:, :, :2].copy(), "v": KH[:, :, :2].copy(),
                       "m": R.standard_normal((3, 5)).astype(np.float32), "pk": KH[:, :, 2:].copy(),
                       "pv": KH[:, :, 2:].copy()},
         {"is_causal": 1, "softcap": 2.0, "qk_matmul_output_mode": 3}, opset=23, outputs=4,
         name="past_softcap_scores"),
    Case("RMSNormalization", {"x": X, "w": M[0, :4].copy()}, {"epsilon": 1e-3}, opset=23),
    Case("RMSNormalization", {"x": X, "w": M[:3, :4].copy()}, {"axis": 1}, opset=23, name="two_axes"),
    Case("Constant", {}, {"value": numpy_helper.from_array(M, "v")}, out=TensorProto.FLOAT),
    Case("Constant", {}, {"value_ints": [1, 2]}, out=TensorProto.INT64, name="ints"),
    Case("Identity", {"x": X}), Case("Dropout", {"x": X}),
    Case("Cast", {"x": X}, {"to": TensorProto.INT32}, out=TensorProto.INT32),
    Case("CastLike", {"x": I, "like": X}, out=TensorProto.FLOAT),
    Case("Shape", {"x": X}, {"start": 1}, out=TensorProto.INT64, symbolic=("x",)),
    Case("Size", {"x": X}, out=TensorProto.INT64, symbolic=("x",)),
    Case("Gather", {"x": X, "i": np.array([2, -1], np.int64)}, {"axis": 1}, consts=("i",)),
    Case("Gather", {"x": M, "i": np.array([[0, 3], [2, 2]], np.int64)}, name="runtime_indices"),
    Case("Gather", {"x": M, "i": np.array([[0, -1], [-4, 2]], np.int64)}, name="runtime_negative_indices"),
    Case("GatherElements", {"x": M, "i": np.array([[0, 3, 1, 1, 2]], np.int64)}),
    Case("GatherElements", {"x": M, "i": np.array([[0, -1, 1, -4, 2]], np.int64)}, name="negative_indices"),
    Case("GatherND", {"x": X, "i": np.array([[[1, 2]], [[0, 0]]], np.int64)}),
    Case("GatherND", {"x": X, "i": np.array([[[-1, 2]], [[0, -3]]], np.int64)}, name="negative_indices"),
    Case("GatherND", {"x": X, "i": np.array([[[2, 1], [0, 3]], [[1, -1], [-3, 0]]], np.int64)},
         {"batch_dims": 1}, name="batch_dims_1"),
    Case("GatherND", {"x": X, "i": np.array([[[1], [3], [0]], [[0], [2], [-1]]], np.int64)},
         {"batch_dims": 2}, name="batch_dims_2"),
    Case("Concat", {"a": X, "b": X[:, :1]}, {"axis": -2}),
    Case("Unsqueeze", {"x": M, "axes": i64(0, -1)}, consts=("axes",)),
    Case("Squeeze", {"x": X[:, :1], "axes": i64(1)}, consts=("axes",)), Case("Squeeze", {"x": X[:1, :, :1]}, name="all"),
    Case("Reshape", {"x": X, "s": i64(0, -1)}, consts=("s",), symbolic=("x",)),
    Case("Flatten", {"x": X}, {"axis": 2}), Case("Flatten", {"x": X}, {"axis": -1}, name="axis_minus_1"),
    Case("Flatten", {"x": X}, {"axis": -3}, name="axis_minus_rank"), Case("Transpose", {"x": X}, {"perm": [2, 0, 1]}),
    Case("Transpose", {"x": M}, name="default_perm"),
    Case("Expand", {"x": X[:, :1], "s": i64(3, 1)}, consts=("s",)),
    Case("Slice", {"x": X, "s": i64(1, -1), "e": i64(2 ** 63 - 1, -4), "a": i64(1, 2), "st": i64(1, -1)},
         consts=("s", "e", "a", "st")),
    Case("Slice", {"x": X, "s": i64(1), "e": i64(-1), "a": i64(2)}, consts=("s", "e", "a"), symbolic=("x",),
         name="symbolic"),
    Case("Split", {"x": X, "sizes": i64(1, 3)}, {"axis": 2}, consts=("sizes",), outputs=2),
    Case("Split", {"x": X}, {"axis": 2, "num_outputs": 2}, outputs=2, name="equal"),
    Case("ConstantOfShape", {"s": i64(2, 3)}, {"value": numpy_helper.from_array(np.array([7], np.int64), "v")},
         consts=("s",), out=TensorProto.INT64),
    Case("Range", {"a": np.array(1, np.int64), "b": np.array(9, np.int64), "d": np.array(3, np.int64)},
         consts=("a", "b", "d")),
    Case("Where", {"c": B, "a": I, "b": J}, out=TensorProto.INT64),
    Case("Trilu", {"x": X, "k": np.array(1, np.int64)}, {"upper": 0}, consts=("k",)),
]


def case_model(case: Case) -> onnx.ModelProto:
    inputs, inits, names = [], [], []
    for name, arr in case.inputs.items():
        if arr is None:
            names.append("")
            continue
        names.append(name)
        if name in case.consts:
            inits.append(numpy_helper.from_array(arr, name))
        else:
            shape = [f"{name}_{i}" for i in range(arr.ndim)] if name in case.symbolic else list(arr.shape)
            inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), shape))
    first = next((a for a in case.inputs.values() if a is not None), None)
    out = case.out if case.out is not None else helper.np_dtype_to_tensor_dtype(first.dtype)
    outs = [f"y{i}" for i in range(case.outputs)]
    node = helper.make_node(case.op, names, outs, **case.attrs)
    g = helper.make_graph([node], case.op.lower(), inputs,
                          [helper.make_tensor_value_info(o, out, None) for o in outs], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", case.opset)])


def run_ort(model, feed):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))


def assert_matches_ort(graph, model, feed, atol=1e-5, rtol=1e-5):
    want = run_ort(model, feed)
    got = backends.compile(graph, "numpy")(**feed)
    assert set(got) == set(want)
    for name, ref in want.items():
        assert got[name].shape == ref.shape, f"{name}: {got[name].shape} vs ONNX Runtime's {ref.shape}"
        assert got[name].dtype == ref.dtype, f"{name}: {got[name].dtype} vs ONNX Runtime's {ref.dtype}"
        np.testing.assert_allclose(got[name], ref, atol=atol, rtol=rtol, err_msg=name)


@pytest.mark.parametrize("case", [pytest.param(c, id=f"{c.op}-{c.name}" if c.name else c.op) for c in CASES])
def test_op_imports_like_onnxruntime_runs_it(case):
    model = case_model(case)
    graph = graphdsl.from_onnx(model)
    feed = {k: v for k, v in case.inputs.items() if v is not None and k not in case.consts}
    assert_matches_ort(graph, model, feed)


def test_every_import_handler_has_a_case():
    missing = sorted(set(IMPORT.keys()) - {c.op for c in CASES})
    assert not missing, f"ONNX ops the importer handles but no test case covers: {missing}"


def _model(nodes, inputs, outputs, inits=(), opset=18):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_shape_subgraphs_fold_to_symbolic_dims():
    """Reshape(x, Concat(Shape(x)[0] * Shape(x)[1], 4 / 2, -1)): no run-time shape ops remain."""
    c = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
        helper.make_node("Gather", ["s", "one"], ["t"], axis=0),
        helper.make_node("Mul", ["b", "t"], ["bt"]),
        helper.make_node("Div", ["four", "two"], ["half"]),
        helper.make_node("Unsqueeze", ["bt", "axes0"], ["bt1"]),
        helper.make_node("Unsqueeze", ["half", "axes0"], ["half1"]),
        helper.make_node("Concat", ["bt1", "half1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
        helper.make_node("ConstantOfShape", ["s"], ["z"], value=numpy_helper.from_array(np.array([1.5], np.float32))),
        helper.make_node("Add", ["x", "z"], ["w"]),
    ]
    inits = [c("zero", 0), c("one", 1), c("four", 4), c("two", 2), c("axes0", [0]), c("minus1", [-1])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                    helper.make_tensor_value_info("w", TensorProto.FLOAT, None)], inits)
    g = graphdsl.from_onnx(model)
    assert str(g.outputs["y"].type) == "f32[batch*seq,2,2]"
    assert set(g.op_counts()) == {"reshape", "full", "add"}
    for b, s in ((1, 2), (3, 5)):
        assert_matches_ort(g, model, {"x": R.standard_normal((b, s, 4)).astype(np.float32)})


def test_dims_option_fixes_named_axes():
    model = case_model(Case("Shape", {"x": X}, out=TensorProto.INT64, symbolic=("x",)))
    g = graphdsl.from_onnx(model, dims={"x_0": 2})
    assert str(g.inputs["x"].type) == "f32[2,x_1,x_2]"


def test_unsupported_ops_are_listed_in_one_error():
    nodes = [helper.make_node("Celu", ["x"], ["a"]), helper.make_node("Celu", ["a"], ["b"]),
             helper.make_node("HardSwish", ["b"], ["c"]),
             helper.make_node("FastGelu", ["c"], ["y"], domain="com.microsoft")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(GraphError) as info:
        graphdsl.from_onnx(model)
    text = str(info.value)
    assert "Celu (2 nodes), HardSwish (1 node), com.microsoft.FastGelu (1 node)" in text
    assert "supported ops:" in text and "MatMul" in text


def test_an_import_error_names_the_onnx_node():
    nodes = [helper.make_node("MatMul", ["a", "b"], ["y"], name="proj")]
    model = _model(nodes, [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [4, 5])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])])
    with pytest.raises(graphdsl.ShapeError) as info:
        graphdsl.from_onnx(model)
    text = str(info.value)
    assert "ONNX MatMul node 'proj'" in text and "inner dims differ" in text and "<ModelProto>:0" in text


def test_import_onnx_returns_float_weights_as_params():
    w = numpy_helper.from_array(M, "w")
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    graph, params = import_onnx(model)
    assert list(graph.params) == ["w"] and np.array_equal(params["w"], M)
    x = X[0]
    out = backends.compile(graph, "numpy")(x=x, **params)["y"]
    np.testing.assert_allclose(out, x @ M, rtol=1e-6)


def _dropout_model(training_mode, ratio=0.25, mask=True):
    """A Dropout in training mode: ratio and training_mode as initializers (known at import), or
    training_mode as a graph input (``training_mode=None``)."""
    inits = [numpy_helper.from_array(np.array(ratio, np.float32), "ratio")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 128])]
    if training_mode is None:
        inputs.append(helper.make_tensor_value_info("t", TensorProto.BOOL, []))
    else:
        inits.append(numpy_helper.from_array(np.array(training_mode), "t"))
    outs = ["y", "mask"] if mask else ["y"]
    node = helper.make_node("Dropout", ["x", "ratio", "t"], outs)
    values = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if mask:
        values.append(helper.make_tensor_value_info("mask", TensorProto.BOOL, None))
    g = helper.make_graph([node], "dropout", inputs, values, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def test_training_mode_dropout_drops_and_scales_with_the_graph_seed():
    """Training-mode Dropout was imported as the identity; it is our dropout on the graph's seed:
    kept elements scaled by 1 / (1 - ratio), the rest 0, the mask output where y was kept, about
    1 - ratio of them kept, another seed another mask."""
    graph = graphdsl.from_onnx(_dropout_model(True))
    assert "seed" in graph.inputs
    x = R.uniform(0.5, 1.5, (64, 128)).astype(np.float32)
    exe = backends.compile(graph, "numpy")
    out = exe(x=x, seed=np.int32(3))
    y, mask = out[list(graph.outputs)[0]], out[list(graph.outputs)[1]]
    np.testing.assert_allclose(y[mask], x[mask] / 0.75, rtol=1e-6)
    assert (y[~mask] == 0).all() and abs(mask.mean() - 0.75) < 0.02
    other = exe(x=x, seed=np.int32(4))[list(graph.outputs)[1]]
    assert (other != mask).any()
    llvm = backends.compile(graph, "llvm")(x=x, seed=np.int32(3))
    np.testing.assert_array_equal(llvm[list(graph.outputs)[1]], mask)


def test_inference_dropout_is_the_identity_and_a_run_time_training_mode_is_refused():
    graph = graphdsl.from_onnx(_dropout_model(False))
    x = R.standard_normal((64, 128)).astype(np.float32)
    out = backends.compile(graph, "numpy")(x=x)
    np.testing.assert_array_equal(out[list(graph.outputs)[0]], x)
    assert out[list(graph.outputs)[1]].all()
    with pytest.raises(GraphError, match="training_mode must be known when importing"):
        graphdsl.from_onnx(_dropout_model(None))


def test_a_value_needed_at_import_names_the_graph_input_it_comes_from():
    """ReduceSum's axes given as a graph input cannot be known when importing; the error says which
    input and that it should be an initializer (not the dims= hint, which fixes shapes only)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    axes = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"])
    g = helper.make_graph([node], "reduce", [x, axes], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(GraphError, match=r"axes must be known when importing.*graph input\(s\) 'axes'") as err:
        graphdsl.from_onnx(model)
    assert "initializers" in err.value.hint and "dims=" not in err.value.hint


def test_an_older_opset_imports_when_none_of_its_ops_changed_since_opset_13():
    """Xor means the same from opset 7 to today, so an opset-7 model imports (the cases above run
    it); Squeeze took its axes as an attribute before 13, so an opset-11 Squeeze is refused by name."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1])
    node = helper.make_node("Squeeze", ["x"], ["y"], axes=[1])
    g = helper.make_graph([node], "old", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
    with pytest.raises(GraphError, match=r"opset 11, and these of its ops changed before opset 13.*: Squeeze"):
        graphdsl.from_onnx(model)


def _reduce_with_axes_input():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    axes = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)
    g = helper.make_graph([node], "reduce", [x, axes], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def test_constants_fix_graph_inputs_whose_values_the_importer_needs():
    """from_onnx(constants=) makes a graph input a constant (ReduceSum's axes exported as an input):
    the graph no longer takes it and computes what ONNX Runtime computes for that value."""
    model = _reduce_with_axes_input()
    graph = graphdsl.from_onnx(model, constants={"axes": np.array([1], np.int64)})
    assert list(graph.inputs) == ["x"]
    x = R.standard_normal((2, 3)).astype(np.float32)
    want = run_ort(model, {"x": x, "axes": np.array([1], np.int64)})["y"]
    np.testing.assert_allclose(backends.compile(graph, "numpy")(x=x)["y"], want, rtol=1e-6)
    with pytest.raises(GraphError, match=r"constants= gives input 'axes' a int32 array"):
        graphdsl.from_onnx(model, constants={"axes": np.array([1], np.int32)})
    with pytest.raises(GraphError, match=r"constants= names \['nope'\], which are not graph inputs"):
        graphdsl.from_onnx(model, constants={"nope": np.array([1])})
    with pytest.raises(GraphError, match=r"constants=\{'axes': value\}"):
        graphdsl.from_onnx(model)


def test_an_opset_11_dropout_with_its_ratio_attribute_imports_as_the_inference_identity():
    """Dropout changed at opset 12 (ratio became an input, training_mode was added); the older
    form, with no training_mode, is the inference-mode identity with an all-true mask, as ONNX's
    reference evaluator gives it (ONNX Runtime 1.2x returns an all-false mask for this form)."""
    from onnx.reference import ReferenceEvaluator
    node = helper.make_node("Dropout", ["x"], ["y", "mask"], ratio=0.3)
    graph = helper.make_graph([node], "dropout11",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(X.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(X.shape)),
                               helper.make_tensor_value_info("mask", TensorProto.BOOL, list(X.shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    got = backends.compile(graphdsl.from_onnx(model), "numpy")(x=X)
    want_y, want_mask = ReferenceEvaluator(model).run(None, {"x": X})
    np.testing.assert_array_equal(got["y"], want_y)
    np.testing.assert_array_equal(got["mask"], want_mask)
    assert want_mask.all()
