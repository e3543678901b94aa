"""`graphdsl models`: the zoo, one line per model with its parameter count."""
from __future__ import annotations

import json

import click

from .common import Command


@click.command("models", cls=Command)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a table.")
def models_command(as_json: bool):
    """List the model zoo: name, family, parameters, attention blocks, what it trains on."""
    import models
    rows = []
    for name in models.names():
        spec = models.get(name)
        rows.append({"name": name, "family": spec.family,
                     "parameters": spec.module().num_parameters(),
                     "attention_blocks": spec.attention_blocks, "description": spec.description})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['family']:<12} {r['parameters']:>13,} params  "
                   f"{r['attention_blocks']:>3} attn  {r['description']}")
