"""Rows for graphdsl/ops/fused.py (the ops the passes fuse into).

Expected values are written with the math module, element by element, never with the ops'
references (which call the unfused ops' references).
"""
import math

import numpy as np

import graphdsl.ops.fused  # noqa: F401  (registers the fused ops)
from graphdsl.errors import ShapeError, TypeError_
from tests.opinfo import ErrorCase, OpInfo, Sample, randn

X = randn(2, 3, 4, seed=31)
BIAS = randn(4, seed=32)
R = randn(2, 3, 4, seed=33)
W, B = randn(4, seed=34) + 1.0, randn(4, seed=35)

_ACT = {
    "gelu": lambda v: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))),
    "gelu_tanh": lambda v: 0.5 * v * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3))),
    "relu": lambda v: max(v, 0.0),
    "silu": lambda v: v / (1.0 + math.exp(-v)),
    "tanh": math.tanh,
    "sigmoid": lambda v: 1.0 / (1.0 + math.exp(-v)),
}


def _bias_act(name):
    def expected(x, b):
        out = np.zeros(x.shape)
        for idx in np.ndindex(x.shape):
            out[idx] = _ACT[name](float(x[idx]) + float(b[idx[-1]]))
        return out
    return expected


def _add_ln(x, r, w, b, eps=1e-5):
    out = np.zeros(x.shape)
    for idx in np.ndindex(x.shape[:-1]):
        row = [float(x[idx + (i,)]) + float(r[idx + (i,)]) for i in range(x.shape[-1])]
        mu = sum(row) / len(row)
        var = sum((v - mu) ** 2 for v in row) / len(row)
        out[idx] = [(v - mu) / math.sqrt(var + eps) * w[i] + b[i] for i, v in enumerate(row)]
    return out


# relu's kink at 0: shift the inputs away from -bias so the gradient check stays off it
X_RELU = X + np.where(np.abs(X + BIAS) < 0.05, 0.2, 0.0)

OPS = [
    OpInfo("bias_activation",
           [Sample([X_RELU if name == "relu" else X, BIAS], {"activation": name},
                   expected=_bias_act(name), name=name) for name in _ACT]
           + [Sample([X.astype(np.float32), BIAS.astype(np.float32)], {"activation": "gelu"}, grad=False,
                     expected=_bias_act("gelu"), atol=1e-6, rtol=1e-5, name="f32")],
           [ErrorCase(["f32[2,4]", "f32[3]"], {"activation": "relu"}, ShapeError, r"bias must be"),
            ErrorCase(["f32[2,4]", "f32[4]"], {"activation": "swish"}, TypeError_, r"unknown activation"),
            ErrorCase(["f32[2,4]", "f16[4]"], {"activation": "relu"}, TypeError_, r"dtypes differ")]),
    OpInfo("add_layer_norm", [
        Sample([X, R, W, B], expected=_add_ln, name="f64"),
        Sample([X, R, W, B], {"eps": 0.5}, expected=lambda x, r, w, b: _add_ln(x, r, w, b, 0.5), name="eps"),
    ], [ErrorCase(["f32[2,4]", "f32[1,4]", "f32[4]", "f32[4]"], {}, ShapeError, r"same type"),
        ErrorCase(["f32[2,4]", "f32[2,4]", "f32[5]", "f32[4]"], {}, ShapeError,
                  r"does not match the last dim"),
        ErrorCase(["f32[2,4]", "f32[2,4]", "f32[4]", "f32[4]"], {"eps": -1.0}, TypeError_, r"eps must be")]),
]
