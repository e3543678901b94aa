"""Tensor indexing beyond the op table: getitem and flatten against NumPy, split, symbolic dims,
run-time index checks, and the tie-splitting gradient of max."""
from __future__ import annotations

import numpy as np
import pytest

import backends
import graphdsl
from graphdsl import ops
from graphdsl.autodiff import grad
from graphdsl.errors import GraphDSLError, ShapeError, TypeError_

X = np.arange(40, dtype=np.float32).reshape(2, 5, 4)
IDX = np.array([[4, 0], [1, 1]], dtype=np.int64)


def run(g, **feed):
    return backends.compile(g, "numpy")(**feed)


# -- getitem against NumPy -------------------------------------------------------------------
GETITEM_CASES = [
    ("slice_newaxis", lambda x: x[:, 1:3, None]),
    ("int", lambda x: x[0]),
    ("negative_int", lambda x: x[-1]),
    ("int_and_step", lambda x: x[-1, ::2]),
    ("ellipsis_int", lambda x: x[..., 1]),
    ("newaxis_ellipsis", lambda x: x[None, ..., -2:]),
    ("reverse", lambda x: x[1, :, ::-1]),
    ("negative_bounds", lambda x: x[:, -4:-1, 1:]),
    ("step_from", lambda x: x[:, 1::3]),
    ("full", lambda x: x[:]),
    ("ellipsis_only", lambda x: x[...]),
    ("list_index", lambda x: x[:, [4, 0, 0]]),
    ("last_of_every", lambda x: x[:, :, -1]),
    ("trailing_newaxis", lambda x: x[0, 1:, None, 2]),
]


@pytest.mark.parametrize("fn", [c[1] for c in GETITEM_CASES], ids=[c[0] for c in GETITEM_CASES])
def test_getitem_matches_numpy(fn):
    g = graphdsl.trace(fn, x="f32[2,5,4]")
    out = run(g, x=X)["out"]
    want = fn(X)
    assert g.outputs["out"].type.shape == want.shape
    np.testing.assert_array_equal(out, want)


TENSOR_INDEX_CASES = [
    ("first_axis", lambda x, i: x[i]),
    ("middle_axis", lambda x, i: x[:, i]),
    ("after_int", lambda x, i: x[1, i]),
    ("before_int", lambda x, i: x[:, i, 2]),
    ("with_slices", lambda x, i: x[::-1, i, 1:3]),
]


@pytest.mark.parametrize("fn", [c[1] for c in TENSOR_INDEX_CASES], ids=[c[0] for c in TENSOR_INDEX_CASES])
def test_getitem_tensor_index_matches_numpy(fn):
    g = graphdsl.trace(fn, x="f32[2,5,4]", i="i64[2,2]")
    idx = IDX % 2 if fn is TENSOR_INDEX_CASES[0][1] else IDX
    np.testing.assert_array_equal(run(g, x=X, i=idx)["out"], fn(X, idx))


@pytest.mark.parametrize("fn,error,match", [
    (lambda x, i: x[i, i], ShapeError, r"only one tensor index"),
    (lambda x, i: x[i, :, 0], ShapeError, r"NumPy would move the indexed axes"),
    (lambda x, i: x[x > 0], ShapeError, r"boolean mask index"),
    (lambda x, i: x[0, 0, 0, 0], ShapeError, r"too many indices for f32\[2,5,4\]: 4 given"),
    (lambda x, i: x[..., 0, ...], ShapeError, r"only one ellipsis"),
    (lambda x, i: x[:, 5], ShapeError, r"index 5 is out of range for axis 1 of f32\[2,5,4\]"),
    (lambda x, i: x[:, -6], ShapeError, r"index -6 is out of range"),
    (lambda x, i: x["a"], TypeError_, r"cannot index with str"),
    (lambda x, i: x[:, i.astype("float32")], TypeError_, r"take: indices must be int32 or int64"),
])
def test_getitem_errors_name_the_users_line(fn, error, match):
    with pytest.raises(error, match=match) as info:
        graphdsl.trace(fn, x="f32[2,5,4]", i="i64[2,2]")
    assert info.value.loc is not None and info.value.loc.file.endswith("test_indexing.py")


# -- flatten -------------------------------------------------------------------------------------
@pytest.mark.parametrize("start,end", [(0, -1), (1, -1), (0, 1), (1, 1), (-2, 2)])
def test_flatten_matches_numpy(start, end):
    g = graphdsl.trace(lambda x: x.flatten(start, end), x="f32[2,5,4]")
    shape = X.shape
    e = end % 3
    s = start % 3
    want = X.reshape(shape[:s] + (int(np.prod(shape[s:e + 1])),) + shape[e + 1:])
    np.testing.assert_array_equal(run(g, x=X)["out"], want)


def test_flatten_symbolic_and_errors():
    g = graphdsl.trace(lambda x: x.flatten(0, 1), x="f32[batch,seq,8]")
    assert str(g.outputs["out"].type) == "f32[batch*seq,8]"
    with pytest.raises(ShapeError, match=r"flatten: start axis 2 comes after end axis 1"):
        graphdsl.trace(lambda x: x.flatten(2, 1), x="f32[2,5,4]")
    with pytest.raises(ShapeError, match=r"flatten: axis 3 is out of range"):
        graphdsl.trace(lambda x: x.flatten(3), x="f32[2,5,4]")


# -- split ---------------------------------------------------------------------------------------
def test_split_returns_a_tuple_of_slices():
    g = graphdsl.trace(lambda x: ops.split(x, sizes=(1, 3, 1), axis=1), x="f32[2,5,4]")
    assert list(g.outputs) == ["out0", "out1", "out2"]
    assert g.op_counts() == {"slice": 3}
    out = run(g, x=X)
    for got, want in zip(out.values(), np.split(X, [1, 4], axis=1)):
        np.testing.assert_array_equal(got, want)


def test_split_symbolic_rest():
    g = graphdsl.trace(lambda x: ops.split(x, sizes=(4, -1), axis=1), x="f32[batch,seq,8]")
    assert [str(n.type) for n in g.outputs.values()] == ["f32[batch,4,8]", "f32[batch,seq-4,8]"]
    x = np.random.default_rng(0).standard_normal((2, 7, 8)).astype(np.float32)
    out = run(g, x=x)
    np.testing.assert_array_equal(out["out0"], x[:, :4])
    np.testing.assert_array_equal(out["out1"], x[:, 4:])


# -- symbolic dims -------------------------------------------------------------------------------
def test_concat_adds_symbolic_dims_and_runs():
    g = graphdsl.trace(lambda a, b: ops.concat(a, b, axis=1), a="f32[batch,seq,8]", b="f32[batch,4,8]")
    assert str(g.outputs["out"].type) == "f32[batch,seq+4,8]"
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((3, 5, 8)), rng.standard_normal((3, 4, 8))
    out = run(g, a=a.astype(np.float32), b=b.astype(np.float32))["out"]
    np.testing.assert_allclose(out, np.concatenate([a, b], axis=1), rtol=1e-6)


def test_concat_gradient_on_symbolic_dims():
    def loss(a, b, w):
        return {"loss": (ops.concat(a, b, axis=1) * w).sum()}

    g = grad(graphdsl.trace(loss, a="f64[batch,seq]", b="f64[batch,3]", w="f64[batch,seq+3]"),
             wrt=["a", "b"])
    w = np.arange(10, dtype=np.float64).reshape(2, 5)
    out = run(g, a=np.zeros((2, 2)), b=np.zeros((2, 3)), w=w)
    np.testing.assert_array_equal(out["grad/a"], w[:, :2])
    np.testing.assert_array_equal(out["grad/b"], w[:, 2:])


@pytest.mark.parametrize("fn,type_", [
    (lambda x: x[:, 2:], "f32[batch,seq-2]"),
    (lambda x: x[:, :3], "f32[batch,3]"),
    (lambda x: x[:, -3:], "f32[batch,3]"),
    (lambda x: x[:, 1:-1], "f32[batch,seq-2]"),
    (lambda x: x[:, -1], "f32[batch]"),
    (lambda x: x[:, -3:-1], "f32[batch,2]"),
    (lambda x: x[1:, 0:4:2], "f32[batch-1,2]"),
])
def test_slice_of_symbolic_dims(fn, type_):
    g = graphdsl.trace(fn, x="f32[batch,seq]")
    assert str(g.outputs["out"].type) == type_
    x = np.arange(21, dtype=np.float32).reshape(3, 7)
    np.testing.assert_array_equal(run(g, x=x)["out"], fn(x))


@pytest.mark.parametrize("fn,match", [
    (lambda x: x[:, -2:3], r"slice \[seq-2:3\] of dim seq has length -seq\+5"),
    (lambda x: x[:, ::2], r"step 2"),
    (lambda x: x[:, ::-1], r"negative step needs a static dim"),
])
def test_slice_of_symbolic_dims_errors(fn, match):
    with pytest.raises(ShapeError, match=match):
        graphdsl.trace(fn, x="f32[batch,seq]")


def test_slice_checks_symbolic_bounds_at_run_time():
    g = graphdsl.trace(lambda x: x[:, :3], x="f32[batch,seq]")
    with pytest.raises(GraphDSLError, match=r"slice: slice \[0:3\] is out of range for axis 1 of size 2"):
        run(g, x=np.zeros((1, 2), np.float32))


def test_slice_and_take_gradients_on_symbolic_dims():
    def loss(x, table, ids):
        return {"loss": (x[:, 1:] * 2.0).sum() + ops.take(table, ids).sum()}

    g = grad(graphdsl.trace(loss, x="f64[batch,seq]", table="f64[V,H]", ids="i64[batch]"),
             wrt=["x", "table"])
    out = run(g, x=np.zeros((2, 4)), table=np.zeros((5, 3)), ids=np.array([3, 3]))
    np.testing.assert_array_equal(out["grad/x"], [[0, 2, 2, 2], [0, 2, 2, 2]])
    np.testing.assert_array_equal(out["grad/table"], [[0] * 3] * 3 + [[2] * 3] + [[0] * 3])


def test_mean_gradient_on_symbolic_dims():
    g = grad(graphdsl.trace(lambda x: {"loss": x.mean(axis=1).sum()}, x="f64[batch,seq]"), wrt=["x"])
    np.testing.assert_allclose(run(g, x=np.zeros((2, 5)))["grad/x"], np.full((2, 5), 0.2))


# -- run-time index checks -----------------------------------------------------------------------
def test_take_embedding_lookup_and_out_of_range_ids():
    g = graphdsl.trace(lambda table, ids: ops.take(table, ids), table="f32[V,H]", ids="i64[B,S]")
    assert str(g.outputs["out"].type) == "f32[B,S,H]"
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    ids = np.array([[0, 3], [2, 2]])
    np.testing.assert_array_equal(run(g, table=table, ids=ids)["out"], table[ids])
    with pytest.raises(GraphDSLError) as info:
        run(g, table=table, ids=np.array([[0, 4], [1, 2]]))
    msg = str(info.value)
    assert "take: index 4 is out of range for axis 0 of size 4 (valid: 0 to 3)" in msg
    assert "test_indexing.py" in msg, "the error must point at the user's line"
    with pytest.raises(GraphDSLError, match=r"take: index -1 is out of range"):
        run(g, table=table, ids=np.array([[0, -1], [1, 2]]))


def test_gather_out_of_range_at_run_time():
    g = graphdsl.trace(lambda x, i: ops.gather(x, i, axis=1), x="f32[2,3]", i="i64[2,1]")
    with pytest.raises(GraphDSLError, match=r"gather: index 3 is out of range for axis 1 of size 3"):
        run(g, x=np.zeros((2, 3), np.float32), i=np.array([[0], [3]]))


# -- reductions: gradients at ties -------------------------------------------------------------
def test_max_and_min_split_the_gradient_among_ties():
    for reduce, x in [(ops.max, [[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]]),
                      (ops.min, [[1.0, 1.0, 1.0], [2.0, 0.0, 5.0]])]:
        g = grad(graphdsl.trace(lambda x: {"loss": reduce(x, axis=1).sum()}, x="f64[2,3]"), wrt=["x"])
        got = run(g, x=np.array(x))["grad/x"]
        want = [[0.0, 0.5, 0.5], [0.5, 0.0, 0.5]] if reduce is ops.max else [[1 / 3] * 3, [0.0, 1.0, 0.0]]
        np.testing.assert_allclose(got, want)


def test_concat_takes_a_list_too():
    g = graphdsl.trace(lambda a, b: ops.concat([a, b], axis=1), a="f32[2,3]", b="f32[2,1]")
    a, b = np.ones((2, 3), np.float32), np.zeros((2, 1), np.float32)
    np.testing.assert_array_equal(backends.compile(g, "numpy")(a=a, b=b)["out"], np.concatenate([a, b], 1))
