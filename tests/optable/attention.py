"""Rows for graphdsl/ops/attention.py: attention and its backward, attention_grad.

Expected values come from explicit Python loops, one score at a time, over the math module, and
dropout masks from the hash in plain Python ints, never from the ops' NumPy references.
"""
import math

import numpy as np

from graphdsl.errors import AttributeError_, GraphDSLError, ShapeError
from tests.opinfo import ErrorCase, OpInfo, Sample, randn
from tests.optable.nn import softmax_row
from tests.optable.random import SEED, py_keep

INF = float("inf")


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
            probs = softmax_row(scores)
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
            probs = softmax_row(scores)
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
