"""The pass manager, the report and the `graphdsl passes` command."""
from __future__ import annotations

import json
from collections import Counter

import pytest
from click.testing import CliRunner

import graphdsl as gd
import passes
from graphdsl.cli.passes_cmd import passes_command
from graphdsl.graph import Graph, Node
from passes.manager import PASSES, Pass


def _attention_graph():
    def fn(q, k, v):
        return ((q @ k.mT) / 2.0).softmax(-1) @ v
    return gd.trace(fn, q="f32[2,3,4]", k="f32[2,3,4]", v="f32[2,3,4]")


def test_levels():
    g = _attention_graph()
    assert passes.optimize(g, level=0) is g or str(passes.optimize(g, level=0)) == str(g)
    assert passes.optimize(g, level=1).op_counts().get("div", 0) == 0
    assert passes.optimize(g, level=2).op_counts()["attention"] == 1
    with pytest.raises(gd.GraphDSLError, match="unknown optimization level 3"):
        passes.optimize(g, level=3)


def test_run_named_passes_and_unknown_names():
    g = _attention_graph()
    assert passes.run(g, ["fuse_attention"]).op_counts()["attention"] == 1
    with pytest.raises(passes.PassError, match=r"unknown pass \['fuse_atention'\]") as info:
        passes.run(g, ["fuse_atention"])
    assert "did you mean fuse_attention" in str(info.value)


def test_report_records_every_pass():
    rep = passes.report(_attention_graph(), level=2)
    assert [r.name for r in rep.passes] == passes.pipeline(2)
    fuse = next(r for r in rep.passes if r.name == "fuse_attention")
    assert fuse.ops_before.get("softmax") == 1 and fuse.ops_after.get("attention") == 1
    assert fuse.counts == {"attention": 1}
    assert rep.totals()["attention"] == 1
    doc = json.loads(rep.to_json())
    assert set(doc) >= {"passes", "final_ops", "attention"}
    assert doc["final_ops"] == {"attention": 1}
    assert all({"name", "ops_before", "ops_after", "ms"} <= set(p) for p in doc["passes"])
    text = str(rep)
    assert "fuse_attention" in text and "attention 1" in text and "final ops: attention 1" in text


def _broken(graph):
    """A pass that leaves a node whose type disagrees with its op's type rule."""
    out = graph.outputs["out"]
    bad = Node(out.op, out.inputs, out.attrs, gd.TensorType((7,), gd.float32), out.loc)
    return Graph({"out": bad}, name=graph.name, sources=graph.sources()), Counter()


def _raises(graph):
    raise ValueError("boom")


@pytest.mark.parametrize("fn,match", [(_broken, "failed verification"), (_raises, "ValueError: boom")])
def test_a_failing_pass_is_named_with_those_before_it(monkeypatch, fn, match):
    monkeypatch.setitem(PASSES, "broken", Pass("broken", fn, "test"))
    with pytest.raises(passes.PassError) as info:
        passes.run(_attention_graph(), ["canonicalize", "cse", "broken", "dce"])
    msg = str(info.value)
    assert "pass 'broken' failed" in msg and match in msg
    assert "passes run before it: canonicalize, cse" in msg
    assert "dump_ir" in msg


def test_dump_ir_writes_every_stage(tmp_path):
    passes.run(_attention_graph(), ["canonicalize", "fuse_attention"], dump_ir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["00-input.txt", "01-canonicalize.txt", "02-fuse_attention.txt"]
    assert "softmax" in (tmp_path / "00-input.txt").read_text()
    assert "attention(" in (tmp_path / "02-fuse_attention.txt").read_text()


def test_every_registered_pass_runs_on_a_training_graph():
    def loss(q, k, v):
        return {"loss": (((q @ k.mT) * 0.5).softmax(-1) @ v).sum()}

    g = gd.grad(gd.trace(loss, q="f32[2,3,4]", k="f32[2,3,4]", v="f32[2,3,4]"))
    for name in PASSES:
        passes.run(g, [name])  # verified after the pass


@pytest.mark.parametrize("model", ["bert-tiny", "gpt-tiny"])
def test_cli_prints_the_report(model):
    out = CliRunner().invoke(passes_command, [model])
    assert out.exit_code == 0, out.output
    assert "fuse_attention" in out.output and "final ops:" in out.output
    doc = json.loads(CliRunner().invoke(passes_command, [model, "--json"]).output)
    assert doc["final_ops"]["attention"] == doc["attention_blocks"] == 2
    assert "softmax" not in doc["final_ops"]
    assert [p["name"] for p in doc["passes"]] == passes.pipeline(2)


def test_cli_levels_graphs_and_errors(tmp_path):
    out = CliRunner().invoke(passes_command, ["gpt-tiny", "--level", "1", "--graph", "forward", "--json"])
    assert json.loads(out.output)["final_ops"].get("softmax") == 2
    out = CliRunner().invoke(passes_command, ["gpt-tiny", "--graph", "train", "--dump-ir", str(tmp_path)])
    assert out.exit_code == 0 and (tmp_path / "00-input.txt").exists()
    out = CliRunner().invoke(passes_command, ["gpt-tinny"])
    assert out.exit_code != 0 and "did you mean gpt-tiny" in out.output
