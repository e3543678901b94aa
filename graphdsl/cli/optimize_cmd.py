"""`graphdsl optimize IN -o OUT`: a graph JSON or ONNX file in, the optimized graph out."""
from __future__ import annotations

import click

from .common import Command, emit_json, parse_dims, phase


@click.command("optimize", cls=Command)
@click.argument("source", metavar="IN", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The optimized graph: .onnx (weights as initializers) or .json (weights beside it as .npz).")
@click.option("-O", "--opt-level", type=click.IntRange(0, 2), default=2, show_default=True,
              help="1: cleanup (canonicalize, constants, CSE, DCE); 2: also mask folding and fusions.")
@click.option("--contrib-ops", is_flag=True,
              help="ONNX out: write fused attention as ONNX Runtime's com.microsoft.MultiHeadAttention.")
@click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE", help="Fix an ONNX dynamic axis (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the pass report as one JSON document.")
def optimize_command(source, output, opt_level, contrib_ops, dims, as_json):
    """Optimize a graph file: IN (.json or .onnx) through the passes, written to OUT.

    \b
    Examples:
      graphdsl optimize bert.onnx -o bert.opt.onnx --contrib-ops   # fused attention for ONNX Runtime
      graphdsl optimize model.json -o model.opt.json -O 1
    The report says, per pass, the nodes before and after and what fused.
    """
    from backends.onnx.optimize import optimize_file
    if contrib_ops and not output.endswith(".onnx"):
        raise click.UsageError("--contrib-ops writes ONNX Runtime ops: use it with an -o FILE.onnx")
    with phase(f"optimizing {source} at level {opt_level}"):
        report = optimize_file(source, output, level=opt_level, contrib_ops=contrib_ops, dims=parse_dims(dims))
    mha = None
    if output.endswith(".onnx"):
        import onnx
        mha = sum(1 for n in onnx.load(output, load_external_data=False).graph.node
                  if n.op_type == "MultiHeadAttention")
    if as_json:
        doc = report.to_dict()
        doc.update(input=source, output=output, level=opt_level, contrib_ops=contrib_ops,
                   multi_head_attention=mha)
        emit_json(doc)
        return
    click.echo(str(report))
    extra = f"; {mha} MultiHeadAttention (com.microsoft)" if contrib_ops else ""
    click.echo(f"wrote {output}: {len(report.graph.nodes)} nodes{extra}")
