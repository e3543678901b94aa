"""`graphdsl export MODEL -o model.onnx` and `graphdsl import model.onnx --target llvm`.

export: any MODEL (a zoo name, a graph .json with --weights, an .onnx file, file.py:function): its
forward, loss or whole training-step graph, to an ONNX file. import: an ONNX file to a graph,
compiled for a target and, when ONNX Runtime is installed, checked against it on random inputs.
"""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from .common import (Command, compile_graph, emit_json, load_model, model_options, parse_dims, parse_targets, phase,
                     random_inputs)
from .passes_cmd import GRAPHS


@click.command("export", cls=Command)
@model_options
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The .onnx file to write.")
@click.option("--graph", "which", type=click.Choice(GRAPHS), default="forward", show_default=True,
              help="forward: inference (a user graph as it is); loss: the training loss; train: a whole "
                   "AdamW training step.")
@click.option("-O", "--opt-level", type=click.IntRange(0, 2), default=None,
              help="Graph passes before exporting. Default 0, or 2 with --contrib-ops.")
@click.option("--no-weights", is_flag=True, help="Keep parameters as graph inputs instead of initializers.")
@click.option("--opset", default=None, type=int, help="ONNX opset (default 18).")
@click.option("--contrib-ops", is_flag=True,
              help="Use ONNX Runtime's MultiHeadAttention for fused attention (runs the passes first).")
@click.option("--external-data", is_flag=True, help="Write the weights to <output>.data beside the model.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def export_command(model, weights, dims, seed, output, which, opt_level, no_weights, opset, contrib_ops,
                   external_data, as_json):
    """Export MODEL to an ONNX file.

    \b
    Examples:
      graphdsl export bert-tiny -o bert.onnx
      graphdsl export gpt-tiny -o gpt.onnx --contrib-ops        # fused attention as MultiHeadAttention
      graphdsl export my_model.py:build -o mine.onnx --graph train --no-weights
    """
    import passes
    from backends.onnx import DEFAULT_OPSET, export
    from graphdsl.optim import AdamW, make_train_step
    m = load_model(model, weights, dims, seed, "tracing")
    level = opt_level if opt_level is not None else (2 if contrib_ops else 0)
    graph = m.graph if which == "forward" else m.loss_graph()
    if level:
        with phase(f"running the level-{level} passes"):
            graph = passes.optimize(graph, level)
    if which == "train":
        graph = make_train_step(graph, AdamW(lr=1e-3))
    values = None if no_weights else m.params
    with phase(f"exporting {len(graph.nodes)} nodes to {output}"):
        mp = export(graph, params=values, path=output, opset=opset or DEFAULT_OPSET,
                    contrib_ops=contrib_ops, external_data=external_data)
    size = sum(t.ByteSize() for t in mp.graph.initializer) / 1e6
    mha = sum(1 for n in mp.graph.node if n.op_type == "MultiHeadAttention")
    if as_json:
        emit_json({"model": model, "output": output, "graph": graph.name, "graph_kind": which, "opt_level": level,
                   "opset": mp.opset_import[0].version, "onnx_nodes": len(mp.graph.node),
                   "initializers": len(mp.graph.initializer), "initializer_mb": size,
                   "inputs": {k: str(n.type) for k, n in graph.inputs.items()},
                   "outputs": {k: str(n.type) for k, n in graph.outputs.items()},
                   "attention": graph.op_counts().get("attention", 0), "multi_head_attention": mha})
        return
    inputs = ", ".join(f"{k}: {n.type}" for k, n in graph.inputs.items())
    click.echo(f"wrote {output}: graph {graph.name!r}, opset {mp.opset_import[0].version}, "
               f"{len(mp.graph.node)} ONNX nodes")
    click.echo(f"  inputs  {inputs}" + (f" and {len(graph.params)} parameters" if no_weights or values is None else ""))
    click.echo(f"  outputs {', '.join(f'{k}: {n.type}' for k, n in graph.outputs.items())}")
    click.echo(f"  {len(mp.graph.initializer)} initializers ({size:.1f} MB)")
    if contrib_ops:
        click.echo(f"  {mha} MultiHeadAttention (com.microsoft) of {graph.op_counts().get('attention', 0)} "
                   f"fused attention ops")


def _check(path: str, graph, exe, sizes) -> dict | None:
    """Compare ``exe`` with ONNX Runtime on random inputs; None when ONNX Runtime is missing."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    feed = random_inputs(graph, sizes)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
    got = exe(**feed)
    worst = 0.0
    for name, ref in want.items():
        diff = np.abs(got[name].astype(np.float64) - ref.astype(np.float64))
        worst = max(worst, float(diff.max()) if diff.size else 0.0)
    return {"inputs": {k: list(v.shape) for k, v in feed.items()}, "max_abs": worst, "ok": worst <= 1e-3}


@click.command("import", cls=Command)
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--target", default="numpy", show_default=True, help="Compile for this target (numpy, llvm, ...).")
@click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE", help="Fix a dynamic axis (repeatable).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Save the imported graph as JSON.")
@click.option("--print", "show", is_flag=True, help="Print the imported graph.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Compare the compiled graph with ONNX Runtime on random inputs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def import_command(path, target, dims, output, show, check, as_json):
    """Import an ONNX model, compile it for TARGET and check it against ONNX Runtime.

    \b
    Examples:
      graphdsl import bert.onnx --target llvm --dim batch=2
      graphdsl import model.onnx -o model.json --print --no-check
    """
    import graphdsl
    target = parse_targets(target, param_hint="--target")[0]
    sizes = parse_dims(dims)
    with phase(f"importing {path}"):
        graph = graphdsl.from_onnx(path, dims=sizes)
    if output:
        graph.save(output)
    exe, seconds, _ = compile_graph(graph, target)
    result = None
    if check:
        with phase("checking against ONNX Runtime"):
            result = _check(path, graph, exe, sizes)
    if as_json:
        emit_json({"path": path, "target": target, "nodes": len(graph.nodes), "ops": graph.op_counts(),
                   "inputs": {k: str(n.type) for k, n in graph.inputs.items()},
                   "outputs": {k: str(n.type) for k, n in graph.outputs.items()},
                   "saved": output, "compile_s": seconds, "check": result if check else "skipped"})
    else:
        counts = ", ".join(f"{op} {n}" for op, n in sorted(graph.op_counts().items(), key=lambda kv: -kv[1]))
        click.echo(f"imported {Path(path).name}: {len(graph.nodes)} nodes ({counts})")
        click.echo(f"  inputs  {', '.join(f'{k}: {n.type}' for k, n in graph.inputs.items())}")
        click.echo(f"  outputs {', '.join(f'{k}: {n.type}' for k, n in graph.outputs.items())}")
        if show:
            click.echo(str(graph))
        if output:
            click.echo(f"  saved the graph to {output}")
        click.echo(f"  compiled for {target} in {seconds:.1f} s")
        if check and result is None:
            click.echo("  check skipped: onnxruntime is not installed")
        elif check:
            shapes = ", ".join(f"{k}{v}" for k, v in result["inputs"].items())
            click.echo(f"  check vs onnxruntime on random inputs ({shapes}): max |diff| {result['max_abs']:.2e}  "
                       f"{'OK' if result['ok'] else 'MISMATCH'}")
    if result is not None and not result["ok"]:
        from .common import Failed
        raise Failed(f"{exe.target} and onnxruntime disagree by {result['max_abs']:.2e}")
