"""Export to ONNX: the lowering table covers the registry, every op row exports to a model that
passes onnx.checker and whose shape inference agrees with our types, training steps export, params
become initializers or inputs, symbolic dims become named dynamic axes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import backends
import graphdsl
from backends.onnx import DEFAULT_OPSET, EXPORT, export
from graphdsl import nn, ops, registry
from graphdsl.errors import InputError, LoweringError
from graphdsl.optim import AdamW, make_train_step, zero_state
from tests.framework import SAMPLES, input_types as _types, trace_row as _trace

ort = pytest.importorskip("onnxruntime")


def _onnx_dims(vi) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in vi.type.tensor_type.shape.dim]


def inferred_outputs_agree(model: onnx.ModelProto, graph) -> None:
    """Shape inference from the inputs alone (our annotations removed) gives our output types."""
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    for out in bare.graph.output:
        out.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(bare, strict_mode=True, data_prop=True)
    by_name = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for name, node in graph.outputs.items():
        vi = by_name[name]
        assert vi.type.tensor_type.elem_type == onnx.helper.np_dtype_to_tensor_dtype(node.type.dtype.np), name
        dims = _onnx_dims(vi)
        if not vi.type.tensor_type.HasField("shape"):
            continue
        assert len(dims) == node.type.rank, f"{name}: inferred {dims}, ours {node.type}"
        for ours, theirs in zip(node.type.shape, dims):
            if isinstance(ours, int) and isinstance(theirs, int):
                assert ours == theirs, f"{name}: inferred {dims}, ours {node.type}"


@pytest.mark.parametrize("row,sample", SAMPLES)
def test_every_row_exports_and_passes_the_checker(row, sample):
    g = _trace(row, _types(sample.inputs), sample.attrs)
    model = export(g)          # check=True: onnx.checker + strict inference against our types
    assert model.opset_import[0].version == DEFAULT_OPSET
    inferred_outputs_agree(model, g)


def _mlp():
    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(6, 16)
            self.fc2 = nn.Linear(16, 3)
            self.drop = nn.Dropout(0.2)

        def forward(self, x, y):
            logits = self.fc2(self.drop(ops.gelu(self.fc1(x))))
            return {"loss": ops.cross_entropy(logits, y), "logits": logits}

    return MLP()


def test_symbolic_dims_are_named_dynamic_axes_and_params_initializers(tmp_path):
    model = _mlp()
    g = graphdsl.trace(model.eval(), x="f32[batch,6]", y="i64[batch]")
    values = model.init(seed=0)
    path = tmp_path / "mlp.onnx"
    m = export(g, params=values, path=path)
    assert path.exists() and onnx.load(str(path)).graph.name == m.graph.name
    inputs = {vi.name: _onnx_dims(vi) for vi in m.graph.input}
    assert inputs == {"x": ["batch", 6], "y": ["batch"]}
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    for name, value in values.items():
        np.testing.assert_array_equal(stored[name], value)
    assert {vi.name: _onnx_dims(vi) for vi in m.graph.output}["logits"] == ["batch", 3]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x, "y": y})))
    want = backends.compile(g, "numpy")(x=x, y=y, **values)
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)


def test_params_stay_inputs_without_values_and_missing_values_are_named():
    g = graphdsl.trace(_mlp(), x="f32[batch,6]", y="i64[batch]")
    m = export(g)
    names = [vi.name for vi in m.graph.input]
    assert names[:3] == ["x", "y", "seed"] and "fc1.weight" in names
    assert not {t.name for t in m.graph.initializer} & set(g.params)
    with pytest.raises(InputError, match=r"missing \['fc2.bias'\]"):
        export(g, params={k: v for k, v in _mlp().init(0).items() if k != "fc2.bias"})


def test_training_step_exports_and_runs_on_onnxruntime():
    """A whole AdamW step with dropout: loss, gradients, updates and state, one ONNX model."""
    model = _mlp()
    loss_graph = graphdsl.trace(model, x="f32[batch,6]", y="i64[batch]")
    step = make_train_step(loss_graph, AdamW(lr=1e-2, weight_decay=0.01), clip_norm=1.0)
    m = export(step)
    outputs = [vi.name for vi in m.graph.output]
    assert "state/step.out" in outputs and "update/fc1.weight" in outputs
    rng = np.random.default_rng(1)
    feed = {"x": rng.standard_normal((4, 6)).astype(np.float32), "y": np.array([0, 2, 1, 1]),
            "seed": np.array(5, np.int32), **model.init(seed=0),
            **{f"state/{k}": v for k, v in zero_state(step).items()}}
    want = backends.compile(step, "numpy")(**feed)
    got = backends.compile(step, "onnxruntime")(**feed)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=2e-4, atol=2e-5, err_msg=name)


def _without_rows(monkeypatch, op: str) -> None:
    """The exporter finds no row for ``op``: ``EXPORT.choose`` declines its nodes."""
    choose = EXPORT.choose
    monkeypatch.setattr(EXPORT, "choose", lambda cx, node, key=None: None if node.op == op else choose(cx, node, key))


def test_decomposition_is_used_when_an_op_has_no_lowering(monkeypatch):
    _without_rows(monkeypatch, "silu")
    monkeypatch.setattr(registry.get("silu"), "decompose", lambda x: x * ops.sigmoid(x))
    g = graphdsl.trace(lambda x: ops.silu(x), x="f32[3]")
    m = export(g)
    assert {n.op_type for n in m.graph.node} >= {"Sigmoid", "Mul"}
    x = np.array([-1.0, 0.5, 2.0], np.float32)
    got = backends.compile(g, "onnxruntime")(x=x)["out"]
    np.testing.assert_allclose(got, x / (1 + np.exp(-x)), rtol=1e-6)


def test_an_op_without_lowering_names_the_op_and_the_line(monkeypatch):
    _without_rows(monkeypatch, "tanh")
    g = graphdsl.trace(lambda x: x.tanh(), x="f32[3]")
    with pytest.raises(LoweringError) as info:
        export(g)
    text = str(info.value)
    assert text.startswith("tanh: has no ONNX lowering") and "test_onnx_export.py" in text


def test_bad_options_are_clear_errors():
    g = graphdsl.trace(lambda x: x + 1.0, x="f32[3]")
    with pytest.raises(LoweringError, match="opset 12 is not supported"):
        export(g, opset=12)
    with pytest.raises(LoweringError, match="unknown runtime"):
        export(g, runtime="tvm")
    with pytest.raises(LoweringError, match="takes a Graph"):
        export("model.json")


def test_external_data_is_written_beside_the_model(tmp_path):
    weight = graphdsl.Parameter((64, 64))
    g = graphdsl.trace(lambda x: x @ weight, x="f32[batch,64]", params={"w": weight})
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    export(g, params={"w": w}, path=tmp_path / "m.onnx", external_data=True)
    assert (tmp_path / "m.onnx.data").stat().st_size >= w.nbytes
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = np.ones((2, 64), np.float32)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], x @ w, rtol=1e-5)


def test_newer_opsets_export_too():
    g = graphdsl.trace(lambda x, seed: ops.dropout(ops.layer_norm(x, ops.ones((4,)), ops.zeros((4,))),
                                                      seed, p=0.5), x="f32[b,4]", seed="i32[]")
    for opset in (DEFAULT_OPSET, onnx.defs.onnx_opset_version()):
        assert export(g, opset=opset).opset_import[0].version == opset
