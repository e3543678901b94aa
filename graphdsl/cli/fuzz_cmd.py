"""`graphdsl fuzz`: random graphs on every target against the numpy reference (backends.fuzz)."""
from __future__ import annotations

import click

from .common import Command, emit_json, parse_targets


@click.command("fuzz", cls=Command)
@click.option("--seconds", default=60.0, show_default=True, type=click.FloatRange(min=0),
              help="Time budget; at least one batch runs, and a finding's minimization always completes.")
@click.option("--targets", default="numpy,llvm,onnxruntime", show_default=True,
              help="Comma-separated targets; each is compared with the numpy reference.")
@click.option("--passes", "run_passes", is_flag=True,
              help="Also run every graph after passes.optimize(level=2), against the unoptimized reference.")
@click.option("--grad", "with_grad", is_flag=True,
              help="Differentiate a random scalar loss of each graph and compare the gradients too.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the graph sequence.")
@click.option("--max-graphs", default=None, type=click.IntRange(min=1),
              help="Stop after this many graphs (with a seed, an exact, reproducible set).")
@click.option("--batch", default=6, show_default=True, type=click.IntRange(1, 32),
              help="Random graphs traced into one graph per compile.")
@click.option("--out", "out_dir", default="fuzz-findings", show_default=True,
              type=click.Path(file_okay=False), help="Directory for the minimized JSON reproducers.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of progress lines.")
def fuzz_command(seconds, targets, run_passes, with_grad, seed, max_graphs, batch, out_dir, as_json):
    """Fuzz the backends: random valid graphs, run on each target and compared with numpy.

    \b
    Examples:
      graphdsl fuzz --seconds 30 --targets numpy,llvm --seed 1
      graphdsl fuzz --seconds 120 --passes --grad --json
    Every disagreement, crash or exception is minimized (delta debugging over the graph's nodes)
    and saved under --out as a JSON reproducer; tests/test_regressions.py replays those moved into
    tests/regressions/. Exit status 1 when there was any disagreement.
    """
    from backends.fuzz import fuzz
    names = parse_targets(targets)
    if names == ["numpy"] and not run_passes:
        raise click.BadParameter("name a target to compare with numpy, e.g. numpy,llvm (or add --passes)",
                                 param_hint="--targets")

    last = [0.0]

    def progress(report, new):       # a line per batch, at most one a second unless it found something
        if as_json or (not new and report.elapsed - last[0] < 1.0):
            return
        last[0] = report.elapsed
        click.echo(f"batch {report.batches}: {report.graphs} graphs in {report.elapsed:.0f}s, "
                   f"{report.disagreements} disagreements", err=True)
        for entry in new:
            click.echo(f"  {entry['reason']}\n    minimized to {entry['nodes']} nodes "
                       f"({', '.join(entry['ops'])}): {entry['file']}", err=True)

    report = fuzz(seconds=seconds, targets=names, passes=run_passes, grad=with_grad, seed=seed,
                  max_graphs=max_graphs, batch=batch, out_dir=out_dir, on_batch=progress)
    if as_json:
        emit_json(report.to_dict())
    else:
        doc = report.to_dict()
        click.echo(f"{report.graphs} graphs on {', '.join(report.targets)} in {report.elapsed:.0f}s "
                   f"({doc['graphs_per_minute']} per minute), seed {seed}: "
                   f"{report.disagreements} disagreements")
        for entry in report.findings:
            click.echo(f"  {entry['file']}: {entry['reason']}")
    if report.disagreements:
        raise SystemExit(1)
