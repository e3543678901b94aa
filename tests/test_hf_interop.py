"""Hugging Face interop (models/hf.py): random-weight ``transformers`` models built from small config
objects (nothing downloaded) load into our BERT and GPT, whose logits and greedy continuations
then match theirs; safetensors files round-trip; one error lists every tensor that does not fit."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import backends  # noqa: E402
from graphdsl.errors import GraphDSLError  # noqa: E402
from tests.hf_models import (ATOL, V, quiet_and_one_thread, bert_hf_config, gpt_hf_config, hf_bert,  # noqa: E402,F401
                             bert_batch, hf_gpt, tiny, to_torch)
from models import bert, finetune, gpt, hf  # noqa: E402
from models.decoding import greedy  # noqa: E402


@pytest.fixture(scope="module")
def ours_bert(hf_bert):
    model, params = hf.load_hf(hf_bert)
    return model, params, backends.compile(bert.trace_forward(model.eval()), "numpy")


@pytest.fixture(scope="module")
def ours_gpt(hf_gpt):
    model, params = hf.load_hf(hf_gpt)
    return model, params, backends.compile(gpt.forward_graph(model.eval()), "numpy")


# -- configs ----------------------------------------------------------------------------------------
def test_configs_are_built_from_the_hf_config_objects(hf_bert, hf_gpt):
    c = hf.config_from_hf(hf_bert.config)
    assert (c.vocab_size, c.hidden_size, c.num_layers, c.num_heads, c.intermediate_size, c.max_position,
            c.type_vocab_size, c.layer_norm_eps) == (V, 32, 2, 4, 48, 24, 2, 1e-12)
    g = hf.config_from_hf(hf_gpt.config)
    assert (g.vocab_size, g.n_positions, g.n_embd, g.n_layer, g.n_head, g.d_ff, g.layer_norm_eps,
            g.activation) == (V, 24, 32, 2, 4, 128, 1e-5, "gelu_tanh")
    assert hf.load_hf(hf_bert)[0].num_parameters() == sum(
        p.numel() for k, p in hf_bert.state_dict().items() if not k.startswith("cls.predictions.decoder."))


@pytest.mark.parametrize("config, needle", [
    (lambda: bert_hf_config(hidden_act="relu"), "hidden_act='relu'"),
    (lambda: bert_hf_config(position_embedding_type="relative_key"), "position_embedding_type"),
    (lambda: gpt_hf_config(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
    (lambda: transformers.T5Config(), "model_type 't5'"),
])
def test_unsupported_configs_are_clear_errors(config, needle):
    with pytest.raises(GraphDSLError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        hf.config_from_hf(config())


# -- parity ------------------------------------------------------------------------------------------
def test_bert_mlm_and_nsp_logits_match_transformers(hf_bert, ours_bert):
    _, params, exe = ours_bert
    batch = bert_batch()
    out = exe({**batch, **params})
    with torch.no_grad():
        ref = hf_bert(**to_torch(batch))
    mlm, nsp = ref.prediction_logits.numpy(), ref.seq_relationship_logits.numpy()
    assert np.abs(mlm).max() > 1.0 and np.abs(nsp).max() > 0.1        # not trivially small numbers
    real = batch["attention_mask"].astype(bool)                        # padded positions are unused
    np.testing.assert_allclose(out["mlm_logits"][real], mlm[real], atol=ATOL, rtol=0)
    np.testing.assert_allclose(out["nsp_logits"], nsp, atol=ATOL, rtol=0)


def test_gpt2_logits_match_transformers(hf_gpt, ours_gpt):
    _, params, exe = ours_gpt
    ids = np.random.default_rng(1).integers(0, V, (2, 13))
    with torch.no_grad():
        ref = hf_gpt(input_ids=torch.tensor(ids)).logits.numpy()
    assert np.abs(ref).max() > 1.0
    np.testing.assert_allclose(exe(ids=ids, **params)["logits"], ref, atol=ATOL, rtol=0)


def test_gpt2_greedy_continuations_match_generate(hf_gpt, ours_gpt):
    model, params, _ = ours_gpt
    prompts = np.random.default_rng(2).integers(1, V, (3, 4))
    new = 8
    ours = greedy(gpt.gpt_step(model, params), prompts, new)
    with torch.no_grad():
        theirs = hf_gpt.generate(torch.tensor(prompts), attention_mask=torch.ones(prompts.shape, dtype=torch.long),
                                 max_new_tokens=new, min_new_tokens=new, do_sample=False, num_beams=1,
                                 pad_token_id=0).numpy()
    assert theirs.shape == (3, 4 + new)
    assert len(np.unique(theirs[:, 4:])) > 3                            # a continuation, not one token repeated
    np.testing.assert_array_equal(ours, theirs)


def test_finetuning_backbone_from_transformers_gives_its_pooled_output(hf_bert, tmp_path):
    """load_pretrained takes the HF model; the fine-tuning model's pooled output is HF's pooler_output."""
    pre = finetune.load_pretrained(hf_bert)
    assert all(k.startswith("bert.") for k in pre)                     # the backbone only
    hf_bert.save_pretrained(tmp_path / "hf")
    from_dir = finetune.load_pretrained(tmp_path / "hf")
    assert all(np.array_equal(from_dir[k], v) for k, v in pre.items()) and set(from_dir) == set(pre)
    model = finetune.SequenceModel(hf.config_from_hf(hf_bert.config), "classification", 3).eval()
    params = finetune.init_params(model, pre)
    exe = backends.compile(finetune.loss_graph(model, with_outputs=True), "numpy")
    batch = bert_batch()
    out = exe({**batch, "labels": np.array([0, 1, 2]), **params})
    with torch.no_grad():
        pooled = hf_bert.bert(**to_torch(batch)).pooler_output.numpy()
    np.testing.assert_allclose(out["pooled"], pooled, atol=ATOL, rtol=0)


# -- files and names -----------------------------------------------------------------------------------
def test_save_pretrained_directory_and_safetensors_file_load_the_same_weights(tmp_path, hf_bert, hf_gpt, ours_bert,
                                                                           ours_gpt):
    for hf_model, (_, params, _) in ((hf_bert, ours_bert), (hf_gpt, ours_gpt)):
        d = tmp_path / type(hf_model).__name__
        hf_model.save_pretrained(d)                                    # config.json + model.safetensors
        from_dir = hf.params_from_hf(d)
        from_file = hf.params_from_hf(d / "model.safetensors", hf_model.config)
        assert set(from_dir) == set(from_file) == set(params)
        for k in params:
            np.testing.assert_array_equal(from_dir[k], params[k], err_msg=k)
            np.testing.assert_array_equal(from_file[k], params[k], err_msg=k)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_our_weights_round_trip_through_a_hf_safetensors_file(tmp_path, family, ours_bert, ours_gpt):
    """ours -> HF-named safetensors -> a fresh transformers model (strict) gives our logits, and
    reading the file back gives our parameters bit for bit."""
    model, params, exe = ours_bert if family == "bert" else ours_gpt
    rng = np.random.default_rng(3)
    params = {k: (v + rng.normal(0, 0.05, v.shape)).astype(v.dtype) for k, v in params.items()}  # new numbers
    path = hf.save_hf_safetensors(params, model.config, tmp_path / "weights.safetensors")
    from safetensors.torch import load_file
    hf_config = bert_hf_config() if family == "bert" else gpt_hf_config()
    fresh = (transformers.BertForPreTraining if family == "bert" else transformers.GPT2LMHeadModel)(hf_config).eval()
    fresh.load_state_dict(load_file(str(path)), strict=True)
    back = hf.params_from_hf(path, model.config)
    assert set(back) == set(params)
    for k in params:
        np.testing.assert_array_equal(back[k], params[k], err_msg=k)
    if family == "bert":
        batch = bert_batch()
        with torch.no_grad():
            ref = fresh(**to_torch(batch)).seq_relationship_logits.numpy()
        np.testing.assert_allclose(exe({**batch, **params})["nsp_logits"], ref, atol=ATOL, rtol=0)
    else:
        ids = rng.integers(0, V, (2, 7))
        with torch.no_grad():
            ref = fresh(input_ids=torch.tensor(ids)).logits.numpy()
        np.testing.assert_allclose(exe(ids=ids, **params)["logits"], ref, atol=ATOL, rtol=0)


def test_old_and_bare_model_names_are_understood(hf_bert, hf_gpt, ours_bert, ours_gpt):
    """LayerNorm gamma/beta, a position_ids buffer, GPT2Model without ``transformer.`` and its
    causal-mask buffers: the same parameters come out."""
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in hf_bert.state_dict().items()}
    state["bert.embeddings.position_ids"] = torch.arange(24)[None]
    got = hf.params_from_hf(state, hf_bert.config)
    for k, v in ours_bert[1].items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)

    bare = {k.removeprefix("transformer."): v for k, v in hf_gpt.state_dict().items() if k != "lm_head.weight"}
    bare["h.0.attn.bias"] = torch.ones(1, 1, 24, 24)
    got = hf.params_from_hf(bare, hf_gpt.config)
    for k, v in ours_gpt[1].items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)

    backbone = transformers.BertModel(hf_bert.config)                  # a bare BertModel: backbone only
    got = hf.params_from_hf(backbone, backbone_only=True)
    assert set(got) == {k for k in ours_bert[1] if k.startswith("bert.")}


def test_one_error_lists_every_missing_unexpected_and_misshaped_tensor(hf_bert, hf_gpt):
    state = dict(hf_bert.state_dict())
    del state["bert.encoder.layer.1.attention.self.key.bias"]
    del state["cls.seq_relationship.weight"]
    state["bert.encoder.layer.0.attention.self.extra.weight"] = torch.zeros(3)
    state["bert.encoder.layer.0.output.dense.weight"] = torch.zeros(32, 47)
    with pytest.raises(GraphDSLError) as e:
        hf.params_from_hf(state, hf_bert.config)
    msg = str(e.value)
    assert "2 missing, 1 unexpected, 1 mis-shaped" in msg
    for needle in ("missing:    bert.encoder.layer.1.attention.self.key.bias",
                   "missing:    cls.seq_relationship.weight",
                   "unexpected: bert.encoder.layer.0.attention.self.extra.weight",
                   "mis-shaped: bert.encoder.layer.0.output.dense.weight: got (32, 47), expected (32, 48)"):
        assert needle in msg, msg

    gstate = dict(hf_gpt.state_dict())
    gstate["transformer.h.1.attn.c_attn.weight"] = torch.zeros(32, 64)     # q, k only: not 3 * 32
    gstate["lm_head.weight"] = gstate["lm_head.weight"] + 1.0             # an untied head
    with pytest.raises(GraphDSLError) as e:
        hf.params_from_hf(gstate, hf_gpt.config)
    msg = str(e.value)
    assert "0 missing, 0 unexpected, 1 mis-shaped, 1 untied" in msg
    assert "mis-shaped: transformer.h.1.attn.c_attn.weight: got (32, 64), expected (32, 96)" in msg
    assert "untied:     lm_head.weight differs from transformer.wte.weight" in msg


def test_weights_without_a_config_ask_for_one(hf_bert, tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "w.safetensors"
    save_file({k: v.clone() for k, v in hf_bert.state_dict().items() if not k.startswith("cls.predictions.decoder.")},
              str(path))
    with pytest.raises(GraphDSLError, match="pass config="):
        hf.params_from_hf(path)
    assert set(hf.params_from_hf(path, hf_bert.config)) == set(bert.BertForPreTraining(
        hf.config_from_hf(hf_bert.config)).parameters())
