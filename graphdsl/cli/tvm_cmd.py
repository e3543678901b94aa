"""`graphdsl compile` and `graphdsl compare`: a zoo model through the TVM targets.

    graphdsl compile bert-tiny --target llvm -o out/bert-tiny          # a loadable artifact directory
    graphdsl compile gpt-tiny --target cuda -o out/gpt --emit-source gpt.cu
    graphdsl compare bert-tiny --targets numpy,llvm --train --json    # errors and latency per target

``model_case`` builds the graph and the inputs both commands (and the tests) use: the model's
inference graph, or with ``train`` one whole AdamW training step, on a batch of its built-in task,
after the graph passes of ``opt_level`` (default 2: attention, norms and activations fused, so the
targets' fused kernels are what runs; 0 compiles the model as traced).
"""
from __future__ import annotations

import json

import click
import numpy as np

from .zoo import zoo_graph


def model_case(name: str, *, train: bool = False, batch_size: int = 2, seed: int = 0, opt_level: int = 2):
    """(graph, inputs) for zoo model ``name``: forward (eval mode) or one AdamW training step."""
    import passes
    from graphdsl.optim import AdamW, make_train_step, zero_state
    spec, model, graph = zoo_graph(name, "loss" if train else "forward")
    if opt_level:
        graph = passes.optimize(graph, opt_level)
    params = model.init(seed=seed)
    batch = spec.example_batch(batch_size, seed)
    if train:
        graph = make_train_step(graph, AdamW(lr=1e-3), clip_norm=1.0)
        inputs = {**batch, **{f"state/{k}": v for k, v in zero_state(graph).items()}}
        if "seed" in graph.inputs:
            inputs["seed"] = np.int32(seed)
    else:
        inputs = _forward_inputs(graph, batch)
    return graph, {**{k: v for k, v in inputs.items() if k in graph.inputs}, **{k: params[k] for k in graph.params}}


def _forward_inputs(graph, batch: dict) -> dict:
    """The batch's arrays for the inference graph; an input the batch lacks (contrastive models
    take ``images`` where the batch has two views) takes a batch array of the same dtype and rank."""
    out, unused = {}, dict(batch)
    for k, node in graph.inputs.items():
        if k in batch:
            out[k] = unused.pop(k, batch[k])
            continue
        match = next((n for n, a in unused.items() if a.dtype == node.type.dtype.np and a.ndim == node.type.rank), None)
        if match is None:
            from graphdsl.errors import GraphDSLError
            raise GraphDSLError(f"no array in the example batch fits input {k!r} ({node.type})")
        out[k] = unused.pop(match)
    return out


@click.command("compile")
@click.argument("model")
@click.option("--target", type=click.Choice(["llvm", "cuda"]), default="llvm", show_default=True)
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for the compiled module, its graph and parameter layout.")
@click.option("--train", is_flag=True, help="Compile one training step instead of the forward pass.")
@click.option("--emit-source", type=click.Path(dir_okay=False), help="Also write the CUDA source here (cuda).")
@click.option("-O", "--opt-level", type=click.IntRange(0, 2), default=2, show_default=True,
              help="Graph passes before compiling (0: the model as traced).")
def compile_command(model: str, target: str, out_dir: str, train: bool, emit_source: str | None, opt_level: int):
    """Compile a zoo MODEL for llvm or cuda into a directory that loads without recompiling."""
    import backends
    if emit_source and target != "cuda":
        raise click.UsageError("--emit-source writes CUDA source: use it with --target cuda")
    graph, _ = model_case(model, train=train, opt_level=opt_level)
    exe = backends.compile(graph, target)
    path = exe.save(out_dir)
    click.echo(f"{graph.name}: {len(graph.nodes)} nodes, {len(graph.params)} parameters -> {path} ({target})")
    if emit_source:
        exe.save_source(emit_source)
        click.echo(f"CUDA source -> {emit_source}")
    if target == "cuda" and getattr(exe, "_ptx", None):
        click.echo(f"PTX for {exe.arch}: {len(exe.ptx().splitlines())} lines (nvcc)")


@click.command("compare")
@click.argument("model")
@click.option("--targets", default="numpy,llvm", show_default=True,
              help="Comma-separated targets; the first is the reference unless numpy is listed.")
@click.option("--train", is_flag=True, help="Compare one whole training step instead of the forward pass.")
@click.option("--batch", "batch_size", default=2, show_default=True)
@click.option("--repeat", default=5, show_default=True, help="Timed calls per target (median reported).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON report.")
@click.option("-O", "--opt-level", type=click.IntRange(0, 2), default=2, show_default=True,
              help="Graph passes before compiling (0: the model as traced).")
def compare_command(model: str, targets: str, train: bool, batch_size: int, repeat: int, as_json: bool,
                    opt_level: int):
    """Run a zoo MODEL on several targets; exit 1 when any disagrees with the reference."""
    import backends
    names = [t.strip() for t in targets.split(",") if t.strip()]
    reference = "numpy" if "numpy" in names else names[0]
    graph, inputs = model_case(model, train=train, batch_size=batch_size, opt_level=opt_level)
    report = backends.compare(graph, names, inputs, reference=reference, repeat=repeat)
    report["model"] = model
    if as_json:
        click.echo(json.dumps(report, indent=1))
    else:
        _print_report(report)
    if not report["ok"]:
        raise SystemExit(1)


def _print_report(report: dict) -> None:
    click.echo(f"{report['model']} ({report['graph']}), reference {report['reference']}")
    for target, entry in report["targets"].items():
        if "error" in entry:
            click.echo(f"  {target:<12} FAILED: {entry['error'].splitlines()[0]}")
            continue
        worst = max(entry["outputs"].items(), key=lambda kv: _num(kv[1].get("max_abs", "inf")))
        verdict = "ok" if entry["ok"] else "DISAGREES"
        click.echo(f"  {target:<12} {verdict:<9} median {entry['latency_ms']:.2f} ms, compile {entry['compile_s']:.1f} s, "
                   f"worst output {worst[0]!r}: max abs {worst[1].get('max_abs')}, max rel {worst[1].get('max_rel')}")
        for name, out in entry["outputs"].items():
            if not out["ok"]:
                click.echo(f"      {name}: max abs {out.get('max_abs')}, max rel {out.get('max_rel')} "
                           f"(atol {entry['atol']}, rtol {entry['rtol']}) {out.get('error', '')}")
    click.echo("all targets agree" if report["ok"] else "targets DISAGREE")


def _num(x) -> float:
    return float("inf") if isinstance(x, str) else float(x)
