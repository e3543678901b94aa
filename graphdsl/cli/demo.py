"""`graphdsl demo`: trace, differentiate and train a small Transformer encoder, end to end.

The task is generated, so the demo needs no download: sequences of tokens; the label is which of
three marker tokens occurs most often. Attention has to look at the whole sequence to get it right.
"""
from __future__ import annotations

import time

import click
import numpy as np

N_CLASSES = 3
VOCAB = 12
SEQ = 12


def make_batch(rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    """Token ids with a unique most-frequent marker token (1, 2 or 3); label = marker - 1."""
    labels = rng.integers(0, N_CLASSES, batch)
    ids = rng.integers(N_CLASSES + 1, VOCAB, (batch, SEQ))
    for row, label in enumerate(labels):
        counts = rng.integers(0, 3, N_CLASSES)
        counts[label] = 3 + rng.integers(0, 2)
        slots = rng.permutation(SEQ)[:counts.sum()]
        ids[row, slots] = np.repeat(np.arange(1, N_CLASSES + 1), counts)
    return {"ids": ids.astype(np.int64), "labels": labels.astype(np.int64)}


def build_model(d_model: int, n_layers: int):
    from graphdsl import nn

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(VOCAB, d_model)
            self.pos = nn.Embedding(SEQ, d_model)
            self.encoder = nn.TransformerEncoder(n_layers, d_model=d_model, n_heads=4, d_ff=2 * d_model,
                                                 dropout=0.1)
            self.norm = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, N_CLASSES)

        def forward(self, ids):
            from graphdsl import ops
            positions = ops.arange(ids.shape[1])
            h = self.tok(ids) + self.pos(positions)
            h = self.encoder(h)
            return self.head(self.norm(h.mean(axis=1)))

    return Classifier()


@click.command()
@click.option("--steps", default=150, show_default=True, help="Training steps.")
@click.option("--batch", default=32, show_default=True, help="Sequences per step.")
@click.option("--layers", default=2, show_default=True, help="Encoder layers.")
@click.option("--d-model", default=32, show_default=True, help="Hidden size.")
@click.option("--seed", default=0, show_default=True, help="Seed for data and parameters.")
def demo(steps: int, batch: int, layers: int, d_model: int, seed: int):
    """Trace, differentiate and train a small Transformer encoder on the NumPy backend."""
    from tqdm import tqdm

    import backends
    import graphdsl as gd
    from graphdsl import ops
    from graphdsl.optim import AdamW, StepRunner, make_train_step
    from graphdsl.optim.schedules import LinearWarmupDecay

    model = build_model(d_model, layers)
    params = model.init(seed=seed)
    click.secho("graphdsl demo: a Transformer encoder classifier, traced, differentiated and trained",
                bold=True)
    click.echo(f"model: {layers} encoder layers, d_model {d_model}, 4 heads, "
               f"{sum(p.size for p in params.values()):,} parameters")

    def loss_fn(ids, labels):
        logits = model(ids)
        return {"loss": ops.cross_entropy(logits, labels), "logits": logits}

    t0 = time.perf_counter()
    graph = gd.trace(loss_fn, params=model, name="classifier", ids="i64[batch,seq]", labels="i64[batch]")
    click.echo(f"\ntraced in {1e3 * (time.perf_counter() - t0):.0f} ms: {len(graph.nodes)} nodes; ops: "
               + ", ".join(f"{k} {v}" for k, v in sorted(graph.op_counts().items(), key=lambda kv: -kv[1])[:8]))
    lines = str(graph).splitlines()
    body = lines[next(i for i, ln in enumerate(lines) if ln.endswith("{")) + 1:]
    click.echo("the first attention block, as traced (print(graph) shows it all):")
    click.echo("\n".join("  " + ln for ln in body[:24]) + "\n  ...")

    schedule = LinearWarmupDecay(warmup_steps=steps // 10, total_steps=steps)
    step_graph = make_train_step(graph, AdamW(lr=3e-3, weight_decay=0.01), clip_norm=1.0,
                                 schedule=schedule)
    click.echo(f"\ntrain step (forward + backward + clipping + AdamW) is one graph: "
               f"{len(step_graph.nodes)} nodes")
    runner = StepRunner(backends.compile(step_graph, "numpy"), params, seed=seed)

    rng = np.random.default_rng(seed)
    eval_batch = make_batch(np.random.default_rng(seed + 1), 256)
    evaluate = backends.compile(gd.trace(loss_fn, params=model.eval(), name="eval", ids="i64[batch,seq]",
                                         labels="i64[batch]"), "numpy")
    model.train()

    def accuracy() -> float:
        out = evaluate(**eval_batch, **runner.params)
        return float((out["logits"].argmax(-1) == eval_batch["labels"]).mean())

    acc0 = accuracy()
    first = None
    bar = tqdm(range(steps), desc="training on numpy", unit="step")
    for _ in bar:
        metrics = runner.step(make_batch(rng, batch))
        first = first if first is not None else float(metrics["loss"])
        bar.set_postfix(loss=f"{float(metrics['loss']):.3f}")
    acc1 = accuracy()
    click.echo(f"\nloss {first:.3f} -> {float(metrics['loss']):.3f}; "
               f"held-out accuracy {100 * acc0:.0f}% -> {100 * acc1:.0f}% (chance: {100 / N_CLASSES:.0f}%)")
