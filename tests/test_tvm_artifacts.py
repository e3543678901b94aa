"""Compiled TVM modules as artifacts: save, load in a fresh process without compiling; the compile
cache (in-process and on disk) keyed by graph, target and library versions; run-time checks."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import backends
import graphdsl as gd
from graphdsl import ops
from graphdsl.errors import GraphDSLError, InputError, TargetError


def _model(x, w, ids, labels):
    h = ops.take(w, ids, axis=0) + x[:, 2:, :]                # index-checked take, symbolic slice
    logits = h @ w.mT
    return {"logits": logits, "loss": ops.cross_entropy(logits, labels)}


GRAPH = gd.trace(_model, x="f32[batch,seq,8]", w="f32[5,8]", ids="i64[batch,seq-2]", labels="i64[batch,seq-2]")


def _feed(batch=2, seq=6, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch, seq, 8)).astype(np.float32),
            "w": rng.standard_normal((5, 8)).astype(np.float32),
            "ids": rng.integers(0, 5, (batch, seq - 2)), "labels": rng.integers(0, 5, (batch, seq - 2))}


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    from backends.tvm import cache
    monkeypatch.setenv("GRAPHDSL_CACHE_DIR", str(tmp_path / "cache"))
    cache.clear_memory()
    yield tmp_path / "cache"
    cache.clear_memory()


@pytest.fixture(scope="module")
def exe():
    return backends.compile(GRAPH, "llvm", cache=False)


def test_runtime_checks_raise_the_reference_errors(exe):
    ref = backends.compile(GRAPH, "numpy")
    good = _feed()
    np.testing.assert_allclose(exe(good)["loss"], ref(good)["loss"], rtol=1e-5)
    bad_ids = {**good, "ids": np.where(np.arange(4) == 3, 7, good["ids"])}
    with pytest.raises(GraphDSLError, match=r"take: index 7 is out of range for axis 0 of size 5"):
        exe(bad_ids)
    bad_labels = {**good, "labels": np.full_like(good["labels"], 9)}
    with pytest.raises(InputError, match=r"cross_entropy: target 9 is out of range for 5 classes"):
        exe(bad_labels)


def test_save_then_load_in_a_fresh_process_runs_without_compiling(exe, tmp_path):
    exe.save(tmp_path / "module")
    feed = _feed(batch=3, seq=5)
    np.savez(tmp_path / "feed.npz", **feed)
    script = f"""
import json, numpy as np
from backends.tvm import cache, devices
import backends.tvm.build as build
build.build = None          # any compilation would fail
exe = devices.load({str(tmp_path / "module")!r})
out = exe(dict(np.load({str(tmp_path / "feed.npz")!r})))
print(json.dumps({{"loss": float(out["loss"]), "compiles": cache.STATS["compiles"],
                  "params": exe.param_names, "inputs": exe.input_names}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=_root())
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["compiles"] == 0 and result["inputs"] == ["x", "w", "ids", "labels"] and result["params"] == []
    assert result["loss"] == pytest.approx(float(exe(feed)["loss"]), rel=1e-6)


def test_loading_refuses_other_library_versions(exe, tmp_path):
    from backends.tvm import artifact, devices
    path = exe.save(tmp_path / "module")
    meta = json.loads((path / "meta.json").read_text())
    meta["versions"]["tvm"] = "0.0.1"                      # as another installation writes it
    meta["meta_sha256"] = artifact.meta_digest(meta)
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(GraphDSLError, match=r"(?s)compiled with .*0\.0\.1.*recompile"):
        devices.load(path)


def test_cache_hits_skip_compilation(cache_dir):
    from backends.tvm import cache
    before = dict(cache.STATS)
    first = backends.compile(GRAPH, "llvm")
    assert cache.STATS["compiles"] == before["compiles"] + 1
    assert any(cache_dir.joinpath("tvm").iterdir()), "a disk entry was written"
    again = backends.compile(gd.Graph.from_json(GRAPH.to_json()), "llvm")   # an equal graph
    assert cache.STATS["compiles"] == before["compiles"] + 1 and cache.STATS["memory_hits"] == before["memory_hits"] + 1
    cache.clear_memory()                                     # as in a new process: the disk entry
    from_disk = backends.compile(GRAPH, "llvm")
    assert cache.STATS["compiles"] == before["compiles"] + 1 and cache.STATS["disk_hits"] == before["disk_hits"] + 1
    feed = _feed()
    for e in (again, from_disk):
        np.testing.assert_array_equal(e(feed)["logits"], first(feed)["logits"])


MODEL_FILE = """
import graphdsl as gd
from graphdsl import ops
{comment}

def model(w, ids):
    return {{"out": ops.take(w, ids, axis=0).sum()}}


def graph():
    return gd.trace(model, w="f32[5,8]", ids="i64[batch,3]")
"""


def _import_file(path):
    import importlib.util
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cache_survives_edits_that_change_no_computation(cache_dir, tmp_path):
    """The same model traced from two files, one with a comment block above it: one compile; the
    second file's graph hits the disk entry, and its errors name the second file's lines."""
    from backends.tvm import cache
    first = tmp_path / "model_a.py"
    second = tmp_path / "model_b.py"
    first.write_text(MODEL_FILE.format(comment=""))
    second.write_text(MODEL_FILE.format(comment="# a comment\n# and another\n# moving every line down"))
    g1, g2 = _import_file(first).graph(), _import_file(second).graph()
    assert g1.to_json() != g2.to_json() and g1.structural_hash() == g2.structural_hash()
    before = dict(cache.STATS)
    backends.compile(g1, "llvm")
    assert cache.LAST["event"] == "miss"
    cache.clear_memory()                                     # as in a new process
    exe2 = backends.compile(g2, "llvm")
    assert cache.LAST["event"] == "disk"
    assert cache.STATS["compiles"] == before["compiles"] + 1
    w = np.ones((5, 8), np.float32)
    assert float(exe2(w=w, ids=np.array([[0, 1, 4]]))["out"]) == 24.0
    with pytest.raises(GraphDSLError) as info:
        exe2(w=w, ids=np.array([[0, 1, 9]]))
    assert info.value.loc.file.endswith("model_b.py") and info.value.loc.line == 9


def test_cache_hits_and_misses_are_logged(cache_dir, caplog):
    import logging
    g = gd.trace(lambda x: {"y": x * 3.0}, x="f32[4]")
    with caplog.at_level(logging.INFO, logger="graphdsl.cache"):
        backends.compile(g, "llvm")
        backends.compile(g, "llvm")
    lines = [r.getMessage() for r in caplog.records if r.name == "graphdsl.cache"]
    assert "miss: compiling" in lines[0] and "hit in memory" in lines[1], lines


def test_cache_key_covers_the_target_and_the_graph(cache_dir):
    from backends.tvm import cache
    from backends.tvm.target import make_target
    other_graph = gd.trace(lambda x: x * 2.0, x="f32[4]")
    keys = {cache.key(GRAPH, make_target("llvm")), cache.key(GRAPH, make_target("llvm", num_cores=1)),
            cache.key(GRAPH, make_target("cuda")), cache.key(other_graph, make_target("llvm"))}
    assert len(keys) == 4


def test_target_options_are_checked():
    with pytest.raises(TargetError, match=r"unknown option.*fast"):
        backends.compile(GRAPH, "llvm", fast=True)


def _root() -> str:
    from pathlib import Path
    return str(Path(__file__).resolve().parents[1])


# -- damaged artifact directories: clear errors before TVM loads anything ------------------------------
def _damage_artifact(kind: str, path):
    meta = json.loads((path / "meta.json").read_text())
    if kind == "truncated module":
        data = (path / "module.so").read_bytes()
        (path / "module.so").write_bytes(data[: len(data) // 3])
    elif kind == "garbage module":
        (path / "module.so").write_bytes(b"\x7fELF" + b"\x00" * 64)
    elif kind == "module is a directory":
        (path / "module.so").unlink()
        (path / "module.so").mkdir()
    elif kind == "no range checks":
        del meta["range_checks"]
        (path / "meta.json").write_text(json.dumps(meta))
    elif kind == "range checks emptied":
        meta["range_checks"] = []
        (path / "meta.json").write_text(json.dumps(meta))
    elif kind == "no versions":
        del meta["versions"]
        (path / "meta.json").write_text(json.dumps(meta))
    elif kind == "meta garbage":
        (path / "meta.json").write_text("{")
    elif kind == "extra output":
        doc = json.loads((path / "graph.json").read_text())
        doc["outputs"]["extra"] = doc["outputs"]["loss"]
        (path / "graph.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("kind, message", [
    ("truncated module", r"module.so is damaged: its sha256"),
    ("garbage module", r"module.so is damaged"),
    ("module is a directory", r"module.so is missing"),
    ("no range checks", r"meta.json is damaged: range_checks \(missing\)"),
    ("range checks emptied", r"meta.json was edited or damaged"),
    ("no versions", r"meta.json is damaged: versions \(missing\)"),
    ("meta garbage", r"meta.json cannot be read \(JSONDecodeError"),
    ("extra output", r"graph.json is damaged"),
])
def test_a_damaged_artifact_is_a_clear_error_never_a_crash(exe, tmp_path, kind, message):
    """Each case runs in a fresh process, so a crash (SIGBUS from a truncated library) would show."""
    path = exe.save(tmp_path / "module")
    _damage_artifact(kind, path)
    script = f"""
import backends
from graphdsl.errors import GraphDSLError
try:
    backends.load({str(path)!r})
except GraphDSLError as e:
    print("ERROR", e)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=_root())
    assert done.returncode == 0, f"the process died ({done.returncode}): {done.stderr[-1500:]}"
    assert "ERROR" in done.stdout and __import__("re").search(message, done.stdout), done.stdout


def test_the_compile_cache_recompiles_a_damaged_entry(cache_dir):
    from backends.tvm import cache
    backends.compile(GRAPH, "llvm")
    entry = next(cache_dir.joinpath("tvm").iterdir())
    data = (entry / "module.so").read_bytes()
    (entry / "damaged").write_bytes(data[:1000])            # a new file: this process maps the old one
    (entry / "damaged").replace(entry / "module.so")
    cache.clear_memory()
    before = cache.STATS["compiles"]
    again = backends.compile(GRAPH, "llvm")
    assert cache.STATS["compiles"] == before + 1 and cache.LAST["event"] == "miss"
    np.testing.assert_allclose(again(_feed())["loss"], backends.compile(GRAPH, "numpy")(_feed())["loss"], rtol=1e-5)
