"""`graphdsl compile`, `graphdsl compare` and `graphdsl run`: any MODEL through the targets.

    graphdsl compile bert-tiny --target llvm -o out/bert --weights     # a loadable artifact + weights
    graphdsl run out/bert --inputs batch.npz -o outputs.npz             # nothing else needed
    graphdsl compare my_model.py:build --targets numpy,llvm --json      # errors and latency per target

``model_case`` builds the graph and the inputs both commands (and the tests) use: the model's
inference graph, or with ``train`` one whole AdamW training step, on a batch of a zoo model's
built-in task (random inputs for a user graph), after the graph passes of ``opt_level``
(default 2: attention, norms and activations fused, so the targets' fused kernels are what runs;
0 compiles the model as traced).
"""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from graphdsl.errors import GraphDSLError

from . import model_ref
from .common import (Command, Failed, compile_graph, emit_json, load_model, model_options, parse_dims, parse_targets,
                     phase, random_inputs, read_inputs)


def case_graph(m: model_ref.Model, *, train: bool, opt_level: int):
    """``(graph, data_graph)``: what a command compiles, the forward graph (or with ``train`` one AdamW
    step of the loss graph) after the passes of ``opt_level``, and the graph whose inputs the data feeds."""
    import passes
    from graphdsl.optim import AdamW, make_train_step
    graph = m.loss_graph() if train else m.graph
    if opt_level:
        with phase(f"running the level-{opt_level} passes"):
            graph = passes.optimize(graph, opt_level)
    return (make_train_step(graph, AdamW(lr=1e-3), clip_norm=1.0) if train else graph), graph


def model_case(model: str | model_ref.Model, *, train: bool = False, batch_size: int = 2, seed: int = 0,
               opt_level: int = 2, sizes=None, inputs: dict | None = None):
    """(graph, inputs) for a MODEL: its forward graph (eval mode) or one AdamW training step."""
    from graphdsl.optim import zero_state
    m = model if isinstance(model, model_ref.Model) else model_ref.load(model, seed=seed)
    graph, data_graph = case_graph(m, train=train, opt_level=opt_level)
    params = m.require_params("running it")
    if m.spec is not None:
        batch = m.spec.example_batch(batch_size, seed)
    else:
        batch = random_inputs(data_graph, {"batch": batch_size, **(sizes or {})}, seed)
    if inputs is not None:
        batch = {**batch, **inputs}
    if train:
        feed = {**batch, **{f"state/{k}": v for k, v in zero_state(graph).items()}}
        if "seed" in graph.inputs:
            feed["seed"] = np.int32(seed)
    else:
        feed = _forward_inputs(graph, batch)
    return graph, {**{k: v for k, v in feed.items() if k in graph.inputs},
                   **{k: params[k] for k in graph.params}}


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
            raise GraphDSLError(f"no array in the example batch fits input {k!r} ({node.type})")
        out[k] = unused.pop(match)
    return out


_OPT = click.option("-O", "--opt-level", type=click.IntRange(0, 2), default=2, show_default=True,
                    help="Graph passes before compiling (0: the model as traced).")


@click.command("compile", cls=Command)
@click.argument("model", metavar="MODEL")
@click.option("--target", type=click.Choice(["llvm", "cuda"]), default="llvm", show_default=True)
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for the compiled module, its graph and parameter layout (new, empty, "
                   "or an earlier artifact).")
@click.option("--train", is_flag=True, help="Compile one training step (AdamW) instead of the forward pass.")
@click.option("--weights", is_flag=False, flag_value="-", default=None, metavar="[FILE]",
              help="Bundle parameter values into the directory: the model's own (zoo, ONNX, (graph, "
                   "params)) with a bare --weights, or those in FILE (.npz/.safetensors).")
@click.option("--emit-source", type=click.Path(dir_okay=False), help="Also write the CUDA source here (cuda).")
@click.option("--seed", default=0, show_default=True, help="Seed of a zoo model's parameters.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_OPT
def compile_command(model, target, out_dir, train, weights, emit_source, seed, as_json, opt_level):
    """Compile MODEL for llvm or cuda into a directory that loads without recompiling.

    \b
    Examples:
      graphdsl compile bert-tiny --target llvm -o out/bert --weights
      graphdsl compile my_model.py:build -o out/mine --weights params.npz
      graphdsl compile gpt-tiny --target cuda -o out/gpt --emit-source gpt.cu
    Load it with backends.load(DIR) or run it with `graphdsl run DIR --inputs x.npz`.
    """
    if emit_source and target != "cuda":
        raise click.UsageError("--emit-source writes CUDA source: use it with --target cuda")
    weights_file = weights if weights not in (None, "-") else None
    m = load_model(model, weights_file, seed=seed, desc="tracing")
    graph, _ = case_graph(m, train=train, opt_level=opt_level)
    bundle = None
    if weights is not None:
        bundle = m.require_params("--weights")
        bundle = {k: bundle[k] for k in graph.params}
    exe, seconds, event = compile_graph(graph, target)
    with phase(f"writing {out_dir}"):
        from backends.tvm.artifact import save
        path = save(exe, out_dir, weights=bundle)
    doc = {"model": model, "graph": graph.name, "target": target, "nodes": len(graph.nodes),
           "parameters": len(graph.params), "output": str(path), "weights_bundled": bundle is not None,
           "compile_s": round(seconds, 3), "cache": event, "structural_hash": graph.structural_hash()[:16]}
    if emit_source:
        exe.save_source(emit_source)
        doc["source"] = emit_source
    if target == "cuda" and getattr(exe, "_ptx", None):
        doc["ptx_lines"] = len(exe.ptx().splitlines())
    if as_json:
        emit_json(doc)
        return
    how = {"miss": "compiled", "memory": "from the compile cache (memory)", "disk": "from the compile cache (disk)"}
    click.echo(f"{graph.name}: {len(graph.nodes)} nodes, {len(graph.params)} parameters -> {path} ({target}, "
               f"{how.get(event, 'compiled')} in {seconds:.1f} s)")
    if bundle is not None:
        click.echo(f"  weights bundled: {len(bundle)} arrays in {Path(path) / 'weights.safetensors'}")
    if emit_source:
        click.echo(f"CUDA source -> {emit_source}")
    if "ptx_lines" in doc:
        click.echo(f"PTX for {exe.arch}: {doc['ptx_lines']} lines (nvcc)")


@click.command("run", cls=Command)
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--inputs", "inputs_file", type=click.Path(dir_okay=False),
              help="The graph's inputs (.npz/.safetensors). Default: random inputs (see --dim).")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Parameter values, when the directory has none bundled (or to replace them).")
@click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE", help="Sizes of symbolic dims for random inputs.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the outputs to this .npz.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def run_command(directory, inputs_file, weights, dims, output, as_json):
    """Run a compiled DIRECTORY (`graphdsl compile -o DIR`) on inputs, without compiling.

    \b
    Examples:
      graphdsl compile bert-tiny -o out/bert --weights
      graphdsl run out/bert --inputs batch.npz -o outputs.npz
      graphdsl run out/bert --dim batch=2 --dim seq=16 --json
    """
    import backends
    with phase(f"loading {directory}"):
        exe = backends.load(directory)
    if exe.target == "cuda":
        from .common import require_gpu
        require_gpu("cuda")
    graph = exe.graph
    if weights is not None:
        from graphdsl.weights import check_params, read_arrays
        exe.bind_weights(check_params(graph, read_arrays(weights, "weights"), f"the weights in {weights}"))
    if graph.params and not exe.weights:
        raise Failed(f"{directory} was compiled without weights and its graph has "
                     f"{len(graph.params)} parameters\n  hint: pass --weights FILE, or compile with --weights")
    feed = read_inputs(inputs_file, graph) if inputs_file else random_inputs(graph, parse_dims(dims))
    with phase(f"running {graph.name} on {exe.target}"):
        out = exe(feed)
    if output:
        from graphdsl.weights import write_arrays
        write_arrays(output, out)
    rows = {k: {"dtype": str(v.dtype), "shape": list(v.shape), **_summary(v)} for k, v in out.items()}
    if as_json:
        emit_json({"directory": directory, "target": exe.target, "graph": graph.name,
                   "inputs": {k: list(np.shape(v)) for k, v in feed.items()}, "outputs": rows,
                   "written": output})
        return
    click.echo(f"{graph.name} on {exe.target}: inputs "
               + ", ".join(f"{k}{list(np.shape(v))}" for k, v in feed.items()))
    for k, r in rows.items():
        stats = f"  min {r['min']:.6g} max {r['max']:.6g} mean {r['mean']:.6g}" if "mean" in r else ""
        click.echo(f"  {k}: {r['dtype']}{r['shape']}{stats}")
    if output:
        click.echo(f"outputs -> {output}")


def _summary(v: np.ndarray) -> dict:
    if v.size == 0 or v.dtype.kind not in "fiub":
        return {}
    x = v.astype(np.float64)
    return {"min": float(x.min()), "max": float(x.max()), "mean": float(x.mean())}


@click.command("compare", cls=Command)
@model_options
@click.option("--targets", default="numpy,llvm", show_default=True,
              help="Comma-separated targets (numpy, llvm, cuda, onnxruntime); the reference is numpy "
                   "when listed, else the first.")
@click.option("--train", is_flag=True, help="Compare one whole training step instead of the forward pass.")
@click.option("--batch", "batch_size", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--inputs", "inputs_file", type=click.Path(dir_okay=False),
              help="Inputs (.npz) instead of the zoo's example batch or random inputs.")
@click.option("--repeat", default=5, show_default=True, type=click.IntRange(min=1),
              help="Timed calls per target (median reported).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON report.")
@_OPT
def compare_command(model, weights, dims, seed, targets, train, batch_size, inputs_file, repeat, as_json,
                    opt_level):
    """Run MODEL on several targets; exit 1 when any disagrees with the reference.

    \b
    Examples:
      graphdsl compare bert-tiny --targets numpy,llvm,onnxruntime
      graphdsl compare my_model.py:build --train --json
      graphdsl compare model.onnx --dim batch=4 --dim seq=32
    """
    import backends
    names = parse_targets(targets)
    reference = "numpy" if "numpy" in names else names[0]
    m = load_model(model, weights, dims, seed, "tracing")
    given = read_inputs(inputs_file, m.graph) if inputs_file else None
    graph, inputs = model_case(m, train=train, batch_size=batch_size, seed=seed, opt_level=opt_level,
                               sizes=parse_dims(dims), inputs=given)
    with phase(f"compiling and running {graph.name} on {', '.join(names)}"):
        report = backends.compare(graph, names, inputs, reference=reference, repeat=repeat)
    report["model"] = model
    if as_json:
        emit_json(report)
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
