"""The training loop: compile one train step, feed batches, log, checkpoint, resume exactly.

    spec = models.get("bert-tiny")
    trainer = Trainer(spec, None, AdamW(lr=1e-3), target="numpy", log_path="train.jsonl")
    trainer.fit(spec_batches(spec, 16), steps=200)        # tqdm bar: loss and tokens/s
    trainer.save("ckpt/")                                  # params + optimizer state + step + seed
    again = Trainer.load("ckpt/", spec, AdamW(lr=1e-3))    # continues exactly where it stopped

The step graph is ``graphdsl.optim.make_train_step`` compiled once by ``backends.compile``;
``StepRunner`` holds the parameters and the optimizer state between steps. Randomness is a
function of the step number: dropout uses ``seed + step`` (StepRunner) and batches given as a
function ``batches(step)`` are drawn from ``default_rng([data_seed, step])`` (``spec_batches``),
so a run resumed from a checkpoint sees the same batches and masks, and its losses are those of
the run that never stopped.

Checkpoint layout (a directory): ``params.npz`` and ``optimizer.npz`` (``.safetensors`` instead
with ``format="safetensors"``, when that package is installed) and ``trainer.json`` (step, seed,
optimizer, parameter shapes, the metric history and the best evaluation so far).
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

from .registry import ModelSpec

FORMAT_VERSION = 1
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
    (``params`` required). ``schedule``, ``clip_norm`` and ``wrt`` go to ``make_train_step``;
    ``seed`` seeds dropout (``seed + step``). ``log_path`` receives one JSON object per line:
    ``{"kind": "train", "step", "loss", <metrics>, "lr", "time_s", "samples_per_s", ...}`` and
    ``{"kind": "eval", "step", <eval metrics>}``.
    """

    def __init__(self, spec_or_loss_graph: ModelSpec | Graph, params: Mapping[str, np.ndarray] | None,
                 optimizer: Optimizer, *, target: str = "numpy", schedule: Schedule | None = None,
                 clip_norm: float | None = None, wrt: Iterable[str] | None = None,
                 log_path: str | Path | None = None, seed: int = 0, progress: bool = True):
        import backends  # the trainer is the one part of models/ that compiles
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
        self.optimizer, self.schedule, self.clip_norm = optimizer, schedule, clip_norm
        self.target, self.seed, self.progress = target, int(seed), progress
        self.log_path = Path(log_path) if log_path is not None else None
        self.step_graph = make_train_step(self.loss_graph, optimizer, clip_norm=clip_norm,
                                          schedule=schedule, wrt=wrt)
        self.exe = backends.compile(self.step_graph, target)
        self.runner = StepRunner(self.exe, params, seed=self.seed)
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None          # {"step", "metric", "value"}
        self.best_params: dict[str, np.ndarray] | None = None

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
    def save(self, path: str | Path, *, format: str = "npz") -> Path:
        """Write a checkpoint directory (see the module docstring); returns its path."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        _write_arrays(path / "params", self.params, format)
        _write_arrays(path / "optimizer", self.runner.state, format)
        meta = {
            "format_version": FORMAT_VERSION, "format": format, "step": self.step, "seed": self.seed,
            "model": self.spec.name if self.spec is not None else None, "graph": self.loss_graph.name,
            "optimizer": {"class": type(self.optimizer).__name__, "lr": self.optimizer.lr},
            "schedule": repr(self.schedule) if self.schedule is not None else None,
            "clip_norm": self.clip_norm, "target": self.target,
            "params": {k: [list(v.shape), str(v.dtype)] for k, v in self.params.items()},
            "best": self.best, "history": self.history,
        }
        (path / "trainer.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path, spec_or_loss_graph: ModelSpec | Graph, optimizer: Optimizer,
             **kwargs) -> "Trainer":
        """A Trainer resumed from checkpoint ``path``: parameters, optimizer state, step, seed,
        history and best evaluation. The other arguments are as for ``Trainer(...)``."""
        path = Path(path)
        meta_path = path / "trainer.json"
        if not meta_path.exists():
            raise GraphDSLError(f"no checkpoint at {str(path)!r} (trainer.json is missing)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise GraphDSLError(f"checkpoint {str(path)!r} has format version {meta.get('format_version')}, "
                                f"this code reads version {FORMAT_VERSION}")
        want = meta["optimizer"]["class"]
        if type(optimizer).__name__ != want:
            raise GraphDSLError(f"checkpoint {str(path)!r} holds {want} state, got a "
                                f"{type(optimizer).__name__} optimizer", hint=f"resume with {want}")
        kwargs.setdefault("seed", meta["seed"])
        params = _read_arrays(path / "params")
        trainer = cls(spec_or_loss_graph, params, optimizer, **kwargs)
        _check_same(path, "parameters", {k: tuple(n.type.shape) for k, n in trainer.step_graph.params.items()},
                    params)
        state = _read_arrays(path / "optimizer")
        expected = {k: v.shape for k, v in zero_state(trainer.step_graph).items()}
        _check_same(path, "optimizer state", expected, state)
        trainer.runner.state = {k: state[k] for k in expected}
        trainer.history = meta.get("history", [])
        trainer.best = meta.get("best")
        return trainer


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


def _write_arrays(stem: Path, arrays: Mapping[str, np.ndarray], format: str) -> None:
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


def _read_arrays(stem: Path) -> dict[str, np.ndarray]:
    if stem.with_suffix(".npz").exists():
        with np.load(stem.with_suffix(".npz")) as f:
            return {k: f[k] for k in f.files}
    if stem.with_suffix(".safetensors").exists():
        from safetensors.numpy import load_file
        return dict(load_file(str(stem.with_suffix(".safetensors"))))
    raise GraphDSLError(f"checkpoint file {stem.name}.npz (or .safetensors) is missing in {str(stem.parent)!r}")


def _check_same(path: Path, what: str, expected: Mapping[str, tuple], got: Mapping[str, np.ndarray]) -> None:
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
