"""FlashAttention-style GPU kernels for the attention op and its gradients, written as TIR.

    forward   out_i = sum_j pd_ij v_j,  p = softmax_j(scale * q_i . k_j + bias_ij), causal-masked,
              pd = dropout(p) (= p without dropout), dp_ij = dropout(g_i . v_j) with pd's mask
    stats     lse_i = log sum_j exp(s_ij),  delta_i = sum_j p_ij dp_ij
    dq        dq_i = scale * sum_j p_ij (dp_ij - delta_i) k_j
    dk, dv    dk_j = scale * sum_i p_ij (dp_ij - delta_i) q_i,  dv_j = sum_i pd_ij g_i

A *row kernel* (forward, stats, dq) gives each thread one query row: its q (and g) row and its
running state live in registers, and the block walks the keys in tiles of ``TILE``: all threads
copy the tile of k and v (and of the bias) into shared memory, then each thread scores its row
against the tile and folds it into an online softmax (running max and sum; the accumulator is
rescaled when the max grows). The *column kernel* (dk and dv together) swaps the roles: a thread
per key, tiles of query rows (q, g, lse, delta) in shared memory. No kernel stores a [Sq, Sk]
matrix anywhere; causal blocks skip the tiles hidden from all their rows; rows with no visible
key give zeros (their lse is -inf and they add nothing to dk, dv). Dropout's mask is recomputed
from each element's flat index and the seed, like the dropout op's, so it is never stored either.

Each kernel is written once as SPMD statements over (block, thread) with ``_Spmd``, which
generates one of two forms: for ``cuda`` a blockIdx/threadIdx launch with shared and register
buffers and barriers between the phases of a tile; *emulated*, the same statements where the
blocks and each phase's threads are serial loops and per-thread registers are arrays indexed by
the thread. The emulated form runs on the CPU: that is how the tests check these kernels'
arithmetic on machines without a GPU (``backends.compile(g, "llvm", gpu_kernels_on_cpu=True)``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

from tvm import te, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from .random import kept

RULE = "flash_attention"   # the schedule-rule name the kernels record (see build.schedule_report)
ROWS = 64                  # threads per block: query rows (row kernels) or keys (column kernel)
TILE = 32                  # keys per tile (row kernels) or query rows per tile (column kernel)
MAX_HEAD_DIM = 128         # head rows are held in registers; larger heads use the unfused lowering
SHARED_LIMIT = 48 * 1024   # static shared memory a block may use without opting in to more


def shared_bytes(d: int, dv: int, acc: str, bias: bool) -> int:
    """The most shared memory any of the kernels takes for these head dims (tiles in ``acc``)."""
    row = TILE * (d + dv) + (ROWS * (TILE + 1) if bias else 0)
    column = TILE * (d + dv + 2) + (TILE * ROWS if bias else 0)
    return (8 if acc == "float64" else 4) * max(row, column)


@dataclass(frozen=True)
class Attrs:
    """What the kernels need to know about one attention op."""

    scale: float
    causal: bool
    acc: str                # accumulation dtype: float32, or float64 for f64 inputs
    dropout_p: float = 0.0  # dropout on the probabilities, the mask drawn like random.dropout's
    salt: int = 0
    emulate: bool = False   # the CPU form of the kernels (see the module docstring)


# -- SPMD scaffolding ----------------------------------------------------------------------------
class _Regs:
    """A per-thread register array, indexed ``regs[tx, i]``: on the GPU a local buffer of ``n``;
    emulated, a [threads, n] array, since each phase's threads are a loop of their own."""

    def __init__(self, emulate: bool, threads: int, n: int, dtype: str):
        self.emulate = emulate
        shape, scope = ([threads, n], "global") if emulate else ([n], "local")
        self.buf = T.buffer_proxy(T.decl_buffer(shape, dtype, scope=scope))

    def __getitem__(self, key):
        return self.buf[key if self.emulate else key[1:]]

    def __setitem__(self, key, value):
        self.buf[key if self.emulate else key[1:]] = value


class _Spmd:
    """Blocks of ``threads`` threads, or serial loops standing for them (``emulate``)."""

    def __init__(self, emulate: bool, threads: int):
        self.emulate, self.threads = emulate, threads
        self._tx = None

    @contextlib.contextmanager
    def launch(self, blocks):
        if self.emulate:
            with T.serial(0, blocks) as bx:
                yield bx
            return
        bx, tx = te.thread_axis("blockIdx.x"), te.thread_axis("threadIdx.x")
        with T.attr(bx, "thread_extent", blocks):
            with T.attr(tx, "thread_extent", self.threads):
                self._tx = tx.var.astype("int64")
                yield bx.var.astype("int64")

    @contextlib.contextmanager
    def each_thread(self):
        """One phase: every thread runs the body (emulated: one thread after the other)."""
        if self.emulate:
            with T.serial(0, self.threads) as tx:
                yield tx
            return
        yield self._tx

    def sync(self):
        """A block-wide barrier (emulated phases already run in order)."""
        if not self.emulate:
            T.evaluate(tirx.call_intrin("int32", "tirx.tvm_storage_sync", "shared"))

    def shared(self, shape, dtype):
        return T.buffer_proxy(T.decl_buffer(shape, dtype, scope="global" if self.emulate else "shared"))

    def regs(self, n: int, dtype: str) -> _Regs:
        return _Regs(self.emulate, self.threads, n, dtype)

    def scalar(self, dtype: str):
        """A one-element register for a value computed inside a phase."""
        return T.buffer_proxy(T.decl_buffer([1], dtype, scope="global" if self.emulate else "local"))

    def unrolled(self, n: int):
        """A loop over a small static range, unrolled on the GPU so its arrays stay in registers."""
        return T.serial(0, n) if self.emulate else T.unroll(0, n)


# -- operands ------------------------------------------------------------------------------------
def _ceil_div(a, b):
    return tirx.floordiv(a + (b - 1), b)


def _i64(x):
    return tirx.const(int(x), "int64") if isinstance(x, (int, tirx.IntImm)) else x.astype("int64")


def _is_one(size) -> bool:
    return isinstance(size, (int, tirx.IntImm)) and int(size) == 1


class _Operands:
    """Element loads from q, k, v, g (sharing leading axes L) and the bias, by flat lead index.

    The flat lead index ``l`` is unravelled into L's coordinates, and from those into the bias's
    own right-aligned leading axes (each the same size or 1)."""

    def __init__(self, ins: dict, attrs: Attrs):
        q, k, v = ins["q"], ins["k"], ins["v"]
        self.ins, self.acc, self.scale = ins, attrs.acc, tirx.const(attrs.scale, attrs.acc)
        self.causal, self.dropout_p, self.salt = attrs.causal, attrs.dropout_p, attrs.salt
        self.lead = [_i64(d) for d in q.shape[:-2]]
        self.sq, self.sk = _i64(q.shape[-2]), _i64(k.shape[-2])
        self.d, self.dv = int(q.shape[-1]), int(v.shape[-1])
        self.zero, self.neg_inf = tirx.const(0, self.acc), tirx.const(float("-inf"), self.acc)

    def batches(self):
        return _prod(self.lead)

    def coords(self, l):
        out, rest = [], l
        for d in reversed(self.lead):
            out.append(tirx.floormod(rest, d))
            rest = tirx.floordiv(rest, d)
        return out[::-1]

    def row(self, name: str, coords, row, col):
        """ins[name][..., row, col] in acc (row clamped into range: callers mask what is outside)."""
        buf = self.ins[name]
        n = buf.shape[-2]
        return buf[(*coords, tirx.min(row, _i64(n) - 1), col)].astype(self.acc)

    def bias(self, coords, i, j):
        """The bias broadcast to [*L, Sq, Sk], at (coords, i, j), in acc; 0 outside the shape."""
        buf = self.ins["bias"]
        shape = list(buf.shape)
        lead = [0 if _is_one(size) else coords[len(coords) - (len(shape) - 2) + ax]
                for ax, size in enumerate(shape[:-2])]
        row = 0 if _is_one(shape[-2]) else tirx.min(i, self.sq - 1)
        col = 0 if _is_one(shape[-1]) else tirx.min(j, self.sk - 1)
        inside = tirx.And(i < self.sq, j < self.sk)
        return tirx.Select(inside, buf[(*lead, row, col)].astype(self.acc), self.zero)

    def hidden(self, i, j):
        """Key j is hidden from query i: outside the shape, or (causal) after i + (Sk - Sq)."""
        out = tirx.Or(i >= self.sq, j >= self.sk)
        if self.causal:
            out = tirx.Or(out, j > i + (self.sk - self.sq))
        return out

    def dropped(self, x, l, i, j):
        """x * keep_ij / (1 - p): dropout of element (l, i, j) of the [*L, Sq, Sk] probabilities,
        its mask drawn from the element's flat index exactly as the dropout op draws it."""
        if not self.dropout_p:
            return x
        flat = (l * self.sq + i) * self.sk + j
        keep = kept(flat, self.ins["seed"][()], self.dropout_p, self.salt)
        return tirx.Select(keep, x * tirx.const(1.0 / (1.0 - self.dropout_p), self.acc), self.zero)


@contextlib.contextmanager
def _tile_elements(sp: _Spmd, n_rows: int, width: int):
    """(r, c) over an [n_rows, width] tile, all threads taking consecutive elements (coalesced
    reads of row-major data)."""
    total = n_rows * width
    with sp.each_thread() as tx:
        with T.serial(0, (total + sp.threads - 1) // sp.threads) as e:
            idx = e * sp.threads + tx
            with T.If(idx < total):
                with T.Then():
                    yield tirx.floordiv(idx, width), tirx.floormod(idx, width)


def _copy_rows(sp: _Spmd, ops: _Operands, dst, name: str, coords, first, count, n_rows: int, width: int):
    """Rows first.. of ins[name] into dst [n_rows, width] (zeros past ``count``)."""
    with _tile_elements(sp, n_rows, width) as (r, c):
        row = first + r
        dst[r, c] = tirx.Select(row < count, ops.row(name, coords, row, c), ops.zero)


def _copy_bias(sp: _Spmd, ops: _Operands, dst, coords, row0, col0, n_rows: int, n_cols: int, pad: int = 0):
    """The bias tile at (row0, col0) into dst [n_rows, n_cols + pad]. The pad columns (zeros) are
    written too, or TVM would compact them away: they keep threads reading a column of the tile
    off each other's shared-memory banks."""
    with _tile_elements(sp, n_rows, n_cols + pad) as (r, c):
        value = ops.bias(coords, row0 + r, col0 + c)
        dst[r, c] = tirx.Select(c < n_cols, value, ops.zero) if pad else value


def _key_tiles(ops: _Operands, row0):
    """How many key tiles the query rows row0..row0+ROWS see (causal: up to their last key)."""
    tiles = _ceil_div(ops.sk, TILE)
    if not ops.causal:
        return tiles
    last_row = tirx.min(row0 + ROWS, ops.sq) - 1
    visible = tirx.max(last_row + (ops.sk - ops.sq) + 1, tirx.const(0, "int64"))
    return tirx.min(tiles, _ceil_div(visible, TILE))


def _first_query_tile(ops: _Operands, col0):
    """The first query tile that sees any of the keys col0.. (causal: row >= key - (Sk - Sq))."""
    if not ops.causal:
        return tirx.const(0, "int64")
    first_row = tirx.max(col0 - (ops.sk - ops.sq), tirx.const(0, "int64"))
    return tirx.min(tirx.floordiv(first_row, TILE), _ceil_div(ops.sq, TILE))


def _dot(sp: _Spmd, n: int, a, b, acc):
    """sum_c a(c) * b(c) into a fresh register."""
    out = sp.scalar(acc)
    out[0] = tirx.const(0, acc)
    with sp.unrolled(n) as c:
        out[0] = out[0] + a(c) * b(c)
    return out[0]


# -- row kernels: forward, stats, dq ----------------------------------------------------------------
@contextlib.contextmanager
def _launch(sp: _Spmd, ops: _Operands, n):
    """One block per ROWS of ``n`` (query rows, or keys) for each flat lead index: yields the block's
    (lead index l, its first row or key, l's coordinates)."""
    per_lead = _ceil_div(n, ROWS)
    with sp.launch(ops.batches() * per_lead) as bx:
        l = tirx.floordiv(bx, per_lead)
        yield l, tirx.floormod(bx, per_lead) * ROWS, ops.coords(l)


def _row_kernel(ops: _Operands, a: Attrs, outs: dict, mode: str):
    acc, sp = ops.acc, _Spmd(a.emulate, ROWS)
    d, dv = ops.d, ops.dv
    width = d if mode == "dq" else dv          # of the accumulator: dq, or out
    with _launch(sp, ops, ops.sq) as (l, row0, coords):
        k_s, v_s = sp.shared([TILE, d], acc), sp.shared([TILE, dv], acc)
        b_s = sp.shared([ROWS, TILE + 1], acc) if "bias" in ops.ins else None   # +1: no bank conflicts
        q_r, o_r = sp.regs(d, acc), sp.regs(width, acc)
        g_r = sp.regs(dv, acc) if mode != "forward" else None
        s_r = sp.regs(TILE, acc)
        st = sp.regs(3, acc)   # forward/stats: running max m, sum exp(s - m), sum exp(s - m) dp
        with sp.each_thread() as tx:   #                  dq: lse, delta
            i = row0 + tx
            with sp.unrolled(d) as c:
                q_r[tx, c] = ops.row("q", coords, i, c)
            if g_r is not None:
                with sp.unrolled(dv) as c:
                    g_r[tx, c] = ops.row("g", coords, i, c)
            with sp.unrolled(width) as c:
                o_r[tx, c] = ops.zero
            if mode == "dq":
                at = (l, tirx.min(i, ops.sq - 1))
                st[tx, 0], st[tx, 1] = ops.ins["lse"][at], ops.ins["delta"][at]
            else:
                st[tx, 0], st[tx, 1], st[tx, 2] = ops.neg_inf, ops.zero, ops.zero
        with T.serial(0, _key_tiles(ops, row0)) as t:
            col0 = t * TILE
            sp.sync()   # the previous tile is no longer read
            _copy_rows(sp, ops, k_s, "k", coords, col0, ops.sk, TILE, d)
            _copy_rows(sp, ops, v_s, "v", coords, col0, ops.sk, TILE, dv)
            if b_s is not None:
                _copy_bias(sp, ops, b_s, coords, row0, col0, ROWS, TILE, pad=1)
            sp.sync()
            with sp.each_thread() as tx:
                tile = _RowTile(sp, ops, tx, l, row0 + tx, col0, k_s, v_s, b_s, q_r, g_r, s_r, o_r, st)
                tile.dq() if mode == "dq" else tile.online_softmax(mode)
        with sp.each_thread() as tx:
            i = row0 + tx
            with T.If(i < ops.sq):
                with T.Then():
                    _row_store(sp, ops, mode, tx, l, coords, i, o_r, st, outs)


@dataclass
class _RowTile:
    """One thread's query row i against the key tile from col0 (in shared memory)."""

    sp: _Spmd
    ops: _Operands
    tx: object
    l: object
    i: object
    col0: object
    k_s: object
    v_s: object
    b_s: object
    q_r: _Regs
    g_r: _Regs | None
    s_r: _Regs
    o_r: _Regs
    st: _Regs

    def score(self, jt):
        """scale * q_i . k_j + bias_ij, or -inf where key j is hidden from row i."""
        ops, tx = self.ops, self.tx
        s = _dot(self.sp, ops.d, lambda c: self.q_r[tx, c], lambda c: self.k_s[jt, c], ops.acc) * ops.scale
        if self.b_s is not None:
            s = s + self.b_s[tx, jt]
        return tirx.Select(ops.hidden(self.i, self.col0 + jt), ops.neg_inf, s)

    def g_dot_v(self, jt):
        return _dot(self.sp, self.ops.dv, lambda c: self.g_r[self.tx, c], lambda c: self.v_s[jt, c], self.ops.acc)

    def online_softmax(self, mode: str):
        """Fold the tile into (m, sum exp(s - m), [sum exp(s - m) dp]) and the output accumulator."""
        sp, ops, tx, st, s_r, o_r = self.sp, self.ops, self.tx, self.st, self.s_r, self.o_r
        m_new = sp.scalar(ops.acc)
        m_new[0] = st[tx, 0]
        with sp.unrolled(TILE) as jt:
            s_r[tx, jt] = self.score(jt)
            m_new[0] = _max(m_new[0], s_r[tx, jt])
        # Unless every key so far is hidden (nothing to add). A NaN score makes the max NaN, then
        # alpha and the state NaN, and the row NaN, as in the reference (hence not > -inf).
        with T.If(_unequal(m_new[0], ops.neg_inf)):
            with T.Then():
                alpha = sp.scalar(ops.acc)
                alpha[0] = tirx.exp(st[tx, 0] - m_new[0])   # 0 while the running max is -inf
                st[tx, 0] = m_new[0]
                st[tx, 1] = st[tx, 1] * alpha[0]
                st[tx, 2] = st[tx, 2] * alpha[0]
                if mode == "forward":
                    with sp.unrolled(ops.dv) as c:
                        o_r[tx, c] = o_r[tx, c] * alpha[0]
                with sp.unrolled(TILE) as jt:
                    p = sp.scalar(ops.acc)
                    p[0] = tirx.exp(s_r[tx, jt] - m_new[0])
                    st[tx, 1] = st[tx, 1] + p[0]
                    pd = ops.dropped(p[0], self.l, self.i, self.col0 + jt)
                    if mode == "forward":
                        with sp.unrolled(ops.dv) as c:
                            o_r[tx, c] = o_r[tx, c] + pd * self.v_s[jt, c]
                    else:
                        st[tx, 2] = st[tx, 2] + pd * self.g_dot_v(jt)

    def dq(self):
        """dq_i += scale * p_ij (g_i . v_j - delta_i) k_j over the tile (rows with lse -inf: none)."""
        sp, ops, tx, st = self.sp, self.ops, self.tx, self.st
        with T.If(_unequal(st[tx, 0], ops.neg_inf)):   # a NaN row's lse is NaN: its dq is NaN
            with T.Then():
                with T.serial(0, TILE) as jt:
                    ds = sp.scalar(ops.acc)
                    dp = ops.dropped(self.g_dot_v(jt), self.l, self.i, self.col0 + jt)
                    ds[0] = tirx.exp(self.score(jt) - st[tx, 0]) * (dp - st[tx, 1]) * ops.scale
                    with sp.unrolled(ops.d) as c:
                        self.o_r[tx, c] = self.o_r[tx, c] + ds[0] * self.k_s[jt, c]


def _max(m, s):
    """The running max, NaN once a score is NaN: TVM's max is ``m > s ? m : s``, which a NaN m
    would leave for the next score (a hidden key's -inf, say)."""
    return tirx.Select(tirx.Or(tirx.isnan(m), m > s), m, s)


def _unequal(a, b):
    """a != b, true when a is NaN: TVM's LLVM code generator compiles != to an ordered compare,
    false for NaN (CUDA's != is true), and these tests must let a NaN row through on both."""
    return tirx.Or(a != b, tirx.isnan(a))


def _row_store(sp, ops: _Operands, mode: str, tx, l, coords, i, o_r, st, outs):
    total = st[tx, 1]
    if mode == "forward":
        out = outs["out"]
        with sp.unrolled(ops.dv) as c:
            out[(*coords, i, c)] = tirx.Select(total == ops.zero, ops.zero, o_r[tx, c] / total).astype(out.dtype)
    elif mode == "stats":
        seen = _unequal(total, ops.zero)   # a row with a NaN score: its lse and delta are NaN
        outs["lse"][l, i] = tirx.Select(seen, st[tx, 0] + tirx.log(total), ops.neg_inf)
        outs["delta"][l, i] = tirx.Select(seen, st[tx, 2] / total, ops.zero)
    else:
        dq = outs["dq"]
        with sp.unrolled(ops.d) as c:
            dq[(*coords, i, c)] = o_r[tx, c].astype(dq.dtype)


# -- the column kernel: dk and dv ---------------------------------------------------------------------
def _column_kernel(ops: _Operands, a: Attrs, outs: dict):
    acc, sp = ops.acc, _Spmd(a.emulate, ROWS)
    d, dv = ops.d, ops.dv
    with _launch(sp, ops, ops.sk) as (l, col0, coords):
        q_s, g_s = sp.shared([TILE, d], acc), sp.shared([TILE, dv], acc)
        lse_s, delta_s = sp.shared([TILE], acc), sp.shared([TILE], acc)
        b_s = sp.shared([TILE, ROWS], acc) if "bias" in ops.ins else None
        k_r, v_r = sp.regs(d, acc), sp.regs(dv, acc)
        dk_r, dv_r = sp.regs(d, acc), sp.regs(dv, acc)
        with sp.each_thread() as tx:
            j = col0 + tx
            with sp.unrolled(d) as c:
                k_r[tx, c] = ops.row("k", coords, j, c)
                dk_r[tx, c] = ops.zero
            with sp.unrolled(dv) as c:
                v_r[tx, c] = ops.row("v", coords, j, c)
                dv_r[tx, c] = ops.zero
        with T.serial(_first_query_tile(ops, col0), _ceil_div(ops.sq, TILE)) as t:
            row0 = t * TILE
            sp.sync()
            _copy_rows(sp, ops, q_s, "q", coords, row0, ops.sq, TILE, d)
            _copy_rows(sp, ops, g_s, "g", coords, row0, ops.sq, TILE, dv)
            with sp.each_thread() as tx:
                with T.If(tx < TILE):
                    with T.Then():
                        i = tirx.min(row0 + tx, ops.sq - 1)
                        lse_s[tx] = tirx.Select(row0 + tx < ops.sq, ops.ins["lse"][l, i], ops.neg_inf)
                        delta_s[tx] = ops.ins["delta"][l, i]
            if b_s is not None:
                _copy_bias(sp, ops, b_s, coords, row0, col0, TILE, ROWS)
            sp.sync()
            with sp.each_thread() as tx:
                _column_tile(sp, ops, tx, l, col0 + tx, row0, q_s, g_s, lse_s, delta_s, b_s, k_r, v_r, dk_r, dv_r)
        with sp.each_thread() as tx:
            j = col0 + tx
            with T.If(j < ops.sk):
                with T.Then():
                    with sp.unrolled(d) as c:
                        outs["dk"][(*coords, j, c)] = dk_r[tx, c].astype(outs["dk"].dtype)
                    with sp.unrolled(dv) as c:
                        outs["dv"][(*coords, j, c)] = dv_r[tx, c].astype(outs["dv"].dtype)


def _column_tile(sp, ops: _Operands, tx, l, j, row0, q_s, g_s, lse_s, delta_s, b_s, k_r, v_r, dk_r, dv_r):
    """One thread's key j against the query tile from row0 (in shared memory)."""
    with T.serial(0, TILE) as r:
        s = _dot(sp, ops.d, lambda c: q_s[r, c], lambda c: k_r[tx, c], ops.acc) * ops.scale
        if b_s is not None:
            s = s + b_s[r, tx]
        p = sp.scalar(ops.acc)
        hidden = tirx.Or(ops.hidden(row0 + r, j), lse_s[r] == ops.neg_inf)
        p[0] = tirx.Select(hidden, ops.zero, tirx.exp(s - lse_s[r]))
        with T.If(_unequal(p[0], ops.zero)):   # NaN p: dk and dv are NaN
            with T.Then():
                pd = sp.scalar(ops.acc)
                pd[0] = ops.dropped(p[0], l, row0 + r, j)
                with sp.unrolled(ops.dv) as c:
                    dv_r[tx, c] = dv_r[tx, c] + pd[0] * g_s[r, c]
                ds = sp.scalar(ops.acc)
                dp = ops.dropped(_dot(sp, ops.dv, lambda c: g_s[r, c], lambda c: v_r[tx, c], ops.acc), l, row0 + r, j)
                ds[0] = p[0] * (dp - delta_s[r]) * ops.scale
                with sp.unrolled(ops.d) as c:
                    dk_r[tx, c] = dk_r[tx, c] + ds[0] * q_s[r, c]


# -- TE entry points (what the lowering rules call) ------------------------------------------------
def _extern(name: str, inputs: dict, outputs: dict, body, attrs: Attrs):
    """te.extern over named inputs and outputs ({name: (shape, dtype)}) whose body, written with
    the IR builder, is ``body(ops, outs)``."""
    def build(ins, outs):
        with IRBuilder() as ib:
            ops = _Operands({n: _Buf(b) for n, b in zip(inputs, ins)}, attrs)
            body(ops, {n: _Buf(b) for n, b in zip(outputs, outs)})
        return ib.get()

    res = te.extern([s for s, _ in outputs.values()], list(inputs.values()), build,
                    dtype=[dt for _, dt in outputs.values()], name=name)
    return res if isinstance(res, list) else [res]


class _Buf:
    """A kernel argument: element access through the IR builder, with the shape and dtype at hand."""

    def __init__(self, buf):
        self.proxy, self.shape, self.dtype = T.buffer_proxy(buf), buf.shape, str(buf.dtype)

    def __getitem__(self, idx):
        return self.proxy[idx]

    def __setitem__(self, idx, value):
        self.proxy[idx] = value


def _named(q, k, v, bias, seed, **more) -> dict:
    """The kernel's inputs by name; bias and seed only when given (seed: when dropping)."""
    optional = {"bias": bias, "seed": seed}
    return {"q": q, "k": k, "v": v, **more, **{n: x for n, x in optional.items() if x is not None}}


def forward(q, k, v, bias=None, seed=None, *, out_dtype: str, **attrs):
    """out [*L, Sq, Dv] = attention(q [*L, Sq, D], k [*L, Sk, D], v [*L, Sk, Dv], bias, seed)."""
    a = Attrs(**attrs)
    (out,) = _extern("flash_attention", _named(q, k, v, bias, seed),
                     {"out": ([*q.shape[:-1], v.shape[-1]], out_dtype)},
                     lambda ops, outs: _row_kernel(ops, a, outs, "forward"), a)
    return out


def stats(q, k, v, g, bias=None, seed=None, **attrs):
    """(lse, delta) [prod(L), Sq]: each row's log-sum-exp of the scores and sum_j p_ij dp_ij, dp the
    (dropped) g_i . v_j."""
    a = Attrs(**attrs)
    rows = [_prod(q.shape[:-2]), q.shape[-2]]
    return tuple(_extern("flash_attention_stats", _named(q, k, v, bias, seed, g=g),
                         {"lse": (rows, a.acc), "delta": (rows, a.acc)},
                         lambda ops, outs: _row_kernel(ops, a, outs, "stats"), a))


def grad_q(q, k, v, g, lse, delta, bias=None, seed=None, **attrs):
    """dq [*L, Sq, D] from the row statistics of ``stats``."""
    a = Attrs(**attrs)
    (dq,) = _extern("flash_attention_dq", _named(q, k, v, bias, seed, g=g, lse=lse, delta=delta),
                    {"dq": (list(q.shape), q.dtype)}, lambda ops, outs: _row_kernel(ops, a, outs, "dq"), a)
    return dq


def grad_kv(q, k, v, g, lse, delta, bias=None, seed=None, **attrs):
    """(dk [*L, Sk, D], dv [*L, Sk, Dv]) from the row statistics of ``stats``."""
    a = Attrs(**attrs)
    return tuple(_extern("flash_attention_dkv", _named(q, k, v, bias, seed, g=g, lse=lse, delta=delta),
                         {"dk": (list(k.shape), k.dtype), "dv": (list(v.shape), v.dtype)},
                         lambda ops, outs: _column_kernel(ops, a, outs), a))


def _prod(dims):
    out = tirx.const(1, "int64")
    for d in dims:
        out = out * _i64(d)
    return out
