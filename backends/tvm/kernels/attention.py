"""TE pieces of the fused attention op: the causal mask, and the fused CPU forward kernel.

``fused_attention`` computes softmax(scale * q @ k^T + bias, causal-masked) @ v per block of RB
query rows without ever storing the [.., Sq, Sk] probabilities in main memory: per head it packs
k transposed, and per row block it packs the bias rows, computes the scores (register tiles),
row max, exponentials (a vectorizable polynomial in f32) and row sums in block-local buffers
whose axes are padded to whole tiles, and accumulates the weighted sum of v row by row. Rows
whose max is -inf (fully masked) give zeros. ``schedule_fused_attention`` gives it its CPU
schedule: the outermost batch axis in parallel, key and value axes vectorized.
"""
from __future__ import annotations

from tvm import s_tir, te, tirx, topi

RB = 8       # query rows per block, also the rows of a register tile of scores
PAD = 16     # the key axis of block-local buffers is padded to a multiple of this (one vector)
RULE = "fused_attention"   # the schedule-rule name the kernel records (see build.schedule_report)


def causal_mask(scores: te.Tensor, offset) -> te.Tensor:
    """-inf where key j is hidden from query i (j > i + offset, offset = Sk - Sq), else the score."""
    neg_inf = tirx.const(float("-inf"), scores.dtype)

    def f(*i):
        hidden = i[-1].astype("int64") > i[-2].astype("int64") + offset
        return tirx.Select(hidden, neg_inf, scores(*i))
    return te.compute(scores.shape, f, name="causal_mask")


def _padded(n, m: int):
    if isinstance(n, int) or isinstance(n, tirx.IntImm):
        return (int(n) + m - 1) // m * m
    return tirx.floordiv(n + (m - 1), m) * m


def _is_one(size) -> bool:
    return isinstance(size, int) and size == 1 or isinstance(size, tirx.IntImm) and size.value == 1


def fused_attention(q: te.Tensor, k: te.Tensor, v: te.Tensor, *bias: te.Tensor, scale: float,
                    causal: bool, acc: str, out_dtype: str) -> te.Tensor:
    """q [*L, Sq, D], k [*L, Sk, D], v [*L, Sk, Dv] (same leading axes L), bias broadcasting to
    [*L, Sq, Sk] -> [*L, Sq, Dv] in ``out_dtype``, computed in ``acc``."""
    *lead, sq, d = q.shape
    sk, dv = k.shape[-2], v.shape[-1]
    skp, sqp = _padded(sk, PAD), _padded(sq, RB)   # block-local axes padded: no bounds tests
    zero, neg_inf = tirx.const(0, acc), tirx.const(float("-inf"), acc)
    offset = sk - sq

    # k transposed, key axis padded with zeros: the scores' inner loop reads it contiguously.
    k_t = te.compute([*lead, d, skp], lambda *i: tirx.Select(
        i[-1] < sk, k(*i[:-2], tirx.min(i[-1], sk - 1), i[-2]).astype(acc), zero), name="k_packed")
    d_ax = te.reduce_axis((0, d), name="d")
    raw = te.compute([*lead, sqp, skp], lambda *i: te.sum(
        q(*i[:-2], tirx.min(i[-2], sq - 1), d_ax).astype(acc) * k_t(*i[:-2], d_ax, i[-1]), axis=d_ax), name="qk")

    if bias:
        b = bias[0]
        rows = 1 if _is_one(b.shape[-2]) else sqp

        def bias_at(*i):
            idx = []
            for ax, size in enumerate(b.shape[:-2]):
                idx.append(0 if _is_one(size) else i[len(lead) - (len(b.shape) - 2) + ax])
            row = 0 if _is_one(b.shape[-2]) else tirx.min(i[-2], sq - 1)
            col = 0 if _is_one(b.shape[-1]) else tirx.min(i[-1], sk - 1)
            return tirx.Select(i[-1] < sk, b(*idx, row, col).astype(acc), zero)
        b_p = te.compute([*lead, rows, skp], bias_at, name="bias_packed")

    def hidden(i, j):
        out = j >= sk
        if causal:
            out = tirx.Or(out, j.astype("int64") > i.astype("int64") + offset)
        return out

    def score(*i):
        s = raw(*i) * tirx.const(scale, acc)
        if bias:
            s = s + b_p(*i[:-2], 0 if rows == 1 else i[-2], i[-1])
        return s

    j_ax = te.reduce_axis((0, sk), name="j")
    row_max = te.compute([*lead, sqp], lambda *i: te.max(
        tirx.Select(hidden(i[-1], j_ax.var), neg_inf, score(*i, j_ax.var)), axis=j_ax), name="row_max")
    shifted = te.compute([*lead, sqp, skp], lambda *i: score(*i) - row_max(*i[:-1]), name="shifted")
    # float32 exp as TVM's vectorizable polynomial (fast_math.py says why), inlined below.
    exp = topi.fast_exp(shifted) if acc == "float32" else te.compute(
        shifted.shape, lambda *i: tirx.exp(shifted(*i)), name="exact_exp")
    expo = te.compute([*lead, sqp, skp], lambda *i: tirx.Select(
        tirx.Or(hidden(i[-2], i[-1]), row_max(*i[:-1]) == neg_inf), zero, exp(*i)), name="expo")
    j_sum = te.reduce_axis((0, skp), name="js")   # covers the padding: the block computes it
    row_sum = te.compute([*lead, sqp], lambda *i: te.sum(expo(*i, j_sum.var), axis=j_sum), name="row_sum")
    j_pv = te.reduce_axis((0, sk), name="jv")
    pv = te.compute([*lead, sqp, dv], lambda *i: te.sum(
        expo(*i[:-1], j_pv.var) * v(*i[:-2], j_pv.var, i[-1]).astype(acc), axis=j_pv), name="pv")
    return te.compute([*lead, sq, dv], lambda *i: tirx.Select(
        row_sum(*i[:-1]) > zero, pv(*i) / row_sum(*i[:-1]), zero).astype(out_dtype), name="attention")


def schedule_fused_attention(func: tirx.PrimFunc, lanes: int = PAD) -> tirx.PrimFunc:
    """The CPU schedule: parallel over the outermost batch axis; every stage of a block computed
    in block-local buffers at that loop; key and value axes vectorized."""
    sch = s_tir.Schedule(func)
    stages = ["pv", "row_sum", "expo", "row_max", "qk", "k_packed", "bias_packed", "attention"]
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if sch.get(block).name_hint not in stages:
            sch.compute_inline(block)   # the shifted scores and the exp, into expo
    out = sch.get_sblock("attention")
    *lead, i, c = sch.get_loops(out)
    i0, i1 = sch.split(i, factors=[None, RB])
    sch.parallel(lead[0] if lead else i0)   # never fused: fusing symbolic extents breaks affinity
    sch.vectorize(c)
    # pv: one row of the output at a time, a few vectors the compiler keeps in registers.
    pv = sch.get_sblock("pv")
    sch.set_scope(pv, 0, "local")
    sch.compute_at(pv, i1)
    for name in ["row_sum", "expo", "row_max", "qk", "bias_packed"]:
        if _has_block(sch, name):
            sch.compute_at(sch.get_sblock(name), i0)
    # k is packed once per head (the innermost batch axis), not once per row block.
    sch.compute_at(sch.get_sblock("k_packed"), lead[-1] if lead else i0)
    # qk: tiles of RB rows x one vector of keys accumulated over d in registers (a local
    # buffer), then stored to the block's scores.
    qk = sch.get_sblock("qk")
    store = sch.cache_write(qk, 0, "local")
    qk = sch.get_sblock("qk")   # cache_write returned the store; "qk" now computes into local
    *_, si, sj = sch.get_loops(store)
    sj0, sj1 = sch.split(sj, factors=[None, lanes])
    sch.reorder(sj0, si, sj1)
    sch.vectorize(sj1)
    sch.compute_at(qk, sj0)
    *_, qi, qj, qd = sch.get_loops(qk)
    sch.reorder(qd, qi, qj)
    sch.vectorize(qj)
    sch.unroll(qi)
    init = sch.decompose_reduction(qk, qd)
    sch.vectorize(sch.get_loops(init)[-1])
    expo = sch.get_sblock("expo")
    ej0, ej1 = sch.split(sch.get_loops(expo)[-1], factors=[None, lanes])
    sch.vectorize(ej1)
    # pv: for each key, one row of v (vectorized) scaled by its weight.
    pv = sch.get_sblock("pv")
    *_, pc, pj = sch.get_loops(pv)
    sch.reorder(pj, pc)
    sch.vectorize(pc)
    sch.decompose_reduction(pv, pj)
    return sch.mod["main"]


def _has_block(sch, name: str) -> bool:
    try:
        sch.get_sblock(name)
        return True
    except Exception:  # s_tir raises its own error type for a missing block
        return False
