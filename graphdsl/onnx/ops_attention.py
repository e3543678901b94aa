"""The import handler of ONNX's Attention op (opset 23 on): scaled dot-product attention, written out.

ONNX's Attention takes q, k, v as [batch, heads, seq, head] (4-D) or [batch, seq, heads * head]
(3-D, with q_num_heads and kv_num_heads), an optional mask (bool: True attends; float: added to the
scores; its key axis may be shorter than the keys, the rest masked), an optional past key and value
cache (concatenated before the new keys and values, and given back as the present outputs), fewer
key/value heads than query heads (each key/value head serves a group of query heads), a scale
(default 1/sqrt(head size)), a softcap (scores -> softcap * tanh(scores / softcap)) and a fourth
output, the scores (qk_matmul_output_mode: 0 the scaled q @ k^T, 1 after the softcap, 2 with every
bias below added, 3 after the softmax).

Which keys a query sees is decided on positions. A query's absolute position is its index i plus
an offset: the past length with a past cache, nonpad_kv_seqlen[b] - q_len with per-batch key
lengths (an external cache: k and v are the whole cache, of which the first nonpad_kv_seqlen[b]
keys of batch b are valid), else 0. is_causal keeps key j <= i + offset; left_window_size L keeps
j >= i + offset - L and right_window_size R keeps j <= i + offset + R (-1: that side unbounded);
nonpad_kv_seqlen keeps j < nonpad_kv_seqlen[b]. Each is a -inf bias built from iota comparisons,
added to the mask's.

It is written with our ops (matmul, softmax, where), in float32 for a narrow float: the graph
passes fuse the plain forms into our attention op. A row every position of which is masked (a
negative offset, a key length of 0, an all-False mask row) gives zeros, in the output and in the
mode-3 scores, as ONNX's reference and our softmax both define it.
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


def _neg_inf_where_not(allowed, dtype):
    """0 where ``allowed``, -inf elsewhere."""
    zero = ops.full(shape=(), value=0.0, dtype=dtype)
    return ops.where(allowed, zero, ops.full(shape=(), value=float("-inf"), dtype=dtype))


def _position_bias(q_len, kv_len, offset, *, causal, left, right, kv_lens, dtype):
    """The -inf bias of the position rules, or None when there is none: [q_len, kv_len], or
    [batch, 1, q_len, kv_len] when ``offset`` or ``kv_lens`` is a per-batch [batch, 1, 1, 1] tensor.

    Query i sits at i + offset; key j is kept when j <= i + offset (causal), j >= i + offset - left
    (left >= 0), j <= i + offset + right (right >= 0) and j < kv_lens (kv_lens given)."""
    i = ops.iota(shape=(q_len, kv_len), axis=0, dtype="int64")
    j = ops.iota(shape=(q_len, kv_len), axis=1, dtype="int64")
    pos = i + offset
    rules = []
    if causal:
        rules.append(j <= pos)
    if left >= 0:
        rules.append(j >= pos - left)
    if right >= 0:
        rules.append(j <= pos + right)
    if kv_lens is not None:
        rules.append(j < kv_lens)
    if not rules:
        return None
    allowed = rules[0]
    for rule in rules[1:]:
        allowed = allowed & rule
    return _neg_inf_where_not(allowed, dtype)


def _mask_bias(m, kv_len, dtype):
    """An attn_mask as an additive bias over all ``kv_len`` keys: a bool mask's False is -inf, a
    float mask is itself; a key axis shorter than the keys is padded with -inf (those keys are
    masked, as ONNX defines a short mask)."""
    keys = m.shape[-1]
    if not (isinstance(keys, int) and isinstance(kv_len, int)):
        if keys != kv_len:
            raise ShapeError(f"Attention's mask {m.type} has {keys} key positions, the keys {kv_len}: "
                             f"a mask shorter than the keys needs static sizes")
    elif keys > kv_len:
        raise ShapeError(f"Attention's mask {m.type} has {keys} key positions, more than the {kv_len} keys",
                         hint="the mask's last axis covers the past and new keys")
    if m.dtype.name == "bool":
        bias = _neg_inf_where_not(m, dtype)
    else:
        bias = m.astype(dtype) if m.dtype.name != dtype else m
    if keys != kv_len:
        pad = ops.full(shape=(*bias.shape[:-1], kv_len - keys), value=float("-inf"), dtype=dtype)
        bias = ops.concat([bias, pad], axis=-1)
    return bias


def _run_time(imp, size):
    """A size to compute with: an int as it is, a symbolic dim as an int64 scalar at run time."""
    return size if isinstance(size, int) else imp.dim_tensor(size)


def _window(attrs):
    """(left_window_size, right_window_size), each -1 (unbounded) or a count of positions."""
    sizes = attrs.get("left_window_size", -1), attrs.get("right_window_size", -1)
    for name, size in zip(("left_window_size", "right_window_size"), sizes):
        if size < -1:
            raise GraphError(f"Attention {name}={size}: a window size is -1 (unbounded) or >= 0")
    return sizes


@IMPORT.register("Attention")
def _attention(imp, node, q, k, v, mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None):
    attrs = imp.attrs
    left, right = _window(attrs)
    if (past_key is None) != (past_value is None):
        raise GraphError("Attention takes past_key and past_value together")
    if nonpad_kv_seqlen is not None and past_key is not None:
        raise GraphError("Attention takes nonpad_kv_seqlen (an external cache) or past_key/past_value "
                         "(an internal one), not both")
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
    bias = None if mask is None else _mask_bias(imp.tensor(mask), kv_len, acc)
    offset, kv_lens = _run_time(imp, past), None
    if nonpad_kv_seqlen is not None:
        lens = imp.tensor(nonpad_kv_seqlen)
        batch = q.shape[0]
        known = isinstance(batch, int) and lens.ndim == 1 and isinstance(lens.shape[0], int)
        if lens.dtype.name != "int64" or lens.ndim != 1 or (known and lens.shape[0] != batch):
            raise ShapeError(f"Attention's nonpad_kv_seqlen is {lens.type}; it takes int64[batch] "
                             f"for a batch of {batch} (q {q.type})")
        kv_lens = lens.reshape((lens.shape[0], 1, 1, 1))
        offset = kv_lens - _run_time(imp, q_len)
    positions = _position_bias(q_len, kv_len, offset, causal=bool(attrs.get("is_causal", 0)),
                               left=left, right=right, kv_lens=kv_lens, dtype=acc)
    if positions is not None:
        bias = positions if bias is None else bias + positions
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
