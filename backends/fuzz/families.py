"""The generator families: one small function per op family, with the bound of what it makes.

Each family takes the generation state (generate.Gen) and returns a new ``Value`` (the tensor and
an interval holding its values) or None when no pool member fits. Families compute bounds by
interval arithmetic, conservatively, so generate.py can refuse anything that might overflow, and
they keep every operand inside its op's domain: ``exp`` of operands up to 6, ``log``, ``sqrt``,
``rsqrt``, ``pow`` bases and denominators at least 0.1 (otherwise ``abs(x) + 0.5`` is used).

``FAMILIES`` at the end is the declared list: name -> (function, weight).
"""
from __future__ import annotations

import math

import numpy as np

from graphdsl import dtypes as dt
from graphdsl import ops
from graphdsl.tracing import current_builder
from graphdsl.types import Shape, broadcast_shapes

from .pool import Gen, Value

FLOATS = (dt.float32, dt.float32, dt.float16, dt.bfloat16, dt.float64)


def _mono(fn, lo, hi):
    return float(fn(lo)), float(fn(hi))


def _abs_bound(v: Value) -> tuple[float, float]:
    return (0.0 if v.lo <= 0 <= v.hi else min(abs(v.lo), abs(v.hi))), v.mag


def positive(v: Value, at_least: float = 0.1) -> Value:
    """``v`` itself when its bound is >= ``at_least``, else ``abs(v) + 0.5`` (a new node)."""
    if v.lo >= at_least:
        return v
    return Value(ops.abs(v.t) + 0.5, 0.5, v.mag + 0.5)


# -- elementwise unary -------------------------------------------------------------------------
UNARY = {  # name -> (op call, bound of the result from the operand's [lo, hi])
    "neg": (ops.neg, lambda lo, hi: (-hi, -lo)),
    "tanh": (ops.tanh, lambda lo, hi: _mono(math.tanh, lo, hi)),
    "sigmoid": (ops.sigmoid, lambda lo, hi: (0.0, 1.0)),
    "erf": (ops.erf, lambda lo, hi: _mono(math.erf, lo, hi)),
    "sin": (ops.sin, lambda lo, hi: (-1.0, 1.0)),
    "cos": (ops.cos, lambda lo, hi: (-1.0, 1.0)),
    "relu": (ops.relu, lambda lo, hi: (max(lo, 0.0), max(hi, 0.0))),
    "silu": (ops.silu, lambda lo, hi: (-0.28, max(hi, 0.0))),
    "gelu": (lambda x: ops.gelu(x, approximate="none"), lambda lo, hi: (-0.17, max(hi, 0.0))),
    "gelu_tanh": (lambda x: ops.gelu(x, approximate="tanh"), lambda lo, hi: (-0.17, max(hi, 0.0))),
}
POSITIVE_UNARY = {
    "log": (ops.log, lambda lo, hi: _mono(math.log, lo, hi)),
    "sqrt": (ops.sqrt, lambda lo, hi: _mono(math.sqrt, lo, hi)),
    "rsqrt": (ops.rsqrt, lambda lo, hi: (1 / math.sqrt(hi), 1 / math.sqrt(lo))),
}


def unary(g: Gen) -> Value | None:
    v = g.pick()
    if v is None:
        return None
    kind = g.choice(["plain"] * 6 + ["abs", "exp", "positive"])
    if kind == "abs":
        lo, hi = _abs_bound(v)
        return Value(ops.abs(v.t), lo, hi)
    if kind == "exp":
        if v.hi > 6.0:
            return None
        return Value(ops.exp(v.t), math.exp(v.lo), math.exp(v.hi))
    table = POSITIVE_UNARY if kind == "positive" else UNARY
    fn, bound = table[g.choice(sorted(table))]
    if kind == "positive":
        v = positive(v)
    return Value(fn(v.t), *bound(v.lo, v.hi))


# -- elementwise binary with broadcasting -------------------------------------------------------
def broadcast_variant(g: Gen, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape that broadcasts against ``shape``: itself, a suffix, or some dims set to 1."""
    kind = g.choice(["same", "suffix", "ones", "scalar"])
    if kind == "suffix" and shape:
        return shape[int(g.rng.integers(len(shape))):]
    if kind == "ones":
        return tuple(1 if g.chance(0.5) else d for d in shape)
    if kind == "scalar":
        return ()
    return shape


def partner(g: Gen, a: Value) -> Value:
    """A second operand for ``a``: a pool member whose shape broadcasts with a's, or a fresh input."""
    def fits(v):
        return v is not a and v.dtype == a.dtype and broadcasts_to(v.shape, a.shape)
    other = g.pick(fits) if g.chance(0.5) else None
    if other is not None:
        return other
    if g.chance(0.2):
        c = float(np.round(g.rng.uniform(-2, 2), 2))
        return Value(current_builder().constant(np.asarray(c, a.dtype.np)), c, c)
    return g.input(broadcast_variant(g, a.shape), a.dtype)


def _products(a: Value, b: Value) -> tuple[float, float]:
    p = [a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi]
    return min(p), max(p)


def binary(g: Gen) -> Value | None:
    a = g.pick()
    if a is None:
        return None
    b = partner(g, a)
    if g.chance(0.5):
        a, b = b, a
    op = g.choice(["add", "sub", "mul", "div", "maximum", "minimum", "pow"])
    if op == "add":
        return Value(a.t + b.t, a.lo + b.lo, a.hi + b.hi)
    if op == "sub":
        return Value(a.t - b.t, a.lo - b.hi, a.hi - b.lo)
    if op == "mul":
        return Value(a.t * b.t, *_products(a, b))
    if op == "div":
        b = positive(b, 0.25)
        inv = Value(b.t, 1 / b.hi, 1 / b.lo)
        return Value(a.t / b.t, *_products(a, inv))
    if op == "maximum":
        return Value(ops.maximum(a.t, b.t), max(a.lo, b.lo), max(a.hi, b.hi))
    if op == "minimum":
        return Value(ops.minimum(a.t, b.t), min(a.lo, b.lo), min(a.hi, b.hi))
    base = positive(a)
    e = float(g.choice([2.0, 0.5, 3.0, -1.0, 1.5]))
    bounds = [base.lo ** e, base.hi ** e]
    return Value(base.t ** e, min(bounds), max(bounds))


# -- matmul ------------------------------------------------------------------------------------
def matmul(g: Gen) -> Value | None:
    a = g.pick(lambda v: len(v.shape) >= 2)
    if a is None:
        return None
    k, k_size = a.shape[-1], a.sizes[-1]
    b = g.pick(lambda v: v is not a and v.dtype == a.dtype and len(v.shape) >= 2 and v.shape[-2] == k)
    if b is None or g.chance(0.5):
        batch = a.shape[:-2][int(g.rng.integers(len(a.shape) - 1)):]
        n = int(g.choice((1, 2, 3, 4, 8)))
        if g.chance(0.3):   # a weight stored transposed: a @ w^T
            w = g.input(batch + (n, k), a.dtype)
            b = Value(w.t.mT, w.lo, w.hi)
        else:
            b = g.input(batch + (k, n), a.dtype)
    return Value(a.t @ b.t, -k_size * a.mag * b.mag, k_size * a.mag * b.mag)


# -- reductions, softmax, norms ----------------------------------------------------------------
def reduce(g: Gen) -> Value | None:
    v = g.pick(lambda v: len(v.shape) >= 1)
    if v is None:
        return None
    rank = len(v.shape)
    axis = int(g.rng.integers(-rank, rank))
    if rank >= 2 and g.chance(0.2):
        axis = tuple(sorted({axis % rank, int(g.rng.integers(rank))}))
    elif g.chance(0.1):
        axis = None
    keepdims = g.chance(0.5)
    op = g.choice(["sum", "mean", "max", "min"])
    count = int(np.prod([v.sizes[a] for a in ((axis,) if isinstance(axis, int) else axis or range(rank))]))
    t = getattr(ops, op)(v.t, axis=axis, keepdims=keepdims)
    if op == "sum":
        return Value(t, count * min(v.lo, 0.0) + (v.lo if v.lo > 0 else 0.0),
                     count * max(v.hi, 0.0) + (v.hi if v.hi < 0 else 0.0))
    return Value(t, v.lo, v.hi)


def softmax(g: Gen) -> Value | None:
    v = g.pick(lambda v: len(v.shape) >= 1)
    if v is None:
        return None
    axis = int(g.rng.integers(-len(v.shape), len(v.shape)))
    if g.chance(0.7):
        return Value(ops.softmax(v.t, axis=axis), 0.0, 1.0)
    n = v.sizes[axis]
    return Value(ops.log_softmax(v.t, axis=axis), v.lo - v.hi - math.log(max(n, 1)), 0.0)


def norm(g: Gen) -> Value | None:
    v = g.pick(lambda v: len(v.shape) >= 1 and v.sizes[-1] >= 2)
    if v is None:
        return None
    n = v.shape[-1]
    w = g.input((n,), v.dtype)
    bound = 2.0 * math.sqrt(v.sizes[-1])
    if g.chance(0.5):
        b = g.input((n,), v.dtype)
        return Value(ops.layer_norm(v.t, w.t, b.t, eps=1e-5), -bound - 2.0, bound + 2.0)
    return Value(ops.rms_norm(v.t, w.t, eps=1e-6), -bound, bound)


# -- shape ops ---------------------------------------------------------------------------------
def reshape(g: Gen) -> Value | None:
    v = g.pick(lambda v: len(v.shape) >= 1)
    if v is None:
        return None
    s = list(v.shape)
    i = int(g.rng.integers(len(s)))
    kind = g.choice(["merge", "split", "flatten", "unsqueeze"])
    if kind == "merge" and len(s) >= 2:
        i = min(i, len(s) - 2)
        s[i:i + 2] = [s[i] * s[i + 1]]
    elif kind == "split" and isinstance(s[i], int) and s[i] in (4, 6, 8):
        s[i:i + 1] = [2, s[i] // 2]
    elif kind == "unsqueeze":
        return Value(ops.unsqueeze(v.t, axis=int(g.rng.integers(len(s) + 1))), v.lo, v.hi)
    else:
        s = [-1]
    return Value(ops.reshape(v.t, shape=tuple(s)), v.lo, v.hi)


def transpose(g: Gen) -> Value | None:
    v = g.pick(lambda v: len(v.shape) >= 2)
    if v is None:
        return None
    perm = tuple(int(p) for p in g.rng.permutation(len(v.shape)))
    return Value(ops.transpose(v.t, perm=perm), v.lo, v.hi)


def broadcast(g: Gen) -> Value | None:
    v = g.pick(lambda v: len(v.shape) <= 3)
    if v is None:
        return None
    shape = tuple(int(g.choice((2, 3))) if isinstance(d, int) and d == 1 else d for d in v.shape)
    if shape == v.shape:
        shape = (int(g.choice((2, 3))),) + shape
    return Value(ops.broadcast_to(v.t, shape=shape), v.lo, v.hi)


def slice_(g: Gen) -> Value | None:
    v = g.pick(lambda v: any(isinstance(d, int) and d >= 2 for d in v.shape))
    if v is None:
        return None
    axis = g.choice([i for i, d in enumerate(v.shape) if isinstance(d, int) and d >= 2])
    n = v.shape[axis]
    start = int(g.rng.integers(n - 1))
    stop = int(g.rng.integers(start + 1, n + 1))
    step = 2 if stop - start >= 3 and g.chance(0.3) else 1
    return Value(ops.slice(v.t, axis=axis, start=start, stop=stop, step=step), v.lo, v.hi)


def concat(g: Gen) -> Value | None:
    a = g.pick(lambda v: len(v.shape) >= 1)
    if a is None:
        return None
    axis = int(g.rng.integers(len(a.shape)))
    def fits(v):
        return (v is not a and v.dtype == a.dtype and len(v.shape) == len(a.shape)
                and all(x == y for i, (x, y) in enumerate(zip(v.shape, a.shape)) if i != axis))
    b = g.pick(fits)
    if b is None:
        shape = list(a.shape)
        shape[axis] = int(g.choice((1, 2, 3)))
        b = g.input(shape, a.dtype)
    parts = [a, b] if g.chance(0.5) else [b, a]
    return Value(ops.concat([p.t for p in parts], axis=axis), min(a.lo, b.lo), max(a.hi, b.hi))


# -- masks and casts ---------------------------------------------------------------------------
def broadcasts_to(small: tuple, shape: tuple) -> bool:
    """``small`` broadcasts to exactly ``shape`` (symbolic dims only against 1 or themselves)."""
    out = broadcast_shapes(Shape(small), Shape(shape))
    return out is not None and tuple(out) == tuple(shape)


def mask_for(g: Gen, shape: tuple[int, ...]):
    """A bool tensor broadcasting to ``shape`` that compares graph inputs only (exact everywhere)."""
    src = g.pick(lambda v: v.is_input and broadcasts_to(v.shape, shape))
    if src is None or g.chance(0.4):
        src = g.input(broadcast_variant(g, shape), dt.float32)
    c = float(np.round(g.rng.uniform(-1, 1), 2))
    cmp = g.choice(["greater", "less", "greater_equal", "less_equal"])
    m = getattr(ops, cmp)(src.t, c)
    if g.chance(0.2):
        m = ops.logical_not(m)
    return m


def where(g: Gen) -> Value | None:
    a = g.pick()
    if a is None:
        return None
    b = partner(g, a)
    m = mask_for(g, a.shape)
    return Value(ops.where(m, a.t, b.t), min(a.lo, b.lo), max(a.hi, b.hi))


def cast(g: Gen) -> Value | None:
    v = g.pick()
    if v is None:
        return None
    to = g.choice([d for d in FLOATS if d != v.dtype])
    return Value(ops.cast(v.t, dtype=to), v.lo, v.hi)


# -- attention written out, in the variants the passes should fuse ------------------------------
def attention(g: Gen) -> Value | None:
    """softmax(q @ k^T * scale + mask) @ v, written one of many ways, from fresh inputs."""
    b, h = int(g.choice((1, 2))), int(g.choice((1, 2)))
    s, t, d = int(g.choice((1, 2, 3, 4, 5))), int(g.choice((1, 2, 3, 4, 5))), int(g.choice((2, 4, 8)))
    if g.chance(0.3):   # one sequence for q, k and v: self-attention (causal masks need s == t)
        t = s
    dtype = g.choice([dt.float32, dt.float32, dt.float32, dt.float64])
    if g.chance(0.4):   # heads split from [b, s, h*d]: reshape, then permute
        x = g.input((b, s, h * d), dtype)
        q = ops.transpose(ops.reshape(x.t, shape=(b, s, h, d)), perm=(0, 2, 1, 3))
    else:
        q = g.input((b, h, s, d), dtype).t
    k = g.input((b, h, t, d), dtype).t
    v = g.input((b, h, t, d), dtype).t
    kt = k.mT if g.chance(0.5) else ops.transpose(k, perm=(0, 1, 3, 2))
    scale = 1.0 / math.sqrt(d)
    way = g.choice(["mul", "div", "q"])
    if way == "mul":
        scores = (q @ kt) * scale
    elif way == "div":
        scores = (q @ kt) / math.sqrt(d)
    else:
        scores = (q * scale) @ kt
    mask = g.choice(["none", "bias", "causal", "padding", "additive"])
    if mask == "bias":
        scores = scores + g.input((1, 1, s, t), dtype).t
    elif mask == "causal" and s == t:
        tril = current_builder().constant(np.tril(np.ones((s, t), dtype=bool)))
        scores = ops.where(tril, scores, float("-inf"))
    elif mask in ("padding", "additive"):
        keep = g.input((b, 1, 1, t), dt.bool_, 0.0, 0.7).t
        if mask == "padding":
            scores = ops.where(keep, scores, float("-inf"))
        else:
            scores = scores + (1.0 - ops.cast(keep, dtype=dtype)) * -10000.0
    out = ops.softmax(scores, axis=-1) @ v
    if g.chance(0.4):   # heads merged back: permute, reshape to [b, s, h*d]
        out = ops.reshape(ops.transpose(out, perm=(0, 2, 1, 3)), shape=(b, s, h * d))
    return Value(out, -2.0, 2.0)


FAMILIES = {
    "unary": (unary, 4.0),
    "binary": (binary, 4.0),
    "matmul": (matmul, 2.0),
    "reduce": (reduce, 2.0),
    "softmax": (softmax, 1.5),
    "norm": (norm, 1.0),
    "reshape": (reshape, 1.0),
    "transpose": (transpose, 1.0),
    "broadcast": (broadcast, 0.7),
    "slice": (slice_, 1.0),
    "concat": (concat, 1.0),
    "where": (where, 1.0),
    "cast": (cast, 1.0),
    "attention": (attention, 0.8),
}
