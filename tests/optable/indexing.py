"""Rows for graphdsl/ops/indexing.py. Expected values come from Python loops and hand-written indices."""
import numpy as np

from graphdsl.errors import AttributeError_, ShapeError, TypeError_
from graphdsl.ops import split
from tests.opinfo import ErrorCase, OpInfo, Sample, randn

X = randn(2, 5, 3, seed=11)
M = randn(4, 5, seed=12)
TABLE = randn(6, 5, seed=13)  # an embedding table: vocabulary 6, width 5
IDS = np.array([[3, 0, 3], [1, 4, 2]], dtype=np.int64)


def _take_loop(table, ids):
    """out[b, s, :] = table[ids[b, s], :]"""
    out = np.zeros(ids.shape + table.shape[1:])
    for idx in np.ndindex(*ids.shape):
        out[idx] = table[int(ids[idx])]
    return out


def _take_axis1_loop(x, ids):
    """out[a, i, c] = x[a, ids[i], c]"""
    out = np.zeros((x.shape[0], len(ids), x.shape[2]))
    for a in range(x.shape[0]):
        for i, j in enumerate(ids.tolist()):
            for c in range(x.shape[2]):
                out[a, i, c] = x[a, j, c]
    return out


def _index_add_loop(ids, updates, size):
    out = np.zeros((size,) + updates.shape[ids.ndim:])
    for idx in np.ndindex(*ids.shape):
        out[int(ids[idx])] += updates[idx]
    return out


def _gather_loop(x, ids):
    """out[i, j] = x[i, ids[i, j]] (axis 1 of a matrix)"""
    out = np.zeros(ids.shape)
    for i in range(ids.shape[0]):
        for j in range(ids.shape[1]):
            out[i, j] = x[i, ids[i, j]]
    return out


def _scatter_loop(ids, updates, size):
    """out[ids[i, j], j] += updates[i, j] (axis 0)"""
    out = np.zeros((size, ids.shape[1]))
    for i in range(ids.shape[0]):
        for j in range(ids.shape[1]):
            out[ids[i, j], j] += updates[i, j]
    return out


def _triangle(keep):
    def expected(x, k=0):
        out = x.copy()
        for idx in np.ndindex(*x.shape):
            i, j = idx[-2:]
            if not keep(j - i, k):
                out[idx] = 0.0
        return out
    return expected


_upper = _triangle(lambda d, k: d >= k)
_lower = _triangle(lambda d, k: d <= k)

GATHER_IDS = np.array([[4, 0], [2, 2], [1, 3], [0, 4]], dtype=np.int32)
SCATTER_IDS = np.array([[0, 2, 1], [2, 2, 0]], dtype=np.int64)

OPS = [
    OpInfo("slice", [
        Sample([X], {"axis": 1, "start": 1, "stop": 3},
               expected=lambda x: np.stack([x[:, 1], x[:, 2]], axis=1), name="basic"),
        Sample([X], {"axis": 1, "start": -2},
               expected=lambda x: np.stack([x[:, 3], x[:, 4]], axis=1), name="negative_start"),
        Sample([X], {"axis": -2, "start": 0, "stop": 5, "step": 2},
               expected=lambda x: np.stack([x[:, 0], x[:, 2], x[:, 4]], axis=1), name="step"),
        Sample([X], {"axis": 1, "start": 4, "stop": None, "step": -2},
               expected=lambda x: np.stack([x[:, 4], x[:, 2], x[:, 0]], axis=1), name="reverse"),
        Sample([X], {"axis": 2, "start": 1, "stop": 100},
               expected=lambda x: np.stack([x[..., 1], x[..., 2]], axis=2), name="clamped"),
    ], [
        ErrorCase(["f32[2,3]"], {"axis": 2, "start": 0}, ShapeError, r"axis 2 is out of range", "axis"),
        ErrorCase(["f32[2,3]"], {"axis": 1, "start": 0, "step": 0}, ShapeError, r"step must not be zero",
                  "step0"),
        ErrorCase(["f32[batch,seq]"], {"axis": 1, "start": -2, "stop": 3}, ShapeError,
                  r"slice \[seq-2:3\] of dim seq .*not known to be non-negative", "symbolic"),
        ErrorCase(["f32[batch,seq]"], {"axis": 1, "start": 0, "step": 2}, ShapeError,
                  r"step 2 .*not a dim expression", "symbolic_step"),
    ]),
    OpInfo("slice_grad", [
        Sample([randn(2, 2, 3, seed=3)], {"axis": 1, "start": 1, "stop": 3, "size": 5},
               expected=lambda g: np.array([[[0.0] * 3, r[0].tolist(), r[1].tolist(), [0.0] * 3, [0.0] * 3]
                                            for r in g]), name="basic"),
        Sample([randn(2, 2, seed=4)], {"axis": 1, "start": 0, "step": 3, "size": 5},
               expected=lambda g: np.array([[r[0], 0, 0, r[1], 0] for r in g.tolist()]), name="step"),
    ], [
        ErrorCase(["f32[2,3]"], {"axis": 1, "start": 0, "stop": 2, "size": 5}, ShapeError,
                  r"has 2 elements on axis 1, but the input is f32\[2,3\]"),
    ]),
    OpInfo("concat", [
        Sample([randn(2, 3, seed=1), randn(1, 3, seed=2)], {"axis": 0},
               expected=lambda a, b: np.array(a.tolist() + b.tolist()), name="axis0"),
        Sample([randn(2, 3, seed=1), randn(2, 1, seed=2), randn(2, 2, seed=3)], {"axis": -1},
               expected=lambda a, b, c: np.array([ra + rb + rc for ra, rb, rc in
                                                  zip(a.tolist(), b.tolist(), c.tolist())]), name="three"),
        Sample([randn(2, 3, seed=1)], {"axis": 1}, expected=lambda a: a, name="one"),
    ], [
        ErrorCase(["f32[2,3]", "f16[2,3]"], {"axis": 0}, TypeError_, r"dtypes differ", "dtype"),
        ErrorCase(["f32[2,3]", "f32[2,4]"], {"axis": 0}, ShapeError,
                  r"shapes differ on axis 1 .*f32\[2,3\], f32\[2,4\]", "shape"),
        ErrorCase(["f32[2,3]", "f32[2,3,1]"], {"axis": 0}, ShapeError, r"ranks differ", "rank"),
        ErrorCase(["f32[2,3]", "f32[2,3]"], {"axis": 2}, ShapeError, r"axis 2 is out of range", "axis"),
    ]),
    OpInfo("split", [
        Sample([X], {"sizes": (2, 3), "axis": 1, "pick": 1},
               expected=lambda x: np.stack([x[:, 2], x[:, 3], x[:, 4]], axis=1), name="second"),
        Sample([X], {"sizes": (1, -1, 1), "axis": 1, "pick": 1},
               expected=lambda x: np.stack([x[:, 1], x[:, 2], x[:, 3]], axis=1), name="rest"),
        Sample([X], {"sizes": (1, 2), "axis": -1, "pick": 0},
               expected=lambda x: x[..., :1], name="last_axis"),
    ], [
        ErrorCase(["f32[2,6]"], {"sizes": (2, 3), "axis": 1, "pick": 0}, ShapeError,
                  r"sizes \(2, 3\) add up to 5, but axis 1 of f32\[2,6\] has 6", "sum"),
        ErrorCase(["f32[2,6]"], {"sizes": 3, "axis": 1, "pick": 0}, AttributeError_,
                  r"sizes must be a tuple", "int_sizes"),
    ], call=lambda x, pick, **attrs: split(x, **attrs)[pick]),
    OpInfo("squeeze", [
        Sample([randn(2, 1, 3, seed=5)], {"axis": 1}, expected=lambda x: x.reshape(2, 3), name="middle"),
        Sample([randn(2, 3, 1, seed=5)], {"axis": -1}, expected=lambda x: x.reshape(2, 3), name="last"),
    ], [
        ErrorCase(["f32[2,3]"], {"axis": 1}, ShapeError, r"cannot squeeze axis 1 of f32\[2,3\].*size is 3",
                  "not_one"),
        ErrorCase(["f32[2,1]"], {"axis": 2}, ShapeError, r"axis 2 is out of range", "axis"),
    ]),
    OpInfo("unsqueeze", [
        Sample([M], {"axis": 0}, expected=lambda x: x.reshape(1, 4, 5), name="front"),
        Sample([M], {"axis": -1}, expected=lambda x: x.reshape(4, 5, 1), name="end"),
        Sample([M], {"axis": 1}, expected=lambda x: x.reshape(4, 1, 5), name="middle"),
    ], [ErrorCase(["f32[2,3]"], {"axis": 3}, ShapeError, r"axis 3 is out of range")]),
    OpInfo("take", [
        Sample([TABLE, IDS], expected=_take_loop, name="embedding"),
        Sample([TABLE, IDS.astype(np.int32)], expected=_take_loop, name="int32"),
        Sample([X, np.array([4, 1, 1, 0], dtype=np.int64)], {"axis": 1}, expected=_take_axis1_loop,
               name="axis1"),
        Sample([M, np.array(2, dtype=np.int64)], expected=lambda t, i: np.array(t[2].tolist()),
               name="scalar"),
    ], [
        ErrorCase(["f32[10,4]", "f32[2,3]"], {}, TypeError_, r"indices must be int32 or int64.*f32\[2,3\]",
                  "float_indices"),
        ErrorCase(["f32[10,4]", "i64[2,3]"], {"axis": 2}, ShapeError, r"axis 2 is out of range", "axis"),
    ]),
    OpInfo("index_add", [
        Sample([IDS, randn(2, 3, 5, seed=6)], {"axis": 0, "size": 6},
               expected=lambda i, u: _index_add_loop(i, u, 6), name="embedding_grad"),
        Sample([np.array([1, 1], dtype=np.int32), randn(3, 2, seed=7)], {"axis": 1, "size": 3},
               expected=lambda i, u: np.array([[0.0, r[0] + r[1], 0.0] for r in u.tolist()]), name="axis1"),
    ], [
        ErrorCase(["i64[2,3]", "f32[2,4,5]"], {"axis": 0, "size": 6}, ShapeError,
                  r"updates must hold the indices' shape", "shape"),
        ErrorCase(["f32[2]", "f32[2,4]"], {"axis": 0, "size": 6}, TypeError_, r"indices must be int",
                  "float"),
    ]),
    OpInfo("gather", [
        Sample([M, GATHER_IDS], {"axis": 1}, expected=_gather_loop, name="axis1"),
        Sample([M, np.array([[3, 0, 1, 1, 2]], dtype=np.int64)], {"axis": 0},
               expected=lambda x, i: np.array([[x[r, c] for c, r in enumerate(i[0].tolist())]]),
               name="axis0"),
    ], [
        ErrorCase(["f32[4,5]", "i64[4]"], {"axis": 1}, ShapeError, r"indices must have the rank of the input",
                  "rank"),
        ErrorCase(["f32[4,5]", "i64[3,2]"], {"axis": 1}, ShapeError, r"differ on axis 0", "shape"),
        ErrorCase(["f32[4,5]", "f32[4,2]"], {"axis": 1}, TypeError_, r"indices must be int", "float"),
    ]),
    OpInfo("scatter_add", [
        Sample([SCATTER_IDS, randn(2, 3, seed=8)], {"axis": 0, "size": 3},
               expected=lambda i, u: _scatter_loop(i, u, 3), name="axis0"),
        Sample([GATHER_IDS, randn(4, 2, seed=9)], {"axis": -1, "size": 5},
               expected=lambda i, u: _scatter_loop(i.T, u.T, 5).T, name="axis1"),
    ], [ErrorCase(["i64[2,3]", "f32[2,4]"], {"axis": 0, "size": 3}, ShapeError, r"same shape")]),
    OpInfo("one_hot", [
        Sample([np.array([2, 0, 3], dtype=np.int64)], {"depth": 4},
               expected=np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]]), name="basic"),
        Sample([np.array([[1], [0]], dtype=np.int32)], {"depth": 2, "axis": 0, "dtype": "int32"},
               expected=np.array([[[0], [1]], [[1], [0]]]), name="axis0"),
        Sample([np.array([1, -100, 5], dtype=np.int64)], {"depth": 3},
               expected=np.array([[0, 1, 0], [0, 0, 0], [0, 0, 0]]), name="outside"),
    ], [ErrorCase(["f32[3]"], {"depth": 4}, TypeError_, r"indices must be int")]),
    OpInfo("triu", [
        Sample([M], expected=_upper, name="k0"),
        Sample([X.transpose(0, 2, 1).copy()], {"k": 1}, expected=lambda x: _upper(x, 1), name="batched_k1"),
    ], [ErrorCase(["f32[3]"], {}, ShapeError, r"needs a matrix")]),
    OpInfo("tril", [
        Sample([M], expected=_lower, name="k0"),
        Sample([M], {"k": -1}, expected=lambda x: _lower(x, -1), name="k_neg"),
    ], [ErrorCase(["f32[3]"], {}, ShapeError, r"needs a matrix")]),
]
