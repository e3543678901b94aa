"""The differential fuzzer (backends/fuzz): its generator, tolerances, minimizer and reproducers,
then a fixed-seed slice of fuzzing on numpy, llvm and onnxruntime that must find nothing new.

The CI slice runs for about 100 s in all (forward, after the passes, gradients). A finding there
is a bug in a backend or a pass: its minimized reproducer lands in a temporary directory whose
path the failure message names. ``KNOWN_OPEN`` lists bugs the fuzzer found that are not fixed
yet (each with its reproducer); remove an entry when its bug is fixed.
"""
import json
import math

import numpy as np
import pytest

import backends
import graphdsl
from backends import fuzz
from backends.fuzz import tolerance
from backends.fuzz.generate import LIMIT
from graphdsl import ops

# Open bugs: (kind, target, a word of the reason or an op of the minimized graph, a dtype in it)
KNOWN_OPEN = [
]


def unknown(findings):
    """The findings that are not known open bugs."""
    return [f for f in findings
            if not any(f["kind"] == k and f["target"] == t and (s in f["reason"] or s in f["ops"])
                       and (d is None or d in f["dtypes"]) for k, t, s, d in KNOWN_OPEN)]


# -- the generator -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(12))
def test_generated_graphs_verify_and_stay_finite(seed):
    """Every graph verifies, and its numpy values are finite and inside the generator's bound."""
    graph, inputs = fuzz.generate_batch((seed, 0), 3, grad=seed % 2 == 1)
    graph.verify()
    assert graph.inputs and set(inputs) == set(graph.inputs)
    out = backends.compile(graph, "numpy")(inputs)
    for name, value in out.items():
        v = np.asarray(value).astype(np.float64)
        assert np.all(np.isfinite(v)), f"seed {seed}: {name} is not finite"
        assert np.all(np.abs(v) <= LIMIT * (1 if name != "loss" else v.size + 64 * LIMIT)), name
    if seed % 2 == 1:
        assert graph.outputs["loss"].type.rank == 0


def test_same_seed_same_graph_and_inputs():
    a, xa = fuzz.generate_batch((7, 3), 4)
    b, xb = fuzz.generate_batch((7, 3), 4)
    c, _ = fuzz.generate_batch((7, 4), 4)
    assert a.structural_hash() == b.structural_hash() != c.structural_hash()
    assert xa.keys() == xb.keys() and all(np.array_equal(xa[k], xb[k]) for k in xa)


def test_symbolic_batches_draw_inputs_at_one_seeded_size():
    from backends.fuzz.generate import SYMBOL_SIZES
    symbolic = 0
    for i in range(30):
        graph, inputs = fuzz.generate_batch((2, i), 3)
        symbols = {s for n in graph.inputs.values() for s in n.type.shape.symbols}
        if not symbols:
            continue
        symbolic += 1
        assert symbols == {"n"}
        sizes = {v.shape[0] for k, v in inputs.items() if graph.inputs[k].type.shape[:1] == (graphdsl.Dim("n"),)}
        assert len(sizes) == 1 and sizes <= set(SYMBOL_SIZES)
        n = sizes.pop()
        for k, v in inputs.items():
            assert v.shape == graph.inputs[k].type.shape.evaluate({"n": n}), k
    assert symbolic >= 3


def test_minimized_graphs_keep_an_input_that_binds_each_symbol():
    from backends.fuzz.minimize import rebuild
    g = graphdsl.trace(lambda b, a: {"o": ops.sum(a), "p": ops.sum(b)}, b="f32[n]", a="f32[3*n]")
    small = rebuild(g, {}, ["o"])
    assert list(small.inputs) == ["b", "a"] and list(small.outputs) == ["o"]
    x = {"b": np.ones(2, np.float32), "a": np.arange(6, dtype=np.float32)}
    assert backends.compile(small, "numpy")(x)["o"] == 15.0


def test_families_cover_the_op_groups():
    seen = set()
    for i in range(40):
        seen |= set(fuzz.generate_batch((0, i), 4)[0].op_counts())
    for op in ("add", "div", "exp", "matmul", "sum", "max", "softmax", "log_softmax", "layer_norm",
               "rms_norm", "reshape", "transpose", "broadcast_to", "slice", "concat", "where", "cast"):
        assert op in seen, op


# -- tolerances ------------------------------------------------------------------------------
def test_tolerance_formula():
    """sqrt(K) * (ATOL[d] * max(1, M) + RTOL[d] * |want|), with d the least precise dtype seen."""
    def f(x):
        low = ops.cast(ops.cast(x, dtype="bfloat16"), dtype="float32")
        return {"y": ops.sum(low * 3.0, axis=1), "z": x * 2.0}
    g = graphdsl.trace(f, x="f32[2,16]")
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 16)
    values = {n: tolerance.magnitude(v) for n, v in _all_values(g, {"x": x}).items()}
    ty = fuzz.tolerance_for(g, g.outputs["y"], values)
    assert (ty.dtype, ty.reduction) == ("bfloat16", 16)
    assert ty.magnitude == pytest.approx(float(np.abs(3 * x.sum(1)).max()), rel=1e-2)
    assert ty.atol == pytest.approx(4 * fuzz.TABLE["bfloat16"][0] * ty.magnitude)
    assert ty.rtol == pytest.approx(4 * fuzz.TABLE["bfloat16"][1])
    tz = fuzz.tolerance_for(g, g.outputs["z"], values)
    assert (tz.dtype, tz.reduction, tz.atol) == ("float32", 1, fuzz.TABLE["float32"][0] * 2.0)
    want = np.array([1.0, -2.0, np.nan, np.inf], np.float32)
    assert tolerance.disagreement(want + np.float32(1e-5) * np.array([1, 1, 0, 0], np.float32), want, tz) is None
    worst = tolerance.disagreement(want + np.array([0, 1e-3, 0, 0], np.float32), want, tz)
    assert worst == pytest.approx(1e-3 / (tz.atol + tz.rtol * 2.0), rel=1e-3)
    assert tolerance.disagreement(np.array([1.0, np.nan], np.float32), np.array([1.0, 2.0], np.float32), tz) == math.inf
    assert tolerance.disagreement(np.array([1, 2]), np.array([1, 3]), None) == math.inf


def _all_values(graph, inputs):
    from backends.fuzz.run import reference
    return reference(graph, inputs)[1]


# -- the minimizer, on a synthetic bug ---------------------------------------------------------
BUGGY_OP = "softmax"


def fake_compile(graph):
    """A "target" that is numpy, except that it adds 1 to every float output of a graph holding
    a softmax: a synthetic bug whose minimal reproducer is one softmax node."""
    exe = backends.compile(graph, "numpy")
    buggy = any(n.op == BUGGY_OP for n in graph.nodes)

    def run(inputs):
        out = exe(inputs)
        return {k: (v + np.asarray(1, v.dtype) if buggy and graph.outputs[k].type.dtype.is_float else v)
                for k, v in out.items()}
    return run


FAKE = {"fake": fake_compile}


def test_minimizer_shrinks_a_synthetic_bug_to_its_op():
    def f(x, y):
        a = ops.exp(ops.softmax(x * 2.0, axis=0) * y)
        return {"b": ops.sum(a, axis=1), "c": ops.relu(y) + 1.0, "d": ops.tanh(x @ ops.transpose(y, perm=(1, 0)))}
    g = graphdsl.trace(f, x="f32[3,4]", y="f32[3,4]")
    rng = np.random.default_rng(0)
    x = {k: rng.uniform(-1, 1, (3, 4)).astype(np.float32) for k in ("x", "y")}
    found = fuzz.check(g, x, ["numpy", "fake"], compilers=FAKE)
    assert [(f.kind, f.target, f.outputs) for f in found] == [("mismatch", "fake", ["b", "c", "d"])]
    from backends.fuzz.session import shrink
    small, inputs, final = shrink(g, x, found[0], FAKE, 40)
    assert small.op_counts() == {"softmax": 1}
    assert final.kind == "mismatch" and final.worst > 1
    (name, out), = small.outputs.items()
    got = fake_compile(small)(inputs)[name]
    z = inputs[out.inputs[0].name].astype(np.float64)
    np.testing.assert_allclose(got, np.exp(z) / np.exp(z).sum(axis=0) + 1, rtol=1e-6)


def test_fuzz_loop_finds_minimizes_and_saves_the_synthetic_bug(tmp_path):
    report = fuzz.fuzz(seconds=60, targets=["numpy", "fake"], seed=3, max_graphs=80, batch=4,
                       out_dir=tmp_path, compilers=FAKE)
    assert report.graphs == 80 and report.disagreements >= 1
    for entry in report.findings:
        assert entry["kind"] == "mismatch" and entry["ops"] == {"softmax": 1}, entry
        rep = fuzz.load(entry["file"])
        assert rep.doc["status"] == "open" and rep.doc["fuzzer"]["seed"] == 3
        assert [f.kind for f in rep.replay(compilers=FAKE)] == ["mismatch"]
        assert rep.replay(compilers={"fake": lambda g: backends.compile(g, "numpy")}) == []
    doc = report.to_dict()
    assert doc["graphs"] == 80 and doc["disagreements"] == len(doc["findings"])


def test_reproducer_round_trip_is_exact(tmp_path):
    g = graphdsl.trace(lambda x, y: {"o": ops.softmax(x, axis=-1) + ops.cast(y, dtype="float32")},
                       x="f32[2,3]", y="bf16[2,3]")
    rng = np.random.default_rng(1)
    inputs = {"x": rng.uniform(-2, 2, (2, 3)).astype(np.float32),
              "y": rng.uniform(-2, 2, (2, 3)).astype(g.inputs["y"].type.dtype.np)}
    finding = fuzz.Finding("mismatch", "fake", "traced", "o is off", outputs=["o"], worst=2.0,
                           difference={"o": {"worst": 2.0}})
    path = fuzz.save(tmp_path, g, inputs, finding, {"seed": 5})
    rep = fuzz.load(path)
    assert rep.graph.structural_hash() == g.structural_hash()
    assert all(rep.inputs[k].dtype == v.dtype and np.array_equal(rep.inputs[k], v) for k, v in inputs.items())
    doc = json.loads(path.read_text())
    assert (doc["kind"], doc["target"], doc["stage"], doc["status"]) == ("mismatch", "fake", "traced", "open")
    assert [f.kind for f in rep.replay(compilers=FAKE)] == ["mismatch"]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(graphdsl.GraphDSLError, match="not a fuzz reproducer"):
        fuzz.load(tmp_path / "bad.json")


# -- the CI slice: fixed seeds, every real target, about 100 s ---------------------------------
TARGETS = ["numpy", "llvm", "onnxruntime"]


@pytest.mark.parametrize("mode, seed, seconds", [("forward", 101, 40), ("passes", 202, 35), ("grad", 303, 25)])
def test_fuzz_slice_finds_no_new_disagreement(mode, seed, seconds, tmp_path):
    report = fuzz.fuzz(seconds=seconds, targets=TARGETS, passes=mode == "passes", grad=mode == "grad",
                       seed=seed, out_dir=tmp_path)
    assert report.graphs >= 6
    new = unknown(report.findings)
    assert not new, "the fuzzer found disagreements:\n" + "\n".join(
        f"  {f['reason']} ({f['nodes']} nodes: {f['ops']}): {f['file']}" for f in new)


# -- the command -----------------------------------------------------------------------------
def test_fuzz_command_json_and_usage_errors(tmp_path):
    from click.testing import CliRunner
    from graphdsl.cli import main
    run = lambda *args: CliRunner().invoke(main, ["fuzz", *args], env={"GRAPHDSL_PROGRESS": "0"})  # noqa: E731
    out = run("--targets", "numpy", "--passes", "--max-graphs", "12", "--seed", "5", "--json",
              "--out", str(tmp_path))
    doc = json.loads(out.output)
    assert out.exit_code == (1 if doc["disagreements"] else 0), out.output
    assert doc["graphs"] == 12 and doc["seed"] == 5 and doc["targets"] == ["numpy"]
    assert doc["disagreements"] == len(doc["findings"]) and not unknown(doc["findings"])
    for entry in doc["findings"]:
        assert set(entry) >= {"kind", "targets", "file", "nodes"} and entry["file"].startswith(str(tmp_path))
    bad = run("--targets", "numpy,tpu")
    assert bad.exit_code == 2 and "unknown target 'tpu'" in bad.output
    alone = run("--targets", "numpy")
    assert alone.exit_code == 2 and "name a target to compare" in alone.output
