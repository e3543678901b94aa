"""`graphdsl passes MODEL`: run the optimization passes on a model and show what each changed."""
from __future__ import annotations

import click

from .common import Command, emit_json, load_model, model_options, phase

GRAPHS = ("loss", "forward", "train")


def chosen_graph(model, which: str, level: int):
    """The graph a ``--graph`` choice names: forward, loss, or the gradient graph (fused first)."""
    if which == "forward":
        return model.graph
    loss = model.loss_graph()
    if which == "train":
        import passes
        from graphdsl.autodiff import grad
        return grad(passes.optimize(loss, level))
    return loss


@click.command("passes", cls=Command)
@model_options
@click.option("--level", "-O", type=click.IntRange(0, 2), default=2, show_default=True,
              help="0: nothing, 1: cleanup (canonicalize, constants, CSE, DCE), "
                   "2: also mask folding and fusions.")
@click.option("--graph", "which", type=click.Choice(GRAPHS), default=None,
              help="loss: the training loss; forward: the inference graph; train: the gradient graph "
                   "(the forward fused first, then differentiated). Default: loss for a zoo model, the "
                   "graph itself for a user model.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of the table.")
@click.option("--dump-ir", type=click.Path(file_okay=False), default=None,
              help="Write the IR before the first pass and after each pass into this folder.")
def passes_command(model, weights, dims, seed, level, which, as_json, dump_ir):
    """Run the passes on MODEL and report each pass's effect.

    \b
    Examples:
      graphdsl passes bert-tiny
      graphdsl passes my_model.py:build --json
      graphdsl passes model.onnx --graph forward --dump-ir ir/
    """
    import passes
    m = load_model(model, weights, dims, seed, "tracing")
    which = which or ("loss" if m.kind == "zoo" else "forward")
    graph = chosen_graph(m, which, level)
    with phase(f"running the level-{level} passes on {len(graph.nodes)} nodes"):
        report = passes.report(graph, level, dump_ir=dump_ir)
    blocks = m.spec.attention_blocks if m.spec is not None else None
    if as_json:
        doc = report.to_dict()
        doc.update(model=model, graph_kind=which, level=level, attention_blocks=blocks)
        emit_json(doc)
        return
    known = f": {blocks} attention blocks in the model" if blocks is not None else ""
    click.echo(f"{model} ({which} graph, level {level}){known}")
    click.echo(str(report))
