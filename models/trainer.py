"""The training loop: optimize and compile one train step, feed batches, log, checkpoint, resume.

    spec = models.get("bert-tiny")
    trainer = Trainer(spec, None, AdamW(lr=1e-3), target="numpy", log_path="train.jsonl")
    trainer.fit(spec_batches(spec, 16), steps=200)        # tqdm bar: loss and tokens/s
    trainer.save("ckpt/")                                  # params + optimizer state + how it trained
    again = Trainer.load("ckpt/", spec)                    # continues exactly where it stopped

The step graph is the documented compiler path: ``passes.report(loss_graph, level=opt_level)``
fuses the forward (attention, norms, GELU; ``trainer.pass_report`` says what fused), then
``graphdsl.optim.make_train_step`` differentiates the fused graph (the fused ops carry their
own gradients: ``attention_grad``) and ``backends.compile`` compiles it once; ``opt_level=0``
trains the graph as traced. ``StepRunner`` holds the parameters and the optimizer state between
steps. Randomness is a function of the step number: dropout uses ``seed + step`` (StepRunner)
and batches given as a function ``batches(step)`` are drawn from ``default_rng([data_seed,
step])`` (``spec_batches``), so a run resumed from a checkpoint sees the same batches and masks,
and its losses are those of the run that never stopped.

Checkpoints: ``save`` and ``load``; the layout, and how a resume is checked, are in models/checkpoint.py.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from graphdsl.errors import GraphDSLError
from graphdsl.graph import Graph
from graphdsl.optim import Optimizer, StepRunner, make_train_step, zero_state
from graphdsl.optim.schedules import Schedule
from graphdsl.optim.step import STEP, UPDATE_PREFIX

from .checkpoint import (FORMAT_VERSION, MANIFEST, RESTORED, check_hash, check_same, optimizer_changes,
                         read_arrays, read_json, rebuild_setting, recorded_settings, refuse_or_warn, resolve,
                         setting_data, verify_snapshot, write_arrays, write_snapshot)
from .registry import ModelSpec

Batch = Mapping[str, np.ndarray]


def spec_batches(spec: ModelSpec, batch_size: int, seed: int = 0) -> Callable[[int], dict]:
    """Batches of a model's built-in task as a function of the step: ``fn(step) -> batch``."""
    def batch(step: int) -> dict:
        return spec.batch(spec.config, np.random.default_rng([seed, step]), batch_size)
    return batch


class Trainer:
    """Trains the parameters of a loss graph (or of a ModelSpec's model) with one optimizer.

    ``spec_or_loss_graph``: a ModelSpec (its module is built and its loss traced in training
    mode; ``params`` None means ``module.init(seed)``) or a loss Graph with output "loss"
    (``params`` required). ``opt_level`` (0, 1 or 2) picks the passes run on the loss graph
    before it is differentiated: ``pass_report`` is their ``passes.Report``, ``fused_ops`` what
    they made, ``step_graph`` the train step compiled. ``schedule``, ``clip_norm`` and ``wrt``
    go to ``make_train_step``; ``seed`` seeds dropout (``seed + step``). ``log_path`` receives one
    JSON object per line: ``{"kind": "train", "step", "loss", <metrics>, "lr", "time_s",
    "samples_per_s", ...}`` and ``{"kind": "eval", "step", <eval metrics>}``.
    """

    def __init__(self, spec_or_loss_graph: ModelSpec | Graph, params: Mapping[str, np.ndarray] | None,
                 optimizer: Optimizer, *, target: str = "numpy", schedule: Schedule | None = None,
                 clip_norm: float | None = None, wrt: Iterable[str] | None = None,
                 log_path: str | Path | None = None, seed: int = 0, progress: bool = True,
                 opt_level: int = 2):
        self._setup(spec_or_loss_graph, params, optimizer, target=target, schedule=schedule,
                    clip_norm=clip_norm, log_path=log_path, seed=seed, progress=progress, opt_level=opt_level)
        self._build(wrt)
        self._compile()

    def _setup(self, spec_or_loss_graph, params, optimizer, *, target="numpy", schedule=None, clip_norm=None,
               log_path=None, seed=0, progress=True, opt_level=2) -> None:
        """Everything but the step graph: the loss graph, initial params and the settings."""
        self.spec: ModelSpec | None = None
        self.module = None
        if isinstance(spec_or_loss_graph, ModelSpec):
            self.spec = spec_or_loss_graph
            self.module = self.spec.module().train()
            self.loss_graph = self.spec.loss(self.module)
            if params is None:
                params = self.module.init(seed)
        elif isinstance(spec_or_loss_graph, Graph):
            self.loss_graph = spec_or_loss_graph
            if params is None:
                raise GraphDSLError("Trainer: a loss graph needs its initial params",
                                    hint="pass module.init(seed) of the module the graph was traced from")
        else:
            raise GraphDSLError(f"Trainer takes a ModelSpec or a loss Graph, got "
                                f"{type(spec_or_loss_graph).__name__}")
        if not isinstance(optimizer, Optimizer):
            raise GraphDSLError(f"Trainer: optimizer must be a graphdsl.optim Optimizer, got "
                                f"{type(optimizer).__name__}", hint="e.g. graphdsl.optim.AdamW(lr=1e-3)")
        if schedule is not None and not isinstance(schedule, Schedule):
            raise GraphDSLError(f"Trainer: schedule must be a graphdsl.optim Schedule, got "
                                f"{type(schedule).__name__}", hint="e.g. graphdsl.optim.WarmupCosine(100, 1000)")
        self.optimizer, self.schedule = optimizer, schedule
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.opt_level = int(opt_level)
        self.target, self.seed, self.progress = target, int(seed), progress
        self.log_path = Path(log_path) if log_path is not None else None
        self._initial_params = params
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None          # {"step", "metric", "value"}
        self.best_params: dict[str, np.ndarray] | None = None

    def _build(self, wrt: Iterable[str] | None) -> None:
        """Fuse the forward (``opt_level``), then differentiate: the train-step graph."""
        import passes
        self.pass_report = passes.report(self.loss_graph, level=self.opt_level)
        fused = self.pass_report.graph
        self.step_graph = make_train_step(fused, self.optimizer, clip_norm=self.clip_norm,
                                          schedule=self.schedule, wrt=_in_graph_order(fused, wrt))
        self.wrt = [k[len(UPDATE_PREFIX):] for k in self.step_graph.outputs if k.startswith(UPDATE_PREFIX)]

    def _compile(self) -> None:
        import backends  # the trainer is the one part of models/ that compiles
        from graphdsl.progress import phase
        if self.target == "cuda":
            from backends.tvm.cuda import gpu_available
            if not gpu_available():
                raise GraphDSLError("Trainer(target='cuda') runs the train step on an NVIDIA GPU, and this "
                                    "machine has none", hint="train on 'llvm' or 'numpy'")
        with phase(f"compiling the train step ({len(self.step_graph.nodes)} nodes) for {self.target}",
                   enabled=None if self.progress else False):
            self.exe = backends.compile(self.step_graph, self.target)
        self.runner = StepRunner(self.exe, self._initial_params, seed=self.seed)
        del self._initial_params

    # -- state ------------------------------------------------------------------------------
    @property
    def params(self) -> dict[str, np.ndarray]:
        return self.runner.params

    @property
    def step(self) -> int:
        """Updates done so far."""
        return self.runner.step_count

    @property
    def losses(self) -> list[float]:
        return [r["loss"] for r in self.history if r["kind"] == "train"]

    @property
    def fused_ops(self) -> dict[str, int]:
        """The ops the passes made in the loss graph, with their counts there: ``{"attention": 2, ...}``."""
        before = self.loss_graph.op_counts()
        return {op: n for op, n in self.pass_report.final_ops.items() if n > before.get(op, 0)}

    # -- training ---------------------------------------------------------------------------
    def fit(self, batches: Callable[[int], Batch] | Iterable[Batch], steps: int | None = None, *,
            eval_fn: Callable[["Trainer"], float | Mapping[str, float]] | None = None,
            eval_every: int | None = None, metric: str = "eval_loss", mode: str = "min",
            best_path: str | Path | None = None, desc: str | None = None) -> list[dict[str, Any]]:
        """Run ``steps`` more updates (or until an iterable of batches runs out).

        ``batches`` is ``fn(step) -> batch`` (resumable: the step number picks the batch), one
        batch (a dict, used at every step) or an iterable of batches.

        ``eval_fn(trainer)`` returns a number (logged as ``eval_loss``) or a dict of numbers; it
        runs every ``eval_every`` steps (if given) and after the last one. The best value of
        ``metric`` (lowest, or highest with ``mode="max"``) keeps its parameters in
        ``best_params`` and, with ``best_path``, a checkpoint there.

        Returns this call's train records (the dicts also logged as JSON lines).
        """
        if mode not in ("min", "max"):
            raise GraphDSLError(f"fit: mode must be 'min' or 'max', got {mode!r}")
        if callable(batches) or isinstance(batches, Mapping):
            if steps is None:
                raise GraphDSLError("fit: with a batch function or one fixed batch, say how many steps "
                                    "to run", hint="trainer.fit(batch_fn, steps=100)")
            if isinstance(batches, Mapping):
                source = (batches for _ in range(steps))
            else:
                source = (batches(self.step) for _ in range(steps))  # lazy: the current step each time
        else:
            it = iter(batches)
            source = it if steps is None else (b for _, b in zip(range(steps), it))
        records: list[dict[str, Any]] = []
        bar = _progress_bar(steps, desc or self.loss_graph.name, self.progress)
        log = self.log_path.open("a", encoding="utf-8") if self.log_path is not None else None
        try:
            evaluated_at = None
            for batch in source:
                record = self._train_step(batch)
                records.append(record)
                self._log(record, log)
                bar.update(1)
                bar.set_postfix(_postfix(record), refresh=False)
                if eval_fn is not None and eval_every and self.step % eval_every == 0:
                    self._evaluate(eval_fn, metric, mode, best_path, log)
                    evaluated_at = self.step
            if eval_fn is not None and records and evaluated_at != self.step:
                self._evaluate(eval_fn, metric, mode, best_path, log)
        finally:
            bar.close()
            if log is not None:
                log.close()
        return records

    def _train_step(self, batch: Batch) -> dict[str, Any]:
        start = time.perf_counter()
        metrics = self.runner.step(batch)
        elapsed = max(time.perf_counter() - start, 1e-9)
        record: dict[str, Any] = {"kind": "train", "step": self.step, **metrics, "time_s": elapsed}
        first = next(iter(batch.values()), None)
        if first is not None and np.ndim(first) > 0:
            record["samples_per_s"] = np.shape(first)[0] / elapsed
        if "attention_mask" in batch:
            record["tokens_per_s"] = float(np.sum(batch["attention_mask"])) / elapsed
        elif "input_ids" in batch:
            record["tokens_per_s"] = np.size(batch["input_ids"]) / elapsed
        return record

    def _evaluate(self, eval_fn, metric: str, mode: str, best_path, log) -> None:
        result = eval_fn(self)
        if isinstance(result, Mapping):
            values = {k: float(v) for k, v in result.items()}
        else:
            values = {"eval_loss": float(result)}
        self._log({"kind": "eval", "step": self.step, **values}, log)
        if metric not in values:
            raise GraphDSLError(f"fit: eval_fn returned {sorted(values)}, with no {metric!r} to pick "
                                f"the best checkpoint by", hint=f"pass metric= one of {sorted(values)}")
        value = values[metric]
        better = self.best is None or (value < self.best["value"] if mode == "min" else value > self.best["value"])
        if better:
            self.best = {"step": self.step, "metric": metric, "value": value}
            self.best_params = {k: v.copy() for k, v in self.params.items()}
            if best_path is not None:
                self.save(best_path)

    def _log(self, record: dict[str, Any], log) -> None:
        self.history.append(record)
        if log is not None:
            log.write(json.dumps(record) + "\n")
            log.flush()

    def restore_best(self) -> None:
        """Set the parameters to the best ones seen by ``fit``'s evaluations."""
        if self.best_params is None:
            raise GraphDSLError("restore_best: no evaluation has run yet",
                                hint="pass eval_fn (and eval_every) to fit")
        self.runner.params = {k: v.copy() for k, v in self.best_params.items()}

    # -- evaluation helper ------------------------------------------------------------------
    def loss_evaluator(self, batches: Iterable[Batch], graph: Graph | None = None
                       ) -> Callable[["Trainer"], dict[str, float]]:
        """An ``eval_fn``: the mean of every scalar output of ``graph`` over fixed ``batches``,
        named ``eval_<output>``. ``graph`` defaults to the spec's loss traced in eval mode."""
        import backends
        if graph is None:
            if self.module is None:
                raise GraphDSLError("loss_evaluator: pass the eval-mode loss graph",
                                    hint="trace the loss with the module in eval mode")
            graph = self.spec.loss(self.module.eval())
            self.module.train()
        exe = backends.compile(graph, self.target)
        batches = list(batches)
        scalars = [k for k, n in graph.outputs.items() if n.type.rank == 0]

        def evaluate(trainer: Trainer) -> dict[str, float]:
            params = {k: trainer.params[k] for k in graph.params}
            sums = dict.fromkeys(scalars, 0.0)
            for b in batches:
                feed = {**b, **params}
                if "seed" in graph.inputs and "seed" not in feed:
                    feed["seed"] = np.int32(0)
                out = exe(feed)
                for k in scalars:
                    sums[k] += float(out[k])
            return {f"eval_{k}": v / max(len(batches), 1) for k, v in sums.items()}
        return evaluate

    # -- checkpoints ------------------------------------------------------------------------
    def save(self, path: str | Path, *, format: str = "npz", keep: int | None = 2) -> Path:
        """Add a snapshot of this step to checkpoint directory ``path``, atomically, keeping the
        newest ``keep`` snapshots (None: all); returns the snapshot's directory. The layout and what
        it records: models/checkpoint.py."""
        path = Path(path)
        meta = {   # first: an optimizer or schedule that cannot be described fails before any write
            "format_version": FORMAT_VERSION, "format": format, "step": self.step, "seed": self.seed,
            "model": self.spec.name if self.spec is not None else None, "graph": self.loss_graph.name,
            "optimizer": self.optimizer.config(),
            "schedule": self.schedule.config() if self.schedule is not None else None,
            "clip_norm": self.clip_norm, "opt_level": self.opt_level, "wrt": self.wrt,
            "step_graph_hash": self.step_graph.structural_hash(), "target": self.target,
            "params": {k: [list(v.shape), str(v.dtype)] for k, v in self.params.items()},
            "best": self.best, "history": self.history,
        }
        text = json.dumps(meta, indent=1)
        if format not in ("npz", "safetensors"):
            raise GraphDSLError(f"unknown checkpoint format {format!r}", hint="use 'npz' or 'safetensors'")

        def write(snapshot: Path) -> None:
            write_arrays(snapshot / "params", self.params, format)
            write_arrays(snapshot / "optimizer", self.runner.state, format)
            (snapshot / "trainer.json").write_text(text, encoding="utf-8")
        return write_snapshot(path, self.step, write, keep=keep)

    @classmethod
    def load(cls, path: str | Path, spec_or_loss_graph: ModelSpec | Graph, optimizer: Optimizer | None = None,
             *, allow_override: bool = False, **kwargs) -> "Trainer":
        """A Trainer resumed from checkpoint ``path``: parameters, optimizer state, step, history
        and best evaluation, and the settings it trained with.

        Exact or refuses. ``optimizer`` None rebuilds the checkpoint's (class and every
        hyperparameter); ``schedule``, ``clip_norm``, ``seed``, ``opt_level`` and ``wrt`` not
        given are the checkpoint's. An explicit one that differs (another lr, clip_norm, schedule,
        optimizer hyperparameter, opt_level, seed, set of trained parameters) is a GraphDSLError
        naming the setting and both values; so is a rebuilt step graph whose structural hash is not
        the recorded one (another model or loss graph). ``allow_override=True`` lets these through
        with a warning naming what changed. The other keyword arguments (``target``,
        ``log_path``, ``progress``) are as for ``Trainer(...)``.

        Version-1 checkpoints are read best-effort, only with ``allow_override=True``: they record
        the optimizer's class and lr (pass ``optimizer``: its other hyperparameters are trusted),
        clip_norm and seed (restored or compared as above) and the schedule only as text (pass
        ``schedule`` when it was not None; trusted). ``opt_level`` defaults to 0, the unfused step
        that code trained, and no structural hash is checked. Saving writes version 2.
        """
        path = resolve(path)
        manifest = verify_snapshot(path) if (path / MANIFEST).exists() else None
        meta = read_json(path / "trainer.json", "checkpoint file")
        if not isinstance(meta, dict):
            raise GraphDSLError(f"checkpoint file {str(path / 'trainer.json')!r} is not a JSON object")
        where = f"checkpoint {str(path)!r}"
        if manifest is not None and meta.get("step") != manifest["step"]:
            raise GraphDSLError(f"{where}: trainer.json is at step {meta.get('step')}, its manifest at "
                                f"{manifest['step']}", hint="the checkpoint is damaged")
        recorded = recorded_settings(where, meta, allow_override, optimizer, kwargs)
        if optimizer is None:
            optimizer = Optimizer.from_config(recorded["optimizer"])
        elif not isinstance(optimizer, Optimizer):
            raise GraphDSLError(f"Trainer.load: optimizer must be a graphdsl.optim Optimizer or None, got "
                                f"{type(optimizer).__name__}", hint="omit it to rebuild the checkpoint's")
        changes = optimizer_changes(where, recorded["optimizer"], optimizer, allow_override)
        for key in RESTORED:
            if key not in recorded:
                continue
            if key not in kwargs:
                kwargs[key] = rebuild_setting(key, recorded[key])
            elif setting_data(key, kwargs[key]) != recorded[key]:
                changes.append((key, recorded[key], setting_data(key, kwargs[key])))
        wrt = kwargs.pop("wrt", recorded.get("wrt"))

        params = read_arrays(path / "params")
        trainer = cls.__new__(cls)
        trainer._setup(spec_or_loss_graph, params, optimizer, **kwargs)
        if wrt is not None and not set(wrt) <= set(trainer.loss_graph.params):   # another model: say so
            check_same(path, "parameters", {k: tuple(n.type.shape) for k, n in trainer.loss_graph.params.items()},
                        params)
        trainer._build(wrt)
        if "wrt" in recorded and set(trainer.wrt) != set(recorded["wrt"]):
            changes.append(("wrt", recorded["wrt"], trainer.wrt))
        refuse_or_warn(where, changes, allow_override)

        check_same(path, "parameters", {k: tuple(n.type.shape) for k, n in trainer.step_graph.params.items()},
                   params, {k: n.type.dtype.np for k, n in trainer.step_graph.params.items()})
        state = read_arrays(path / "optimizer")
        expected = {k: v.shape for k, v in zero_state(trainer.step_graph).items()}
        check_same(path, "optimizer state", expected, state)
        if STEP in state and int(state[STEP]) != meta.get("step"):
            raise GraphDSLError(f"{where}: the optimizer state is at step {int(state[STEP])}, trainer.json at "
                                f"{meta.get('step')}: the files come from different saves",
                                hint="the checkpoint is torn; resume from an intact snapshot")
        check_hash(where, recorded.get("step_graph_hash"), trainer.step_graph, allow_override, bool(changes))

        trainer._compile()
        trainer.runner.state = {k: state[k] for k in expected}
        trainer.history = meta.get("history", [])
        trainer.best = meta.get("best")
        return trainer


# -- resuming: what a checkpoint recorded, against what the call passes ------------------------------
def _in_graph_order(graph: Graph, wrt: Iterable[str] | None) -> list[str] | None:
    """``wrt`` as a set, in the graph's parameter order (unknown names last, for make_train_step to report)."""
    if wrt is None:
        return None
    wanted = list(wrt)
    return [k for k in graph.params if k in wanted] + [w for w in wanted if w not in graph.params]


# -- helpers ---------------------------------------------------------------------------------
def _progress_bar(total, desc, enabled):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True)


def _postfix(record: Mapping[str, Any]) -> dict[str, str]:
    out = {"loss": f"{record['loss']:.4f}"}
    if "tokens_per_s" in record:
        out["tok/s"] = f"{record['tokens_per_s']:.0f}"
    elif "samples_per_s" in record:
        out["samples/s"] = f"{record['samples_per_s']:.1f}"
    return out
