"""The `graphdsl` command. Each subcommand is a thin layer over the library's public API."""
from __future__ import annotations

import logging
import warnings

import click

from .common import Group


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="graphdsl")
@click.option("--debug", is_flag=True, help="Show Python tracebacks (also GRAPHDSL_DEBUG=1).")
@click.option("-v", "--verbose", is_flag=True, help="Log compile-cache hits and misses and pass timings.")
def main(debug: bool, verbose: bool):
    """graphdsl: Transformer models in a symbolic DSL, optimized by graph passes, compiled by TVM.

    Start with `graphdsl demo`. Every command that takes a MODEL accepts a zoo name (`graphdsl
    models`), a graph .json (with --weights), an .onnx file, or file.py:function returning a
    Graph or (graph, params).

    Exit status: 0 done, 1 failed (one paragraph says why), 2 usage error.
    """
    if verbose:
        logging.basicConfig(format="graphdsl: %(message)s")
        logging.getLogger("graphdsl").setLevel(logging.INFO)
    warnings.showwarning = _show_warning


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Library warnings as one line on stderr, without the Python source line they came from."""
    click.echo(f"warning: {message}", err=True)


from .demo import demo  # noqa: E402  (each module defines one or more subcommands)
from .models_cmd import models_command  # noqa: E402
from .ops_cmd import ops_command  # noqa: E402
from .onnx_cmd import export_command, import_command  # noqa: E402
from .passes_cmd import passes_command  # noqa: E402
from .generate_cmd import generate_command  # noqa: E402
from .optimize_cmd import optimize_command  # noqa: E402
from .train_cmd import train_command  # noqa: E402
from .tvm_cmd import compare_command, compile_command, run_command  # noqa: E402
from .fuzz_cmd import fuzz_command  # noqa: E402

main.add_command(demo)
main.add_command(models_command)
main.add_command(ops_command)
main.add_command(export_command)
main.add_command(import_command)
main.add_command(passes_command)
main.add_command(compile_command)
main.add_command(compare_command)
main.add_command(run_command)
main.add_command(fuzz_command)
main.add_command(train_command)
main.add_command(generate_command)
main.add_command(optimize_command)
