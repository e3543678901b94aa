"""`graphdsl demo`: BERT-tiny pretraining (MLM + NSP) through the whole compiler, end to end.

Trace the model as written (textbook attention), show what the passes fused, compile one
training-step graph for the NumPy reference and for LLVM through TVM, check they agree, train on
the built-in corpus with a progress bar, and compare the backends again on the trained weights.
"""
from __future__ import annotations

import time

import click
import numpy as np

from .common import Command


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _max_diff(a: dict, b: dict, keys) -> float:
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64))))
               for k in keys)


@click.command(cls=Command)
@click.option("--model", default="bert-tiny", show_default=True, help="A zoo model (graphdsl models).")
@click.option("--steps", default=150, show_default=True, help="Training steps.")
@click.option("--batch", default=32, show_default=True, help="Sequences per step.")
@click.option("--target", default="llvm", show_default=True, type=click.Choice(["llvm", "numpy"]),
              help="The backend that trains (numpy always runs beside it as the reference).")
@click.option("--lr", default=3e-3, show_default=True, help="Peak AdamW learning rate.")
@click.option("--seed", default=0, show_default=True, help="Seed for data, dropout and parameters.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document (first_loss, final_loss, backends_agree, ...) instead.")
def demo(model: str, steps: int, batch: int, target: str, lr: float, seed: int, as_json: bool):
    """Pretrain BERT-tiny (MLM + NSP): passes, numpy and llvm side by side, training with a progress bar.

    \b
    Examples:
      graphdsl demo
      graphdsl demo --steps 40 --json
    """
    import backends
    import models
    import passes
    from graphdsl.optim import AdamW, StepRunner, WarmupCosine, make_train_step
    from models.trainer import Trainer, spec_batches

    from .common import emit_json, phase, progress_enabled
    echo = click.echo if not as_json else (lambda *a, **k: None)
    secho = click.secho if not as_json else (lambda *a, **k: None)
    if steps < 1 or batch < 1:
        raise click.UsageError("--steps and --batch must be at least 1")
    spec = models.get(model)
    module = spec.module().train()
    params = module.init(seed=seed)
    secho(f"graphdsl demo: {spec.name} ({spec.description})", bold=True)
    echo(f"{module.num_parameters():,} parameters, {spec.attention_blocks} attention blocks\n")

    # 1. Trace the model as written and let the passes optimize it.
    graph = spec.loss(module)
    report = passes.report(graph, level=2)
    echo(f"traced loss graph: {len(graph.nodes)} nodes "
               f"({graph.op_counts().get('softmax', 0)} softmax, {graph.op_counts().get('matmul', 0)} matmul)")
    echo("passes (nodes before -> after, what changed):")
    for record in report.passes:
        if record.nodes_before != record.nodes_after or record.counts:
            what = ", ".join(f"{k} {v}" for k, v in record.counts.items())
            echo(f"  {record.name:<22} {record.nodes_before:>4} -> {record.nodes_after:<4} {what}")
    fused = report.final_ops.get("attention", 0)
    echo(f"attention blocks fused: {fused} of {spec.attention_blocks}; "
               f"softmax left in attention: {report.graph.op_counts().get('softmax', 0) - _loss_softmax(report.graph)}\n")

    # 2. One training-step graph, compiled for the reference and for the training target.
    schedule = WarmupCosine(warmup_steps=max(1, steps // 10), total_steps=steps, min_ratio=0.1)
    optimizer = AdamW(lr=lr, weight_decay=0.01)
    step_graph = make_train_step(report.graph, optimizer, clip_norm=1.0, schedule=schedule)
    echo(f"train step (forward + attention backward + clipping + AdamW) is one graph: "
               f"{len(step_graph.nodes)} nodes")
    exes, compile_s = {}, {}
    for t in dict.fromkeys(["numpy", target]):
        if t != "numpy":
            echo(f"compiling for {t} through TVM (cached on disk after the first time) ...")
        with phase(f"compiling the train step for {t}"):
            exes[t], seconds = _timed(lambda t=t: backends.compile(step_graph, t))
        compile_s[t] = seconds
        echo(f"  {t:<6} compiled in {seconds:5.1f} s")

    # 3. The backends agree over a few steps from the same state (dropout draws the same bits).
    batches = spec_batches(spec, batch, seed)
    check_steps = 3
    runners = {t: StepRunner(exe, params, seed=seed) for t, exe in exes.items()}
    losses = {t: [r.step(batches(i))["loss"] for i in range(check_steps)] for t, r in runners.items()}
    if target != "numpy":
        diff = _max_diff(runners["numpy"].params, runners[target].params, params)
        echo(f"{check_steps} steps on numpy vs {target}: losses "
                   f"{' '.join(f'{v:.5f}' for v in losses['numpy'])} vs "
                   f"{' '.join(f'{v:.5f}' for v in losses[target])}; parameters then differ by at most "
                   f"{diff:.1e}\n")

    # 4. Train on the target with a progress bar.
    trainer = Trainer(report.graph, params, optimizer, target=target, schedule=schedule, clip_norm=1.0,
                      seed=seed, progress=progress_enabled() and not as_json)
    _, seconds = _timed(lambda: trainer.fit(batches, steps=steps, desc=f"pretraining on {target}"))
    losses = trainer.losses
    k = max(1, min(10, steps // 5))
    echo(f"\nloss (mean of {k} steps) {np.mean(losses[:k]):.3f} -> {np.mean(losses[-k:]):.3f} "
               f"in {steps} steps, {seconds:.1f} s on {target}")

    # 5. The trained weights give the same held-out loss on every backend.
    eval_graph = spec.loss(module.eval())
    held_out = spec.batch(spec.config, np.random.default_rng(seed + 10_000), batch)
    feed = {**held_out, **trainer.params}
    results = {t: backends.compile(eval_graph, t)(**feed) for t in exes}
    line = ", ".join(f"{t} {r['loss']:.5f}" for t, r in results.items())
    echo(f"held-out loss after training: {line}")
    final_diff = 0.0
    if target != "numpy":
        final_diff = _max_diff(results["numpy"], results[target], [k for k, v in results["numpy"].items()
                                                                    if np.ndim(v) == 0])
        echo(f"backends agree: max difference {final_diff:.1e}")
    check_diff = _max_diff(runners["numpy"].params, runners[target].params, params) if target != "numpy" else 0.0
    agree = bool(final_diff < 1e-4 and check_diff < 1e-4)
    if as_json:
        emit_json({"model": spec.name, "target": target, "steps": steps, "batch": batch,
                   "attention_fused": fused, "attention_blocks": spec.attention_blocks,
                   "first_loss": losses[0], "final_loss": losses[-1],
                   "first_loss_mean": float(np.mean(losses[:k])), "final_loss_mean": float(np.mean(losses[-k:])),
                   "losses": losses, "train_seconds": seconds, "compile_s": compile_s,
                   "check_steps": check_steps, "check_max_param_diff": check_diff,
                   "held_out_loss": {t: float(r["loss"]) for t, r in results.items()},
                   "held_out_max_diff": final_diff, "backends_agree": agree})
    if not agree:
        from .common import Failed
        raise Failed(f"numpy and {target} disagree: parameters after {check_steps} steps by {check_diff:.1e}, "
                     f"held-out outputs by {final_diff:.1e} (tolerance 1e-4)")


def _loss_softmax(graph) -> int:
    """Softmax nodes that feed a loss (cross-entropy's own), not attention."""
    users = graph.users()
    return sum(1 for n in graph.nodes if n.op == "softmax"
               and any(u.op in ("cross_entropy", "nll") for u in users[n]))
