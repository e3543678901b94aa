"""`graphdsl compile` and `graphdsl compare` (click commands of graphdsl/cli/tvm_cmd.py)."""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from graphdsl.cli.tvm_cmd import compare_command, compile_command, model_case


def test_compile_writes_a_loadable_artifact(tmp_path):
    from backends.tvm import devices
    out = CliRunner().invoke(compile_command, ["bert-tiny", "--target", "llvm", "-o", str(tmp_path / "bert")])
    assert out.exit_code == 0, out.output
    exe = devices.load(tmp_path / "bert")
    graph, inputs = model_case("bert-tiny")
    assert exe.param_names == list(graph.params)
    got = exe(inputs)
    assert set(got) == set(graph.outputs) and np.isfinite(got["mlm_logits"]).all()


def test_compile_emits_cuda_source(tmp_path):
    out = CliRunner().invoke(compile_command, ["gpt-tiny", "--target", "cuda", "-o", str(tmp_path / "gpt"),
                                               "--emit-source", str(tmp_path / "gpt.cu")])
    assert out.exit_code == 0, out.output
    assert "__global__" in (tmp_path / "gpt.cu").read_text()
    assert "PTX for sm_90" in out.output


def test_emit_source_needs_cuda(tmp_path):
    out = CliRunner().invoke(compile_command, ["gpt-tiny", "-o", str(tmp_path / "g"), "--emit-source", "x.cu"])
    assert out.exit_code != 0 and "--target cuda" in out.output


def test_compare_json_reports_errors_and_latency():
    out = CliRunner().invoke(compare_command, ["bert-tiny", "--targets", "numpy,llvm", "--json", "--repeat", "2"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["ok"] is True and report["model"] == "bert-tiny"
    llvm = report["targets"]["llvm"]
    assert llvm["latency_ms"] > 0 and set(llvm["outputs"]) == {"mlm_logits", "nsp_logits"}
    assert all({"max_abs", "max_rel", "ok"} <= set(o) for o in llvm["outputs"].values())


def test_compare_exits_non_zero_on_disagreement(monkeypatch):
    import importlib
    compare_module = importlib.import_module("backends.compare")  # (backends.compare is the function)
    monkeypatch.setitem(compare_module.TOLERANCES, "llvm", (-1.0, 0.0))   # nothing can agree
    out = CliRunner().invoke(compare_command, ["bert-tiny", "--targets", "numpy,llvm", "--repeat", "1"])
    assert out.exit_code == 1
    assert "DISAGREES" in out.output and "targets DISAGREE" in out.output
