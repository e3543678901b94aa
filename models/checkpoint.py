"""What a training checkpoint records, and how a resume is checked against it (``Trainer.save``/``load``).

A checkpoint is a directory of snapshots, one per ``save``, each complete or absent:

    ckpt/step-00000040/    params.npz, optimizer.npz (or .safetensors), trainer.json, manifest.json
    ckpt/step-00000050/    the newest: what ``Trainer.load("ckpt/")`` resumes from

A snapshot is written into a temporary sibling (``ckpt/.step-00000050.tmp-*``), every file synced to
disk, ``manifest.json`` (the step, and each file's size and sha256) written last, and then renamed
into place in one step: a kill at any moment leaves the previous snapshots intact and at most a
temporary directory, which the next save removes. ``save(..., keep=K)`` then deletes all but the
newest K snapshots (never anything else: saving into a directory that holds files not ours is
refused). Loading verifies the manifest (sizes, digests, the step in every file) before any array
reaches a kernel and names the file that fails; parameters must have the dtype the graph declares
and hold finite values only. ``load`` of a snapshot directory itself (``ckpt/step-00000040``) resumes
from that one. A directory with ``trainer.json`` at its top is the flat layout of version 1.

trainer.json:

    format_version   2
    format           "npz" or "safetensors"
    step, seed       updates done; the dropout seed
    model, graph     the ModelSpec's name (or null) and the loss graph's name
    optimizer        the optimizer as data: {"class": "AdamW", "lr", "betas", "eps", "weight_decay",
                     "lr_scale"} (every constructor argument; ``Optimizer.from_config`` rebuilds it)
    schedule         null or {"class": "WarmupCosine", "warmup_steps", "total_steps", "min_ratio"}
    clip_norm        null or the global-norm bound
    opt_level        the passes' level the step graph was built with
    wrt              the trained parameters, in the graph's order
    step_graph_hash  ``step_graph.structural_hash()`` (sha256 hex; blind to source lines)
    target           where it trained (informational: a resume may run elsewhere)
    params           name -> [shape, dtype]
    best, history    the best evaluation so far and every logged record

``Trainer.load`` is exact or refuses: what the checkpoint records is restored when the call does
not pass it, a conflicting argument is an error naming both values, and a rebuilt step graph
whose structural hash differs (another model or loss graph) is an error; ``allow_override=True``
lets either through with a warning. Version-1 checkpoints (which recorded only the optimizer's
class and lr, the schedule as text, clip_norm and seed) are read best-effort, only with
``allow_override=True`` and an explicit ``optimizer``: see ``Trainer.load``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from graphdsl.errors import GraphDSLError
from graphdsl.files import digest, fsync
from graphdsl.graph import Graph
from graphdsl.optim import Optimizer
from graphdsl.optim.schedules import Schedule

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
SNAPSHOT = re.compile(r"^step-(\d{8,})$")
_TEMPORARY = re.compile(r"^\.step-\d{8,}\.tmp-")
_FLAT = {"params.npz", "params.safetensors", "optimizer.npz", "optimizer.safetensors", "trainer.json"}
RESTORED = ("schedule", "clip_norm", "seed", "opt_level")   # besides the optimizer and wrt


# -- resuming: what a checkpoint recorded, against what the call passes ------------------------------
def setting_data(key: str, value) -> Any:
    """A setting as the checkpoint records it."""
    if value is None:
        return None
    if key == "schedule":
        return value.config() if isinstance(value, Schedule) else value
    if key == "clip_norm":
        return float(value)
    return int(value)       # seed, opt_level


def rebuild_setting(key: str, data) -> Any:
    return Schedule.from_config(data) if key == "schedule" and data is not None else data


def recorded_settings(where: str, meta: Mapping, allow_override: bool, optimizer, kwargs) -> dict:
    """The settings ``meta`` records, keyed as ``load`` compares them (a version-1 file: the few it has)."""
    version = meta.get("format_version")
    if version == FORMAT_VERSION:
        return {k: meta[k] for k in ("optimizer", *RESTORED, "wrt", "step_graph_hash")}
    if version != 1:
        raise GraphDSLError(f"{where} has format version {version}, this code reads versions 1 and "
                            f"{FORMAT_VERSION}", hint="load it with the graphdsl version that wrote it")
    if not allow_override:
        raise GraphDSLError(f"{where} has format version 1, which did not record the optimizer's "
                            f"hyperparameters, the schedule as data, opt_level, wrt or the train step's "
                            f"hash: resuming it exactly cannot be checked",
                            hint="pass allow_override=True with optimizer= (and schedule=) as it trained, to "
                                 "resume it best-effort; save it again to write version 2")
    if optimizer is None:
        raise GraphDSLError(f"{where} (format version 1) records only the optimizer's class and lr",
                            hint=f"pass optimizer=, e.g. {meta['optimizer']['class']}(lr={meta['optimizer']['lr']})")
    if meta.get("schedule") is not None and "schedule" not in kwargs:
        raise GraphDSLError(f"{where} (format version 1) trained with schedule {meta['schedule']}, recorded "
                            f"only as text", hint="pass that schedule= explicitly")
    warnings.warn(f"{where} has format version 1: resuming best-effort; the optimizer's hyperparameters "
                  f"other than lr, the schedule and wrt are this call's, and opt_level defaults to 0", stacklevel=3)
    return {"optimizer": dict(meta["optimizer"]), "clip_norm": meta.get("clip_norm"), "seed": meta["seed"],
            "opt_level": 0}


def optimizer_changes(where: str, recorded: Mapping, optimizer: Optimizer, allow_override: bool) -> list:
    """``(setting, recorded, given)`` for each hyperparameter of ``optimizer`` that differs."""
    given = optimizer.config()
    if given["class"] != recorded["class"]:
        if not allow_override:
            raise GraphDSLError(f"{where} holds {recorded['class']} state, got a {given['class']} optimizer",
                                hint=f"resume with {recorded['class']} (omit optimizer= to rebuild the "
                                     f"checkpoint's), or pass allow_override=True")
        return [("optimizer", recorded, given)]
    return [(k, v, given.get(k)) for k, v in recorded.items() if k != "class" and given.get(k) != v]


def show(key: str, value) -> str:
    if isinstance(value, Mapping) and "class" in value:
        args = ", ".join(f"{k}={v!r}" for k, v in value.items() if k != "class")
        return f"{value['class']}({args})"
    if key == "wrt":
        names = list(value)
        return repr(names) if len(names) <= 4 else f"[{', '.join(map(repr, names[:3]))}, ... ({len(names)} in all)]"
    return repr(value)


def refuse_or_warn(where: str, changes: list, allow_override: bool) -> None:
    if not changes:
        return
    was = ", ".join(f"{k}={show(k, old)}" for k, old, _ in changes)
    now = ", ".join(f"{k}={show(k, new)}" for k, _, new in changes)
    if allow_override:
        warnings.warn(f"resuming {where} with changed settings (allow_override=True): was {was}, now {now}",
                      stacklevel=3)
        return
    optimizer_keys = [k for k, *_ in changes if k not in (*RESTORED, "wrt")]
    drop = (["optimizer="] if optimizer_keys else []) + [f"{k}=" for k, *_ in changes if k in (*RESTORED, "wrt")]
    raise GraphDSLError(f"{where} was trained with {was}, this call passes {now}",
                        hint=f"drop {', '.join(drop)} to resume with the checkpoint's settings, or pass "
                             f"allow_override=True to train on with this call's")


def check_hash(where: str, recorded: str | None, step_graph: Graph, allow_override: bool,
                settings_changed: bool) -> None:
    """Refuse (warn, with ``allow_override``) a rebuilt step graph that is not the one that trained."""
    if recorded is None:
        return
    rebuilt = step_graph.structural_hash()
    if rebuilt == recorded:
        return
    message = (f"{where} was trained with another train-step graph: structural hash {recorded[:12]} recorded, "
               f"{rebuilt[:12]} rebuilt")
    if allow_override:
        why = "expected when settings change" if settings_changed else "allow_override=True"
        warnings.warn(f"{message} ({why})", stacklevel=3)
        return
    raise GraphDSLError(message, hint="resume with the model and loss graph it was trained with (and its "
                                      "settings), or pass allow_override=True")


# -- snapshots -----------------------------------------------------------------------------------
def snapshot_name(step: int) -> str:
    return f"step-{step:08d}"


def write_snapshot(root: Path, step: int, write: Callable[[Path], None], *, keep: int | None = 2) -> Path:
    """``write(tmp_dir)`` fills a fresh temporary directory; its manifest is added, then it becomes
    ``root/step-NNNNNNNN`` in one rename. Older snapshots beyond the newest ``keep`` are removed."""
    root = Path(root)
    if keep is not None and keep < 1:
        raise GraphDSLError(f"keep={keep}: a checkpoint keeps at least its newest snapshot")
    _check_ours(root)
    root.mkdir(parents=True, exist_ok=True)
    _remove_temporaries(root)
    name = snapshot_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        write(tmp)
        files = {}
        for f in sorted(tmp.iterdir()):
            fsync(f)
            files[f.name] = {"bytes": f.stat().st_size, "sha256": digest(f)}
        manifest = {"format": "graphdsl-checkpoint", "format_version": FORMAT_VERSION, "step": step,
                    "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        fsync(tmp / MANIFEST)
        fsync(tmp)
        final = root / name
        if final.exists():                       # saved again at the same step: swap it out
            if not _only_ours(final):
                raise GraphDSLError(f"cannot save a checkpoint to {str(final)!r}: it holds files that are not a "
                                    f"graphdsl snapshot's", hint="move them away; graphdsl never deletes what it "
                                                                 "did not write")
            old = root / f".{name}.tmp-old-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep is not None:
        for old in snapshots(root)[:-keep]:
            if _only_ours(old):                  # a snapshot someone added files to is left alone
                shutil.rmtree(old, ignore_errors=True)
    return final


def snapshots(root: Path) -> list[Path]:
    """The snapshot directories of ``root`` that have a manifest, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := SNAPSHOT.match(p.name)) and p.is_dir() and (p / MANIFEST).is_file()]
    return [p for _, p in sorted(found)]


def resolve(path) -> Path:
    """The directory a resume reads: ``path`` itself when it is a snapshot, else its newest snapshot,
    else ``path`` when it holds a version-1 checkpoint (flat: trainer.json at its top)."""
    path = Path(path)
    if not path.exists():
        raise GraphDSLError(f"no checkpoint at {str(path)!r}: it does not exist",
                            hint="write one with Trainer.save(path) or `graphdsl train MODEL --save DIR`")
    if not path.is_dir():
        raise GraphDSLError(f"checkpoint {str(path)!r} is a file; a checkpoint is a directory")
    if (path / MANIFEST).exists():
        return path
    found = snapshots(path)
    if not found and (path / "trainer.json").exists():
        return path                              # the flat layout of version 1
    if not found:
        raise GraphDSLError(f"no checkpoint at {str(path)!r}: it holds no step-* snapshot with a manifest",
                            hint="write one with Trainer.save(path) or `graphdsl train MODEL --save DIR`")
    return found[-1]


def read_params(path) -> dict[str, np.ndarray]:
    """The parameters of checkpoint ``path`` (its newest snapshot, verified), for inference or fine-tuning."""
    snap = resolve(path)
    if (snap / MANIFEST).exists():
        verify_snapshot(snap)
    return read_arrays(snap / "params")


def read_meta(path) -> dict:
    """The trainer.json of checkpoint ``path`` (its newest snapshot, verified)."""
    snap = resolve(path)
    if (snap / MANIFEST).exists():
        verify_snapshot(snap)
    meta = read_json(snap / "trainer.json", "checkpoint file")
    if not isinstance(meta, dict):
        raise GraphDSLError(f"checkpoint file {str(snap / 'trainer.json')!r} is not a JSON object")
    return meta


def verify_snapshot(snap: Path) -> dict:
    """The manifest of ``snap``, after checking every file it lists (size and sha256)."""
    manifest = read_json(snap / MANIFEST, "checkpoint manifest")
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not isinstance(manifest.get("step"), int):
        raise GraphDSLError(f"checkpoint manifest {str(snap / MANIFEST)!r} is malformed (no step or files)")
    for name, want in files.items():
        f = snap / name
        if not f.is_file():
            raise GraphDSLError(f"checkpoint file {str(f)!r} is missing (the manifest lists it)",
                                hint=_older_hint(snap))
        if f.stat().st_size != want.get("bytes") or digest(f) != want.get("sha256"):
            raise GraphDSLError(f"checkpoint file {str(f)!r} is damaged: its size or sha256 is not the "
                                f"one recorded when it was saved", hint=_older_hint(snap))
    return manifest


def read_json(path: Path, what: str):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GraphDSLError(f"{what} {str(path)!r} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise GraphDSLError(f"{what} {str(path)!r} cannot be read: {type(e).__name__}: {e}"[:300],
                            hint="the checkpoint is damaged") from None


def _older_hint(snap: Path) -> str:
    older = [p for p in snapshots(snap.parent) if p.name < snap.name]
    if older:
        return f"the snapshot before it is intact: resume from {older[-1]}"
    return "the checkpoint is damaged; no older snapshot is kept"


def _check_ours(root: Path) -> None:
    if not root.exists():
        return
    if not root.is_dir():
        raise GraphDSLError(f"cannot save a checkpoint to {str(root)!r}: it is a file")
    others = sorted(p.name for p in root.iterdir()
                    if not (SNAPSHOT.match(p.name) or _TEMPORARY.match(p.name) or p.name in _FLAT))
    if others:
        raise GraphDSLError(f"cannot save a checkpoint to {str(root)!r}: it holds {', '.join(others[:5])}, "
                            f"which are not a graphdsl checkpoint's",
                            hint="choose a new or empty directory; graphdsl never deletes what it did not write")


_SNAPSHOT_FILES = {MANIFEST, *_FLAT}


def _only_ours(directory: Path) -> bool:
    """Whether ``directory`` holds only files a snapshot write makes (so removing it loses nothing of a user's)."""
    return all(p.is_file() and p.name in _SNAPSHOT_FILES for p in directory.iterdir())


def _remove_temporaries(root: Path) -> None:
    """Snapshots a killed save left half-written (ours by their name and their files)."""
    for p in root.iterdir():
        if _TEMPORARY.match(p.name) and p.is_dir() and _only_ours(p):
            shutil.rmtree(p, ignore_errors=True)


# -- the arrays ------------------------------------------------------------------------------------
def write_arrays(stem: Path, arrays: Mapping[str, np.ndarray], format: str) -> None:
    """``stem.npz`` or ``stem.safetensors`` (into a fresh snapshot directory)."""
    if format not in ("npz", "safetensors"):
        raise GraphDSLError(f"unknown checkpoint format {format!r}", hint="use 'npz' or 'safetensors'")
    arrays = {k: np.asarray(v, order="C") for k, v in arrays.items()}  # (ascontiguousarray makes 0-d 1-d)
    if format == "npz":
        np.savez(stem.with_suffix(".npz"), **arrays)
        return
    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise GraphDSLError("format='safetensors' needs the safetensors package",
                            hint="pip install safetensors, or save with format='npz'") from None
    save_file(arrays, str(stem.with_suffix(".safetensors")))


def read_arrays(stem: Path) -> dict[str, np.ndarray]:
    """The arrays of ``stem.npz`` or ``stem.safetensors``; a damaged file is an error naming it."""
    from graphdsl.weights import read_arrays as read
    for suffix in (".npz", ".safetensors"):
        if stem.with_suffix(suffix).exists():
            return read(stem.with_suffix(suffix), "checkpoint file")
    raise GraphDSLError(f"checkpoint file {stem.name}.npz (or .safetensors) is missing in {str(stem.parent)!r}")


def check_same(path: Path, what: str, expected: Mapping[str, tuple], got: Mapping[str, np.ndarray],
               dtypes: Mapping[str, np.dtype] | None = None) -> None:
    """Raise unless ``got`` has exactly the names of ``expected`` (name -> shape), with those shapes,
    the ``dtypes`` given, and (for float arrays with ``dtypes``) finite values only."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    both = sorted(set(expected) & set(got))
    shapes = [k for k in both if tuple(expected[k]) != np.shape(got[k])]
    typed = [f"{k} ({got[k].dtype}, not {dtypes[k]})" for k in both if dtypes and got[k].dtype != dtypes[k]]
    nan = [k for k in both if dtypes and got[k].dtype.kind == "f" and not np.isfinite(got[k]).all()]
    if missing or unexpected or shapes or typed or nan:
        parts = [f"missing {missing[:5]}" if missing else "", f"unexpected {unexpected[:5]}" if unexpected else "",
                 f"mis-shaped {shapes[:5]}" if shapes else "", f"of another dtype: {', '.join(typed[:5])}" if typed else "",
                 f"holding NaN or inf: {nan[:5]}" if nan else ""]
        raise GraphDSLError(f"checkpoint {str(path)!r}: {what} does not fit this train step: "
                            + "; ".join(p for p in parts if p),
                            hint="resume with the same model, optimizer and trainable parameters")
