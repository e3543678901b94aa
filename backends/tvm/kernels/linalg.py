"""A TE matmul that reads transposed operands in place and can sum over batch axes.

    out[kept batch..., i, j] = sum over (summed batch axes, k) of A[.., i, k] * B[.., k, j]

``trans_a`` / ``trans_b`` say an operand is stored with its last two axes swapped (``x.mT`` in the
graph), so the transpose is never materialized; ``summed`` lists batch axes of the product that
are reduced (``keepdims`` keeps them as size 1), so a weight gradient ``sum_b(x_b^T @ g_b)`` is one
matmul with a longer K instead of a batch of products and a sum. Batch axes broadcast as in
NumPy: an operand axis of static size 1 is read at index 0.
"""
from __future__ import annotations

from tvm import te, tirx


def matmul(a: te.Tensor, b: te.Tensor, *, trans_a: bool, trans_b: bool, batch, summed=(),
           keepdims: bool = False, acc: str | None = None) -> te.Tensor:
    """``batch`` is the product's broadcast batch shape; ``summed`` indexes into it. ``acc``: the
    dtype the products are summed in (float32 for float16, as the reference), then cast back."""
    m = a.shape[-1] if trans_a else a.shape[-2]
    n = b.shape[-2] if trans_b else b.shape[-1]
    depth = a.shape[-2] if trans_a else a.shape[-1]
    k = te.reduce_axis((0, depth), name="k")
    reduced = {ax: te.reduce_axis((0, batch[ax]), name=f"b{ax}") for ax in summed}
    kept = [ax for ax in range(len(batch)) if ax not in reduced]
    out_batch = [1 if ax in reduced else batch[ax] for ax in range(len(batch))] if keepdims \
        else [batch[ax] for ax in kept]

    def operand(t, trans, full, row, col):
        lead = len(t.shape) - 2
        idx = []
        for ax in range(lead):
            size = t.shape[ax]
            idx.append(0 if _is_one(size) else full[len(batch) - lead + ax])
        return t(*idx, *((col, row) if trans else (row, col)))

    def f(*idx):
        *out_b, i, j = idx
        if keepdims:
            full = [reduced[ax].var if ax in reduced else out_b[ax] for ax in range(len(batch))]
        else:
            it = iter(out_b)
            full = [reduced[ax].var if ax in reduced else next(it) for ax in range(len(batch))]
        axes = [reduced[ax] for ax in summed] + [k]
        x, y = operand(a, trans_a, full, i, k.var), operand(b, trans_b, full, k.var, j)
        if acc is not None:
            x, y = x.astype(acc), y.astype(acc)
        return te.sum(x * y, axis=axes)

    out = te.compute([*out_batch, m, n], f, name="matmul")
    if acc is None:
        return out
    return te.compute(out.shape, lambda *i: out(*i).astype(a.dtype), name="matmul_cast")


def _is_one(size) -> bool:
    return isinstance(size, int) and size == 1 or isinstance(size, tirx.IntImm) and size.value == 1
