"""`graphdsl` command: subcommands grow with the library."""
from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="graphdsl")
def main():
    """graphdsl: Transformer models in a symbolic DSL, optimized by graph passes, compiled by TVM."""
