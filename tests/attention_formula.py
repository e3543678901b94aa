"""Attention and its gradients in float64 NumPy, written from the definitions: the independent
formula the fused attention kernels (CPU and GPU) are checked against."""
from __future__ import annotations

import numpy as np


def attention_f64(q, k, v, bias, causal: bool, scale: float, g) -> dict:
    """{out, q, k, v}: the output and the gradients given the output's cotangent ``g``.

    s = scale q k^T + bias (causal: key j hidden from query i when j > i + Sk - Sq), p = softmax rows
    (a row with no visible key is zeros), out = p v, dv = p^T g, ds = p * (dp - rowsum(p * dp)) with
    dp = g v^T, dq = scale ds k, dk = scale ds^T q."""
    q, k, v, g = (np.asarray(a, np.float64) for a in (q, k, v, g))
    s = scale * q @ np.swapaxes(k, -1, -2)
    if bias is not None:
        s = s + bias
    sq, sk = s.shape[-2:]
    if causal:
        s = np.where(np.arange(sk)[None, :] > np.arange(sq)[:, None] + sk - sq, -np.inf, s)
    top = s.max(-1, keepdims=True)
    e = np.exp(s - np.where(np.isneginf(top), 0.0, top))
    total = e.sum(-1, keepdims=True)
    p = np.where(total > 0, e / np.where(total > 0, total, 1.0), 0.0)
    dp = g @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (p * dp).sum(-1, keepdims=True))
    return {"out": p @ v, "q": scale * ds @ k, "k": scale * np.swapaxes(ds, -1, -2) @ q,
            "v": np.swapaxes(p, -1, -2) @ g}
