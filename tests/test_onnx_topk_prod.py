"""ONNX TopK, ReduceProd on run-time tensors and ArgMax/ArgMin with select_last_index: imported
models against ONNX Runtime (numpy and llvm), the errors for what cannot be imported, export and
re-import of prod and topk, and the gradients that flow through them (prod's at zeros, topk's
values into the elements picked)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import backends
import graphdsl
from graphdsl import ops
from graphdsl.autodiff import grad
from graphdsl.errors import GraphDSLError, GraphError

ort = pytest.importorskip("onnxruntime")
from backends.onnx import export  # noqa: E402  (needs onnxruntime's onnx)

# ties, NaN, infinities and both zeros in each row
EDGES = np.array([[1.0, np.nan, np.inf, 2.0, np.nan, -np.inf, 2.0, -0.0, 0.0],
                  [0.0, -0.0, -np.inf, 3.0, np.inf, np.nan, 3.0, -1.0, np.inf],
                  [5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]], np.float32)
TIES = np.array([[1, 5, 5, 2, 5, 1], [0, 0, 7, 0, 7, 0]], np.int64)


def _model(nodes, inputs, outputs, inits=(), opset=18):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _info(name, elem, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def _ort(model, feed):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))


def _assert_same(got: dict, want: dict, what: str, unordered=()):
    assert set(got) == set(want), what
    for name, ref in want.items():
        out = got[name]
        assert out.dtype == ref.dtype and out.shape == ref.shape, \
            f"{what} {name}: {out.dtype}{out.shape} vs {ref.dtype}{ref.shape}"
        if name in unordered:   # sorted=0: ONNX leaves the order open
            out, ref = np.sort(out, axis=-1), np.sort(ref, axis=-1)
        np.testing.assert_array_equal(out, ref, err_msg=f"{what}: {name}")


def _both_targets(graph, model, feed, unordered=()):
    want = _ort(model, feed)
    for target in ("numpy", "llvm"):
        _assert_same(backends.compile(graph, target)(**feed), want, f"{target} vs onnxruntime", unordered)


def _loop_topk(row, k, largest):
    """The k best positions of one row by a Python sort: NaN above every number, ties by index."""
    def key(i):
        v = float(row[i])
        if v != v:
            return (0 if largest else 1, 0.0, i)
        return (1 if largest else 0, -v if largest else v, i)
    return sorted(range(len(row)), key=key)[:k]


# -- TopK ------------------------------------------------------------------------------------------
def _topk_model(x: np.ndarray, variants, k_input=False):
    """One TopK node per (k, attrs) of ``variants`` on the input ``x``; outputs v<i>, i<i>."""
    elem = helper.np_dtype_to_tensor_dtype(x.dtype)
    nodes, outputs, inits = [], [], []
    for n, (k, attrs) in enumerate(variants):
        kname = "k_in" if k_input else f"k{n}"
        if not k_input:
            inits.append(numpy_helper.from_array(np.array([k], np.int64), kname))
        nodes.append(helper.make_node("TopK", ["x", kname], [f"v{n}", f"i{n}"], **attrs))
        outputs += [_info(f"v{n}", elem), _info(f"i{n}", TensorProto.INT64)]
    inputs = [_info("x", elem, list(x.shape))] + ([_info("k_in", TensorProto.INT64, [1])] if k_input else [])
    return _model(nodes, inputs, outputs, inits)


TOPK_VARIANTS = [(4, {}), (9, {"largest": 0}), (2, {"axis": 0}), (3, {"axis": 0, "largest": 0}),
                 (5, {"sorted": 0}), (0, {})]


def test_topk_imports_like_onnxruntime_with_ties_nan_and_zeros():
    model = _topk_model(EDGES, TOPK_VARIANTS)
    graph = graphdsl.from_onnx(model)
    assert graph.op_counts()["topk_indices"] == len(TOPK_VARIANTS)
    _both_targets(graph, model, {"x": EDGES}, unordered=("v4", "i4"))


def test_topk_order_is_the_loops():
    """The rule itself, independently of ONNX Runtime: NaN first (largest) or last (smallest),
    equal values (-0.0 and 0.0 too) in index order."""
    graph = graphdsl.from_onnx(_topk_model(EDGES, [(9, {}), (9, {"largest": 0})]))
    out = backends.compile(graph, "numpy")(x=EDGES)
    for r, row in enumerate(EDGES):
        assert out["i0"][r].tolist() == _loop_topk(row, 9, True)
        assert out["i1"][r].tolist() == _loop_topk(row, 9, False)
    assert out["i0"][2].tolist() == list(range(9))


def test_topk_on_integers_and_symbolic_dims():
    model = _topk_model(TIES, [(3, {}), (4, {"largest": 0}), (1, {"axis": 0})])
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "n"
    graph = graphdsl.from_onnx(model)
    assert str(graph.outputs["i0"].type) == "i64[2,3]"
    _both_targets(graph, model, {"x": TIES})
    _both_targets(graph, model, {"x": np.concatenate([TIES, TIES[:, ::-1]], axis=1)})


def test_topk_k_from_a_runtime_input_is_refused_naming_topk_and_k():
    model = _topk_model(EDGES, [(2, {})], k_input=True)
    with pytest.raises(GraphError, match=r"TopK.*K must be known when importing \(a constant, an initializer"):
        graphdsl.from_onnx(model)
    fixed = graphdsl.from_onnx(model, constants={"k_in": np.array([2], np.int64)})
    assert tuple(fixed.outputs["i0"].type.shape) == (3, 2)


def test_topk_k_larger_than_a_symbolic_axis_is_an_error_at_run_time():
    g = graphdsl.trace(lambda x: ops.topk_indices(x, k=3), x="f32[2,n]")
    for target in ("numpy", "llvm"):
        exe = backends.compile(g, target)
        assert exe(x=EDGES[:2, :5])["out"].shape == (2, 3)
        with pytest.raises(GraphDSLError, match=r"topk_indices"):
            exe(x=EDGES[:2, :2])


# -- ReduceProd ------------------------------------------------------------------------------------
ZEROS = np.array([[[1.5, -2.0, 0.5], [0.0, 3.0, 2.0]], [[0.0, 0.0, 4.0], [-1.0, 0.25, 8.0]]], np.float32)


def test_reduce_prod_on_runtime_tensors():
    inits = [numpy_helper.from_array(np.array([1], np.int64), "a1"),
             numpy_helper.from_array(np.array([0, 2], np.int64), "a02")]
    nodes = [helper.make_node("ReduceProd", ["x", "a1"], ["p1"], keepdims=0),
             helper.make_node("ReduceProd", ["x", "a02"], ["p02"], keepdims=1),
             helper.make_node("ReduceProd", ["x"], ["pall"], keepdims=0),
             helper.make_node("ReduceProd", ["n", "a1"], ["pint"], keepdims=0)]
    model = _model(nodes, [_info("x", TensorProto.FLOAT, ["b", 2, 3]), _info("n", TensorProto.INT64, [2, 3])],
                   [_info(o, TensorProto.FLOAT) for o in ("p1", "p02", "pall")] + [_info("pint", TensorProto.INT64)],
                   inits)
    graph = graphdsl.from_onnx(model)
    assert graph.op_counts()["prod"] == 4
    feed = {"x": ZEROS, "n": np.array([[3, -7, 2], [100000, 100000, 3]], np.int64)}
    _both_targets(graph, model, feed)
    got = backends.compile(graph, "numpy")(**feed)
    assert got["pint"].tolist() == [-42, 3 * 10 ** 10]


def test_reduce_prod_of_a_shape_is_still_folded_at_import():
    """Reshape(x, [ReduceProd(Shape(x))]) flattens to a symbolic size, with no run-time prod."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ReduceProd", ["s"], ["n"], keepdims=1),
             helper.make_node("Reshape", ["x", "n"], ["y"])]
    model = _model(nodes, [_info("x", TensorProto.FLOAT, ["batch", "seq", 4])], [_info("y", TensorProto.FLOAT)])
    graph = graphdsl.from_onnx(model)
    assert str(graph.outputs["y"].type) == "f32[4*batch*seq]"
    assert "prod" not in graph.op_counts()


# -- ArgMax / ArgMin with select_last_index ------------------------------------------------------------
@pytest.mark.parametrize("symbolic", [False, True], ids=["static", "symbolic"])
def test_argmax_argmin_select_last_index(symbolic):
    x = np.array([[1.0, 5.0, 5.0, 2.0, 5.0], [0.0, -3.0, 0.0, -3.0, 0.0], [7.0, 1.0, 1.0, 7.0, 1.0]], np.float32)
    nodes = [helper.make_node("ArgMax", ["x"], ["amax"], axis=1, keepdims=0, select_last_index=1),
             helper.make_node("ArgMin", ["x"], ["amin"], axis=1, keepdims=1, select_last_index=1),
             helper.make_node("ArgMax", ["x"], ["amax0"], axis=0, keepdims=0, select_last_index=1),
             helper.make_node("ArgMin", ["i"], ["imin"], axis=-1, keepdims=0, select_last_index=1),
             helper.make_node("ArgMax", ["x"], ["first"], axis=1, keepdims=0)]
    shape = ["r", "c"] if symbolic else [3, 5]
    ishape = [2, "m"] if symbolic else [2, 6]
    model = _model(nodes, [_info("x", TensorProto.FLOAT, shape), _info("i", TensorProto.INT64, ishape)],
                   [_info(o, TensorProto.INT64) for o in ("amax", "amin", "amax0", "imin", "first")])
    graph = graphdsl.from_onnx(model)
    feed = {"x": x, "i": TIES}
    _both_targets(graph, model, feed)
    got = backends.compile(graph, "numpy")(**feed)
    assert got["amax"].tolist() == [4, 4, 3] and got["first"].tolist() == [1, 0, 0]
    assert got["amin"].ravel().tolist() == [0, 3, 4] and got["imin"].tolist() == [5, 5]
    if symbolic:
        _both_targets(graph, model, {"x": x[:2, :3], "i": TIES[:, :4]})


# -- export and re-import -------------------------------------------------------------------------
def _traced():
    def f(x, n):
        v, i = ops.topk(x, 3, axis=-1)
        sv, si = ops.topk(x, 2, axis=0, largest=False, sorted=False)
        return {"v": v, "i": i, "sv": sv, "si": si, "p": ops.prod(x, axis=1), "pk": ops.prod(x, keepdims=True),
                "pn": ops.prod(n, axis=0), "ni": ops.topk_indices(n, k=2, largest=False)}
    return graphdsl.trace(f, x="f32[3,9]", n="i32[2,6]")


def test_prod_and_topk_export_and_import_round_trip():
    g = _traced()
    model = export(g)
    kinds = {n.op_type for n in model.graph.node}
    assert {"TopK", "ReduceProd"} <= kinds, kinds
    x = np.where(np.isnan(EDGES), 1.5, EDGES)   # prod of a NaN is NaN: keep the numbers comparable
    feed = {"x": x, "n": TIES.astype(np.int32)}
    want = backends.compile(g, "numpy")(**feed)
    _assert_same(_ort(model, feed), want, "exported model on onnxruntime")
    back = graphdsl.from_onnx(model)
    # sorted=False is exported as TopK, then a TopK putting the indices in order: 3 + 1 on import
    assert back.op_counts()["topk_indices"] == 4 and back.op_counts()["prod"] == 3
    _assert_same(backends.compile(back, "numpy")(**feed), want, "re-imported model")


def test_topk_with_nan_runs_alike_on_every_target():
    g = graphdsl.trace(lambda x: dict(zip(("v", "i"), ops.topk(x, 5, largest=False))), x="f32[3,9]")
    want = backends.compile(g, "numpy")(x=EDGES)
    for target in ("llvm", "onnxruntime"):
        got = backends.compile(g, target)(x=EDGES)
        np.testing.assert_array_equal(got["i"], want["i"], err_msg=target)
        np.testing.assert_array_equal(got["v"], want["v"], err_msg=target)


# -- gradients --------------------------------------------------------------------------------------
def test_topk_values_gradient_goes_to_the_elements_picked():
    x = np.array([[0.5, 3.0, -1.0, 3.0, 2.0], [4.0, 4.0, 4.0, -2.0, 0.0]])
    w = np.array([[1.0, 10.0, 100.0], [-1.0, -10.0, -100.0]])
    g = graphdsl.trace(lambda x, w: {"loss": (ops.topk(x, 3)[0] * w).sum()}, x="f64[2,5]", w="f64[2,3]")
    got = backends.compile(grad(g, wrt=["x"]), "numpy")(x=x, w=w)["grad/x"]
    want = np.zeros_like(x)
    for r in range(2):
        for slot, i in enumerate(_loop_topk(x[r], 3, True)):
            want[r, i] += w[r, slot]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("target", ["numpy", "llvm"])
def test_prod_gradient_is_the_product_of_the_others_at_zeros(target):
    x = np.array([[2.0, 0.0, 3.0, -1.5], [0.0, 0.0, 5.0, 2.0], [1.5, -2.0, 0.5, 4.0], [0.0, 7.0, 1.0, 1.0]])
    g = graphdsl.trace(lambda x: {"loss": ops.prod(x, axis=1).sum()}, x="f64[4,4]")
    got = backends.compile(grad(g, wrt=["x"]), target)(x=x)["grad/x"]
    want = np.zeros_like(x)
    for r in range(4):
        for i in range(4):
            others = 1.0
            for j in range(4):
                if j != i:
                    others *= x[r, j]
            want[r, i] = others
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    assert got[1].tolist() == [0.0, 0.0, 0.0, 0.0] and got[0, 1] == -9.0
