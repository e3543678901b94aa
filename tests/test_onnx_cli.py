"""`graphdsl export` and `graphdsl import` (the click commands, run with CliRunner)."""
from __future__ import annotations


import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import graphdsl
from graphdsl.cli.onnx_cmd import export_command, import_command

pytest.importorskip("onnxruntime")
import models  # noqa: E402


def test_export_a_zoo_model_then_import_and_check_it(tmp_path):
    path = tmp_path / "gpt.onnx"
    out = CliRunner().invoke(export_command, ["gpt-tiny", "-o", str(path)])
    assert out.exit_code == 0, out.output
    assert f"wrote {path}" in out.output and "initializers" in out.output
    model = onnx.load(str(path))
    assert [vi.name for vi in model.graph.input] == ["ids"]

    saved = tmp_path / "gpt.json"
    out = CliRunner().invoke(import_command, [str(path), "--target", "numpy", "-o", str(saved),
                                              "--dim", "batch=3"])
    assert out.exit_code == 0, out.output
    assert "compiled for numpy" in out.output and "OK" in out.output
    assert "max |diff|" in out.output and "ids[3," in out.output
    graph = graphdsl.Graph.load(saved)
    assert list(graph.inputs) == ["ids"] and str(graph.inputs["ids"].type).startswith("i64[3,")


def test_export_a_training_step_keeping_params_as_inputs(tmp_path):
    path = tmp_path / "step.onnx"
    out = CliRunner().invoke(export_command, ["bert-tiny", "-o", str(path), "--graph", "train", "--no-weights"])
    assert out.exit_code == 0, out.output
    names = [vi.name for vi in onnx.load(str(path)).graph.input]
    assert "state/step" in names and "seed" in names and any(n.startswith("state/m/") for n in names)
    assert "parameters" in out.output


def test_export_a_saved_graph_with_weights(tmp_path):
    layer = graphdsl.nn.Linear(4, 3)
    graph = graphdsl.trace(layer, x="f32[batch,4]")
    graph.save(tmp_path / "g.json")
    np.savez(tmp_path / "w.npz", **layer.init(seed=1))
    path = tmp_path / "g.onnx"
    out = CliRunner().invoke(export_command, [str(tmp_path / "g.json"), "-o", str(path),
                                              "--weights", str(tmp_path / "w.npz")])
    assert out.exit_code == 0, out.output
    assert {t.name for t in onnx.load(str(path)).graph.initializer} >= set(graph.params)


def test_errors_are_one_clean_message(tmp_path):
    out = CliRunner().invoke(export_command, ["no-such-model", "-o", str(tmp_path / "x.onnx")])
    assert out.exit_code == 1 and "unknown model 'no-such-model'" in out.output
    assert "Traceback" not in out.output
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    out = CliRunner().invoke(import_command, [str(bad)])
    assert out.exit_code == 1 and "not a valid ONNX file" in out.output
    out = CliRunner().invoke(import_command, [str(bad), "--dim", "batch"])
    assert out.exit_code == 2 and "NAME=SIZE" in out.output


def test_import_to_an_unknown_target_names_the_targets(tmp_path):
    path = tmp_path / "m.onnx"
    assert CliRunner().invoke(export_command, ["gpt-tiny", "-o", str(path)]).exit_code == 0
    out = CliRunner().invoke(import_command, [str(path), "--target", "cuda9"])
    assert out.exit_code == 2 and "unknown target 'cuda9'" in out.output and "numpy" in out.output  # usage error
