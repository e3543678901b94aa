"""The `graphdsl` command line."""
import json
import re
import subprocess
import sys

from click.testing import CliRunner

from graphdsl import registry
from graphdsl.cli import main


def test_help_lists_the_subcommands():
    out = CliRunner().invoke(main, ["--help"])
    assert out.exit_code == 0
    assert "demo" in out.output and "ops" in out.output


def test_console_script_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "graphdsl", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "graphdsl demo" in done.stdout


def test_ops_lists_every_registered_op():
    out = CliRunner().invoke(main, ["ops", "--json"])
    assert out.exit_code == 0
    rows = json.loads(out.output)
    assert {r["op"] for r in rows} == set(registry.all_ops())
    softmax = next(r for r in rows if r["op"] == "softmax")
    assert softmax["gradient"] == "vjp" and "axis" in softmax["attrs"]
    table = CliRunner().invoke(main, ["ops"]).output
    assert f"{len(rows)} ops" in table


def test_demo_trains_and_reports_a_falling_loss():
    out = CliRunner().invoke(main, ["demo", "--steps", "60"])
    assert out.exit_code == 0, out.output
    assert "train step (forward + backward + clipping + AdamW) is one graph" in out.output
    first, last = map(float, re.search(r"loss ([\d.]+) -> ([\d.]+)", out.output).groups())
    assert last < first / 2
    acc = int(re.search(r"held-out accuracy \d+% -> (\d+)%", out.output).group(1))
    assert acc > 60


def test_models_lists_the_zoo_with_parameter_counts():
    import models
    out = CliRunner().invoke(main, ["models", "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["name"]: r for r in json.loads(out.output)}
    assert set(rows) == set(models.names())
    assert rows["bert-base"]["parameters"] == 110_106_428  # Hugging Face's bert-base-uncased count
    for family in ("bert", "gpt", "bart", "contrastive"):
        assert any(r["family"] == family for r in rows.values()), family
