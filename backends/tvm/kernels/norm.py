"""TE kernels of the norm ops on llvm: ``layer_norm`` and ``add_layer_norm`` as ONE kernel each.

The generic lowering (rules/nn.py) writes LayerNorm as Relax reductions, which FuseOps splits in
two reduction kernels (mean and ``x - mean``, then the variance and the affine part) that store and
reload the centred rows; after a residual add the sum is stored once more. ``layer_norm_rows``
computes each row in a row-local buffer instead: the row (the residual sum rounded to the dtype
first, as the reference's ``(x + residual).astype(x.dtype)``) in the accumulation dtype, then the
reference's two passes over that cached row, its mean and the mean of its squared deviations
(each as PAD partial sums in one vector, then their sum), then the output row
``(row - mean) / sqrt(var + eps) * weight + bias`` cast to the dtype. Main memory is read once and
written once. ``schedule_layer_norm`` runs the rows in parallel (leading axes fused, symbolic
batch and seq included) and vectorizes every pass over the normalized axis, whose size must be
static (a symbolic one keeps the generic lowering).

The numbers are the reference's (graphdsl/ops/nn.py): f16/bf16 accumulate in f32, f64 in f64,
eps is added to the variance inside the square root, and a row holding a NaN or an infinity is
NaN throughout (its mean is, and so is every deviation from it). The order of the additions in a
sum differs from NumPy's pairwise one, within the usual float tolerances.
"""
from __future__ import annotations

from tvm import s_tir, te, tirx

PAD = 16             # partial sums per row: one AVX-512 vector of f32 (two of f64)
RULE = "layer_norm_rows"   # the schedule-rule name the kernel records (see build.schedule_report)
_U32 = "uint32"


def round_to_bf16(v: tirx.PrimExpr) -> tirx.PrimExpr:
    """A float32 value rounded to the nearest bfloat16 (ties to even), kept as a float32; NaN is
    the quiet NaN with its sign. For a value used again inside one kernel: TVM keeps a kernel's
    bf16 intermediates in f32 without rounding them (rules/common.py says why), this rounds."""
    bits = tirx.reinterpret(_U32, v)
    even = (bits + tirx.const(0x7FFF, _U32) + ((bits >> tirx.const(16, _U32)) & tirx.const(1, _U32))) \
        & tirx.const(0xFFFF0000, _U32)
    quiet = (bits & tirx.const(0x80000000, _U32)) | tirx.const(0x7FC00000, _U32)
    return tirx.reinterpret("float32", tirx.Select(tirx.isnan(v), quiet, even))


def in_dtype(v: tirx.PrimExpr, dtype: str, acc: str) -> tirx.PrimExpr:
    """``v`` (f32, or f64 for f64) rounded to ``dtype`` and back: what the reference's ``astype``
    to the dtype leaves of it, as a value in the accumulation dtype."""
    if dtype == "bfloat16":
        return round_to_bf16(v)
    if dtype == "float16":
        return v.astype("float16").astype(acc)
    return v


def store_as(v: tirx.PrimExpr, dtype: str) -> tirx.PrimExpr:
    """The final cast of a kernel's output, rounded as the reference rounds (ties to even)."""
    if dtype == "bfloat16":
        v = round_to_bf16(v)
    return v.astype(dtype)


def _lanes(n: int) -> int:
    return min(PAD, n)


def layer_norm_rows(x: te.Tensor, weight: te.Tensor, bias: te.Tensor, residual: te.Tensor | None = None, *,
                    eps: float, acc: str, out_dtype: str) -> te.Tensor:
    """x [*L, N] (N static), weight [N], bias [N] -> layer_norm over the last axis, in ``acc``;
    with a ``residual`` [*L, N] the row is ``x + residual`` rounded to the dtype (add_layer_norm)."""
    *lead, n = x.shape
    n = int(n)
    lanes = _lanes(n)
    chunks = -(-n // lanes)
    padded = chunks * lanes
    zero = tirx.const(0, acc)
    dtype = str(x.dtype)

    def value(*i):
        v = x(*i).astype(acc)
        if residual is not None:
            v = in_dtype(v + residual(*i).astype(acc), dtype, acc)
        return v

    def cached(*i):
        if padded == n:
            return value(*i)
        inside = i[-1] < n
        return tirx.Select(inside, value(*i[:-1], tirx.min(i[-1], n - 1)), zero)

    row = te.compute([*lead, padded], cached, name="row")   # padded with zeros: whole vectors

    def lane_sums(fn, name):
        """Per row, ``lanes`` partial sums of fn(row index, column), then their sum (a row of at
        most one vector is summed directly)."""
        if chunks == 1:
            c = te.reduce_axis((0, lanes), name=name + "_c")
            return te.compute(lead, lambda *i: te.sum(fn(i, c), axis=c), name=name)
        j = te.reduce_axis((0, chunks), name=name + "_j")
        part = te.compute([*lead, lanes], lambda *i: te.sum(fn(i[:-1], j * lanes + i[-1]), axis=j),
                          name=name + "_part")
        lane = te.reduce_axis((0, lanes), name=name + "_l")
        return te.compute(lead, lambda *i: te.sum(part(*i, lane), axis=lane), name=name)

    total = lane_sums(lambda r, c: row(*r, c), "row_sum")
    mean = te.compute(lead, lambda *i: total(*i) / tirx.const(n, acc), name="mean")

    def deviation_sq(r, c):
        d = row(*r, c) - mean(*r)
        sq = d * d
        return sq if padded == n else tirx.Select(c < n, sq, zero)

    squares = lane_sums(deviation_sq, "sq_sum")
    denom = te.compute(lead, lambda *i: tirx.sqrt(squares(*i) / tirx.const(n, acc) + tirx.const(eps, acc)),
                       name="denom")
    return te.compute([*lead, n], lambda *i: store_as(
        (row(*i) - mean(*i[:-1])) / denom(*i[:-1]) * weight(i[-1]).astype(acc) + bias(i[-1]).astype(acc),
        out_dtype), name="layer_norm")


# Stages computed once per row, in the order they run (the output stage is the row loop's body).
_PER_ROW = ["row", "row_sum_part", "row_sum", "mean", "sq_sum_part", "sq_sum", "denom"]


def schedule_layer_norm(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """The CPU schedule: the leading axes fused into one parallel loop over rows; each row's stages
    computed inside it into row-local buffers; the normalized axis vectorized in every pass."""
    sch = s_tir.Schedule(func)
    stages = [name for name in _PER_ROW if _has_block(sch, name)]
    out = sch.get_sblock("layer_norm")
    *lead, col = sch.get_loops(out)
    if lead:
        rows = sch.fuse(*lead) if len(lead) > 1 else lead[0]
        sch.parallel(rows)
        for name in reversed(stages):   # consumers first: compute_at needs them under the loop
            sch.compute_at(sch.get_sblock(name), rows)
        for name in stages:   # every per-row buffer is the row's own: no allocation in memory
            sch.set_scope(sch.get_sblock(name), 0, "local")
    _vectorize(sch, col)
    _vectorize(sch, sch.get_loops(sch.get_sblock("row"))[-1])
    for name in ("row_sum_part", "sq_sum_part"):
        if name not in stages:
            continue
        part = sch.get_sblock(name)
        *_, lane, chunk = sch.get_loops(part)
        sch.reorder(chunk, lane)
        sch.vectorize(lane)
        init = sch.decompose_reduction(part, chunk)
        sch.vectorize(sch.get_loops(init)[-1])
    return sch.mod["main"]


def _has_block(sch, name: str) -> bool:
    try:
        sch.get_sblock(name)
    except s_tir.ScheduleError:
        return False
    return True


def _vectorize(sch, loop) -> None:
    """Vectorize ``loop`` in whole vectors of PAD lanes (all of it when it is at most PAD long)."""
    ext = int(sch.get(loop).extent)
    if ext <= PAD:
        sch.vectorize(loop)
        return
    _, inner = sch.split(loop, factors=[None, PAD])
    sch.vectorize(inner)
