"""What a training checkpoint records, and how a resume is checked against it (``Trainer.save``/``load``).

Checkpoint layout (a directory): ``params.npz`` and ``optimizer.npz`` (``.safetensors`` instead
with ``format="safetensors"``, when that package is installed) and ``trainer.json``:

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

import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from graphdsl.errors import GraphDSLError
from graphdsl.graph import Graph
from graphdsl.optim import Optimizer
from graphdsl.optim.schedules import Schedule

FORMAT_VERSION = 2
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


# -- the arrays ------------------------------------------------------------------------------------
def write_arrays(stem: Path, arrays: Mapping[str, np.ndarray], format: str) -> None:
    """``stem.npz`` or ``stem.safetensors``; a file of the other format there is removed."""
    arrays = {k: np.asarray(v, order="C") for k, v in arrays.items()}  # (ascontiguousarray makes 0-d 1-d)
    for suffix in (".npz", ".safetensors"):
        if suffix != f".{format}" and format in ("npz", "safetensors"):
            stem.with_suffix(suffix).unlink(missing_ok=True)
    if format == "npz":
        np.savez(stem.with_suffix(".npz"), **arrays)
    elif format == "safetensors":
        try:
            from safetensors.numpy import save_file
        except ImportError:
            raise GraphDSLError("format='safetensors' needs the safetensors package",
                                hint="pip install safetensors, or save with format='npz'") from None
        save_file(arrays, str(stem.with_suffix(".safetensors")))
    else:
        raise GraphDSLError(f"unknown checkpoint format {format!r}", hint="use 'npz' or 'safetensors'")


def read_arrays(stem: Path) -> dict[str, np.ndarray]:
    if stem.with_suffix(".npz").exists():
        with np.load(stem.with_suffix(".npz")) as f:
            return {k: f[k] for k in f.files}
    if stem.with_suffix(".safetensors").exists():
        from safetensors.numpy import load_file
        return dict(load_file(str(stem.with_suffix(".safetensors"))))
    raise GraphDSLError(f"checkpoint file {stem.name}.npz (or .safetensors) is missing in {str(stem.parent)!r}")


def check_same(path: Path, what: str, expected: Mapping[str, tuple], got: Mapping[str, np.ndarray]) -> None:
    """Raise unless ``got`` has exactly the names of ``expected`` (name -> shape), with those shapes."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = sorted(k for k in set(expected) & set(got) if tuple(expected[k]) != np.shape(got[k]))
    if missing or unexpected or shapes:
        parts = [f"missing {missing[:5]}" if missing else "", f"unexpected {unexpected[:5]}" if unexpected else "",
                 f"mis-shaped {shapes[:5]}" if shapes else ""]
        raise GraphDSLError(f"checkpoint {str(path)!r}: {what} does not fit this train step: "
                            + "; ".join(p for p in parts if p),
                            hint="resume with the same model, optimizer and trainable parameters")
