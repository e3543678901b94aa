"""The llvm schedules on kernels big enough to get them, against NumPy.

The op-table tests run tiny shapes, which the ``small`` rule leaves unscheduled; these graphs have
symbolic sizes (run at sizes that are and are not multiples of the register tiles), static sizes
that are not multiples, transposed operands, fused epilogues, reductions and layout changes, so
every rule's code path computes something we check. One graph, one build. Then what the
schedules' speed depends on: alias information kept with symbolic dims, and the executable's
inputs passed without copies (or copied) yet never stale.
"""
from __future__ import annotations

import numpy as np
import pytest

import backends
import graphdsl as gd
from graphdsl import ops
from graphdsl.testing import assert_backends_agree


def _body(x, w, b, q, k, y, z):
    h = ops.gelu(x @ w + b)                                   # matmul, bias + erf-GELU epilogue
    scores = ops.softmax((q @ k.mT) * 0.125, axis=-1)         # transposed B: packed, symbolic columns
    return {
        "ffn": h,
        "attn": scores @ q,                                   # symbolic K axis
        "static": y @ z,                                      # static sizes, not tile multiples
        "f64": (y.astype("float64") @ z.astype("float64")).sum(axis=0),
        "norm": ops.layer_norm(h, ops.ones((48,)), ops.zeros((48,))),
        "layout": q.permute(0, 2, 1, 3).reshape(q.shape[0], q.shape[2], -1) * 2.0,
        "colsum": h.sum(axis=(0, 1)),
        "wgrad": (x.mT @ h).sum(axis=0),                      # x^T read in place, batch summed in K
        "wgrad_keep": (x.mT @ h).sum(axis=0, keepdims=True),
        "scores_sum": (q @ k.mT).sum(axis=(0, 1), keepdims=True),   # two batch axes summed
    }


@pytest.fixture(scope="module")
def compiled():
    graph = gd.trace(_body, x="f32[batch,seq,40]", w="f32[40,48]", b="f32[48]", q="f32[batch,3,seq,16]",
                     k="f32[batch,3,seq,16]", y="f32[37,29]", z="f32[29,53]")
    return graph, backends.compile(graph, "numpy"), backends.compile(graph, "llvm")


@pytest.mark.parametrize("batch,seq", [(2, 64), (3, 13), (1, 1)])
def test_scheduled_kernels_match_numpy(compiled, batch, seq):
    graph, ref, exe = compiled
    rng = np.random.default_rng(seq)
    feed = {k: rng.standard_normal(tuple(n.type.shape.evaluate({"batch": batch, "seq": seq}))).astype(np.float32)
            for k, n in graph.inputs.items()}
    want, got = ref(feed), exe(feed)
    for name in want:
        scale = float(np.max(np.abs(want[name]), initial=1.0))   # f32 sums in another order
        np.testing.assert_allclose(got[name], want[name], rtol=2e-5, atol=2e-6 * scale, err_msg=name)


def test_every_matmul_gets_the_matmul_rule():
    from backends.tvm.build import schedule_report
    from backends.tvm.lower import lower
    from backends.tvm.target import make_target
    graph = gd.trace(_body, x="f32[batch,seq,40]", w="f32[40,48]", b="f32[48]", q="f32[batch,3,seq,16]",
                     k="f32[batch,3,seq,16]", y="f32[37,29]", z="f32[29,53]")
    report = schedule_report(lower(graph).mod, make_target("llvm"))
    matmuls = {name: rule for name, rule in report.items() if "matmul" in name}
    assert len(matmuls) >= 4 and set(matmuls.values()) == {"matmul"}, report
    assert "none" not in report.values(), report


def test_gradients_over_symbolic_sizes():
    """A mean over symbolic dims divides by a run-time size, in the forward and the gradient (one
    build: the compile cache serves the second size)."""
    for batch, seq in [(2, 9), (3, 32)]:
        rng = np.random.default_rng(batch)
        feed = {"x": rng.standard_normal((batch, seq, 24)).astype(np.float32),
                "w": rng.standard_normal((24, 40)).astype(np.float32)}
        assert_backends_agree(lambda x, w: {"loss": ((x @ w) ** 2.0).mean()}, feed, targets=["llvm"], grad=True,
                              specs={"x": "f32[batch,seq,24]", "w": "f32[24,40]"}, rtol=2e-5, atol=1e-6)


def test_symbolic_kernels_keep_their_alias_information():
    """With symbolic dims Relax adds a shape function without ``tirx.noalias``; unless the build
    marks it, TVM tags every buffer access with one shared alias set and LLVM stores matmul
    accumulators back to memory at every step (half the speed). build.noalias_shape_funcs."""
    graph = gd.trace(lambda x, w: x @ w, x="f32[tokens,64]", w="f32[64,96]")
    exe = backends.compile(graph, "llvm", cache=False)
    llvm_ir = exe.vm_exec.mod.imports[0].inspect_source("ll")
    assert "shape_func" in llvm_ir and '"tvm-alias"' not in llvm_ir


def _aligned(arr: np.ndarray, offset: int = 0) -> np.ndarray:
    """A copy of ``arr`` whose data starts ``offset`` bytes past a 64-byte boundary."""
    buf = np.empty(arr.nbytes + 128, np.uint8)
    start = (-buf.ctypes.data) % 64 + offset
    out = buf[start:start + arr.nbytes].view(arr.dtype).reshape(arr.shape)
    out[...] = arr
    return out


@pytest.mark.parametrize("dtype,offset", [("f32", 0), ("f32", 16), ("bf16", 0)],
                         ids=["aligned", "unaligned", "bfloat16"])
def test_inputs_changed_in_place_are_seen_by_the_next_call(dtype, offset):
    """The executable passes 64-byte aligned arrays without a copy, copies the others (bfloat16
    through TVM, NumPy has no DLPack code for it) and remembers the arrays of the last call: a
    change made in place between two calls with the same arrays must still count."""
    graph = gd.trace(lambda x, w: x @ w, x=f"{dtype}[rows,40]", w=f"{dtype}[40,24]")
    exe, ref = backends.compile(graph, "llvm"), backends.compile(graph, "numpy")
    rng = np.random.default_rng(offset)
    np_dtype = graph.inputs["x"].type.dtype.np
    x = _aligned(rng.standard_normal((9, 40)).astype(np_dtype), offset)
    w = _aligned(rng.standard_normal((40, 24)).astype(np_dtype), offset)
    for _ in range(2):
        got, want = exe(x=x, w=w)["out"], ref(x=x, w=w)["out"]
        np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-2, atol=1e-2)
        x *= -2.0
        w[3] = 7.0


def test_bfloat16_constant_fill():
    """A bf16 kernel storing a constant (the ones a bf16 loss's gradient starts from) builds: TVM's
    bf16 legalization fails on a vectorized constant store, which the elementwise rule now avoids."""
    from graphdsl.ops.attention import attention

    def body(q, k, v):
        ones = ops.full(shape=(), value=1.0, dtype="float32").reshape(1, 1, 1, 1).broadcast_to(2, 2, 40, 64)
        out = attention(q, k, v, scale=0.125, causal=True)
        return {"ones": ones.astype("bfloat16"), "loss": out.astype("float32").sum()}
    t = "bf16[2,2,40,64]"
    graph = gd.grad(gd.trace(body, q=t, k=t, v=t), wrt=["q", "k", "v"], loss="loss")
    rng = np.random.default_rng(0)
    feed = {n: rng.standard_normal((2, 2, 40, 64)).astype(graph.inputs[n].type.dtype.np) for n in "qkv"}
    got, want = backends.compile(graph, "llvm")(feed), backends.compile(graph, "numpy")(feed)
    assert np.all(got["ones"].astype(np.float32) == 1)
    for name in ["grad/q", "grad/k", "grad/v"]:
        np.testing.assert_allclose(got[name].astype(np.float32), want[name].astype(np.float32),
                                   rtol=2e-2, atol=2e-2, err_msg=name)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_fills_of_infinity_and_nan_compile(dtype):
    """``full(-inf)`` (the masked half of an imported causal mask's bias) failed in TVM's
    legalization of R.full ("PrimType is not iterable"); non-finite fills are our own kernel."""
    dt = {"f32": "float32", "bf16": "bfloat16"}[dtype]

    def body(x):
        zero = ops.full(shape=(), value=0.0, dtype=dt)
        masked = ops.where(x > 0, zero, ops.full(shape=(), value=float("-inf"), dtype=dt))
        return {"masked": masked, "nan": ops.full(shape=(2, 3), value=float("nan"), dtype=dt),
                "inf": ops.full(shape=(4,), value=float("inf"), dtype=dt)}
    graph = gd.trace(body, x=f"{dtype}[5]")
    x = np.array([1.0, -1.0, 2.0, 0.0, np.nan], np.float32).astype(graph.inputs["x"].type.dtype.np)
    got, want = backends.compile(graph, "llvm")(x=x), backends.compile(graph, "numpy")(x=x)
    for k in want:
        np.testing.assert_array_equal(got[k].astype(np.float32), want[k].astype(np.float32), err_msg=k)


def test_float16_matmul_sums_in_float32_as_the_reference():
    """llvm summed a float16 matmul in float16: with K=64 its error was 8x numpy's (which sums in
    float32) and ONNX's float16 attention cases failed on llvm only. Both lowerings, plain and with
    a transposed operand read in place, now sum in float32 and round once."""
    graph = gd.trace(lambda a, b, c: {"plain": a @ b, "trans": a @ c.mT},
                     a="f16[4,64]", b="f16[64,8]", c="f16[8,64]")
    rng = np.random.default_rng(0)
    feed = {k: rng.standard_normal(tuple(n.type.shape)).astype(np.float16) for k, n in graph.inputs.items()}
    want, got = backends.compile(graph, "numpy")(feed), backends.compile(graph, "llvm")(feed)
    for k in want:
        np.testing.assert_allclose(got[k].astype(np.float32), want[k].astype(np.float32), rtol=0, atol=1e-3,
                                   err_msg=k)


def test_concat_along_a_symbolic_axis_feeds_fused_kernels():
    """Relax's concat wrote its symbolic length as its own sum (1 + n) and FuseTIR failed on the
    slices, softmaxes and sums that read it (fuzzer findings: "Inconsistent buffers ... mapped to
    the same relax var", "Parameter expression T.int64(1) expected ... n"); concat along a
    symbolic axis is now our kernel, with the lowering's one expression for the length."""
    import backends
    import graphdsl
    from graphdsl import ops

    def program(a, b, c):
        y = ops.abs(ops.concat([a, b], axis=0))
        tail = ops.slice(y, axis=0, start=1, stop=y.shape[0], step=1)
        head = ops.slice(y, axis=0, start=0, stop=1, step=1) + (c * 2.0).sum(axis=0, keepdims=True)
        return {"tail": tail, "head": head, "softmax": ops.softmax(y, axis=1),
                "three": ops.concat([a, c, a], axis=0) + 1.0}
    graph = graphdsl.trace(program, a="f32[1,4,2]", b="f32[n,4,2]", c="f32[n,4,2]")
    exe = backends.compile(graph, "llvm")
    rng = np.random.default_rng(3)
    for n in (5, 1, 0):
        feed = {"a": rng.standard_normal((1, 4, 2)).astype(np.float32),
                "b": rng.standard_normal((n, 4, 2)).astype(np.float32),
                "c": rng.standard_normal((n, 4, 2)).astype(np.float32)}
        y = np.abs(np.concatenate([feed["a"], feed["b"]]))
        want = {"tail": y[1:], "head": y[:1] + (feed["c"] * 2).sum(0, keepdims=True),
                "softmax": np.exp(y) / np.exp(y).sum(1, keepdims=True),
                "three": np.concatenate([feed["a"], feed["c"], feed["a"]]) + 1}
        got = exe(**feed)
        for name, value in want.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-6, err_msg=f"{name} at n={n}")


def test_a_chain_of_symbolic_concats_compiles_quickly():
    """Each concat inlined into the next made the index expressions double: eight of them kept
    TVM's simplifier busy for over half an hour (a fuzz run's hang). Its own kernel: seconds."""
    import backends
    import graphdsl
    from graphdsl import ops

    def program(a, b):
        y = a
        for k in range(8):
            y = ops.concat([y, b * float(k)], axis=0) + 1.0
        return {"y": ops.softmax(y, axis=1)}
    graph = graphdsl.trace(program, a="f32[n,3]", b="f32[m,3]")
    feed = {"a": np.ones((2, 3), np.float32), "b": np.arange(3, dtype=np.float32).reshape(1, 3)}
    got = backends.compile(graph, "llvm")(**feed)["y"]
    np.testing.assert_allclose(got, backends.compile(graph, "numpy")(**feed)["y"], rtol=1e-6, atol=1e-7)
