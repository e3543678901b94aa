"""TE pieces of the fused attention op: the causal mask, and the fused CPU forward kernel.

``fused_attention`` computes softmax(scale * q @ k^T + bias, causal-masked) @ v per block of RB
query rows without ever storing the [.., Sq, Sk] probabilities in main memory: per head it packs
k transposed, and per row block it packs the bias rows, computes the scores (register tiles),
row max, exponentials (a vectorizable polynomial in f32) and row sums in block-local buffers
whose axes are padded to whole tiles, and accumulates the weighted sum of v in a register tile
of RB rows. Row max and row sum are vector reductions (PAD partial results per row, then their
reduction). Rows whose max is -inf (fully masked) give zeros; a row with a NaN score is NaN (its
sum is: topi.fast_exp keeps a NaN, its last step being TVM's max(y, x), which is x when the
compare fails). With dropout the block also keeps ``dropped``, its exponentials where the
reference's keep mask (kernels/random.py, drawn from each element's flat index in the [*L, Sq,
Sk] probabilities and the seed) keeps them, else zeros: the row sum is over the exponentials,
the weighted sum of v over the dropped ones, and 1 / (1 - p) scales the output row; the mask
never reaches main memory. ``schedule_fused_attention`` gives it its CPU schedule: one task per
(batch, head), key and value axes vectorized. Measured on 2 cores (AVX-512): BERT-tiny's
[1, 2, 128, 32] 62 -> 18 us, BERT-mini's [8, 4, 128, 64] 1.9 -> 0.44 ms against the previous
schedule (batch axis only in parallel, scalar row reductions, one output row at a time), with
build.noalias_shape_funcs.
"""
from __future__ import annotations

from tvm import s_tir, te, tirx, topi

from graphdsl.ops.random import keep_threshold

from .random import hash_bits, top24

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


def padded(n, m: int):
    """``n`` rounded up to a multiple of ``m`` (an int for a static ``n``)."""
    if isinstance(n, int) or isinstance(n, tirx.IntImm):
        return (int(n) + m - 1) // m * m
    return tirx.floordiv(n + (m - 1), m) * m


def is_one(size) -> bool:
    """A static axis of size 1 (which a broadcasting input reads at index 0)."""
    return isinstance(size, int) and size == 1 or isinstance(size, tirx.IntImm) and size.value == 1


def fused_attention(q: te.Tensor, k: te.Tensor, v: te.Tensor, bias: te.Tensor | None = None,
                    seed: te.Tensor | None = None, *, scale: float, causal: bool, acc: str, out_dtype: str,
                    dropout_p: float = 0.0, salt: int = 0) -> te.Tensor:
    """q [*L, Sq, D], k [*L, Sk, D], v [*L, Sk, Dv] (same leading axes L), bias (None, or
    broadcasting to [*L, Sq, Sk]), seed (i32[], given when dropout_p > 0) -> [*L, Sq, Dv] in
    ``out_dtype``, computed in ``acc``."""
    *lead, sq, d = q.shape
    sk, dv = k.shape[-2], v.shape[-1]
    skp, sqp = padded(sk, PAD), padded(sq, RB)   # block-local axes padded: no bounds tests
    zero, neg_inf = tirx.const(0, acc), tirx.const(float("-inf"), acc)
    offset = sk - sq

    # k transposed, key axis padded with zeros: the scores' inner loop reads it contiguously.
    k_t = te.compute([*lead, d, skp], lambda *i: tirx.Select(
        i[-1] < sk, k(*i[:-2], tirx.min(i[-1], sk - 1), i[-2]).astype(acc), zero), name="k_packed")
    d_ax = te.reduce_axis((0, d), name="d")
    raw = te.compute([*lead, sqp, skp], lambda *i: te.sum(
        q(*i[:-2], tirx.min(i[-2], sq - 1), d_ax).astype(acc) * k_t(*i[:-2], d_ax, i[-1]), axis=d_ax), name="qk")

    if bias is not None:
        b = bias
        rows = 1 if is_one(b.shape[-2]) else sqp

        def bias_at(*i):
            idx = []
            for ax, size in enumerate(b.shape[:-2]):
                idx.append(0 if is_one(size) else i[len(lead) - (len(b.shape) - 2) + ax])
            row = 0 if is_one(b.shape[-2]) else tirx.min(i[-2], sq - 1)
            col = 0 if is_one(b.shape[-1]) else tirx.min(i[-1], sk - 1)
            return tirx.Select(i[-1] < sk, b(*idx, row, col).astype(acc), zero)
        b_p = te.compute([*lead, rows, skp], bias_at, name="bias_packed")

    def hidden(i, j):
        out = j >= sk
        if causal:
            out = tirx.Or(out, j.astype("int64") > i.astype("int64") + offset)
        return out

    def score(*i):
        s = raw(*i) * tirx.const(scale, acc)
        if bias is not None:
            s = s + b_p(*i[:-2], 0 if rows == 1 else i[-2], i[-1])
        return s

    # Row max and row sum in two steps: PAD partial results per row, each over every PAD-th key
    # (vector lanes), then the PAD partials of each row.
    n_chunks = skp // PAD if isinstance(skp, int) else tirx.floordiv(skp, PAD)

    def lanes_of(fn, reduce, name):
        j0 = te.reduce_axis((0, n_chunks), name=name + "_j")
        part = te.compute([*lead, sqp, PAD], lambda *i: reduce(fn(*i[:-1], j0.var * PAD + i[-1]), axis=j0),
                          name=name + "_part")
        lane = te.reduce_axis((0, PAD), name=name + "_l")
        return te.compute([*lead, sqp], lambda *i: reduce(part(*i, lane), axis=lane), name=name)

    row_max = lanes_of(lambda *i: tirx.Select(hidden(i[-2], i[-1]), neg_inf, score(*i)), te.max, "row_max")
    shifted = te.compute([*lead, sqp, skp], lambda *i: score(*i) - row_max(*i[:-1]), name="shifted")
    # float32 exp as TVM's vectorizable polynomial (fast_math.py says why), inlined below.
    exp = topi.fast_exp(shifted) if acc == "float32" else te.compute(
        shifted.shape, lambda *i: tirx.exp(shifted(*i)), name="exact_exp")
    expo = te.compute([*lead, sqp, skp], lambda *i: tirx.Select(
        tirx.Or(hidden(i[-2], i[-1]), row_max(*i[:-1]) == neg_inf), zero, exp(*i)), name="expo")
    row_sum = lanes_of(expo, te.sum, "row_sum")   # over the padding too: zeros there
    weights, keys, key = expo, sk, lambda j: j
    if seed is not None:   # the exponentials dropout keeps (1 / (1 - p) scales the output)
        bits = top24(hash_bits(seed, (*lead, sq, sk), salt))
        threshold = tirx.const(keep_threshold(dropout_p), "int32")
        weights = te.compute(expo.shape, lambda *i: tirx.Select(bits(*i) >= threshold, expo(*i), zero),
                             name="dropped")
        # Over the padded keys (zero weights there): the block then draws whole vectors of the mask.
        keys, key = skp, lambda j: tirx.min(j, sk - 1)
    j_pv = te.reduce_axis((0, keys), name="jv")
    pv = te.compute([*lead, sqp, dv], lambda *i: te.sum(
        weights(*i[:-1], j_pv.var) * v(*i[:-2], key(j_pv.var), i[-1]).astype(acc), axis=j_pv), name="pv")

    def out(*i):
        o = pv(*i) / row_sum(*i[:-1])
        return o if seed is None else o * tirx.const(1.0 / (1.0 - dropout_p), acc)
    # Only a fully masked row sums to 0; a NaN score makes its row's sum NaN, and the row NaN.
    return te.compute([*lead, sq, dv], lambda *i: tirx.Select(
        row_sum(*i[:-1]) == zero, zero, out(*i)).astype(out_dtype), name="attention")


def schedule_fused_attention(func: tirx.PrimFunc, lanes: int = PAD) -> tirx.PrimFunc:
    """The CPU schedule: the leading (batch and head) axes fused and in parallel; every stage of a
    block of RB query rows computed in block-local buffers; key and value axes vectorized."""
    sch = s_tir.Schedule(func)
    stages = ["pv", "dropped", "row_sum", "row_sum_part", "expo", "row_max", "row_max_part", "qk",
              "k_packed", "bias_packed", "attention"]
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if sch.get(block).name_hint not in stages:
            sch.compute_inline(block)   # the shifted scores and the exp, into expo
    out = sch.get_sblock("attention")
    *lead, i, c = sch.get_loops(out)
    i0, i1 = sch.split(i, factors=[None, RB])
    # One task per head: at batch 1 the batch axis alone would leave all cores but one idle.
    head = sch.fuse(*lead) if len(lead) > 1 else lead[0] if lead else i0
    sch.parallel(head)
    sch.vectorize(c)
    for name in ["pv", "dropped", "row_sum", "row_sum_part", "expo", "row_max", "row_max_part", "qk",
                 "bias_packed"]:
        if has_block(sch, name):
            sch.compute_at(sch.get_sblock(name), i0)
    # k is packed once per head, not once per row block.
    sch.compute_at(sch.get_sblock("k_packed"), head)
    outer = len(sch.get_loops(out)) - 2   # the loops every block-local stage is nested in
    reductions = [_register_tile(sch, "qk", lanes), _lane_partials(sch, "row_max", outer),
                  _lane_partials(sch, "row_sum", outer), _pv_tile(sch, 2 * lanes)]
    for name in ("expo", "dropped"):
        if has_block(sch, name):
            sch.vectorize(sch.split(sch.get_loops(sch.get_sblock(name))[-1], factors=[None, lanes])[1])
    for block, loop in reductions:
        if loop is not None:
            init = sch.decompose_reduction(block, loop)
            sch.vectorize(sch.get_loops(init)[-1])
    return sch.mod["main"]


def _register_tile(sch, name: str, lanes: int):
    """The scores: tiles of RB rows x one vector of keys accumulated over d in a local buffer
    (registers), then stored to the block's scores. Returns (block, reduction loop)."""
    block = sch.get_sblock(name)
    store = sch.cache_write(block, 0, "local")
    block = sch.get_sblock(name)   # cache_write returned the store; ``name`` now computes into local
    *_, si, sj = sch.get_loops(store)
    sj0, sj1 = sch.split(sj, factors=[None, lanes])
    sch.reorder(sj0, si, sj1)
    sch.vectorize(sj1)
    sch.compute_at(block, sj0)
    *_, qi, qj, qd = sch.get_loops(block)
    sch.reorder(qd, qi, qj)
    sch.vectorize(qj)
    sch.unroll(qi)
    return block, qd


def _lane_partials(sch, name: str, outer: int):
    """``name_part``: per row, PAD partial results as one vector, updated once per PAD keys.
    Returns (block, reduction loop), or (block, None) when a single chunk of keys leaves no loop."""
    part = sch.get_sblock(name + "_part")
    row, lane, *chunk = sch.get_loops(part)[outer:]   # compute_at drops a loop of one chunk
    if chunk:
        sch.reorder(row, chunk[0], lane)
    sch.vectorize(lane)
    return part, chunk[0] if chunk else None


def _pv_tile(sch, width: int):
    """The weighted sum of v: for each key, its row of v (``width`` columns at a time, vectors)
    times the RB rows' weights, accumulated in a local RB x width tile (registers)."""
    pv = sch.get_sblock("pv")
    sch.set_scope(pv, 0, "local")
    *_, pi, pc, pj = sch.get_loops(pv)
    ext = sch.get(pc).extent
    if isinstance(ext, tirx.IntImm) and int(ext) > width and int(ext) % width == 0:
        pc0, pc1 = sch.split(pc, factors=[None, width])
        sch.reorder(pc0, pj, pi, pc1)
        sch.unroll(pc0)
    else:
        sch.reorder(pj, pi, pc)
        pc1 = pc
    sch.vectorize(pc1)
    sch.unroll(pi)
    return pv, pj


def has_block(sch, name: str) -> bool:
    """Whether the schedule's function has a block ``name`` (optional stages: bias, dropout)."""
    try:
        sch.get_sblock(name)
        return True
    except Exception:  # s_tir raises its own error type for a missing block
        return False
