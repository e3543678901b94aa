"""Checkpoints on disk (models/checkpoint.py): atomic snapshots with a manifest, the newest K kept,
foreign directories refused, and every damaged file a clear error naming it (never a raw
BadZipFile, JSONDecodeError, KeyError or a silent load)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from graphdsl import nn, ops, trace
from graphdsl.errors import GraphDSLError
from graphdsl.optim import AdamW
from models import checkpoint
from models.trainer import Trainer

BATCH = {"x": np.linspace(-1, 1, 24, dtype=np.float32).reshape(8, 3), "y": np.arange(8, dtype=np.float32)}


def _trainer(steps: int = 2) -> tuple:
    lin = nn.Linear(3, 1)
    graph = trace(lambda x, y: {"loss": ops.mean((lin(x)[:, 0] - y) ** 2)}, params=lin, x="f32[batch,3]",
                  y="f32[batch]", name="linreg")
    trainer = Trainer(graph, lin.init(seed=0), AdamW(lr=0.05), progress=False)
    trainer.fit(BATCH, steps=steps)
    return graph, trainer


@pytest.fixture
def saved(tmp_path):
    graph, trainer = _trainer()
    snap = trainer.save(tmp_path / "ckpt")
    return graph, trainer, snap


def test_a_snapshot_per_save_the_newest_k_kept(tmp_path):
    graph, trainer = _trainer(1)
    for _ in range(4):
        trainer.save(tmp_path / "ckpt", keep=2)
        trainer.fit(BATCH, steps=1)
    assert [p.name for p in checkpoint.snapshots(tmp_path / "ckpt")] == ["step-00000003", "step-00000004"]
    snap = tmp_path / "ckpt" / "step-00000004"
    manifest = json.loads((snap / "manifest.json").read_text())
    assert manifest["step"] == 4 and set(manifest["files"]) == {"params.npz", "optimizer.npz", "trainer.json"}
    assert Trainer.load(tmp_path / "ckpt", graph, progress=False).step == 4
    assert Trainer.load(tmp_path / "ckpt" / "step-00000003", graph, progress=False).step == 3


def test_a_killed_save_leaves_the_previous_snapshot_and_is_cleaned_up(saved, monkeypatch):
    graph, trainer, snap = saved
    trainer.fit(BATCH, steps=1)

    def dies(*args, **kwargs):
        raise KeyboardInterrupt       # as a kill in the middle of writing the optimizer state
    monkeypatch.setattr(checkpoint, "write_arrays", dies)
    import models.trainer as trainer_module
    monkeypatch.setattr(trainer_module, "write_arrays", dies)
    with pytest.raises(KeyboardInterrupt):
        trainer.save(snap.parent)
    assert [p.name for p in snap.parent.iterdir()] == ["step-00000002"]
    (snap.parent / ".step-00000009.tmp-abc").mkdir()          # what a SIGKILL leaves: removed by the next save
    monkeypatch.undo()
    trainer.save(snap.parent)
    assert sorted(p.name for p in snap.parent.iterdir()) == ["step-00000002", "step-00000003"]


def test_saving_into_a_directory_that_is_not_ours_is_refused(tmp_path):
    _, trainer = _trainer(1)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(GraphDSLError, match=r"holds notes.txt, which are not a graphdsl checkpoint's"):
        trainer.save(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(GraphDSLError, match="it is a file"):
        trainer.save(tmp_path / "file")


def _damage(kind: str, snap):
    params = snap / "params.npz"
    if kind == "truncated":
        params.write_bytes(params.read_bytes()[:100])
    elif kind == "garbage":
        params.write_bytes(b"\x00garbage" * 20)
    elif kind == "directory":
        params.unlink()
        params.mkdir()
    elif kind == "missing":
        params.unlink()
    elif kind == "manifest":
        (snap / "manifest.json").write_text("{not json")
    elif kind == "trainer-json":
        (snap / "trainer.json").write_text("{")


@pytest.mark.parametrize("kind, message", [
    ("truncated", r"params.npz' is damaged"),
    ("garbage", r"params.npz' is damaged"),
    ("directory", r"params.npz' is missing"),
    ("missing", r"params.npz' is missing"),
    ("manifest", r"manifest .*manifest.json' cannot be read: JSONDecodeError"),
    ("trainer-json", r"trainer.json' is damaged"),
])
def test_a_damaged_snapshot_is_an_error_naming_the_file(saved, kind, message):
    graph, trainer, snap = saved
    trainer.fit(BATCH, steps=1)
    newer = trainer.save(snap.parent)
    _damage(kind, newer)
    with pytest.raises(GraphDSLError, match=message) as info:
        Trainer.load(snap.parent, graph, progress=False)
    if kind != "manifest":
        assert "step-00000002" in (info.value.hint or "")   # the intact one before it is named
    assert Trainer.load(snap, graph, progress=False).step == 2


def _resign(snap, name: str) -> None:
    manifest = json.loads((snap / "manifest.json").read_text())
    manifest["files"][name] = {"bytes": (snap / name).stat().st_size, "sha256": checkpoint.digest(snap / name)}
    (snap / "manifest.json").write_text(json.dumps(manifest))


def test_a_torn_snapshot_is_refused_even_with_a_valid_manifest(saved):
    """The optimizer state of another save (the case that diverged silently for 159 steps)."""
    graph, trainer, snap = saved
    trainer.fit(BATCH, steps=1)
    newer = trainer.save(snap.parent)
    shutil.copy(snap / "optimizer.npz", newer / "optimizer.npz")
    _resign(newer, "optimizer.npz")
    with pytest.raises(GraphDSLError, match="optimizer state is at step 2, trainer.json at 3"):
        Trainer.load(snap.parent, graph, progress=False)


@pytest.mark.parametrize("change, message", [
    (lambda p: {k: v.astype(np.float64) for k, v in p.items()}, r"of another dtype: .*float64, not float32"),
    (lambda p: {k: np.full_like(v, np.nan) for k, v in p.items()}, r"holding NaN or inf"),
    (lambda p: {**p, "weight": p["weight"].astype(np.int64)}, r"weight \(int64, not float32\)"),
])
def test_parameters_of_the_wrong_dtype_or_not_finite_are_refused(saved, change, message):
    graph, trainer, snap = saved
    with np.load(snap / "params.npz") as f:
        params = change({k: f[k] for k in f.files})
    np.savez(snap / "params.npz", **params)
    _resign(snap, "params.npz")
    with pytest.raises(GraphDSLError, match=message):
        Trainer.load(snap.parent, graph, progress=False)


def test_no_checkpoint_there(tmp_path):
    graph, _ = _trainer(1)
    with pytest.raises(GraphDSLError, match="does not exist"):
        Trainer.load(tmp_path / "nothing", graph)
    (tmp_path / "empty").mkdir()
    with pytest.raises(GraphDSLError, match="holds no step-\\* snapshot"):
        Trainer.load(tmp_path / "empty", graph)


def test_pruning_never_removes_a_file_we_did_not_write(tmp_path):
    _, trainer = _trainer(1)
    first = trainer.save(tmp_path / "ckpt", keep=1)
    (first / "notes.txt").write_text("mine")
    stray = tmp_path / "ckpt" / ".step-00000007.tmp-x"
    stray.mkdir()
    (stray / "data.bin").write_text("mine too")
    trainer.fit(BATCH, steps=1)
    trainer.save(tmp_path / "ckpt", keep=1)
    assert (first / "notes.txt").read_text() == "mine" and (stray / "data.bin").exists()
    (tmp_path / "ckpt" / "step-00000002" / "notes.txt").write_text("mine")
    with pytest.raises(GraphDSLError, match="holds files that are not a graphdsl snapshot's"):
        trainer.save(tmp_path / "ckpt")        # the same step again, over a snapshot holding a user's file?
