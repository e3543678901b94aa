"""Hugging Face interop, the other way and the bare backbone (models/hf.py, models/hf_save.py):
``save_pretrained`` writes directories that ``transformers.from_pretrained`` loads with our logits
(files written atomically, other files left alone); bare BertModel / GPT2Model checkpoints load
into our bare modules with exactly their parameter names; ``bert.trace_backbone`` gives
transformers' ``last_hidden_state``. Tiny random-weight models built from config objects only."""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import backends  # noqa: E402
from graphdsl.errors import GraphDSLError  # noqa: E402
from tests.hf_models import (ATOL, V, quiet_and_one_thread, bert_hf_config, gpt_hf_config, hf_bert,  # noqa: E402,F401
                             bert_batch, hf_gpt, tiny, to_torch)
from models import bert, gpt, hf, hf_save  # noqa: E402


@pytest.fixture(scope="module")
def hf_bert_bare():
    return tiny(transformers.BertModel, bert_hf_config(), 1)


@pytest.fixture(scope="module")
def hf_gpt_bare():
    return tiny(transformers.GPT2Model, gpt_hf_config(), 3)


def _new_numbers(params, seed):
    """Our params moved off transformers' init, so a load that silently re-initialised shows."""
    rng = np.random.default_rng(seed)
    return {k: (v + rng.normal(0, 0.05, v.shape)).astype(v.dtype) for k, v in params.items()}


def _assert_same(got, want):
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def _loaded_cleanly(info):
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info


# -- save_pretrained ---------------------------------------------------------------------------------
def test_save_pretrained_bert_loads_in_transformers_with_our_logits(tmp_path, hf_bert):
    model, params = hf.load_hf(hf_bert)
    params = _new_numbers(params, 10)
    d = hf.save_pretrained(model, params, tmp_path / "bert")
    config = transformers.AutoConfig.from_pretrained(d)
    assert (config.model_type, config.architectures, config.num_hidden_layers, config.layer_norm_eps) == \
        ("bert", ["BertForPreTraining"], 2, 1e-12)
    theirs, info = transformers.AutoModelForPreTraining.from_pretrained(d, output_loading_info=True)
    _loaded_cleanly(info)
    assert type(theirs).__name__ == "BertForPreTraining"
    batch = bert_batch()
    out = backends.compile(bert.trace_forward(model.eval()), "numpy")({**batch, **params})
    with torch.no_grad():
        ref = theirs.eval()(**to_torch(batch))
    real = batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(out["mlm_logits"][real], ref.prediction_logits.numpy()[real], atol=ATOL, rtol=0)
    np.testing.assert_allclose(out["nsp_logits"], ref.seq_relationship_logits.numpy(), atol=ATOL, rtol=0)
    back_model, back = hf.load_hf(d)
    assert isinstance(back_model, bert.BertForPreTraining) and back_model.config == model.config
    _assert_same(back, params)


def test_save_pretrained_gpt2_loads_in_transformers_with_our_logits(tmp_path, hf_gpt):
    model, params = hf.load_hf(hf_gpt)
    params = _new_numbers(params, 11)
    d = hf.save_pretrained(model.config, params, tmp_path / "gpt")           # a config works as well
    assert json.loads((d / "config.json").read_text())["architectures"] == ["GPT2LMHeadModel"]
    theirs, info = transformers.GPT2LMHeadModel.from_pretrained(d, output_loading_info=True)
    _loaded_cleanly(info)
    assert theirs.lm_head.weight.data_ptr() == theirs.transformer.wte.weight.data_ptr()   # still tied
    ids = np.random.default_rng(1).integers(0, V, (2, 9))
    with torch.no_grad():
        ref = theirs.eval()(input_ids=torch.tensor(ids)).logits.numpy()
    out = backends.compile(gpt.forward_graph(model.eval()), "numpy")(ids=ids, **params)
    np.testing.assert_allclose(out["logits"], ref, atol=ATOL, rtol=0)
    _assert_same(hf.load_hf(d)[1], params)


def test_save_pretrained_bare_bert_is_a_transformers_bert_model(tmp_path, hf_bert_bare):
    model, params = hf.load_hf(hf_bert_bare)
    params = _new_numbers(params, 12)
    d = hf.save_pretrained(model.config, params, tmp_path / "enc")           # BertModel's names: BertModel
    theirs, info = transformers.AutoModel.from_pretrained(d, output_loading_info=True)
    _loaded_cleanly(info)
    assert type(theirs).__name__ == "BertModel"
    batch = bert_batch()
    out = backends.compile(bert.trace_backbone(model), "numpy")({**batch, **params})
    with torch.no_grad():
        ref = theirs.eval()(**to_torch(batch))
    real = batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(out["hidden"][real], ref.last_hidden_state.numpy()[real], atol=ATOL, rtol=0)
    back_model, back = hf.load_hf(d)
    assert isinstance(back_model, bert.BertModel)
    _assert_same(back, params)


def test_save_pretrained_writes_each_file_atomically_and_leaves_other_files_alone(tmp_path, hf_gpt, monkeypatch):
    model, params = hf.load_hf(hf_gpt)
    d = tmp_path / "new" / "ckpt"                                           # created, parents too
    hf.save_pretrained(model, params, d)
    (d / "notes.txt").write_text("mine")
    os.mkdir(d / "tokenizer")
    hf.save_pretrained(model, _new_numbers(params, 13), d)                  # over an existing checkpoint
    assert sorted(os.listdir(d)) == ["config.json", "model.safetensors", "notes.txt", "tokenizer"]
    assert (d / "notes.txt").read_text() == "mine"

    before = (d / "model.safetensors").read_bytes()

    def half_written(state, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")
    import safetensors.numpy
    monkeypatch.setattr(safetensors.numpy, "save_file", half_written)
    with pytest.raises(OSError, match="disk full"):
        hf.save_pretrained(model, params, d)
    assert (d / "model.safetensors").read_bytes() == before                 # the old file, whole
    assert sorted(os.listdir(d)) == ["config.json", "model.safetensors", "notes.txt", "tokenizer"]

    with pytest.raises(GraphDSLError, match="is a file, not a directory"):
        hf.save_pretrained(model, params, d / "notes.txt")


def test_save_pretrained_lists_every_param_that_does_not_fit(tmp_path, hf_bert):
    model, params = hf.load_hf(hf_bert)
    params = dict(params)
    del params["nsp.bias"]
    params["mlm.extra"] = np.zeros(3, np.float32)
    params["mlm.dense.weight"] = np.zeros((32, 31), np.float32)
    with pytest.raises(GraphDSLError) as e:
        hf.save_pretrained(model, params, tmp_path / "x")
    msg = str(e.value)
    assert "1 missing, 1 unexpected, 1 mis-shaped" in msg and "hint:" in msg
    for needle in ("missing:    nsp.bias", "unexpected: mlm.extra", "mis-shaped: mlm.dense.weight: got (32, 31)"):
        assert needle in msg, msg
    assert not (tmp_path / "x").exists()                                   # nothing written
    with pytest.raises(GraphDSLError, match="no transformers class"):
        hf.save_pretrained(object(), params, tmp_path / "y")


def test_config_json_rejects_an_activation_gpt2_lacks():
    with pytest.raises(GraphDSLError, match="activation_function"):
        hf_save.config_to_hf(gpt.GPTConfig(activation="silu"), "GPT2LMHeadModel")


# -- bare backbones -------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["object", "directory"])
@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_bare_checkpoints_load_with_the_bare_modules_names(tmp_path, family, form, hf_bert_bare, hf_gpt_bare):
    theirs = hf_bert_bare if family == "bert" else hf_gpt_bare
    if form == "directory":
        theirs.save_pretrained(tmp_path / "bare")
    module, params = hf.load_hf(theirs if form == "object" else tmp_path / "bare")
    assert type(module) is (bert.BertModel if family == "bert" else gpt.GPT)
    assert set(params) == set(module.init(0))
    embedding = "embeddings.word_embeddings.weight" if family == "bert" else "wte.weight"
    ours = "embeddings.word.weight" if family == "bert" else "wte.weight"
    np.testing.assert_array_equal(params[ours], theirs.state_dict()[embedding].numpy())


def test_bare_gpt2_gives_the_last_hidden_state_and_the_tied_logits(hf_gpt_bare):
    module, params = hf.load_hf(hf_gpt_bare)
    ids = np.random.default_rng(4).integers(0, V, (2, 7))
    with torch.no_grad():
        hidden = hf_gpt_bare(input_ids=torch.tensor(ids)).last_hidden_state.numpy()
    out = backends.compile(gpt.forward_graph(module.eval()), "numpy")(ids=ids, **params)
    np.testing.assert_allclose(out["logits"], hidden @ params["wte.weight"].T, atol=ATOL, rtol=0)


def test_backbone_trace_matches_last_hidden_state_and_pooler_output(hf_bert_bare):
    module, params = hf.load_hf(hf_bert_bare)
    graph = bert.trace_backbone(module)
    assert list(graph.inputs) == ["input_ids", "token_type_ids", "attention_mask"]
    batch = bert_batch()
    out = backends.compile(graph, "numpy")({**batch, **params})
    with torch.no_grad():
        ref = hf_bert_bare(**to_torch(batch))
    assert out["hidden"].shape == (3, 11, 32)
    real = batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(out["hidden"][real], ref.last_hidden_state.numpy()[real], atol=ATOL, rtol=0)
    np.testing.assert_allclose(out["pooled"], ref.pooler_output.numpy(), atol=ATOL, rtol=0)

    no_types = bert.trace_backbone(module, token_types=False)               # segment 0 everywhere
    assert list(no_types.inputs) == ["input_ids", "attention_mask"]
    batch.pop("token_type_ids")
    out = backends.compile(no_types, "numpy")({**batch, **params})
    with torch.no_grad():
        ref = hf_bert_bare(**to_torch(batch)).last_hidden_state.numpy()
    np.testing.assert_allclose(out["hidden"][real], ref[real], atol=ATOL, rtol=0)


def test_backbone_keyword_takes_the_encoder_of_a_full_checkpoint(hf_bert, hf_bert_bare):
    full_model, full = hf.load_hf(hf_bert)
    assert isinstance(full_model, bert.BertForPreTraining)                  # a full checkpoint stays full
    module, params = hf.load_hf(hf_bert, backbone=True)
    assert isinstance(module, bert.BertModel) and set(params) == set(module.init(0))
    _assert_same(params, {k.removeprefix("bert."): v for k, v in full.items() if k.startswith("bert.")})
    batch = bert_batch()
    out = backends.compile(bert.trace_backbone(full_model), "numpy")(      # the full model's bert.* names
        {**batch, **{k: v for k, v in full.items() if k.startswith("bert.")}})
    with torch.no_grad():
        ref = hf_bert.bert(**to_torch(batch)).pooler_output.numpy()
    np.testing.assert_allclose(out["pooled"], ref, atol=ATOL, rtol=0)

    with pytest.raises(GraphDSLError) as e:                                 # insisting on the heads
        hf.load_hf(hf_bert_bare, backbone=False)
    msg = str(e.value)
    assert "7 missing, 0 unexpected, 0 mis-shaped" in msg and "missing:    cls.seq_relationship.weight" in msg
    assert "backbone=True" in msg


def test_a_bad_bare_checkpoint_is_one_error_in_its_own_names(hf_bert_bare):
    state = dict(hf_bert_bare.state_dict())
    del state["encoder.layer.1.attention.self.key.bias"]
    state["encoder.layer.0.intermediate.dense.weight"] = torch.zeros(47, 32)
    state["encoder.layer.0.attention.self.extra.weight"] = torch.zeros(3)
    with pytest.raises(GraphDSLError) as e:
        hf.load_hf(state, hf_bert_bare.config)
    msg = str(e.value)
    assert "1 missing, 1 unexpected, 1 mis-shaped" in msg and "hint:" in msg
    for needle in ("missing:    encoder.layer.1.attention.self.key.bias",
                   "unexpected: encoder.layer.0.attention.self.extra.weight",
                   "mis-shaped: encoder.layer.0.intermediate.dense.weight: got (47, 32), expected (48, 32)"):
        assert needle in msg, msg


# -- the README example -----------------------------------------------------------------------------------
README_EXAMPLE = '''
import numpy as np, transformers
import backends
from models import bert, hf

tiny = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=64)
transformers.BertModel(tiny).save_pretrained("tiny-bert")   # a bare encoder, as sentence-transformers ship

model, params = hf.load_hf("tiny-bert")                      # our bert.BertModel: no heads, no "bert." prefix
encode = backends.compile(bert.trace_backbone(model, token_types=False), "numpy")
ids = np.array([[2, 15, 27, 9, 3], [2, 44, 3, 0, 0]])        # 0 is padding
mask = (ids != 0).astype(np.int64)
hidden = encode(input_ids=ids, attention_mask=mask, **params)["hidden"]      # [2, 5, 32]
weights = mask[..., None].astype(hidden.dtype)
embeddings = (hidden * weights).sum(axis=1) / weights.sum(axis=1)            # mean over real tokens
print(embeddings.shape)                                                      # (2, 32)
'''


def test_readme_example_sentence_embeddings_by_mean_pooling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = {}
    exec(compile(README_EXAMPLE, "README example", "exec"), ns)
    assert ns["embeddings"].shape == (2, 32)
    theirs = transformers.BertModel.from_pretrained(tmp_path / "tiny-bert").eval()
    mask = torch.tensor(ns["mask"])
    with torch.no_grad():
        hidden = theirs(input_ids=torch.tensor(ns["ids"]), attention_mask=mask).last_hidden_state
    ref = ((hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)).numpy()
    np.testing.assert_allclose(ns["embeddings"], ref, atol=ATOL, rtol=0)
