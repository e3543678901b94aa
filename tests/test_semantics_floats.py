"""The float edges of docs/semantics.md, one table row per edge, on every backend.

A row is an op applied to inputs at an edge (NaN, +-inf, rows of -inf, the f32 exp limit, rounding
ties) and the output the rule says the reference gives. The reference is checked against that
column, then every backend against the reference. Compiling is what costs time, so all rows go
into ONE graph (row ``name``'s inputs are ``name/x<i>``, its output ``name``), compiled once per
backend. NaN and infinities always match exactly (NaN == NaN); finite values as the row says:
``EXACT`` (==), ``BITS`` (the bit patterns: signed zeros, ties), ``ulps(n)`` (n float32 ulps: the
polynomial exp/erf/tanh), ``close(tol)`` (sums of many terms), ``NAN_MASK`` (only where the NaNs
and the zero rows are; the backends then compare with ``close(2e-5)``). Every backend follows
every row.
"""
from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np
import pytest

import backends
import graphdsl as gd
from graphdsl import ops
from graphdsl.ops.attention import attention_grad

BF16 = ml_dtypes.bfloat16
NAN, INF = np.nan, np.inf
TARGETS = ("llvm", "onnxruntime")


# -- how a row compares ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Tol:
    kind: str            # "exact", "bits", "ulps", "close" or "nan"
    amount: float = 0.0


EXACT, BITS, NAN_MASK = Tol("exact"), Tol("bits"), Tol("nan")


def ulps(n: int) -> Tol:
    return Tol("ulps", n)


def close(tol: float) -> Tol:
    return Tol("close", tol)


def _ordered(a: np.ndarray) -> np.ndarray:
    """float32 values as integers in the order of the floats (adjacent floats differ by 1)."""
    bits = a.astype(np.float32).view(np.int32).astype(np.int64)
    return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def assert_same(got, want, tol: Tol = EXACT, what: str = ""):
    got, want = np.asarray(got), np.asarray(want)
    assert (got.dtype, got.shape) == (want.dtype, want.shape), (what, got.dtype, got.shape, want.dtype, want.shape)
    if want.dtype.kind != "f" and want.dtype != BF16:
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    g, w = got.astype(np.float64), want.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=f"{what}: where NaN is\n{got}\n{want}")
    if tol.kind == "nan":
        np.testing.assert_array_equal(g[w == 0], 0, err_msg=f"{what}: the zero rows")
        return
    inf = np.isinf(w) | np.isinf(g)
    np.testing.assert_array_equal(g[inf], w[inf], err_msg=f"{what}: infinities\n{got}\n{want}")
    finite = np.isfinite(w)
    if tol.kind == "bits":
        ints = {2: np.uint16, 4: np.uint32, 8: np.uint64}[want.dtype.itemsize]
        np.testing.assert_array_equal(got[finite].view(ints), want[finite].view(ints), err_msg=f"{what}: bits")
    elif tol.kind == "ulps":
        off = np.abs(_ordered(got[finite]) - _ordered(want[finite]))
        assert off.size == 0 or off.max() <= tol.amount, f"{what}: {off.max()} ulps apart\n{got}\n{want}"
    elif tol.kind == "close":
        np.testing.assert_allclose(g[finite], w[finite], rtol=tol.amount, atol=tol.amount, err_msg=what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


# -- inputs at the edges --------------------------------------------------------------------------
def f32(*v):
    return np.array(v, np.float32)


def _exact_f32(fn, x):
    """fn in float64, rounded once to float32: the correctly rounded value."""
    with np.errstate(all="ignore"):
        return fn(np.asarray(x, np.float64)).astype(np.float32)


def _as(a: np.ndarray, *dtypes) -> np.ndarray:
    """``a`` cast through each of ``dtypes`` in turn, with NumPy's (and ml_dtypes') rounding."""
    with np.errstate(all="ignore"):
        for dt in dtypes:
            a = a.astype(dt)
    return a


def _sigmoid64(x):
    return 1.0 / (1.0 + np.exp(-x))


NAN_ROWS = np.array([[NAN, 1, 2, 3], [1, 2, 3, NAN], [1, NAN, 3, 2], [0, 1, 2, 3]], np.float32)
LSE = float(np.log(1 + np.exp(-1.0) + np.exp(-2.0) + np.exp(-3.0)))   # logsumexp([0, 1, 2, 3]) - 3
# a NaN row, a fully masked row, a +inf row, a partly masked row, a NaN among -inf
MASKED = np.array([[NAN, 1, 2, 3], [-INF] * 4, [INF, 0, 1, 2], [-INF, 0, -INF, 1], [NAN, -INF, -INF, -INF]],
                  np.float32)
_P = float(1 / (1 + np.exp(1.0)))
SOFTMAX = np.array([[NAN] * 4, [0] * 4, [NAN] * 4, [0, _P, 0, 1 - _P], [NAN] * 4], np.float32)
_L = float(np.log1p(np.exp(-1.0)))
LOG_SOFTMAX = np.array([[NAN] * 4, [-INF] * 4, [NAN] * 4, [-INF, -1 - _L, -INF, -_L], [NAN] * 4], np.float32)
EXP_X = f32(NAN, INF, -INF, 0, 88.5, 88.72, 88.7228317, 88.7228394, 89, -87.3, -88.5, -100, -103.9, -104, 1e-30)
SIGMOID_X = f32(NAN, INF, -INF, 0, 20, -20, -88.5, -100)

# rounding to bf16 / f16: ties to even, subnormals, overflow, NaN payloads; and random values
_rng = np.random.default_rng(0)
_NAN_BITS = np.array([0x7F800001, 0xFF800001, 0x7FC00001, 0x7FBFFFFF], np.uint32).view(np.float32)
BF16_X = np.concatenate([
    f32(1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 1 + 2**-8 + 2**-20, 3.3961776e38, 3.3895314e38, 3.4028235e38,
        1e-40, 9.2e-41, 2**-133 * 1.5, 0.0, -0.0, INF, -INF, NAN),
    _NAN_BITS, (_rng.standard_normal(256) * 50).astype(np.float32)])
F16_X = np.concatenate([
    f32(1 + 2**-11, 1 + 3 * 2**-11, 65504, 65519.99, 65520, -65520, 2**-25, 2**-25 * 1.01, 6e-8, 2**-24 * 1.5,
        0.0, -0.0, INF, NAN),
    (_rng.standard_normal(256) * 300).astype(np.float32)])
# float32 rounds these onto a tie of bf16 or f16: a second rounding picks the even side, wrongly
F64_X = np.array([1 + 2**-8 + 2**-30, 1 + 2**-11 + 2**-40, -(1 + 2**-8 + 2**-30), 1e300, -1e300, 1e-300,
                  3.3961775e38, NAN, INF], np.float64)
I32_X = np.array([257, 259, -257, 2**24 + 2**16 + 1, 2049, 65520, 70000], np.int32)
BF_A, BF_B, BF_C = ((_rng.standard_normal(64) * 4).astype(BF16) for _ in range(3))
H_A, H_B, H_C = ((_rng.standard_normal(64) * 4).astype(np.float16) for _ in range(3))


def _attention_inputs():
    q, k, v, g = (_rng.standard_normal((1, 2, 3, 4)).astype(np.float32) for _ in range(4))
    bias = np.zeros((1, 2, 3, 3), np.float32)
    bias[0, 0, 1, 2] = NAN           # row (0, 0, 1) holds a NaN score: NaN out
    bias[0, 1, 2, :] = -INF          # row (0, 1, 2) is fully masked: zeros out
    return q, k, v, bias, g


ATT = _attention_inputs()
Q_NAN = ATT[0].copy()
Q_NAN[0, 1, 1, 0] = NAN            # causal row 1 of head 1: NaN out
MASKED_NAN_BIAS = ATT[3].copy()
MASKED_NAN_BIAS[0, 1, 0] = f32(-INF, NAN, -INF)   # a NaN among hidden keys: NaN out
CAUSAL_BIAS = np.zeros((1, 2, 3, 3), np.float32)
CAUSAL_BIAS[0, 0, 0, 2] = NAN      # hidden by the causal mask: does not reach the output


def _attention_rule(q, k, v, bias, causal):
    """softmax(q k^T / 2 + bias) v in float64, by the rules: a row holding a NaN score is NaN,
    a fully masked row (every score -inf) is zeros, a NaN the causal mask hides is not seen."""
    s = q.astype(np.float64) @ np.swapaxes(k, -1, -2) * 0.5 + bias
    if causal:
        s = np.where(np.arange(3)[None, :] > np.arange(3)[:, None], -INF, s)
    m = s.max(-1, keepdims=True)
    e = np.exp(s - np.where(m == -INF, 0, m))
    total = e.sum(-1, keepdims=True)
    p = np.where(total == 0, 0, e / np.where(total == 0, 1, total))
    return (p @ v).astype(np.float32)


def _grad_rule(nan=(), zero=()):
    """An attention gradient [1, 2, 3, 4] by the rule: NaN at ``nan``, zeros at ``zero`` (the
    ones stand for finite values: NAN_MASK compares only the NaNs and the zeros)."""
    out = np.ones((1, 2, 3, 4), np.float32)
    for r in nan:
        out[r] = NAN
    for r in zero:
        out[r] = 0
    return out


# -- the table ------------------------------------------------------------------------------------
@dataclass
class Edge:
    name: str
    fn: object                      # fn(*tensors) -> tensor
    inputs: list                    # NumPy arrays (their dtypes and shapes are the graph's types)
    want: object                    # the reference's output, as the rule says
    tol: Tol = EXACT                # how the reference meets ``want``
    backend_tol: Tol | None = None  # how a backend meets the reference (default: ``tol``)


def _ce(**kw):
    return lambda x, t: ops.cross_entropy(x, t, **kw)


EDGES = [
    # NaN propagation, elementwise
    Edge("add", lambda a, b: a + b, [f32(NAN, 1, INF, INF), f32(1, NAN, -INF, INF)], f32(NAN, NAN, NAN, INF)),
    Edge("mul_by_zero", lambda x: x * 0.0, [f32(NAN, INF, -INF, 2)], f32(NAN, NAN, NAN, 0)),
    Edge("zero_over_x", lambda x: 0.0 / x, [f32(NAN, 0, 2, INF)], f32(NAN, NAN, 0, 0)),
    Edge("log", ops.log, [f32(NAN, -1, 0, INF, 1)], f32(NAN, NAN, -INF, INF, 0)),
    Edge("sqrt", ops.sqrt, [f32(NAN, -1, INF, 0, 4)], f32(NAN, NAN, INF, 0, 2)),
    Edge("exp", ops.exp, [EXP_X], _exact_f32(np.exp, EXP_X), ulps(1), ulps(2)),
    Edge("erf", ops.erf, [f32(NAN, INF, -INF, 0, 10, -10)], f32(NAN, 1, -1, 0, 1, -1)),
    Edge("tanh", ops.tanh, [f32(NAN, INF, -INF, 0, 20, -20)], f32(NAN, 1, -1, 0, 1, -1)),
    Edge("sigmoid", ops.sigmoid, [SIGMOID_X], _exact_f32(_sigmoid64, SIGMOID_X), ulps(1), ulps(3)),
    Edge("silu_tail", ops.silu, [f32(NAN, -20, -30)],
         _exact_f32(lambda x: x * _sigmoid64(x), f32(NAN, -20, -30)), ulps(1), ulps(3)),
    Edge("gelu", ops.gelu, [f32(NAN, INF, 0)], f32(NAN, INF, 0)),
    Edge("relu", ops.relu, [f32(NAN, -1, 2, -INF, INF)], f32(NAN, 0, 2, 0, INF)),
    Edge("maximum", ops.maximum, [f32(NAN, 0, NAN, 1), f32(0, NAN, NAN, 2)], f32(NAN, NAN, NAN, 2)),
    Edge("minimum", ops.minimum, [f32(NAN, 0, NAN, 1), f32(0, NAN, NAN, 2)], f32(NAN, NAN, NAN, 1)),
    Edge("maximum_scalar", lambda x: ops.maximum(x, 0.0), [f32(NAN, -1, 1)], f32(NAN, 0, 1)),
    Edge("equal_self", lambda x: ops.equal(x, x), [f32(NAN, 1, INF)], np.array([False, True, True])),
    Edge("not_equal_self", lambda x: ops.not_equal(x, x), [f32(NAN, 1, INF)], np.array([True, False, False])),
    Edge("not_equal", ops.not_equal, [f32(NAN, 1, 0), f32(0, NAN, 0)], np.array([True, True, False])),
    Edge("less_equal_self", lambda x: ops.less_equal(x, x), [f32(NAN, 1)], np.array([False, True])),
    Edge("greater_nan", ops.greater, [f32(NAN, 1), f32(0, NAN)], np.array([False, False])),
    Edge("cast_to_bool", lambda x: x.astype("bool"), [f32(NAN, 0, -0.0, 2)],
         np.array([True, False, False, True])),
    # NaN propagation, reductions
    Edge("sum", lambda x: x.sum(axis=-1), [NAN_ROWS], f32(NAN, NAN, NAN, 6)),
    Edge("mean", lambda x: x.mean(axis=-1), [NAN_ROWS], f32(NAN, NAN, NAN, 1.5)),
    Edge("max", lambda x: x.max(axis=-1), [NAN_ROWS], f32(NAN, NAN, NAN, 3)),
    Edge("min", lambda x: x.min(axis=-1), [NAN_ROWS], f32(NAN, NAN, NAN, 0)),
    Edge("argmax", lambda x: ops.argmax(x, axis=-1), [NAN_ROWS], np.array([0, 3, 1, 3], np.int64)),
    Edge("sum_overflow", lambda x: x.sum(), [f32(3e38, 3e38, -1)], np.array(INF, np.float32)),
    # softmax, log_softmax, cross-entropy: NaN rows are NaN, fully masked rows defined
    Edge("softmax", ops.softmax, [MASKED], SOFTMAX, ulps(1), ulps(4)),
    Edge("log_softmax", ops.log_softmax, [MASKED], LOG_SOFTMAX, ulps(1), ulps(4)),
    Edge("softmax_nan_among_masked", ops.softmax, [f32(-INF, NAN, -INF, -INF).reshape(1, 4)],
         f32(NAN, NAN, NAN, NAN).reshape(1, 4)),
    Edge("softmax_f16", lambda x: ops.softmax(x.astype("float16")).astype("float32"), [MASKED],
         _as(SOFTMAX, np.float16, np.float32), ulps(8192)),   # 8192 float32 ulps: one f16 ulp
    Edge("cross_entropy", _ce(), [NAN_ROWS, np.array([1, 2, 3, 0])], np.array(NAN, np.float32)),
    Edge("cross_entropy_rows", _ce(reduction="none"), [NAN_ROWS, np.array([1, 2, 3, 0])],
         f32(NAN, NAN, NAN, 3 + LSE), ulps(1), ulps(4)),
    Edge("cross_entropy_all_ignored", _ce(), [MASKED[:2], np.array([-100, -100])], np.array(0, np.float32)),
    Edge("cross_entropy_ignored_nan_row", _ce(reduction="sum"), [NAN_ROWS[[0, 3]], np.array([-100, 3])],
         np.array(LSE, np.float32), ulps(1), ulps(4)),
    Edge("cross_entropy_smoothed", _ce(label_smoothing=0.1, reduction="none"), [NAN_ROWS[:2], np.array([1, 2])],
         f32(NAN, NAN)),
    Edge("nll", lambda x, t: ops.nll(x, t), [NAN_ROWS, np.array([0, 3, 1, 0])], np.array(NAN, np.float32)),
    Edge("margin_ranking", lambda a, b, y: ops.margin_ranking(a, b, y, reduction="none"),
         [f32(NAN, 1, 1), f32(0, NAN, 2), f32(1, 1, -1)], f32(NAN, NAN, 0)),
    Edge("cosine_similarity", ops.cosine_similarity, [NAN_ROWS[:2], np.ones((2, 4), np.float32)], f32(NAN, NAN)),
    # the fused attention op: a NaN score makes its row NaN; a fully masked row is zeros
    Edge("attention", lambda q, k, v, b: ops.attention(q, k, v, b, scale=0.5), list(ATT[:4]),
         _attention_rule(*ATT[:4], causal=False), close(1e-5)),
    Edge("attention_nan_among_masked", lambda q, k, v, b: ops.attention(q, k, v, b, scale=0.5),
         [*ATT[:3], MASKED_NAN_BIAS], _attention_rule(*ATT[:3], MASKED_NAN_BIAS, causal=False), close(1e-5)),
    Edge("attention_causal", lambda q, k, v, b: ops.attention(q, k, v, b, scale=0.5, causal=True),
         [Q_NAN, ATT[1], ATT[2], CAUSAL_BIAS], _attention_rule(Q_NAN, ATT[1], ATT[2], CAUSAL_BIAS, causal=True),
         close(1e-5)),
    Edge("attention_grad_q", lambda q, k, v, b, g: attention_grad(q, k, v, b, g, wrt="q", scale=0.5),
         list(ATT), _grad_rule(nan=[(0, 0, 1)], zero=[(0, 1, 2)]), NAN_MASK),
    Edge("attention_grad_k", lambda q, k, v, b, g: attention_grad(q, k, v, b, g, wrt="k", scale=0.5),
         list(ATT), _grad_rule(nan=[(0, 0)]), NAN_MASK),   # every key of the NaN row's head
    Edge("attention_grad_v", lambda q, k, v, b, g: attention_grad(q, k, v, b, g, wrt="v", scale=0.5),
         list(ATT), _grad_rule(nan=[(0, 0)]), NAN_MASK),
    # casts round to nearest, ties to even, bit for bit
    Edge("f32_bf16_f32", lambda x: x.astype("bfloat16").astype("float32"), [BF16_X],
         _as(BF16_X, BF16, np.float32), BITS),
    Edge("f32_bf16", lambda x: x.astype("bfloat16"), [BF16_X], _as(BF16_X, BF16), BITS),
    Edge("f32_f16_f32", lambda x: x.astype("float16").astype("float32"), [F16_X],
         _as(F16_X, np.float16, np.float32), BITS),
    Edge("f32_f16", lambda x: x.astype("float16"), [F16_X], _as(F16_X, np.float16), BITS),
    Edge("f64_bf16", lambda x: x.astype("bfloat16").astype("float64"), [F64_X],
         _as(F64_X, BF16, np.float64), BITS),
    Edge("f64_f16", lambda x: x.astype("float16").astype("float64"), [F64_X],
         _as(F64_X, np.float16, np.float64), BITS),
    Edge("i32_bf16", lambda x: x.astype("bfloat16").astype("float32"), [I32_X],
         _as(I32_X, BF16, np.float32), BITS),
    Edge("i32_f16", lambda x: x.astype("float16").astype("float32"), [I32_X],
         _as(I32_X, np.float16, np.float32), BITS),
    Edge("bf16_f16", lambda x: x.astype("float16"), [BF_A], _as(BF_A, np.float16), BITS),
    Edge("bf16_chain", lambda a, b, c: (a + b) * c, [BF_A, BF_B, BF_C], (BF_A + BF_B) * BF_C, BITS),
    Edge("bf16_sqrt_chain", lambda a, c: ops.sqrt(ops.abs(a)) * c, [BF_A, BF_C],
         np.sqrt(np.abs(BF_A)) * BF_C, BITS),
    Edge("f16_chain", lambda a, b, c: (a + b) * c, [H_A, H_B, H_C], (H_A + H_B) * H_C, BITS),
    Edge("f32_i32_truncates", lambda x: x.astype("int32"), [f32(-1.7, 1.7, 2.5, -0.5)],
         np.array([-1, 1, 2, 0], np.int32)),
]
_BY_NAME = {e.name: e for e in EDGES}
assert len(_BY_NAME) == len(EDGES), "edge names must be unique"

_DTYPES = {"float32": "f32", "float64": "f64", "float16": "f16", "bfloat16": "bf16", "int32": "i32",
           "int64": "i64", "bool": "bool"}


def _type(a: np.ndarray) -> str:
    return f"{_DTYPES[str(a.dtype)]}[{','.join(map(str, a.shape))}]"


def _graph():
    """One graph computing every row: output ``name`` from inputs ``name/x<i>``; and its feed."""
    feed = {f"{e.name}/x{i}": a for e in EDGES for i, a in enumerate(e.inputs)}

    def body(**xs):
        return {e.name: e.fn(*[xs[f"{e.name}/x{i}"] for i in range(len(e.inputs))]) for e in EDGES}
    return gd.trace(body, name="float_edges", **{k: _type(a) for k, a in feed.items()}), feed


@pytest.fixture(scope="module")
def results():
    graph, feed = _graph()
    return {target: backends.compile(graph, target)(**feed) for target in ("numpy",) + TARGETS}


@pytest.mark.parametrize("name", list(_BY_NAME))
def test_reference_follows_the_rule(results, name):
    edge = _BY_NAME[name]
    assert_same(results["numpy"][name], np.asarray(edge.want), edge.tol, f"numpy {name}")


def _backend_cases():
    for target in TARGETS:
        for e in EDGES:
            yield pytest.param(e.name, target, id=f"{e.name}-{target}")


@pytest.mark.parametrize("name, target", list(_backend_cases()))
def test_backend_equals_the_reference(results, name, target):
    edge = _BY_NAME[name]
    tol = edge.backend_tol or edge.tol
    tol = close(2e-5) if tol == NAN_MASK else tol
    assert_same(results[target][name], results["numpy"][name], tol, f"{target} {name}")


# -- the gradient of a mean over a symbolic dim ---------------------------------------------------
@pytest.fixture(scope="module")
def mean_grad():
    return gd.grad(gd.trace(lambda x: {"loss": (x * x).mean()}, x="f32[b,4]"), wrt=["x"])


@pytest.mark.parametrize("target", TARGETS)
def test_mean_gradient_over_a_symbolic_dim(mean_grad, target):
    """The mean's 1/n is full(value=4*b): computed from the input's shape at run time."""
    ref = backends.compile(mean_grad, "numpy")
    exe = backends.compile(mean_grad, target)
    for b in (1, 3):
        x = np.arange(4 * b, dtype=np.float32).reshape(b, 4) - 2
        want, got = ref(x=x), exe(x=x)
        np.testing.assert_allclose(want["grad/x"], 2 * x / (4 * b), rtol=1e-6)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, err_msg=f"{target} b={b} {name}")


# -- the GPU attention kernels, in their emulated CPU form ----------------------------------------
def test_gpu_attention_kernels_keep_the_row_rules():
    """kernels/flash.py (forward, row statistics, dq, dk+dv) on a NaN row and a fully masked row."""
    def f(q, k, v, bias):
        out = ops.attention(q, k, v, bias, scale=0.5)
        return {"loss": (out * out).sum(), "out": out}
    spec = "f32[1,2,3,4]"
    g = gd.grad(gd.trace(f, q=spec, k=spec, v=spec, bias="f32[1,2,3,3]"), wrt=["q", "k", "v"])
    feed = dict(zip("qkv", ATT[:3]), bias=MASKED_NAN_BIAS)
    want = backends.compile(g, "numpy")(**feed)
    got = backends.compile(g, "llvm", gpu_kernels_on_cpu=True)(**feed)
    out = want["out"][0]
    assert np.isnan(out[0, 1]).all() and np.isnan(out[1, 0]).all() and (out[1, 2] == 0).all()
    for name in want:
        assert_same(got[name], want[name], close(2e-5), f"emulated gpu {name}")
