"""Rows for graphdsl/ops/nn.py, random.py and attention.py (attention and its backward).

Expected values come from explicit Python loops over the math module, and random bits from the
hash written out in plain Python ints, never from the ops' NumPy references.
"""
import math

import numpy as np

from graphdsl.errors import AttributeError_, GraphDSLError, ShapeError, TypeError_
from tests.opinfo import ErrorCase, OpInfo, Sample, randn

X = randn(2, 3, 4, seed=11)
INF = float("inf")


def py_uniform(index: int, seed: int, salt: int) -> float:
    """The counter-based uniform of one flat index, in plain Python ints mod 2**32."""
    m = 0xFFFFFFFF
    x = ((index * 0x9E3779B1) & m) ^ ((seed * 0x85EBCA6B + salt * 0xC2B2AE35) & m)
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & m
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & m
    x ^= x >> 16
    return (x >> 8) * 2.0 ** -24


def py_keep(shape, seed, p, salt) -> np.ndarray:
    flat = [py_uniform(i, seed, salt) >= p for i in range(math.prod(shape))]
    return np.array(flat, dtype=bool).reshape(shape)


# -- softmax family, by loops over the rows of the last (or a given) axis -------------------------
def _rows(x, axis, fn):
    """Apply fn(list of floats) -> list of floats to every 1-D slice along axis."""
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    out = np.zeros_like(x)
    for idx in np.ndindex(*x.shape[:-1]):
        out[idx] = fn([float(v) for v in x[idx]])
    return np.moveaxis(out, -1, axis)


def _softmax_row(row):
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


# -- attention by loops ---------------------------------------------------------------------------
def loop_attention(q, k, v, bias=None, *, scale=None, causal=False, keep=None, p=0.0):
    """softmax(scale * q k^T + bias) v for [B, Sq, D] inputs, one score at a time."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    nb, sq, d = q.shape
    sk, dv = k.shape[1], v.shape[2]
    scale = 1 / math.sqrt(d) if scale is None else scale
    bias = np.zeros((nb, sq, sk)) if bias is None else np.broadcast_to(bias, (nb, sq, sk))
    out = np.zeros((nb, sq, dv))
    for b in range(nb):
        for i in range(sq):
            scores = []
            for j in range(sk):
                hidden = causal and j > i + (sk - sq)
                s = sum(q[b, i, t] * k[b, j, t] for t in range(d)) * scale + bias[b, i, j]
                scores.append(-INF if hidden else s)
            probs = _softmax_row(scores)
            for j in range(sk):
                w = probs[j] if keep is None else probs[j] * keep[b, i, j] / (1 - p)
                for c in range(dv):
                    out[b, i, c] += w * v[b, j, c]
    return out


def loop_attention_grad(q, k, v, bias, g, *, wrt, scale, causal=False, keep=None, p=0.0):
    """d sum(g * attention) / d wrt for [B, Sq, D] inputs, one score at a time: with P the
    probabilities and M the dropout scaling (keep / (1 - p), else 1),
    dV[j] += P[j] M[j] g[i],  dP[j] = M[j] g[i].V[j],  dS[j] = P[j] (dP[j] - sum_l P[l] dP[l]),
    dQ[i] += scale dS[j] K[j],  dK[j] += scale dS[j] Q[i],  dBias[i, j] = dS[j] (summed to its shape)."""
    q, k, v, g = (np.asarray(a, dtype=np.float64) for a in (q, k, v, g))
    nb, sq, d = q.shape
    sk, dv = k.shape[1], v.shape[2]
    full_bias = np.zeros((nb, sq, sk)) if bias is None else np.broadcast_to(bias, (nb, sq, sk))
    grads = {"q": np.zeros(q.shape), "k": np.zeros(k.shape), "v": np.zeros(v.shape),
             "bias": np.zeros((nb, sq, sk))}
    for b in range(nb):
        for i in range(sq):
            scores = []
            for j in range(sk):
                s = sum(q[b, i, t] * k[b, j, t] for t in range(d)) * scale + full_bias[b, i, j]
                scores.append(-INF if causal and j > i + (sk - sq) else s)
            probs = _softmax_row(scores)
            m = [1.0 if keep is None else keep[b, i, j] / (1 - p) for j in range(sk)]
            dp = [m[j] * sum(g[b, i, c] * v[b, j, c] for c in range(dv)) for j in range(sk)]
            row = sum(probs[j] * dp[j] for j in range(sk))
            for j in range(sk):
                ds = probs[j] * (dp[j] - row)
                grads["bias"][b, i, j] = ds
                for t in range(d):
                    grads["q"][b, i, t] += scale * ds * k[b, j, t]
                    grads["k"][b, j, t] += scale * ds * q[b, i, t]
                for c in range(dv):
                    grads["v"][b, j, c] += probs[j] * m[j] * g[b, i, c]
    if wrt == "bias":   # the bias broadcasts over the batch: its gradient sums over it
        return grads["bias"].sum(axis=0).reshape(np.shape(bias)) if np.ndim(bias) == 2 else grads["bias"]
    return grads[wrt]


Q, K, V = randn(2, 3, 4, seed=21), randn(2, 5, 4, seed=22), randn(2, 5, 3, seed=23)
BIAS = randn(3, 5, seed=24)
DEAD_BIAS = BIAS.copy()
DEAD_BIAS[1, :] = -INF          # query 1 sees no key at all
SEED = np.array(1234, dtype=np.int32)
G = randn(2, 3, 3, seed=25)     # the cotangent of attention(Q, K, V)


def _attn_grad(**kw):
    """Expected value of an attention_grad row: inputs q, k, v, [bias], [seed], g."""
    def expected(q, k, v, *rest):
        bias = next((r for r in rest[:-1] if r.dtype.kind == "f"), None)
        return loop_attention_grad(q, k, v, bias, rest[-1], **kw)
    return expected


def _attn(**kw):
    """Expected value of a row: a float extra input is the bias, an int one the seed."""
    return lambda q, k, v, *rest: loop_attention(q, k, v, *[r for r in rest if r.dtype.kind == "f"], **kw)


OPS = [
    OpInfo("softmax", [
        Sample([X], {"axis": -1}, expected=lambda x: _rows(x, -1, _softmax_row), name="last"),
        Sample([X], {"axis": 1}, expected=lambda x: _rows(x, 1, _softmax_row), name="middle"),
        Sample([X * 30], expected=lambda x: _rows(x, -1, _softmax_row), name="large"),
        Sample([MASKED], expected=lambda x: _rows(x, -1, _softmax_row), name="masked_rows"),
        Sample([X.astype(np.float16)], expected=lambda x: _rows(x, -1, _softmax_row), grad=False,
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
    OpInfo("random_uniform", [
        Sample([SEED], {"shape": (2, 3)}, name="shape_2x3",
               expected=np.array([py_uniform(i, 1234, 0) for i in range(6)]).reshape(2, 3)),
        Sample([np.array(-7, np.int32)], {"shape": (5,), "salt": 3}, name="negative_seed_salt",
               expected=np.array([py_uniform(i, -7 & 0xFFFFFFFF, 3) for i in range(5)])),
    ], [ErrorCase(["f32[]"], {"shape": (2,)}, TypeError_, r"seed must be an i32\[\] scalar", "float_seed"),
        ErrorCase(["i32[2]"], {"shape": (2,)}, TypeError_, r"seed must be an i32\[\] scalar", "vector_seed"),
        ErrorCase(["i32[]"], {"shape": (2,), "salt": 0.5}, AttributeError_, r"salt must be an int", "salt")]),
    OpInfo("dropout", [
        Sample([X, SEED], {"p": 0.3, "salt": 2}, name="p03",
               expected=lambda x, s: x * py_keep(x.shape, 1234, 0.3, 2) / 0.7),
        Sample([X, SEED], {"p": 0.0}, expected=lambda x, s: x, name="p0"),
    ], [ErrorCase(["f32[2,3]", "i32[]"], {"p": 1.0}, AttributeError_, r"p must be a probability", "p1"),
        ErrorCase(["f32[2,3]", "i64[]"], {"p": 0.5}, TypeError_, r"seed must be an i32\[\]", "i64_seed")]),
    OpInfo("attention", [
        Sample([Q, K, V], expected=_attn(), name="plain"),
        Sample([Q, K, V], {"scale": 0.3}, expected=_attn(scale=0.3), name="scale"),
        Sample([Q, K, V, BIAS], expected=_attn(), name="bias"),
        Sample([Q, K, V], {"causal": True}, expected=_attn(causal=True), name="causal_sq_lt_sk"),
        Sample([Q, K[:, :3], V[:, :3]], {"causal": True}, expected=_attn(causal=True), name="causal_square"),
        Sample([Q, K, V, DEAD_BIAS], expected=_attn(), name="masked_row"),
        Sample([Q, K, V, SEED], {"dropout_p": 0.4, "salt": 9}, name="dropout",
               expected=_attn(keep=py_keep((2, 3, 5), 1234, 0.4, 9), p=0.4)),
        Sample([a.astype(np.float16) for a in (Q, K, V)], expected=_attn(), grad=False, name="f16",
               atol=3e-3, rtol=3e-3),
    ], [ErrorCase(["f32[2,3,8]", "f32[2,5,6]", "f32[2,5,4]"], {}, ShapeError, r"head dims differ", "head_dim"),
        ErrorCase(["f32[2,3,8]", "f32[2,5,8]", "f32[2,4,4]"], {}, ShapeError, r"key lengths", "kv_len"),
        ErrorCase(["f32[2,3,8]", "f32[2,5,8]", "f32[2,5,4]", "f32[3,4]"], {}, ShapeError,
                  r"bias f32\[3,4\] does not broadcast", "bias_shape"),
        ErrorCase(["f32[2,3,8]", "f32[2,5,8]", "f32[2,5,4]"], {"dropout_p": 0.1}, GraphDSLError,
                  r"seed", "no_seed")]),
    OpInfo("attention_grad", [
        *[Sample([Q, K, V, G], {"wrt": w, "scale": 0.5}, expected=_attn_grad(wrt=w, scale=0.5), name=w,
                 grad=w == "q")
          for w in ("q", "k", "v")],
        *[Sample([Q, K, V, DEAD_BIAS, G], {"wrt": w, "scale": 0.5, "causal": True}, name=f"masked_causal_{w}",
                 expected=_attn_grad(wrt=w, scale=0.5, causal=True), grad=False)
          for w in ("q", "k", "v", "bias")],
        *[Sample([Q, K, V, BIAS, SEED, G], {"wrt": w, "scale": 0.5, "dropout_p": 0.4, "salt": 9},
                 name=f"dropout_{w}", grad=w == "k",
                 expected=_attn_grad(wrt=w, scale=0.5, keep=py_keep((2, 3, 5), 1234, 0.4, 9), p=0.4))
          for w in ("q", "k", "v", "bias")],
        Sample([a.astype(np.float16) for a in (Q, K, V, G)], {"wrt": "k", "scale": 0.5}, name="f16",
               expected=_attn_grad(wrt="k", scale=0.5), grad=False, atol=5e-3, rtol=5e-3),
    ], [ErrorCase(["f32[2,3,8]", "f32[2,5,8]", "f32[2,5,4]", "f32[2,3,4]"], {"wrt": "x"}, AttributeError_,
                  r"wrt must be one of q, k, v, bias", "wrt"),
        ErrorCase(["f32[2,3,8]", "f32[2,5,8]", "f32[2,5,4]", "f32[2,3,8]"], {"wrt": "q"}, ShapeError,
                  r"g must have the type of the attention output f32\[2,3,4\]", "g_type"),
        ErrorCase(["f32[2,3,8]", "f32[2,5,8]", "f32[2,5,4]", "f32[2,3,4]"], {"wrt": "bias"}, AttributeError_,
                  r"no bias", "no_bias")]),
]
