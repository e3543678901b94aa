"""`graphdsl optimize MODEL -o OUT`: a graph JSON, an ONNX file (or any MODEL) in, the optimized graph out."""
from __future__ import annotations

import click

from .common import Command, emit_json, load_model, model_options, phase


@click.command("optimize", cls=Command)
@model_options
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The optimized graph: .onnx (weights as initializers) or .json (weights beside it as .npz).")
@click.option("-O", "--opt-level", type=click.IntRange(0, 2), default=2, show_default=True,
              help="1: cleanup (canonicalize, constants, CSE, DCE); 2: also mask folding and fusions.")
@click.option("--contrib-ops", is_flag=True,
              help="ONNX out: write fused attention as ONNX Runtime's com.microsoft.MultiHeadAttention.")
@click.option("--json", "as_json", is_flag=True, help="Print the pass report as one JSON document.")
def optimize_command(model, weights, dims, seed, output, opt_level, contrib_ops, as_json):
    """Optimize MODEL (an .onnx file, a graph .json, ...) through the passes, written to OUT.

    \b
    Examples:
      graphdsl optimize bert.onnx -o bert.opt.onnx --contrib-ops   # fused attention for ONNX Runtime
      graphdsl optimize model.json -o model.opt.json -O 1
      graphdsl optimize my_model.py:build -o mine.onnx
    The report says, per pass, the nodes before and after and what fused. An .onnx OUT keeps the
    weights as initializers; a .json OUT writes them beside it as OUT.npz (what --weights takes).
    """
    from backends.onnx.optimize import optimize_graph
    if contrib_ops and not output.endswith(".onnx"):
        raise click.UsageError("--contrib-ops writes ONNX Runtime ops: use it with an -o FILE.onnx")
    if not output.endswith((".onnx", ".json")):
        raise click.BadParameter("write a .onnx or a graph .json file", param_hint="-o")
    m = load_model(model, weights, dims, seed)
    with phase(f"optimizing {model} at level {opt_level}"):
        report = optimize_graph(m.graph, m.params, output, level=opt_level, contrib_ops=contrib_ops)
    mha = None
    if output.endswith(".onnx"):
        import onnx
        mha = sum(1 for n in onnx.load(output, load_external_data=False).graph.node
                  if n.op_type == "MultiHeadAttention")
    if as_json:
        doc = report.to_dict()
        doc.update(input=model, output=output, level=opt_level, contrib_ops=contrib_ops,
                   multi_head_attention=mha)
        emit_json(doc)
        return
    click.echo(str(report))
    extra = f"; {mha} MultiHeadAttention (com.microsoft)" if contrib_ops else ""
    click.echo(f"wrote {output}: {len(report.graph.nodes)} nodes{extra}")
