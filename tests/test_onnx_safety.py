"""Malformed and hostile ONNX files fail with one clear GraphError; none is read outside its folder."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphdsl
from graphdsl.errors import GraphError

W = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 1000


def _model(opset: int = 18) -> onnx.ModelProto:
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])],
                          [numpy_helper.from_array(W, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _with_external_data(tmp_path, location: str) -> str:
    """A model whose weight lives in an external file, then pointed at ``location``."""
    path = tmp_path / "model.onnx"
    onnx.save_model(_model(), str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, str(path))
    return str(path)


def test_a_valid_file_with_external_data_loads(tmp_path):
    g = graphdsl.from_onnx(_with_external_data(tmp_path, "weights.bin"))
    assert np.array_equal(g.outputs["y"].inputs[1].attrs["value"], W)


@pytest.mark.parametrize("location", ["../outside.bin", "sub/../../outside.bin", "/etc/passwd"])
def test_external_data_may_not_escape_the_model_folder(tmp_path, location):
    inner = tmp_path / "inner"
    inner.mkdir()
    (tmp_path / "outside.bin").write_bytes(W.tobytes())
    with pytest.raises(GraphError, match="outside the model's directory"):
        graphdsl.from_onnx(_with_external_data(inner, location))


def test_a_symlink_out_of_the_folder_is_refused(tmp_path):
    inner = tmp_path / "inner"
    inner.mkdir()
    (tmp_path / "secret.bin").write_bytes(W.tobytes())
    os.symlink(tmp_path / "secret.bin", inner / "link.bin")
    with pytest.raises(GraphError, match="outside the model's directory"):
        graphdsl.from_onnx(_with_external_data(inner, "link.bin"))


def test_missing_or_short_external_data_is_clear(tmp_path):
    path = _with_external_data(tmp_path, "weights.bin")
    (tmp_path / "weights.bin").write_bytes(b"\0" * 100)
    with pytest.raises(GraphError, match="past the end of weights.bin"):
        graphdsl.from_onnx(path)
    os.remove(tmp_path / "weights.bin")
    with pytest.raises(GraphError, match="external data file 'weights.bin' .* is missing"):
        graphdsl.from_onnx(path)
    with pytest.raises(GraphError, match="need the model.s path"):
        graphdsl.from_onnx(onnx.load(path, load_external_data=False))


def test_truncated_and_garbage_files_fail_cleanly(tmp_path):
    data = _model().SerializeToString()
    for name, content in [("truncated.onnx", data[: len(data) // 2]), ("garbage.onnx", b"\xff\x00not onnx" * 10),
                          ("empty.onnx", b"")]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(GraphError, match="not a valid ONNX"):
            graphdsl.from_onnx(path)
    with pytest.raises(GraphError, match="cannot read ONNX file"):
        graphdsl.from_onnx(tmp_path / "missing.onnx")
    with pytest.raises(GraphError, match="takes a path, bytes or an onnx.ModelProto"):
        graphdsl.from_onnx(42)


@pytest.mark.parametrize("opset,message", [
    (7, "opset 7, and these of its ops changed before opset 13, the oldest graphdsl reads: MatMul"),
    (12, "opset 12, and these of its ops changed before opset 13, the oldest graphdsl reads: MatMul"),
    (99, "opset 99; graphdsl imports opsets up to")])
def test_unsupported_opsets_are_named(opset, message):
    """An opset newer than ONNX's is refused; an older one only when one of the model's ops changed
    since (MatMul did at 13), naming those ops."""
    with pytest.raises(GraphError, match=message):
        graphdsl.from_onnx(_model(opset).SerializeToString())


def test_a_malformed_graph_is_rejected_by_the_checker():
    model = _model()
    model.graph.node[0].input[0] = "undefined_value"
    with pytest.raises(GraphError, match="malformed ONNX model"):
        graphdsl.from_onnx(model)


def test_unsupported_element_types_are_named():
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.COMPLEX64, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.COMPLEX64, [2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(GraphError, match="input 'x' has element type COMPLEX64"):
        graphdsl.from_onnx(model)
