"""TVM rows for graphdsl/ops/random.py: uniform draws and dropout, from our counter-based RNG
kernels (kernels/random.py), which draw the reference's numbers from (seed, salt, index)."""
from __future__ import annotations

from ..kernels import random as RNG
from ..table import TVM
from .common import acc_dtype


@TVM.register("random_uniform")
def random_uniform(cx, node, seed):
    return cx.te(RNG.uniform, seed, cx.shape(node.attrs["shape"]), node.attrs["salt"])


@TVM.register("dropout")
def dropout(cx, node, x, seed):
    p = node.attrs["p"]
    if p == 0:
        return x
    return cx.te(RNG.dropout, x, seed, p, node.attrs["salt"], acc_dtype(node.type.dtype.name))
