"""Rows for graphdsl/ops/losses.py. Expected values: the PyTorch formulas written per element with loops."""
import math

import numpy as np

from graphdsl.errors import AttributeError_, ShapeError, TypeError_
from tests.opinfo import ErrorCase, OpInfo, Sample, randn

LOGITS = randn(4, 5, seed=31) * 2
TARGETS = np.array([3, -100, 0, 4], dtype=np.int64)
LOGITS3 = randn(2, 3, 5, seed=32)
TARGETS3 = np.array([[1, 2, 7], [0, 4, 7]], dtype=np.int32)   # 7 is the ignore_index in its rows
ALL_IGNORED = np.array([-100, -100, -100, -100], dtype=np.int64)


def _log_softmax(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def _reduce(losses, counted, reduction):
    if reduction == "none":
        return np.array(losses)
    total = sum(np.ravel(losses).tolist())
    if reduction == "sum":
        return np.array(total)
    return np.array(total / counted if counted else 0.0)


def loop_cross_entropy(ignore_index=-100, label_smoothing=0.0, reduction="mean", log_probs=False):
    """torch.nn.functional.cross_entropy (nll_loss when log_probs) with classes on the last axis."""
    def expected(x, t):
        x = np.asarray(x, dtype=np.float64)
        losses = np.zeros(t.shape)
        counted = 0
        for idx in np.ndindex(*t.shape):
            if t[idx] == ignore_index:
                continue
            row = [float(v) for v in x[idx]]
            logp = row if log_probs else _log_softmax(row)
            n = len(logp)
            losses[idx] = -(1 - label_smoothing) * logp[t[idx]] - label_smoothing * sum(logp) / n
            counted += 1
        return _reduce(losses, counted, reduction)
    return expected


def loop_elementwise(fn, reduction="mean"):
    def expected(*xs):
        flat = [fn(*vals) for vals in zip(*(np.ravel(x).tolist() for x in xs))]
        losses = np.array(flat).reshape(xs[0].shape)
        return _reduce(losses, losses.size, reduction)
    return expected


def loop_cosine(a, b, axis=-1, eps=1e-8):
    a, b = np.broadcast_arrays(a, b)
    a, b = np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1)
    out = np.zeros(a.shape[:-1])
    for idx in np.ndindex(*out.shape):
        u, w = a[idx].tolist(), b[idx].tolist()
        dot = sum(x * y for x, y in zip(u, w))
        out[idx] = dot / (max(math.sqrt(sum(x * x for x in u)), eps) * max(math.sqrt(sum(y * y for y in w)), eps))
    return out


LOGP = np.array([_log_softmax(r) for r in LOGITS.tolist()])
P, T = randn(3, 4, seed=33), randn(3, 4, seed=34)
X1, X2 = randn(6, seed=35), randn(6, seed=36)
Y = np.array([1.0, -1.0, 1.0, 1.0, -1.0, -1.0])
# keep every margin term away from its kink at 0
X1 = X1 + np.where(np.abs(-Y * (X1 - X2) + 0.1) < 0.05, 0.2, 0.0)
A, B = randn(3, 4, seed=37), randn(3, 4, seed=38)
ZERO_ROW = A.copy()
ZERO_ROW[1] = 0.0

CLASS_ERRORS = [
    ErrorCase(["f32[4,5]", "f32[4]"], {}, TypeError_, r"targets must be integer class indices", "float_targets"),
    ErrorCase(["f32[4,5]", "i64[5]"], {}, ShapeError, r"shape of the logits without the class axis", "shape"),
    ErrorCase(["f32[4,5]", "i64[4]"], {"reduction": "avg"}, AttributeError_, r"unknown reduction 'avg'",
              "reduction"),
]

OPS = [
    OpInfo("cross_entropy", [
        Sample([LOGITS, TARGETS], expected=loop_cross_entropy(), name="mean_ignore"),
        Sample([LOGITS, TARGETS], {"reduction": "sum"}, expected=loop_cross_entropy(reduction="sum"), name="sum"),
        Sample([LOGITS, TARGETS], {"reduction": "none"}, expected=loop_cross_entropy(reduction="none"),
               name="none"),
        Sample([LOGITS, TARGETS], {"label_smoothing": 0.1}, expected=loop_cross_entropy(label_smoothing=0.1),
               name="smoothing"),
        Sample([LOGITS, TARGETS], {"label_smoothing": 0.2, "reduction": "none"}, name="smoothing_none",
               expected=loop_cross_entropy(label_smoothing=0.2, reduction="none")),
        Sample([LOGITS3, TARGETS3], {"ignore_index": 7}, expected=loop_cross_entropy(ignore_index=7),
               name="3d_int32"),
        Sample([LOGITS, ALL_IGNORED], expected=np.array(0.0), name="all_ignored"),
        Sample([LOGITS.astype(np.float16), TARGETS], expected=loop_cross_entropy(), grad=False, name="f16",
               atol=5e-3, rtol=5e-3),
    ], CLASS_ERRORS + [ErrorCase(["f32[4,5]", "i64[4]"], {"label_smoothing": 1.5}, AttributeError_,
                                 r"label_smoothing must be in \[0, 1\]", "smoothing")]),
    OpInfo("nll", [
        Sample([LOGP, TARGETS], expected=loop_cross_entropy(log_probs=True), name="mean"),
        Sample([LOGP, TARGETS], {"reduction": "none"}, expected=loop_cross_entropy(log_probs=True,
                                                                                   reduction="none"), name="none"),
        Sample([LOGP, np.array([1, 2, 0, -1], np.int64)], {"ignore_index": -1, "reduction": "sum"},
               expected=loop_cross_entropy(log_probs=True, ignore_index=-1, reduction="sum"), name="sum"),
    ], CLASS_ERRORS),
    OpInfo("mse", [
        Sample([P, T], expected=loop_elementwise(lambda p, t: (p - t) ** 2), name="mean"),
        Sample([P, T], {"reduction": "sum"}, expected=loop_elementwise(lambda p, t: (p - t) ** 2, "sum"),
               name="sum"),
        Sample([P, T], {"reduction": "none"}, expected=loop_elementwise(lambda p, t: (p - t) ** 2, "none"),
               name="none"),
    ], [ErrorCase(["f32[3,4]", "f32[4]"], {}, ShapeError, r"same shape", "shape"),
        ErrorCase(["f32[3]", "f32[3]"], {"reduction": None}, AttributeError_, r"unknown reduction", "reduction")]),
    OpInfo("margin_ranking", [
        Sample([X1, X2, Y], {"margin": 0.1}, name="mean",
               expected=loop_elementwise(lambda a, b, y: max(0.0, -y * (a - b) + 0.1))),
        Sample([X1, X2, Y], {"margin": 0.1, "reduction": "none"}, name="none",
               expected=loop_elementwise(lambda a, b, y: max(0.0, -y * (a - b) + 0.1), "none")),
        Sample([X1, X2, Y], {"reduction": "sum"}, name="sum_no_margin",
               expected=loop_elementwise(lambda a, b, y: max(0.0, -y * (a - b)), "sum")),
    ], [ErrorCase(["f32[3]", "f32[3]", "f32[4]"], {}, ShapeError, r"same shape", "shape"),
        ErrorCase(["f32[3]", "f32[3]", "i32[3]"], {}, TypeError_, r"dtypes differ", "int_y")]),
    OpInfo("cosine_similarity", [
        Sample([A, B], expected=loop_cosine, name="last"),
        Sample([A, B], {"axis": 0}, expected=lambda a, b: loop_cosine(a, b, 0), name="first"),
        Sample([A, B[0]], expected=loop_cosine, name="broadcast"),
        Sample([ZERO_ROW, B], expected=loop_cosine, grad=False, name="zero_vector"),
    ], [ErrorCase(["f32[3,4]", "f32[3]"], {}, ShapeError, r"broadcast", "shape"),
        ErrorCase(["f32[3,4]", "f32[3,4]"], {"eps": -1.0}, AttributeError_, r"eps must be", "eps")]),
]
