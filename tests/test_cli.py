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


def test_demo_pretrains_bert_on_llvm_beside_numpy():
    out = CliRunner().invoke(main, ["demo", "--steps", "60", "--batch", "16"])
    assert out.exit_code == 0, out.output
    assert "attention blocks fused: 2 of 2; softmax left in attention: 0" in out.output
    numpy_losses, llvm_losses = re.search(r"3 steps on numpy vs llvm: losses ([\d. ]+) vs ([\d. ]+);",
                                          out.output).groups()
    for a, b in zip(numpy_losses.split(), llvm_losses.split()):
        assert abs(float(a) - float(b)) < 1e-4
    first, last = map(float, re.search(r"loss \(mean of \d+ steps\) ([\d.]+) -> ([\d.]+)", out.output).groups())
    assert last < first - 0.5, f"pretraining loss went {first} -> {last}"
    assert float(re.search(r"backends agree: max difference ([\d.e+-]+)", out.output).group(1)) < 1e-4


def test_models_lists_the_zoo_with_parameter_counts():
    import models
    out = CliRunner().invoke(main, ["models", "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["name"]: r for r in json.loads(out.output)}
    assert set(rows) == set(models.names())
    assert rows["bert-base"]["parameters"] == 110_106_428  # Hugging Face's bert-base-uncased count
    for family in ("bert", "gpt", "bart", "contrastive"):
        assert any(r["family"] == family for r in rows.values()), family
