"""BERT and GPT-2 from `transformers` (tiny configs, random weights, nothing downloaded), exported by
PyTorch's legacy and dynamo ONNX exporters, import into graphs whose outputs equal ONNX Runtime's."""
from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest

import backends
import graphdsl

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 97
EXPORTERS = ["legacy"] + (["dynamo"] if importlib.util.find_spec("onnxscript") else [])


def _hf_model(family: str):
    torch.manual_seed(0)
    if family == "bert":
        cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=48, max_position_embeddings=32)
        model = transformers.BertModel(cfg, add_pooling_layer=False)
    else:
        cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                                      bos_token_id=0, eos_token_id=0)
        model = transformers.GPT2Model(cfg)
    with torch.no_grad():   # random weights everywhere: zero biases would hide mistakes
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.add_(1.0)

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state

    return Wrapper().eval()


def _export(family: str, exporter: str, path) -> None:
    model = _hf_model(family)
    ids = torch.randint(0, VOCAB, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    kw = dict(input_names=["input_ids", "attention_mask"], output_names=["hidden"], opset_version=18)
    axes = {0: "batch", 1: "seq"}
    if exporter == "dynamo":
        kw.update(dynamo=True, dynamic_shapes={"input_ids": axes, "attention_mask": axes})
    else:
        kw.update(dynamo=False, dynamic_axes={"input_ids": axes, "attention_mask": axes, "hidden": axes})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (ids, mask), str(path), **kw)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """All four models, exported once for the module."""
    transformers.logging.set_verbosity_error()
    folder = tmp_path_factory.mktemp("hf_onnx")
    paths = {}
    for family in ("bert", "gpt2"):
        for exporter in EXPORTERS:
            paths[family, exporter] = folder / f"{family}_{exporter}.onnx"
            _export(family, exporter, paths[family, exporter])
    return paths


def _batch(batch: int, seq: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    mask[-1, seq - 2:] = 0   # right padding in the last row
    return {"input_ids": rng.integers(0, VOCAB, (batch, seq)), "attention_mask": mask}


CASES = [pytest.param(f, e, id=f"{f}-{e}") for f in ("bert", "gpt2") for e in EXPORTERS]


@pytest.mark.parametrize("family,exporter", CASES)
def test_imported_model_matches_onnxruntime(exported, family, exporter):
    path = exported[family, exporter]
    graph = graphdsl.from_onnx(path)
    assert [str(n.type) for n in graph.inputs.values()] == ["i64[batch,seq]", "i64[batch,seq]"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    numpy_exe = backends.compile(graph, "numpy")
    ort_exe = backends.compile(graph, "onnxruntime")   # and back out again: our export of the import
    for batch, seq, seed in ((2, 7, 0), (1, 5, 1), (3, 11, 2)):
        feed = _batch(batch, seq, seed)
        want = sess.run(None, feed)[0]
        got = numpy_exe(**feed)["hidden"]
        assert got.shape == want.shape == (batch, seq, 32)
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4, err_msg=f"{family} {exporter} numpy")
        np.testing.assert_allclose(ort_exe(**feed)["hidden"], want, atol=2e-5, rtol=1e-4,
                                   err_msg=f"{family} {exporter} round trip")


@pytest.mark.parametrize("family,exporter", CASES)
def test_imported_model_compiles_with_tvm(exported, family, exporter):
    path = exported[family, exporter]
    graph = graphdsl.from_onnx(path, dims={"batch": 2, "seq": 7})
    feed = _batch(2, 7, 0)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    got = backends.compile(graph, "llvm")(**feed)["hidden"]
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("family,exporter", CASES)
def test_passes_fuse_the_imported_attention(exported, family, exporter):
    import passes
    graph = graphdsl.from_onnx(exported[family, exporter])
    optimized = passes.optimize(graph)
    assert optimized.op_counts().get("attention", 0) == 2, optimized.op_counts()
    feed = _batch(2, 7, 0)
    np.testing.assert_allclose(backends.compile(optimized, "numpy")(**feed)["hidden"],
                               backends.compile(graph, "numpy")(**feed)["hidden"], atol=2e-5, rtol=1e-4)
