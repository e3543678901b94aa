"""Rows for graphdsl/ops/nn.py: the softmax family, the norms, numel.

Expected values come from explicit Python loops over the math module, never from the ops' NumPy
references. ``softmax_row`` is shared with tests/optable/attention.py.
"""
import math

import numpy as np

from graphdsl.errors import ShapeError, TypeError_
from tests.opinfo import ErrorCase, OpInfo, Sample, randn

X = randn(2, 3, 4, seed=11)
INF = float("inf")


# -- softmax family, by loops over the rows of the last (or a given) axis -------------------------
def _rows(x, axis, fn):
    """Apply fn(list of floats) -> list of floats to every 1-D slice along axis."""
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    out = np.zeros_like(x)
    for idx in np.ndindex(*x.shape[:-1]):
        out[idx] = fn([float(v) for v in x[idx]])
    return np.moveaxis(out, -1, axis)


def softmax_row(row):
    """Softmax of a list of floats by the math module; a row of -inf only gives zeros."""
    m = max(row)
    if m == -INF:
        return [0.0] * len(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


def _log_softmax_row(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def _layer_norm_row(row, w, b, eps):
    n = len(row)
    mu = sum(row) / n
    var = sum((v - mu) ** 2 for v in row) / n
    return [(v - mu) / math.sqrt(var + eps) * w[i] + b[i] for i, v in enumerate(row)]


def _rms_norm_row(row, w, eps):
    rms = math.sqrt(sum(v * v for v in row) / len(row) + eps)
    return [v / rms * w[i] for i, v in enumerate(row)]


MASKED = X.copy()
MASKED[0, 1, :] = -INF          # a fully masked row
MASKED[1, 2, 1:3] = -INF        # a partly masked row
W, B = randn(4, seed=12) + 1.0, randn(4, seed=13)


OPS = [
    OpInfo("softmax", [
        Sample([X], {"axis": -1}, expected=lambda x: _rows(x, -1, softmax_row), name="last"),
        Sample([X], {"axis": 1}, expected=lambda x: _rows(x, 1, softmax_row), name="middle"),
        Sample([X * 30], expected=lambda x: _rows(x, -1, softmax_row), name="large"),
        Sample([MASKED], expected=lambda x: _rows(x, -1, softmax_row), name="masked_rows"),
        Sample([X.astype(np.float16)], expected=lambda x: _rows(x, -1, softmax_row), grad=False,
               name="f16", atol=2e-3, rtol=2e-3),
    ], [ErrorCase(["i32[2,3]"], {}, TypeError_, r"floating-point"),
        ErrorCase(["f32[2,3]"], {"axis": 2}, ShapeError, r"axis 2 is out of range")]),
    OpInfo("log_softmax", [
        Sample([X], {"axis": -1}, expected=lambda x: _rows(x, -1, _log_softmax_row), name="last"),
        Sample([X], {"axis": 0}, expected=lambda x: _rows(x, 0, _log_softmax_row), name="first"),
        Sample([X * 50], expected=lambda x: _rows(x, -1, _log_softmax_row), name="large"),
        Sample([X.astype(np.float32)], expected=lambda x: _rows(x, -1, _log_softmax_row), grad=False,
               name="f32", atol=1e-5, rtol=1e-5),
    ], [ErrorCase(["f32[]"], {}, ShapeError, r"rank >= 1")]),
    OpInfo("layer_norm", [
        Sample([X, W, B], expected=lambda x, w, b: _rows(x, -1, lambda r: _layer_norm_row(r, w, b, 1e-5)),
               name="f64"),
        Sample([X, W, B], {"eps": 0.5},
               expected=lambda x, w, b: _rows(x, -1, lambda r: _layer_norm_row(r, w, b, 0.5)), name="eps"),
        Sample([a.astype(np.float16) for a in (X, W, B)], grad=False, name="f16", atol=1e-2, rtol=1e-2,
               expected=lambda x, w, b: _rows(x, -1, lambda r: _layer_norm_row(r, w, b, 1e-5))),
    ], [ErrorCase(["f32[2,4]", "f32[5]", "f32[4]"], {}, ShapeError,
                  r"weight f32\[5\] does not match the last dim.*", "weight_shape"),
        ErrorCase(["f32[2,4]", "f32[4]", "f32[2,4]"], {}, ShapeError, r"bias f32\[2,4\]", "bias_shape"),
        ErrorCase(["f32[2,4]", "f16[4]", "f32[4]"], {}, TypeError_, r"dtypes differ", "dtype")]),
    OpInfo("rms_norm", [
        Sample([X, W], expected=lambda x, w: _rows(x, -1, lambda r: _rms_norm_row(r, w, 1e-6)), name="f64"),
        Sample([X.astype(np.float32), W.astype(np.float32)], grad=False, name="f32", atol=1e-5, rtol=1e-5,
               expected=lambda x, w: _rows(x, -1, lambda r: _rms_norm_row(r, w, 1e-6))),
    ], [ErrorCase(["f32[2,4]", "f32[3]"], {}, ShapeError, r"weight f32\[3\] does not match"),
        ErrorCase(["f32[2,4]", "f32[4]"], {"eps": "small"}, TypeError_, r"eps must be")]),
    OpInfo("numel", [
        Sample([X], {"axis": -1}, expected=np.array(4.0), name="last"),
        Sample([X], {"axis": (0, 2), "dtype": "int64"}, expected=np.array(8), name="two_axes"),
        Sample([X], expected=np.array(24.0), name="all"),
    ], [ErrorCase(["f32[2,3]"], {"axis": 3}, ShapeError, r"axis 3 is out of range")]),
]
