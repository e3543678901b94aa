"""The fused CPU attention backward: one TE kernel for the gradients w.r.t. q, k and v.

``fused_attention_grad`` walks each head's query rows in blocks of RB and, per block, recomputes
in block-local buffers (key axis padded to whole tiles) what the backward needs:

    s = scale * q k^T + bias (masked)     p = softmax rows      dp = g v^T
    delta = rowsum(p * dp)                ds = scale * p * (dp - delta)

then adds the block's share to each gradient asked for: its rows of dq = ds @ k, and, summed over
the blocks, dk = ds^T @ q and dv = p^T @ g. With dropout the block also draws its keep mask
(``drop``: 1 / (1 - p_drop) where kept, else 0) from each element's flat index in the
[*L, Sq, Sk] probabilities, exactly as the dropout op does (kernels/random.py), and uses it
twice: dp = (g v^T) * drop, dv = (p * drop)^T @ g. Neither the mask nor the [.., Sq, Sk]
probabilities ever reach main memory, and as a row block sees the whole key axis nothing is
computed twice: no statistics pass (the GPU's FlashAttention backward needs one, its key blocks
running in parallel). A head's blocks run in order on one thread, so dk and dv accumulate in
per-head buffers. Fully masked rows contribute nothing. The three gradients share all this
work, so one call computes the ones the graph wants (five [Sq, Sk, D] products for all three,
against eight in the decomposition). ``schedule_fused_attention_grad`` gives it its CPU
schedule: the outermost batch axis in parallel, register tiles for the products, vectorized
row reductions.
"""
from __future__ import annotations

from tvm import s_tir, te, tirx, topi

from .attention import PAD, RB, has_block, is_one, padded
from .random import kept

RULE = "fused_attention_grad"   # the schedule-rule name the kernel records (see build.schedule_report)
WRT = ("q", "k", "v")
KEYS = 2 * PAD   # the key axis of block-local buffers is padded to whole tiles of scores (two vectors)
RT = 4         # rows of dq (keys of dk, dv) in a register tile
ROW_SUMS = ("row_max", "row_sum", "e_dot_dp")   # the reductions over a row's keys


def fused_attention_grad(q: te.Tensor, k: te.Tensor, v: te.Tensor, g: te.Tensor, bias: te.Tensor | None = None,
                         seed: te.Tensor | None = None, *, wrt: tuple, scale: float, causal: bool, acc: str,
                         out_dtype: str, dropout_p: float = 0.0, salt: int = 0) -> list[te.Tensor]:
    """q [*L, Sq, D], k [*L, Sk, D], v [*L, Sk, Dv], g [*L, Sq, Dv], bias (None, or broadcasting to
    [*L, Sq, Sk]), seed (i32[], given when dropout_p > 0) -> the gradients named in ``wrt`` (a
    subset of q, k, v, in that order), computed in ``acc``, stored in ``out_dtype``."""
    *lead, sq, d = q.shape
    sk = k.shape[-2]
    blocks = _ceil_div(sq, RB)
    skp, sqp = padded(sk, KEYS), blocks * RB
    zero, neg_inf = tirx.const(0, acc), tirx.const(float("-inf"), acc)
    head = len(lead)

    def transposed(x, n, name):
        """x [*L, n, c] -> [*L, c, n padded] in acc, zeros in the padding (one per head)."""
        return te.compute([*lead, x.shape[-1], skp], lambda *i: tirx.Select(
            i[-1] < n, x(*i[:-2], tirx.min(i[-1], n - 1), i[-2]).astype(acc), zero), name=name)

    def rows_times(a, b_t, name):
        """a's rows (clamped into range) times b_t: [*L, Sq padded, Sk padded]."""
        c = te.reduce_axis((0, a.shape[-1]), name="c")
        return te.compute([*lead, sqp, skp], lambda *i: te.sum(
            a(*i[:-2], tirx.min(i[-2], sq - 1), c).astype(acc) * b_t(*i[:-2], c, i[-1]), axis=c), name=name)

    def bias_at(*i):
        b = bias
        lead_b = b.shape[:-2]   # right-aligned with the batch axes
        idx = [0 if is_one(size) else i[head - len(lead_b) + ax] for ax, size in enumerate(lead_b)]
        row = 0 if is_one(b.shape[-2]) else tirx.min(i[-2], sq - 1)
        col = 0 if is_one(b.shape[-1]) else tirx.min(i[-1], sk - 1)
        return b(*idx, row, col).astype(acc)

    def hidden(i, j):
        out = tirx.Or(j >= sk, i >= sq)   # the padding: rows beyond Sq get p = 0 and ds = 0
        if causal:
            out = tirx.Or(out, j.astype("int64") > i.astype("int64") + (sk - sq))
        return out

    # Row by row (rows padded to whole blocks, keys to whole tiles): scores, softmax, dp.
    qk = rows_times(q, transposed(k, sk, "k_packed"), "qk")
    def scaled(*i):
        return qk(*i) * tirx.const(scale, acc) + (bias_at(*i) if bias is not None else zero)
    score = te.compute([*lead, sqp, skp], lambda *i: tirx.Select(hidden(i[-2], i[-1]), neg_inf, scaled(*i)),
                       name="score")
    j_max = te.reduce_axis((0, skp), name="jm")
    # te.max starts from the lowest finite value: a fully masked row gets a finite max, and its
    # exponentials exp(-inf - max) are zeros.
    row_max = te.compute([*lead, sqp], lambda *i: te.max(score(*i, j_max), axis=j_max), name="row_max")
    shifted = te.compute(score.shape, lambda *i: score(*i) - row_max(*i[:-1]), name="shifted")
    # float32 exp as TVM's vectorizable polynomial (fast_math.py says why), inlined into expo.
    exp = topi.fast_exp(shifted) if acc == "float32" else te.compute(
        shifted.shape, lambda *i: tirx.exp(shifted(*i)), name="exact_exp")
    expo = te.compute(score.shape, lambda *i: exp(*i), name="expo")
    j_sum = te.reduce_axis((0, skp), name="js")
    row_sum = te.compute([*lead, sqp], lambda *i: te.sum(expo(*i, j_sum), axis=j_sum), name="row_sum")
    inv_sum = te.compute([*lead, sqp], lambda *i: tirx.Select(   # a NaN row's sum is NaN: so is p
        row_sum(*i) == zero, zero, tirx.const(1, acc) / row_sum(*i)), name="inv_sum")
    if seed is not None:   # the keep mask times 1 / (1 - p), by the element's flat index
        inv_keep = tirx.const(1.0 / (1.0 - dropout_p), acc)
        drop = te.compute([*lead, sqp, skp], lambda *i: tirx.Select(
            kept(_flat_index((*lead, sq, sk), i), seed(), dropout_p, salt), inv_keep, zero), name="drop")
    need_ds = "q" in wrt or "k" in wrt
    if need_ds:
        if seed is None:
            dp = rows_times(g, transposed(v, sk, "v_packed"), "dp")
        else:
            g_v = rows_times(g, transposed(v, sk, "v_packed"), "g_v")
            dp = te.compute(g_v.shape, lambda *i: g_v(*i) * drop(*i), name="dp")
        j_dot = te.reduce_axis((0, skp), name="jd")
        e_dot_dp = te.compute([*lead, sqp], lambda *i: te.sum(expo(*i, j_dot) * dp(*i, j_dot), axis=j_dot),
                              name="e_dot_dp")   # delta = rowsum(p * dp) = inv_sum * e_dot_dp

    # Block by block ([*L, blocks, RB, Sk padded]: what a row block's gradients read): p and ds.
    def row(*i):   # [*L, block, r, j] -> [*L, row]
        return (*i[:-3], i[-3] * RB + i[-2])

    p = te.compute([*lead, blocks, RB, skp], lambda *i: expo(*row(*i), i[-1]) * inv_sum(*row(*i)), name="p")
    if seed is not None and "v" in wrt:   # the dropped probabilities, dv's weights
        pd = te.compute(p.shape, lambda *i: p(*i) * drop(*row(*i), i[-1]), name="pd")
    if need_ds:
        ds = te.compute(p.shape, lambda *i: p(*i) * tirx.const(scale, acc) * (
            dp(*row(*i), i[-1]) - e_dot_dp(*row(*i)) * inv_sum(*row(*i))), name="ds")

    outs = []
    if "q" in wrt:
        j = te.reduce_axis((0, skp), name="jq")   # ds is zero on the padding
        dq = te.compute([*lead, sqp, d], lambda *i: te.sum(
            ds(*i[:-2], tirx.floordiv(i[-2], RB), tirx.floormod(i[-2], RB), j)
            * k(*i[:-2], tirx.min(j, sk - 1), i[-1]).astype(acc), axis=j), name="dq_acc")
        outs.append(_stored(dq, [*lead, sq, d], out_dtype, name="dq"))
    for name in ("k", "v"):
        if name in wrt:
            weights, rows = (ds, q) if name == "k" else (p if seed is None else pd, g)
            grad = _summed_over_rows(weights, rows, sq, acc, name=f"d{name}_acc")
            outs.append(_stored(grad, [*lead, sk, rows.shape[-1]], out_dtype, name=f"d{name}"))
    return outs


def _stored(x, shape, dtype, name):
    """The first rows of ``x`` (shape), in ``dtype``."""
    return te.compute(shape, lambda *i: x(*i).astype(dtype), name=name)


def _flat_index(shape, idx):
    """The int64 row-major flat index of ``idx`` in ``shape``."""
    flat = tirx.const(0, "int64")
    for size, i in zip(shape, idx):
        flat = flat * _i64(size) + _i64(i)
    return flat


def _i64(x):
    return tirx.const(int(x), "int64") if isinstance(x, (int, tirx.IntImm)) else x.astype("int64")


def _ceil_div(n, m: int):
    if isinstance(n, (int, tirx.IntImm)):
        return (int(n) + m - 1) // m
    return tirx.floordiv(n + (m - 1), m)


def _summed_over_rows(w, rows, sq, acc, name):
    """The sum over the query rows i of w[i, j] * rows[i, c]: [*L, Sk padded, C] (dk from ds and q,
    dv from p and g; w [*L, blocks, RB, Sk padded] is zero on the padding), in two steps: each
    block's share (``<name>_block``), then the sum of the shares."""
    *lead, blocks, _, skp = w.shape
    r = te.reduce_axis((0, RB), name="r")
    share = te.compute([*lead, blocks, skp, rows.shape[-1]], lambda *i: te.sum(
        w(*i[:-2], r, i[-2]) * rows(*i[:-3], tirx.min(i[-3] * RB + r, sq - 1), i[-1]).astype(acc), axis=r),
        name=f"{name}_block")
    b = te.reduce_axis((0, blocks), name="b")
    return te.compute([*lead, skp, rows.shape[-1]], lambda *i: te.sum(share(*i[:-2], b, *i[-2:]), axis=b),
                      name=name)


def schedule_fused_attention_grad(func: tirx.PrimFunc, lanes: int = PAD) -> tirx.PrimFunc:
    """The CPU schedule: parallel over the outermost batch axis; each row block's stages computed
    in block-local buffers at one loop; register tiles for the five products."""
    sch = s_tir.Schedule(func)
    for name in ("shifted", "T_fast_exp", "exact_exp"):   # into expo
        if has_block(sch, name):
            sch.compute_inline(sch.get_sblock(name))
    for name in ROW_SUMS:   # first: rfactor wants the block's own loop nest
        if has_block(sch, name):
            _rfactor(sch, name, lanes)
    # p, ds and dq (those the graph needs) anchor a row block: their block loops merged into one,
    # with every stage of the block computed there, and the shares of dk and dv after them.
    loops = [sch.get_loops(sch.get_sblock(n))[-3] for n in ("p", "pd", "ds") if has_block(sch, n)]
    if has_block(sch, "dq"):
        *_, rows, c = sch.get_loops(sch.get_sblock("dq"))
        dq_block, dq_rows = sch.split(rows, factors=[None, RB])
        loops.append(dq_block)
    blk = sch.merge(*loops) if len(loops) > 1 else loops[0]
    lead = sch.get_loops(sch.get_sblock("p"))[:-4]
    sch.parallel(lead[0])   # never fused: fusing symbolic extents breaks affinity
    for name in ("e_dot_dp", "e_dot_dp_rf", "dp", "g_v", "drop", "inv_sum", "row_sum", "row_sum_rf", "expo",
                 "row_max", "row_max_rf", "score", "qk"):
        if has_block(sch, name):
            sch.compute_at(sch.get_sblock(name), blk, preserve_unit_loops=True)
    for name in ("dk_acc_block", "dk_acc", "dv_acc_block", "dv_acc"):
        if has_block(sch, name):
            sch.reverse_compute_at(sch.get_sblock(name), blk)
    # Once per head (the innermost batch axis): k and v packed transposed before its row blocks,
    # dk and dv stored after them.
    for name in ("k_packed", "v_packed"):
        if has_block(sch, name):
            sch.compute_at(sch.get_sblock(name), lead[-1])
    for name in ("dk", "dv"):
        if has_block(sch, name):
            sch.reverse_compute_at(sch.get_sblock(name), lead[-1])

    _scores_tile(sch, "score", "qk", lanes)   # the scores' epilogue (scale, bias, mask) on the tile
    if has_block(sch, "g_v"):   # dropout: dp is g v^T times the mask, its epilogue
        _scores_tile(sch, "dp", "g_v", lanes)
    elif has_block(sch, "dp"):
        store = sch.cache_write(sch.get_sblock("dp"), 0, "local")
        _scores_tile(sch, sch.get(store).name_hint, "dp", lanes)
    for name in ("drop", "expo", "p", "pd", "ds", "k_packed", "v_packed", "dk", "dv"):
        if has_block(sch, name):
            _vectorize(sch, sch.get_loops(sch.get_sblock(name))[-1], lanes)
    for name in ROW_SUMS:
        if has_block(sch, name):
            _vectorize_rf(sch, name, blk)
    if has_block(sch, "dq"):
        _dq_tile(sch, dq_rows, c, lanes)
    for name in ("dk_acc", "dv_acc"):
        if has_block(sch, name):
            _summed_tile(sch, name, blk, lanes)
    return sch.mod["main"]


def _scores_tile(sch, epilogue: str, main: str, lanes: int) -> None:
    """``main`` (a [RB, Sk] product reduced over the head dim) in tiles of RB rows x KEYS keys
    accumulated in registers, stored through ``epilogue``."""
    block = sch.get_sblock(epilogue)
    *_, i, j = sch.get_loops(block)
    j0, j1 = sch.split(j, factors=[None, KEYS])
    sch.reorder(j0, i, j1)
    _vectorize(sch, j1, lanes)
    _in_registers(sch, sch.get_sblock(main), j0, lanes)


def _dq_tile(sch, rows, c, lanes: int) -> None:
    """dq: a block's rows in register tiles of RT rows x the head dim, accumulated over the keys."""
    r0, _ = sch.split(rows, factors=[None, RT])
    _vectorize(sch, c, lanes)
    _in_registers(sch, sch.get_sblock("dq_acc"), r0, lanes)


def _summed_tile(sch, name: str, blk, lanes: int) -> None:
    """dk, dv: each row block's share in register tiles of RT keys x the head dim, added to the
    head's sums (zeroed once per head, before its row blocks)."""
    block = sch.get_sblock(name)
    *_, j, c = sch.get_loops(block)
    j0, _ = sch.split(j, factors=[None, RT])
    _vectorize(sch, c, lanes)   # before decompose_reduction: TVM checks a vectorized block is a whole reduction
    sch.decompose_reduction(block, blk)
    _in_registers(sch, sch.get_sblock(name + "_block"), j0, lanes)


def _in_registers(sch, block, at, lanes: int) -> None:
    """A tile (rows x columns, reduced over its last loop) accumulated in a local buffer computed
    at loop ``at``: the reduction outermost, rows unrolled, columns vectorized, the init too."""
    sch.set_scope(block, 0, "local")
    sch.compute_at(block, at)
    *_, rows, cols, red = sch.get_loops(block)
    sch.reorder(red, rows, cols)
    _vectorize(sch, cols, lanes, unroll=True)
    sch.unroll(rows)
    init = sch.decompose_reduction(block, red)
    _vectorize(sch, sch.get_loops(init)[-1], lanes)


def _rfactor(sch, name: str, lanes: int) -> None:
    """Split a row reduction over the padded keys into one vector of partial results per row
    (block ``<name>_rf``), then a reduction of its lanes: LLVM does not vectorize a float
    reduction (it may not reassociate)."""
    block = sch.get_sblock(name)
    _, j1 = sch.split(sch.get_loops(block)[-1], factors=[None, lanes])
    sch.rfactor(j1, factor_axis=len(sch.get(block).iter_vars) - 1)


def _vectorize_rf(sch, name: str, blk) -> None:
    """The partial results of ``name`` (see _rfactor): a vector per row, accumulated over the keys.
    Computed at ``blk``, the block's loops follow its iterators, the lanes' (rfactor's) first."""
    rf = sch.get_sblock(name + "_rf")
    loops = sch.get_loops(rf)
    lane = loops[[sch.get(x).same_as(sch.get(blk)) for x in loops].index(True) + 1]
    *_, row, j = loops
    sch.reorder(row, j, lane)
    sch.vectorize(lane)
    init = sch.decompose_reduction(rf, j)
    sch.vectorize(sch.get_loops(init)[-1])


def _vectorize(sch, loop, lanes: int, unroll: bool = False) -> None:
    """Vectorize ``loop`` in vectors of ``lanes`` (unrolling the loop over the vectors when asked)
    when its extent is a static multiple of them or at most one vector; else leave it scalar."""
    ext = sch.get(loop).extent
    if not isinstance(ext, (tirx.IntImm, int)):
        sch.vectorize(sch.split(loop, factors=[None, lanes])[1])
    elif int(ext) <= lanes:
        sch.vectorize(loop)
    elif int(ext) % lanes == 0:
        outer, inner = sch.split(loop, factors=[None, lanes])
        sch.vectorize(inner)
        if unroll:
            sch.unroll(outer)
