"""`graphdsl passes MODEL`: run the optimization passes on a zoo model and show what each changed."""
from __future__ import annotations

import json

import click

from .zoo import zoo_graph

GRAPHS = ("loss", "forward", "train")


@click.command("passes")
@click.argument("model")
@click.option("--level", type=click.IntRange(0, 2), default=2, show_default=True,
              help="0: nothing, 1: cleanup (canonicalize, constants, CSE, DCE), "
                   "2: also mask folding and fusions.")
@click.option("--graph", "which", type=click.Choice(GRAPHS), default="loss", show_default=True,
              help="loss: the traced pretraining loss; forward: the inference graph; "
                   "train: the gradient graph (the forward fused first, then differentiated).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of the table.")
@click.option("--dump-ir", type=click.Path(file_okay=False), default=None,
              help="Write the IR before the first pass and after each pass into this folder.")
def passes_command(model: str, level: int, which: str, as_json: bool, dump_ir: str | None):
    """Run the passes on MODEL (e.g. bert-tiny, gpt-tiny) and report each pass's effect."""
    import passes
    from graphdsl.errors import GraphDSLError

    try:
        spec, _, graph = zoo_graph(model, "forward" if which == "forward" else "loss")
        if which == "train":
            from graphdsl.autodiff import grad
            graph = grad(passes.optimize(graph, level))
        report = passes.report(graph, level, dump_ir=dump_ir)
    except GraphDSLError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        doc = report.to_dict()
        doc.update(model=model, graph_kind=which, level=level,
                   attention_blocks=spec.attention_blocks)
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"{model} ({which} graph, level {level}): "
               f"{spec.attention_blocks} attention blocks in the model")
    click.echo(str(report))
