"""`graphdsl train MODEL`: train through the compiler (passes, one compiled step), checkpoint, resume.

A zoo model trains on its built-in task; a user graph (its scalar output ``loss``) on batches of
``--data file.npz``: one array per graph input, examples on axis 0, ``--batch`` rows per step in
order, wrapping around (the step number picks the rows, so a resumed run sees the same batches).
"""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from graphdsl.errors import GraphDSLError

from .common import Command, Failed, emit_json, load_model, model_options, parse_targets, phase, progress_enabled


def data_batches(path: str, graph, batch_size: int):
    """``fn(step) -> batch`` over the examples of an .npz of named arrays (see the module doc)."""
    from graphdsl.weights import read_arrays
    arrays = read_arrays(path, "training data")
    wanted = [k for k in graph.inputs if k != "seed"]
    missing = [k for k in wanted if k not in arrays]
    if missing:
        want = ", ".join(f"{k}: {graph.inputs[k].type}" for k in missing)
        raise GraphDSLError(f"training data {path!r} lacks {want}",
                            hint=f"it holds {sorted(arrays)}; save one array per graph input, examples on axis 0")
    sizes = {k: len(arrays[k]) if arrays[k].ndim else 0 for k in wanted}
    n = min(sizes.values()) if sizes else 0
    if n == 0 or len(set(sizes.values())) != 1:
        raise GraphDSLError(f"training data {path!r}: every array needs the same number of examples on "
                            f"axis 0, got {sizes}")

    def batch(step: int) -> dict[str, np.ndarray]:
        rows = (np.arange(batch_size) + step * batch_size) % n
        return {k: arrays[k][rows] for k in wanted}
    return batch, n


def _tokens(batch) -> int:
    if "attention_mask" in batch:
        return int(np.sum(batch["attention_mask"]))
    ids = next((v for k, v in batch.items() if k in ("input_ids", "ids", "src_ids")), None)
    if ids is not None:
        return int(np.size(ids))
    first = next(iter(batch.values()))
    return int(np.shape(first)[0]) if np.ndim(first) else 1


def _resume(path: str, source, lr, allow_override: bool, seed: int, options: dict):
    """Trainer.load with the checkpoint's optimizer; ``--lr`` replaces only its learning rate."""
    from graphdsl.optim import Optimizer
    from models.checkpoint import read_meta
    from models.trainer import Trainer
    optimizer = None
    if lr is not None:
        config = read_meta(path).get("optimizer")
        if not isinstance(config, dict):
            raise GraphDSLError(f"checkpoint {path!r} records no optimizer", hint="the checkpoint is damaged")
        config = {**config, "lr": lr}
        optimizer = Optimizer.from_config(config)
    if allow_override:
        options = {**options, "seed": seed}
    try:
        return Trainer.load(path, source, optimizer, allow_override=allow_override, **options)
    except GraphDSLError as e:
        if "this call passes" not in e.message:
            raise
        raise GraphDSLError(e.message, hint="drop the option to resume with the checkpoint's value, or pass "
                                            "--allow-override to train on with this one") from None


@click.command("train", cls=Command)
@model_options
@click.option("--target", default="numpy", show_default=True, help="numpy, llvm or cuda.")
@click.option("--steps", default=100, show_default=True, type=click.IntRange(min=1), help="Updates to run.")
@click.option("--batch", "batch_size", default=16, show_default=True, type=click.IntRange(min=1),
              help="Examples per step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="AdamW learning rate [default: 1e-3; on --resume, the checkpoint's].")
@click.option("--clip-norm", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Clip the global gradient norm [default: 1.0; on --resume, the checkpoint's].")
@click.option("--data", "data_file", type=click.Path(dir_okay=False),
              help="Training data for a user graph: an .npz with one array per input, examples on axis 0.")
@click.option("--resume", type=click.Path(file_okay=False), default=None,
              help="Continue from this checkpoint directory (exactly: optimizer, lr, schedule, clipping, "
                   "seed and step as recorded; a conflicting option is an error).")
@click.option("--save", "save_dir", type=click.Path(file_okay=False), default=None,
              help="Write a checkpoint directory here (every --every steps and at the end).")
@click.option("--every", type=click.IntRange(min=1), default=None, help="Checkpoint every K steps (needs --save).")
@click.option("--keep", type=click.IntRange(min=1), default=2, show_default=True,
              help="Snapshots kept in the --save directory (the newest; each save is atomic).")
@click.option("-O", "--opt-level", type=click.IntRange(0, 2), default=None,
              help="Graph passes before differentiating [default: 2; on --resume, the checkpoint's].")
@click.option("--allow-override", is_flag=True,
              help="On --resume, let --lr / --clip-norm / -O / --seed differ from the checkpoint's (with a warning).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (first_loss, final_loss, ...).")
def train_command(model, weights, dims, seed, target, steps, batch_size, lr, clip_norm, data_file, resume,
                  save_dir, every, keep, opt_level, allow_override, as_json):
    """Train MODEL: the passes fuse the forward, one compiled step graph runs per batch.

    \b
    Examples:
      graphdsl train bert-tiny --target llvm --steps 50 --save ckpt/
      graphdsl train bert-tiny --resume ckpt/ --steps 50 --save ckpt/
      graphdsl train my_model.py:build --data batches.npz --steps 200 --json
    """
    from graphdsl.optim import AdamW
    from models.trainer import Trainer, spec_batches
    target = parse_targets(target, allowed=("numpy", "llvm", "cuda"), param_hint="--target")[0]
    if every is not None and save_dir is None:
        raise click.UsageError("--every needs --save DIR (where to write the checkpoints)")
    m = load_model(model, weights, dims, seed, "tracing")
    if m.spec is not None:
        if data_file:
            raise click.UsageError(f"{model} trains on its built-in task; --data is for user graphs")
        source, batches, examples = m.spec, spec_batches(m.spec, batch_size, seed), None
        params = m.params
    else:
        if not data_file:
            loss = m.loss_graph()
            takes = ", ".join(f"{k}: {n.type}" for k, n in loss.inputs.items() if k != "seed")
            raise click.UsageError(f"a user graph trains on --data file.npz: one array per input ({takes}), "
                                   f"examples on axis 0")
        source = m.loss_graph()
        batches, examples = data_batches(data_file, source, batch_size)
        params = m.require_params("training")
    options = {"target": target, "progress": progress_enabled() and not as_json}
    for key, value in (("clip_norm", clip_norm), ("opt_level", opt_level)):
        if value is not None:
            options[key] = value
    with phase(f"building and compiling the train step for {target}"):
        if resume:
            trainer = _resume(resume, source, lr, allow_override, seed, options)
        else:
            options.setdefault("clip_norm", 1.0)
            options.setdefault("opt_level", 2)
            trainer = Trainer(source, params, AdamW(lr=lr if lr is not None else 1e-3), seed=seed, **options)
    start_step = trainer.step
    records: list[dict] = []
    seen = {"tokens": 0}

    def counted(step: int) -> dict:
        batch = batches(step)
        seen["tokens"] += _tokens(batch)
        return batch

    chunk, done, snapshot = every or steps, 0, None
    while done < steps:
        n = min(chunk, steps - done)
        records += trainer.fit(counted, steps=n, desc=f"training {m.name} on {target}")
        done += n
        if save_dir:
            snapshot = trainer.save(save_dir, keep=keep)
    tokens = seen["tokens"]
    seconds = sum(r["time_s"] for r in records)
    counts = trainer.step_graph.op_counts()
    doc = {"model": model, "target": target, "steps": len(records), "start_step": start_step,
           "end_step": trainer.step, "first_loss": records[0]["loss"], "final_loss": records[-1]["loss"],
           "losses": [r["loss"] for r in records], "seconds": seconds,
           "tokens_per_s": tokens / seconds if seconds else None,
           "examples_per_s": len(records) * batch_size / seconds if seconds else None,
           "fused": {op: counts.get(op, 0) for op in ("attention", "attention_grad", "softmax", "layer_norm")},
           "opt_level": getattr(trainer, "opt_level", None),
           "checkpoint": str(Path(save_dir)) if save_dir else None, "snapshot": str(snapshot) if snapshot else None,
           "resumed_from": resume,
           "examples_in_data": examples}
    if as_json:
        emit_json(doc)
        return
    k = max(1, min(10, len(records) // 5))
    first, last = np.mean(doc["losses"][:k]), np.mean(doc["losses"][-k:])
    click.echo(f"{m.name} on {target}: steps {start_step} -> {trainer.step}, loss (mean of {k}) "
               f"{first:.4f} -> {last:.4f}, {doc['tokens_per_s']:.0f} tokens/s")
    click.echo(f"train step: {counts.get('attention', 0)} attention, {counts.get('attention_grad', 0)} "
               f"attention_grad, {counts.get('softmax', 0)} softmax (opt level {doc['opt_level']})")
    if save_dir:
        click.echo(f"checkpoint -> {snapshot} (resume with --resume {save_dir})")
    if not np.isfinite(doc["final_loss"]):
        raise Failed(f"the loss became {doc['final_loss']} by step {trainer.step}\n"
                     f"  hint: lower --lr or set --clip-norm")
