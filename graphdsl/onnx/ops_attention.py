"""The import handler of ONNX's Attention op (opset 23 on): scaled dot-product attention, written out.

ONNX's Attention takes q, k, v as [batch, heads, seq, head] (4-D) or [batch, seq, heads * head]
(3-D, with q_num_heads and kv_num_heads), an optional mask (bool: True attends; float: added to the
scores), an optional past key and value cache (concatenated before the new keys and values, and
given back as the present outputs), fewer key/value heads than query heads (each key/value head
serves a group of query heads), is_causal (query i attends key j when j <= i + past length),
a scale (default 1/sqrt(head size)), a softcap (scores -> softcap * tanh(scores / softcap)) and
a fourth output, the scores (qk_matmul_output_mode: 0 the scaled q @ k^T, 1 after the softcap,
2 with the mask added, 3 after the softmax).

It is written with our ops (matmul, softmax, where), in float32 for a narrow float: the graph
passes fuse the plain forms into our attention op. A row every position of which is masked gives
zeros, as ONNX's reference and our softmax both define it. Per-batch key lengths
(nonpad_kv_seqlen) and sliding windows are refused by name.
"""
from __future__ import annotations

import math

from graphdsl import ops
from graphdsl.errors import GraphError, ShapeError

from .table import IMPORT


def _heads_first(t, heads: int, what: str):
    """[batch, seq, heads * size] -> [batch, heads, seq, size]."""
    batch, seq, hidden = t.shape
    if not isinstance(hidden, int) or hidden % heads:
        raise ShapeError(f"Attention's {what} hidden size {hidden} is not a multiple of its {heads} heads")
    return t.reshape((batch, seq, heads, hidden // heads)).permute(0, 2, 1, 3)


def _grouped(t, group: int):
    """[batch, kv_heads, seq, size] -> [batch, kv_heads * group, seq, size], each head repeated
    ``group`` times in a row (query head h reads key/value head h // group)."""
    if group == 1:
        return t
    b, h, s, d = t.shape
    return t.reshape((b, h, 1, s, d)).broadcast_to(b, h, group, s, d).reshape((b, h * group, s, d))


def _causal_bias(q_len, kv_len, offset, dtype):
    """0 where key j <= query i + offset, -inf elsewhere: [q_len, kv_len]."""
    i = ops.iota(shape=(q_len, kv_len), axis=0, dtype="int64")
    j = ops.iota(shape=(q_len, kv_len), axis=1, dtype="int64")
    allowed = j <= i + offset
    zero = ops.full(shape=(), value=0.0, dtype=dtype)
    return ops.where(allowed, zero, ops.full(shape=(), value=float("-inf"), dtype=dtype))


@IMPORT.register("Attention")
def _attention(imp, node, q, k, v, mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None):
    attrs = imp.attrs
    if nonpad_kv_seqlen is not None:
        raise GraphError("Attention with nonpad_kv_seqlen (per-batch key lengths) is not supported")
    if attrs.get("left_window_size", -1) != -1 or attrs.get("right_window_size", -1) != -1:
        raise GraphError("Attention with a sliding window (left/right_window_size) is not supported")
    if (past_key is None) != (past_value is None):
        raise GraphError("Attention takes past_key and past_value together")
    mode = attrs.get("qk_matmul_output_mode", 0)
    if mode not in (0, 1, 2, 3):
        raise GraphError(f"Attention qk_matmul_output_mode={mode} is not one of 0, 1, 2, 3")
    q, k, v = imp.tensor(q), imp.tensor(k), imp.tensor(v)
    dtype = q.dtype
    three_d = q.ndim == 3
    if three_d:
        if "q_num_heads" not in attrs or "kv_num_heads" not in attrs:
            raise GraphError("a 3-D Attention needs the q_num_heads and kv_num_heads attributes")
        q = _heads_first(q, attrs["q_num_heads"], "query")
        k = _heads_first(k, attrs["kv_num_heads"], "key")
        v = _heads_first(v, attrs["kv_num_heads"], "value")
    elif q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ShapeError(f"Attention takes 3-D or 4-D q, k, v, got {q.type}, {k.type}, {v.type}")
    past = 0
    if past_key is not None:
        pk, pv = imp.tensor(past_key), imp.tensor(past_value)
        past = pk.shape[2]
        k, v = ops.concat([pk, k], axis=2), ops.concat([pv, v], axis=2)
    present_k, present_v = k, v
    q_heads, kv_heads = q.shape[1], k.shape[1]
    if not (isinstance(q_heads, int) and isinstance(kv_heads, int)) or q_heads % kv_heads:
        raise ShapeError(f"Attention's {q_heads} query heads are not a multiple of its {kv_heads} key/value heads")
    k, v = _grouped(k, q_heads // kv_heads), _grouped(v, q_heads // kv_heads)

    narrow = dtype.name in ("float16", "bfloat16")
    acc = "float32" if narrow else dtype.name
    qf, kf, vf = (t.astype(acc) if narrow else t for t in (q, k, v))
    head = q.shape[-1]
    scale = attrs.get("scale", None)
    if scale is None:
        if not isinstance(head, int):
            raise ShapeError(f"Attention's default scale needs a static head size, got {q.type}")
        scale = 1.0 / math.sqrt(head)
    scores = (qf @ kf.transpose(-1, -2)) * scale
    qk = scores
    softcap = attrs.get("softcap", 0.0)
    if softcap and softcap > 0:
        scores = ops.tanh(scores / softcap) * softcap
        if mode == 1:
            qk = scores
    q_len, kv_len = q.shape[2], k.shape[2]
    bias = None
    if mask is not None:
        m = imp.tensor(mask)
        if m.shape[-1] != kv_len:
            raise ShapeError(f"Attention's mask has {m.shape[-1]} key positions, the keys {kv_len}",
                             hint="pad the mask to the key length")
        if m.dtype.name == "bool":
            bias = ops.where(m, ops.full(shape=(), value=0.0, dtype=acc),
                             ops.full(shape=(), value=float("-inf"), dtype=acc))
        else:
            bias = m.astype(acc) if m.dtype.name != acc else m
    if attrs.get("is_causal", 0):
        causal = _causal_bias(q_len, kv_len, past, acc)
        bias = causal if bias is None else bias + causal
    if bias is not None:
        scores = scores + bias
    if mode == 2:
        qk = scores
    probs = ops.softmax(scores, axis=-1)
    if mode == 3:
        qk = probs
    out = (probs @ vf).astype(dtype) if narrow else probs @ vf
    if three_d:
        b, h, s, d = out.shape
        out = out.permute(0, 2, 1, 3).reshape((b, s, h * d))
    qk = qk.astype(dtype) if narrow else qk
    results = [out, present_k, present_v, qk]
    return results[:max(1, len(node.output))]
