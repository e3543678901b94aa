"""`graphdsl export MODEL -o model.onnx` and `graphdsl import model.onnx --target llvm`.

export: a zoo model (its forward, loss or whole training-step graph, weights from ``init(seed)``)
or a saved graph (.json, weights from an .npz) to an ONNX file. import: an ONNX file to a graph,
compiled for a target and, when ONNX Runtime is installed, checked against it on random inputs.
"""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from graphdsl.errors import GraphDSLError

from .zoo import zoo_graph


def _fail(e: GraphDSLError):
    return click.ClickException(str(e))


def _zoo_graph(name: str, which: str, seed: int):
    from graphdsl.optim import AdamW, make_train_step
    _, module, graph = zoo_graph(name, "forward" if which == "forward" else "loss")
    if which == "train":
        graph = make_train_step(graph, AdamW(lr=1e-3))
    return graph, module.init(seed=seed)


def _load_graph(source: str, which: str, seed: int, weights: str | None):
    if source.endswith(".json"):
        from graphdsl.graph import Graph
        graph = Graph.load(source)
        values = dict(np.load(weights)) if weights else None
        return graph, values
    return _zoo_graph(source, which, seed)


@click.command("export")
@click.argument("model")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The .onnx file to write.")
@click.option("--graph", "which", type=click.Choice(["forward", "loss", "train"]), default="forward",
              show_default=True, help="Which graph of a zoo model: inference, training loss, or a whole AdamW step.")
@click.option("--seed", default=0, show_default=True, help="Seed of the zoo model's parameter init.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False),
              help="An .npz of parameter values, for a graph given as .json.")
@click.option("--no-weights", is_flag=True, help="Keep parameters as graph inputs instead of initializers.")
@click.option("--opset", default=None, type=int, help="ONNX opset (default 18).")
@click.option("--contrib-ops", is_flag=True, help="Use ONNX Runtime's MultiHeadAttention where it fits.")
@click.option("--external-data", is_flag=True, help="Write the weights to <output>.data beside the model.")
def export_command(model, output, which, seed, weights, no_weights, opset, contrib_ops, external_data):
    """Export MODEL (a zoo name such as bert-tiny, or a graph .json) to an ONNX file."""
    from backends.onnx import DEFAULT_OPSET, export
    try:
        graph, values = _load_graph(model, which, seed, weights)
        m = export(graph, params=None if no_weights else values, path=output, opset=opset or DEFAULT_OPSET,
                   contrib_ops=contrib_ops, external_data=external_data)
    except GraphDSLError as e:
        raise _fail(e) from None
    size = sum(t.ByteSize() for t in m.graph.initializer) / 1e6
    inputs = ", ".join(f"{k}: {n.type}" for k, n in graph.inputs.items())
    click.echo(f"wrote {output}: graph {graph.name!r}, opset {m.opset_import[0].version}, "
               f"{len(m.graph.node)} ONNX nodes")
    click.echo(f"  inputs  {inputs}" + (f" and {len(graph.params)} parameters" if no_weights or values is None else ""))
    click.echo(f"  outputs {', '.join(f'{k}: {n.type}' for k, n in graph.outputs.items())}")
    click.echo(f"  {len(m.graph.initializer)} initializers ({size:.1f} MB)")


def _parse_dims(dims) -> dict[str, int]:
    out = {}
    for item in dims:
        name, sep, size = item.partition("=")
        if not sep or not size.strip().isdigit():
            raise click.BadParameter(f"{item!r}: write NAME=SIZE, e.g. batch=2", param_hint="--dim")
        out[name.strip()] = int(size)
    return out


def _random_feed(graph, sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """Random inputs: normal floats, ints in {0, 1} (valid token ids and masks), every free dim 2."""
    rng = np.random.default_rng(0)
    feed = {}
    for name, node in graph.inputs.items():
        shape = tuple(d if isinstance(d, int) else d.evaluate({s: sizes.get(s, 2) for s in d.symbols})
                      for d in node.type.shape)
        dt = node.type.dtype
        if dt.is_float:
            feed[name] = rng.standard_normal(shape).astype(dt.np)
        else:
            feed[name] = rng.integers(0, 2, shape).astype(dt.np)
    return feed


def _check(path: str, graph, exe, sizes) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        click.echo("  check skipped: onnxruntime is not installed")
        return
    feed = _random_feed(graph, sizes)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
    got = exe(**feed)
    worst = 0.0
    for name, ref in want.items():
        diff = np.abs(got[name].astype(np.float64) - ref.astype(np.float64))
        worst = max(worst, float(diff.max()) if diff.size else 0.0)
    shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feed.items())
    verdict = "OK" if worst <= 1e-3 else "MISMATCH"
    click.echo(f"  check vs onnxruntime on random inputs ({shapes}): max |diff| {worst:.2e}  {verdict}")
    if verdict != "OK":
        raise click.ClickException(f"{exe.target} and onnxruntime disagree by {worst:.2e}")


@click.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--target", default="numpy", show_default=True, help="Compile for this target (numpy, llvm, ...).")
@click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE", help="Fix a dynamic axis (repeatable).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Save the imported graph as JSON.")
@click.option("--print", "show", is_flag=True, help="Print the imported graph.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Compare the compiled graph with ONNX Runtime on random inputs.")
def import_command(path, target, dims, output, show, check):
    """Import an ONNX model, compile it for TARGET and check it against ONNX Runtime."""
    import backends
    import graphdsl
    sizes = _parse_dims(dims)
    try:
        graph = graphdsl.from_onnx(path, dims=sizes)
        if output:
            graph.save(output)
        exe = backends.compile(graph, target)
    except GraphDSLError as e:
        raise _fail(e) from None
    counts = ", ".join(f"{op} {n}" for op, n in sorted(graph.op_counts().items(), key=lambda kv: -kv[1]))
    click.echo(f"imported {Path(path).name}: {len(graph.nodes)} nodes ({counts})")
    click.echo(f"  inputs  {', '.join(f'{k}: {n.type}' for k, n in graph.inputs.items())}")
    click.echo(f"  outputs {', '.join(f'{k}: {n.type}' for k, n in graph.outputs.items())}")
    if show:
        click.echo(str(graph))
    if output:
        click.echo(f"  saved the graph to {output}")
    click.echo(f"  compiled for {target}")
    if check:
        try:
            _check(path, graph, exe, sizes)
        except GraphDSLError as e:
            raise _fail(e) from None
