"""TVM rows for graphdsl/ops/nn.py: the softmax family, the norms, and numel.

Softmax is written out (not Relax's nn.softmax) because ours defines fully masked rows: a row of
-inf gives zeros, never NaN; and a row holding a NaN (or +inf) is NaN throughout, as in the
reference. The row's max only shifts the row; a row is "fully masked" when its sum of exponentials
is 0, which a NaN anywhere in the row makes NaN (TVM's max reduction may skip a NaN, the sum never
does). Norms use the reference's two-pass mean/variance in f32 (f64 for f64).

layer_norm has two rows: on llvm with a static normalized axis, our one-kernel LayerNorm
(kernels/norm.py: each row read from memory once, written once); otherwise the generic lowering
below, which FuseOps splits in two reduction kernels. rules/fused.py uses the same kernel for
add_layer_norm.
"""
from __future__ import annotations

from tvm import relax
from tvm.relax import op as R

from ..kernels import indexing as K
from ..kernels import norm
from ..table import TVM
from .common import acc_dtype, cast, dtype_of, own_kernel, scalar


def _shifted(x: relax.Expr, axis: int):
    """(x - max, its exp, the sum of the exp) over ``axis``; a fully masked row (max -inf) is
    shifted by 0, so its sum is 0."""
    dt = dtype_of(x)
    m = R.max(x, [axis], keepdims=True)
    shifted = R.subtract(x, R.where(R.equal(m, scalar(float("-inf"), dt)), scalar(0, dt), m))
    e = R.exp(shifted)
    return shifted, e, R.sum(e, [axis], keepdims=True)


def safe_softmax(x: relax.Expr, axis: int) -> relax.Expr:
    """exp(x - max) / sum over ``axis``, with all -inf rows giving zeros and NaN rows NaN."""
    dt = dtype_of(x)
    zero, one = scalar(0, dt), scalar(1, dt)
    _, e, s = _shifted(x, axis)
    dead = R.equal(s, zero)
    return R.where(dead, zero, R.divide(e, R.where(dead, one, s)))


def safe_log_softmax(x: relax.Expr, axis: int) -> relax.Expr:
    """x - max - log(sum(exp(x - max))) over ``axis``; all -inf rows stay -inf, NaN rows are NaN."""
    dt = dtype_of(x)
    zero, one = scalar(0, dt), scalar(1, dt)
    shifted, _, s = _shifted(x, axis)
    return R.subtract(shifted, R.log(R.where(R.equal(s, zero), one, s)))


def _softmax_row(fn):
    """A row computing ``fn`` (safe_softmax or safe_log_softmax) in the accumulation dtype."""
    def row(cx, node, x):
        dt = node.type.dtype.name
        return cx.emit(cast(fn(cast(x, acc_dtype(dt)), node.attrs["axis"]), dt))
    return row


TVM.register("softmax", _softmax_row(safe_softmax))
TVM.register("log_softmax", _softmax_row(safe_log_softmax))


def row_kernel_applies(cx, node) -> bool:
    """Whether our one-kernel LayerNorm (kernels/norm.py) takes this node: llvm, and a static
    normalized (last) axis, which its vectorized passes need."""
    size = node.type.shape[-1] if node.type.rank else None
    return cx.target_kind == "llvm" and isinstance(size, int) and size > 0


def layer_norm_kernel(cx, node, x, w, b, residual=None):
    """One call of kernels/norm.layer_norm_rows with its CPU schedule: layer_norm, or with a
    ``residual`` add_layer_norm."""
    dt = node.type.dtype.name
    out = cx.te(norm.layer_norm_rows, x, w, b, residual, eps=node.attrs["eps"], acc=acc_dtype(dt),
                out_dtype=dt, name=node.op)
    return own_kernel(cx, out, norm.RULE, norm.schedule_layer_norm)


TVM.register("layer_norm", layer_norm_kernel, when=row_kernel_applies, priority=10)


@TVM.register("layer_norm")
def layer_norm(cx, node, x, w, b):
    """The generic lowering: Relax reductions (two kernels after FuseOps)."""
    dt = node.type.dtype.name
    acc = acc_dtype(dt)
    xf = cast(x, acc)
    xc = cx.emit(R.subtract(xf, R.mean(xf, [-1], keepdims=True)))
    var = R.mean(R.multiply(xc, xc), [-1], keepdims=True)
    y = R.divide(xc, R.sqrt(R.add(var, scalar(node.attrs["eps"], acc))))
    return cx.emit(cast(R.add(R.multiply(y, cast(w, acc)), cast(b, acc)), dt))


@TVM.register("rms_norm")
def rms_norm(cx, node, x, w):
    dt = node.type.dtype.name
    acc = acc_dtype(dt)
    xf = cast(x, acc)
    ms = R.mean(R.multiply(xf, xf), [-1], keepdims=True)
    y = R.divide(xf, R.sqrt(R.add(ms, scalar(node.attrs["eps"], acc))))
    return cx.emit(cast(R.multiply(y, cast(w, acc)), dt))


@TVM.register("numel")
def numel(cx, node, x):
    axis = node.attrs["axis"]
    axes = range(node.inputs[0].type.rank) if axis is None else axis
    return cx.te(K.numel, x, list(axes), node.attrs["dtype"].name)
