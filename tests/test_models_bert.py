"""BERT pretraining (MLM + NSP): shapes, losses vs NumPy, gradients vs finite differences, tied
weights, training with the Trainer on the built-in corpus, checkpoints."""
import re

import numpy as np
import pytest

import backends
import graphdsl as gd
import models
from graphdsl.optim import AdamW, WarmupCosine
from models import bert
from models.bert import BertConfig, BertForPreTraining, trace_forward, trace_loss
from models.data import IGNORE_INDEX, load_tokenizer
from models.trainer import Trainer, spec_batches

TRAIN_STEPS = 200


@pytest.fixture(scope="module")
def spec():
    return models.get("bert-tiny")


@pytest.fixture(scope="module")
def model(spec):
    return spec.module().eval()


@pytest.fixture(scope="module")
def params(model):
    return model.init(seed=0)


@pytest.fixture(scope="module")
def forward_exe(model):
    return backends.compile(trace_forward(model), "numpy")


def _eval_loss_exe(model):
    return backends.compile(trace_loss(model.eval(), with_logits=True), "numpy")


# -- the registry -------------------------------------------------------------------------------
def test_registered_sizes():
    tiny, mini, base = (models.get(n) for n in ("bert-tiny", "bert-mini", "bert-base"))
    assert tiny.config.vocab_size == mini.config.vocab_size == load_tokenizer().vocab_size
    assert (mini.config.num_layers, mini.config.hidden_size, mini.config.num_heads,
            mini.config.intermediate_size) == (4, 256, 4, 1024)
    c = base.config
    assert (c.num_layers, c.hidden_size, c.num_heads, c.intermediate_size, c.vocab_size, c.max_position) == \
        (12, 768, 12, 3072, 30522, 512)
    # Hugging Face's BertForPreTraining(BertConfig()) has 110,106,428 parameters (decoder tied).
    assert base.module().num_parameters() == 110_106_428
    assert [s.attention_blocks for s in (tiny, mini, base)] == [2, 4, 12]


def test_parameter_names_follow_the_hugging_face_table(model):
    """Every parameter matches exactly one row of the name table in models/bert.py's docstring."""
    rows = [line.split()[0] for line in bert.__doc__.splitlines()
            if re.match(r"    (bert|mlm|nsp)\.", line)]
    patterns = [re.compile(re.escape(r).replace(r"\{i\}", r"\d+").replace(r"\{weight,bias\}", "(weight|bias)")
                           .replace(r"\*", "(weight|bias)") + "$") for r in rows]
    names = list(model.parameters())
    for name in names:
        assert sum(bool(p.match(name)) for p in patterns) == 1, name
    for row, p in zip(rows, patterns):
        assert any(p.match(n) for n in names), f"table row {row} matches no parameter"


# -- forward ------------------------------------------------------------------------------------
def test_forward_shapes_and_textbook_attention(spec, model, params, forward_exe):
    g = forward_exe.graph
    V = spec.config.vocab_size
    assert g.outputs["mlm_logits"].type == gd.TensorType.parse(f"f32[batch,seq,{V}]")
    assert g.outputs["nsp_logits"].type == gd.TensorType.parse("f32[batch,2]")
    counts = g.op_counts()
    assert "attention" not in counts and counts["softmax"] == spec.config.num_layers
    rng = np.random.default_rng(0)
    ids = rng.integers(23, V, (3, 11))
    out = forward_exe(input_ids=ids, token_type_ids=np.zeros_like(ids), attention_mask=np.ones_like(ids), **params)
    assert out["mlm_logits"].shape == (3, 11, V) and out["nsp_logits"].shape == (3, 2)
    assert all(np.isfinite(v).all() for v in out.values())


def test_padding_does_not_change_real_positions(spec, params, forward_exe):
    rng = np.random.default_rng(1)
    ids = rng.integers(23, spec.config.vocab_size, (2, 9))
    mask = np.ones_like(ids)
    mask[:, 6:] = 0
    other = ids.copy()
    other[:, 6:] = rng.integers(23, spec.config.vocab_size, (2, 3))
    feed = dict(token_type_ids=np.zeros_like(ids), attention_mask=mask, **params)
    a, b = forward_exe(input_ids=ids, **feed), forward_exe(input_ids=other, **feed)
    np.testing.assert_allclose(a["mlm_logits"][:, :6], b["mlm_logits"][:, :6], atol=1e-5)
    np.testing.assert_allclose(a["nsp_logits"], b["nsp_logits"], atol=1e-5)


def _log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def test_losses_equal_numpy_cross_entropy_of_the_logits(spec, model, params):
    batch = spec.example_batch(8, seed=3)
    out = _eval_loss_exe(model)({**batch, **params})
    labels = batch["mlm_labels"]
    where = np.argwhere(labels != IGNORE_INDEX)
    assert 0 < len(where) < labels.size
    logp = _log_softmax(out["mlm_logits"])
    mlm = -np.mean([logp[b, s, labels[b, s]] for b, s in where])   # masked positions only
    nsp_logp = _log_softmax(out["nsp_logits"])
    nsp = -np.mean([nsp_logp[i, y] for i, y in enumerate(batch["nsp_labels"])])
    np.testing.assert_allclose(out["mlm_loss"], mlm, rtol=1e-5)
    np.testing.assert_allclose(out["nsp_loss"], nsp, rtol=1e-5)
    np.testing.assert_allclose(out["loss"], mlm + nsp, rtol=1e-5)
    assert np.isfinite(out["loss"]) and abs(out["loss"] - (np.log(spec.config.vocab_size) + np.log(2))) < 0.3


# -- gradients (float64, a micro BERT) ----------------------------------------------------------
MICRO = BertConfig(vocab_size=30, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=12,
                   max_position=10, dropout=0.0, dtype="float64")


def _micro_batch():
    rng = np.random.default_rng(5)
    ids = rng.integers(0, MICRO.vocab_size, (2, 7))
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    labels = np.full_like(ids, IGNORE_INDEX)
    labels[0, [1, 4]] = [3, 17]
    labels[1, 2] = 9
    return {"input_ids": ids, "token_type_ids": (np.arange(7) >= 4).astype(np.int64)[None].repeat(2, 0),
            "attention_mask": mask, "mlm_labels": labels, "nsp_labels": np.array([0, 1])}


def _micro_params(model):
    rng = np.random.default_rng(6)  # move away from the init (zero biases, unit norms) to a generic point
    return {k: v + rng.normal(0.0, 0.3, v.shape) for k, v in model.init(seed=0).items()}


GRAD_CHECKED = ["bert.embeddings.word.weight", "bert.embeddings.position.weight",
                "bert.embeddings.token_type.weight", "bert.embeddings.norm.weight",
                "bert.encoder.layers.0.attn.q.weight", "bert.encoder.layers.0.attn.v.bias",
                "bert.encoder.layers.0.ffn.fc1.weight", "bert.encoder.layers.0.norm2.bias",
                "bert.pooler.dense.weight", "mlm.dense.weight", "mlm.norm.weight", "mlm.bias", "nsp.weight"]


def test_gradients_match_central_differences():
    model = BertForPreTraining(MICRO)
    g = trace_loss(model)
    assert "seed" not in g.inputs  # dropout 0: a deterministic loss
    grads = backends.compile(gd.grad(g, wrt=GRAD_CHECKED), "numpy")
    loss = backends.compile(g, "numpy")
    batch, params = _micro_batch(), _micro_params(model)
    analytic = grads({**batch, **params})
    rng = np.random.default_rng(7)
    eps = 1e-6
    for name in GRAD_CHECKED:
        for flat in rng.choice(params[name].size, size=min(3, params[name].size), replace=False):
            idx = np.unravel_index(flat, params[name].shape)
            plus, minus = dict(params), dict(params)
            plus[name] = params[name].copy()
            plus[name][idx] += eps
            minus[name] = params[name].copy()
            minus[name][idx] -= eps
            numeric = (loss({**batch, **plus})["loss"] - loss({**batch, **minus})["loss"]) / (2 * eps)
            got = analytic[f"grad/{name}"][idx]
            assert abs(got - numeric) <= 1e-6 + 1e-5 * abs(numeric), f"{name}{idx}: {got} vs {numeric}"


def test_decoder_is_tied_to_the_word_embeddings():
    model = BertForPreTraining(MICRO)
    V, H = MICRO.vocab_size, MICRO.hidden_size
    matrices = [k for k, p in model.parameters().items() if tuple(p.shape) == (V, H)]
    assert matrices == ["bert.embeddings.word.weight"]   # no separate decoder matrix
    batch, params = _micro_batch(), _micro_params(model)
    tied = backends.compile(gd.grad(trace_loss(model), wrt=["bert.embeddings.word.weight"]), "numpy")
    g_tied = tied({**batch, **params})["grad/bert.embeddings.word.weight"]

    # The same model with an untied copy of the decoder: the tied gradient is the sum of both.
    decoder = gd.Parameter((V, H), gd.float64)

    def untied(input_ids, token_type_ids, attention_mask, mlm_labels, nsp_labels):
        hidden, pooled = model.bert(input_ids, token_type_ids, attention_mask)
        mlm = gd.ops.cross_entropy(model.mlm(hidden, decoder), mlm_labels)
        return {"loss": mlm + gd.ops.cross_entropy(model.nsp(pooled), nsp_labels)}

    ids = "i64[batch,seq]"
    g = gd.trace(untied, params={**model.parameters(), "decoder": decoder}, input_ids=ids,
                 token_type_ids=ids, attention_mask=ids, mlm_labels=ids, nsp_labels="i64[batch]")
    out = backends.compile(gd.grad(g, wrt=["bert.embeddings.word.weight", "decoder"]), "numpy")(
        {**batch, **params, "decoder": params["bert.embeddings.word.weight"]})
    g_embed, g_decoder = out["grad/bert.embeddings.word.weight"], out["grad/decoder"]
    assert np.abs(g_embed).max() > 1e-3 and np.abs(g_decoder).max() > 1e-3
    np.testing.assert_allclose(g_tied, g_embed + g_decoder, rtol=1e-10, atol=1e-12)


# -- training and checkpoints -------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(spec):
    trainer = Trainer(spec, None, AdamW(lr=3e-3), schedule=WarmupCosine(10, TRAIN_STEPS, 0.3), clip_norm=1.0,
                      progress=False)
    trainer.fit(spec_batches(spec, 32), steps=TRAIN_STEPS)
    return trainer


def test_bert_tiny_learns_the_corpus(trained):
    losses = np.array(trained.losses)
    assert len(losses) == TRAIN_STEPS and np.isfinite(losses).all()
    first, last = losses[:5].mean(), losses[-20:].mean()
    assert first / last > 1.3, f"loss went {first:.3f} -> {last:.3f}"   # 7.16 -> 4.97 here
    mlm = np.array([r["mlm_loss"] for r in trained.history if r["kind"] == "train"])
    assert mlm[-20:].mean() < mlm[:5].mean() - 1.5   # MLM: 6.46 -> 4.28 nats here


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, spec, trained, forward_exe):
    trained.save(tmp_path / "ckpt")
    loaded = Trainer.load(tmp_path / "ckpt", spec, AdamW(lr=3e-3), schedule=WarmupCosine(10, TRAIN_STEPS, 0.3),
                          clip_norm=1.0, progress=False)
    assert loaded.step == trained.step == TRAIN_STEPS and loaded.losses == trained.losses
    batch = spec.example_batch(4, seed=9)
    feed = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    a, b = forward_exe({**feed, **trained.params}), forward_exe({**feed, **loaded.params})
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    for k, v in trained.runner.state.items():
        np.testing.assert_array_equal(loaded.runner.state[k], v)
