"""Fine-tuning (models/finetune.py): heads and losses against NumPy, the built-in tasks, pretrained
weights, freezing, layer-wise learning rates, prompt tuning, best-epoch selection, and a classifier
fine-tuned from a briefly pretrained bert-tiny beating the same architecture trained from scratch."""
import re

import numpy as np
import pytest

import backends
import graphdsl as gd
import models
from graphdsl.errors import GraphDSLError
from graphdsl.optim import SGD, AdamW, WarmupCosine, make_train_step
from models import finetune as ft
from models.data import IGNORE_INDEX, load_corpus, load_tokenizer
from models.gpt import GPT
from models.trainer import Trainer, spec_batches

PRETRAIN_STEPS = 600


@pytest.fixture(scope="module")
def config():
    return models.get("bert-tiny").config


@pytest.fixture(scope="module")
def pretrained_trainer():
    """bert-tiny pretrained (MLM + NSP) for PRETRAIN_STEPS steps of 16 pairs: ~20 s, fixed seeds.
    (NSP stays at chance this briefly; MLM falls from 6.5 to about 4 nats.)"""
    spec = models.get("bert-tiny")
    trainer = Trainer(spec, None, AdamW(lr=3e-3), schedule=WarmupCosine(10, PRETRAIN_STEPS, 0.1), clip_norm=1.0,
                      seed=0, progress=False)
    trainer.fit(spec_batches(spec, 16), steps=PRETRAIN_STEPS)
    return trainer


@pytest.fixture(scope="module")
def pretrained(pretrained_trainer, tmp_path_factory):
    """The pretrained parameters, read back from the Trainer checkpoint as a user would."""
    return ft.load_pretrained(pretrained_trainer.save(tmp_path_factory.mktemp("pretrained")))


@pytest.fixture(scope="module")
def topic():
    return ft.topic_task().subset(800)


# -- tasks ----------------------------------------------------------------------------------------------
def test_document_kinds_replay_the_corpus_generator():
    kinds = ft.document_kinds()
    docs = load_corpus().documents
    assert len(kinds) == len(docs) and len(set(kinds)) == 9
    for doc, kind in zip(docs, kinds):
        if kind == "fable":
            assert doc[0].startswith("Once upon a time")
        if kind == "facts":
            assert doc[0] == "Here are some facts about the world."


def test_builtin_tasks_are_well_formed(topic):
    tok = load_tokenizer()
    assert topic.kind == "classification" and topic.num_labels == 9 and topic.size() == 800
    assert set(np.unique(topic.train["labels"])) == set(range(9))
    assert (topic.train["input_ids"][:, 0] == tok.cls_id).all()
    texts = lambda split: {tok.decode(r[r > 0][1:-1]) for r in split["input_ids"]}  # noqa: E731
    assert not texts(topic.train) & texts(topic.valid)                 # each sentence in one split

    order = ft.order_task()
    assert 0.4 < order.train["labels"].mean() < 0.6
    pairs = {(a, b) for _, a, b in ft._neighbours()}
    row = order.train["input_ids"][0]
    sep = np.flatnonzero(row == tok.sep_id)
    a, b = tok.decode(row[1:sep[0]]), tok.decode(row[sep[0] + 1:sep[1]])
    assert ((a, b) in pairs) == bool(order.train["labels"][0])

    assert ft.word_overlap("The cat sat.", "the dog sat!") == pytest.approx(2 / 4)
    overlap = ft.overlap_task(n=200)
    assert overlap.train["targets"].dtype == np.float32 and 0 <= overlap.train["targets"].min() < 0.2
    assert overlap.train["targets"].max() > 0.3

    ranking = ft.next_sentence_ranking_task()
    assert (ranking.train["pos_input_ids"][:, :5] == ranking.train["neg_input_ids"][:, :5]).all()  # same anchor

    cont = ft.continuation_task()
    ids, labels = cont.train["ids"][0], cont.train["labels"][0]
    target = labels != IGNORE_INDEX
    assert ids[0] == tok.bos_id and not target[:2].any() and (labels[target] == ids[target]).all()
    assert labels[target][-1] == tok.eos_id


# -- heads vs NumPy ---------------------------------------------------------------------------------------
def _log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _head_outputs(config, kind, task, n=12, seed=0, margin=1.0):
    model = ft.SequenceModel(config, kind, task.num_labels, margin=margin).eval()
    params = ft.init_params(model, seed=seed)
    rng = np.random.default_rng(seed)
    params["head.weight"] = rng.normal(0, 2.0, params["head.weight"].shape).astype(np.float32)  # spread scores
    params["head.bias"] = rng.normal(0, 0.1, params["head.bias"].shape).astype(np.float32)
    batch = task.batch(rng, n, "valid")
    out = backends.compile(ft.loss_graph(model, with_outputs=True), "numpy")({**batch, **params})
    W, b = params["head.weight"].astype(np.float64), params["head.bias"].astype(np.float64)
    return out, batch, W, b


def test_classification_loss_is_cross_entropy_of_the_pooled_output(config):
    out, batch, W, b = _head_outputs(config, "classification", ft.topic_task().subset(50))
    logits = out["pooled"].astype(np.float64) @ W + b                # the head, in NumPy
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-4, atol=1e-4)
    y = batch["labels"]
    ce = -np.mean(_log_softmax(logits)[np.arange(len(y)), y])
    np.testing.assert_allclose(out["loss"], ce, rtol=1e-5)
    np.testing.assert_allclose(out["accuracy"], np.mean(logits.argmax(-1) == y), rtol=1e-6)


def test_regression_loss_is_mse(config):
    out, batch, W, b = _head_outputs(config, "regression", ft.overlap_task(n=100))
    pred = out["pooled"].astype(np.float64) @ W[:, 0] + b[0]
    np.testing.assert_allclose(out["prediction"], pred, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["loss"], np.mean((pred - batch["targets"]) ** 2), rtol=1e-4)


def test_ranking_loss_is_the_margin_ranking_loss_over_pairs(config):
    out, _, W, b = _head_outputs(config, "ranking", ft.next_sentence_ranking_task(), n=16, margin=0.01)
    s_pos = out["pos_pooled"].astype(np.float64) @ W[:, 0] + b[0]
    s_neg = out["neg_pooled"].astype(np.float64) @ W[:, 0] + b[0]
    hinge = np.maximum(0.0, 0.01 - (s_pos - s_neg))                  # margin 0.01, target 1
    assert 0 < (hinge == 0).sum() < len(hinge)                      # both sides of the hinge occur
    np.testing.assert_allclose(out["loss"], hinge.mean(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["pair_accuracy"], np.mean(s_pos > s_neg))


def test_generation_loss_is_nll_of_the_target_tokens_only():
    spec = models.get("gpt-tiny")
    model = GPT(spec.config).eval()
    params = ft.init_params(model, seed=0)
    task = ft.continuation_task().subset(64)
    batch = task.batch(np.random.default_rng(0), 6)
    loss = backends.compile(ft.loss_graph(model), "numpy")({**batch, **params})["loss"]
    logits = backends.compile(spec.forward(model), "numpy")(ids=batch["ids"], **params)["logits"]
    logp, targets = _log_softmax(logits[:, :-1]), batch["labels"][:, 1:]
    rows, cols = np.nonzero(targets != IGNORE_INDEX)
    nll = -np.mean(logp[rows, cols, targets[rows, cols]])
    prompt_len = (batch["labels"] == IGNORE_INDEX).argmin(axis=1)
    assert (prompt_len > 2).all()                                    # the prompts are left out
    np.testing.assert_allclose(loss, nll, rtol=1e-5)


# -- pretrained weights -----------------------------------------------------------------------------------
def test_init_params_takes_the_backbone_and_a_fresh_head(config, pretrained):
    model = ft.SequenceModel(config, "classification", 9)
    params = ft.init_params(model, pretrained, seed=3)
    fresh = model.init(3)
    for k, v in params.items():
        np.testing.assert_array_equal(v, pretrained[k] if k.startswith("bert.") else fresh[k], err_msg=k)
    assert "mlm.bias" in pretrained and "mlm.bias" not in params

    wide = ft.SequenceModel(models.get("bert-mini").config, "classification", 9)
    broken = {k: v for k, v in pretrained.items() if k != "bert.pooler.dense.bias"}
    with pytest.raises(GraphDSLError) as e:
        ft.init_params(wide, broken)
    msg = str(e.value)
    missing = re.search(r"missing \[(.*?)\]", msg).group(1)
    assert "'bert.pooler.dense.bias'" in missing
    assert "'bert.encoder.layers.3.attn.q.weight'" in missing          # bert-mini has 4 layers, tiny 2
    assert "bert.embeddings.word.weight: (647, 64) != (647, 256)" in msg


def test_finetuned_classifier_beats_training_from_scratch(config, pretrained, topic):
    """Same architecture, data (800 labelled sentences), optimizer, seeds and budget (one epoch,
    50 steps); only the starting point differs."""
    best = {}
    for name, start in (("pretrained", pretrained), ("scratch", None)):
        model = ft.SequenceModel(config, "classification", topic.num_labels)
        trainer = ft.finetune(model, topic, ft.init_params(model, start, seed=0), AdamW(lr=1e-3),
                              epochs=1, batch_size=16, seed=0)
        best[name] = trainer.best["value"]
    # here: 0.81 vs 0.34 (seeds 1, 2: 0.75 vs 0.52, 0.78 vs 0.48); 9 kinds, the largest is 29% of valid
    assert best["pretrained"] > best["scratch"] + 0.15, best


# -- what trains --------------------------------------------------------------------------------------------
def _changed(before, after):
    return {k for k in before if not np.array_equal(before[k], after[k])}


@pytest.mark.parametrize("mode, expected", [
    ("head", r"head\."),
    ("top:1", r"head\.|bert\.pooler\.|bert\.encoder\.layers\.1\."),
])
def test_frozen_parameters_stay_bit_identical(config, pretrained, mode, expected):
    task = ft.order_task().subset(64)
    model = ft.SequenceModel(config, "classification", 2)
    params = ft.init_params(model, pretrained)
    trainer = ft.finetune(model, task, params, AdamW(lr=1e-3), epochs=1, batch_size=16, restore_best=False)
    changed = _changed(params, trainer.params)
    want = {k for k in params if re.match(expected, k)}
    assert set(ft.trainable(model, mode)) == want
    assert changed == set(params)                                     # "all" (the default) trains everything

    trainer = ft.finetune(model, task, params, AdamW(lr=1e-3), epochs=1, batch_size=16, train=mode,
                          restore_best=False)
    assert _changed(params, trainer.params) == want


def test_layerwise_learning_rates_are_decay_to_the_depth(config):
    model = ft.SequenceModel(config, "regression")
    scale = ft.layerwise_lr_scale(model, 0.5)                        # L = 2 layers
    expected = {"bert.embeddings.": 0.25, "bert.encoder.layers.0.": 0.5, "bert.encoder.layers.1.": 1.0,
                "bert.pooler.": 1.0, "head.": 1.0}
    for name, s in scale.items():
        assert s == next(v for p, v in expected.items() if name.startswith(p)), name
    gpt_scale = ft.layerwise_lr_scale(GPT(models.get("gpt-tiny").config), 0.8)
    assert gpt_scale["wte.weight"] == pytest.approx(0.64) and gpt_scale["h.0.attn.q.weight"] == pytest.approx(0.8)
    assert gpt_scale["h.1.ffn.fc2.bias"] == gpt_scale["ln_f.weight"] == 1.0

    # The optimizer applies them: one SGD step moves each parameter by -lr * scale * grad.
    task = ft.overlap_task(n=64)
    graph = ft.loss_graph(model.eval())
    params, batch = ft.init_params(model, seed=1), task.batch(np.random.default_rng(0), 8)
    step = backends.compile(make_train_step(graph, SGD(lr=0.1, lr_scale=scale)), "numpy")
    out = step({**batch, **params, "state/step": np.int64(0)})
    grads = backends.compile(gd.grad(graph), "numpy")({**batch, **params})
    for name, p in params.items():
        np.testing.assert_allclose(out[f"update/{name}"], p - 0.1 * scale[name] * grads[f"grad/{name}"],
                                   rtol=1e-5, atol=1e-7, err_msg=name)


# -- prompt tuning -------------------------------------------------------------------------------------------
def test_prompt_extends_the_sequence_and_its_mask(config):
    model = ft.SequenceModel(config, "classification", 9, prompt_length=4).eval()
    g = ft.loss_graph(model, with_outputs=True)
    assert g.params["prompt"].type == gd.TensorType.parse("f32[4,64]")
    types = {str(n.type) for n in g.nodes}
    assert {"f32[batch,seq+4,64]", "i64[batch,seq+4]", "f32[batch,2,seq+4,seq+4]"} <= types   # scores over seq+P
    exe = backends.compile(g, "numpy")
    params = ft.init_params(model, seed=0)
    rng = np.random.default_rng(4)
    ids = rng.integers(23, config.vocab_size, (2, 10))
    mask = np.ones_like(ids)
    mask[:, 7:] = 0
    other = ids.copy()
    other[:, 7:] = rng.integers(23, config.vocab_size, (2, 3))
    feed = dict(token_type_ids=np.zeros_like(ids), attention_mask=mask, labels=np.array([0, 1]), **params)
    a, b = exe(input_ids=ids, **feed), exe(input_ids=other, **feed)
    np.testing.assert_allclose(a["pooled"], b["pooled"], atol=1e-6)   # padding stays masked after the prompt
    shifted = dict(params, prompt=params["prompt"] + rng.normal(0, 0.5, params["prompt"].shape).astype(np.float32))
    assert np.abs(exe(input_ids=ids, **{**feed, **shifted})["pooled"] - a["pooled"]).max() > 1e-3  # the prompt is seen


def test_prompt_tuning_trains_only_the_prompt_and_head_and_lowers_the_loss(config, pretrained):
    task = ft.topic_task().subset(320)
    model = ft.SequenceModel(config, "classification", task.num_labels, prompt_length=4)
    params = ft.init_params(model, pretrained, seed=0)
    trainer = ft.finetune(model, task, params, AdamW(lr=1e-2), epochs=3, batch_size=16, train="prompt+head",
                          restore_best=False)
    assert _changed(params, trainer.params) == {"prompt", "head.weight", "head.bias"}
    evals = [r["eval_loss"] for r in trainer.history if r["kind"] == "eval"]
    losses = np.array(trainer.losses)
    assert losses[-10:].mean() < 0.85 * losses[:5].mean(), (losses[:5], losses[-10:])   # 2.1 -> 1.6 here
    assert evals[-1] < 0.8 * np.log(9), evals                          # valid: 2.20 (chance) -> 1.58 here

    only_prompt = ft.finetune(model, ft.topic_task().subset(64), params, AdamW(lr=1e-2), epochs=1, train="prompt",
                              restore_best=False)
    assert _changed(params, only_prompt.params) == {"prompt"}


# -- evaluation and the best checkpoint -------------------------------------------------------------------------
def test_best_checkpoint_is_the_epoch_with_the_best_validation_metric(config, pretrained, tmp_path):
    task = ft.order_task().subset(96)
    model = ft.SequenceModel(config, "classification", 2)
    trainer = ft.finetune(model, task, ft.init_params(model, pretrained), AdamW(lr=3e-3), epochs=4, batch_size=16,
                          best_path=tmp_path / "best", restore_best=False)
    evals = [r for r in trainer.history if r["kind"] == "eval"]
    per_epoch = task.steps_per_epoch(16)
    assert [r["step"] for r in evals] == [per_epoch * (i + 1) for i in range(4)]   # once per epoch
    accs = [r["eval_accuracy"] for r in evals]
    best = int(np.argmax(accs))                                       # the first of equal bests
    assert trainer.best == {"step": evals[best]["step"], "metric": "eval_accuracy", "value": accs[best]}

    # the kept parameters really score that, and the checkpoint on disk holds them
    final = ft.evaluator(ft.loss_graph(model.eval()), task.batches("valid", 64))(trainer)
    assert final["eval_accuracy"] == pytest.approx(accs[-1])
    trainer.restore_best()
    again = ft.evaluator(ft.loss_graph(model.eval()), task.batches("valid", 64))(trainer)
    assert again["eval_accuracy"] == pytest.approx(accs[best])
    on_disk = ft.load_pretrained(tmp_path / "best")
    for k, v in trainer.params.items():
        np.testing.assert_array_equal(on_disk[k], v, err_msg=k)


def test_generation_finetuning_lowers_the_target_nll():
    model = GPT(models.get("gpt-tiny").config)
    task = ft.continuation_task().subset(256)
    trainer = ft.finetune(model, task, ft.init_params(model, seed=0), AdamW(lr=3e-3), epochs=2, batch_size=16)
    evals = [r["eval_loss"] for r in trainer.history if r["kind"] == "eval"]
    losses = np.array(trainer.losses)
    assert losses[:3].mean() > 6.0 and losses[-5:].mean() < 0.75 * losses[:3].mean(), losses  # 6.4 -> 4.2 here
    assert trainer.best["metric"] == "eval_loss" and trainer.best["value"] == min(evals)


def test_ranking_finetuning_ranks_the_true_next_sentence_higher(config, pretrained):
    task = ft.next_sentence_ranking_task().subset(320, 128)
    model = ft.SequenceModel(config, "ranking")
    trainer = ft.finetune(model, task, ft.init_params(model, pretrained), AdamW(lr=1e-3), epochs=3, batch_size=16)
    losses = np.array(trainer.losses)
    assert losses[-10:].mean() < 0.85 * losses[:5].mean(), losses     # 1.00 -> 0.79 here
    assert trainer.best["value"] > 0.6                                # pair accuracy 0.71 here (chance 0.5)


def test_mismatched_task_and_unknown_modes_are_errors(config):
    model = ft.SequenceModel(config, "regression")
    with pytest.raises(GraphDSLError, match="task 'topic' is classification, the model is regression"):
        ft.finetune(model, ft.topic_task().subset(16), model.init(0), AdamW(lr=1e-3))
    with pytest.raises(GraphDSLError, match="unknown train mode 'middle'"):
        ft.trainable(model, "middle")
    with pytest.raises(GraphDSLError, match="needs a model with a soft prompt"):
        ft.trainable(model, "prompt")
    with pytest.raises(GraphDSLError, match="no separate head"):
        ft.trainable(GPT(models.get("gpt-tiny").config), "head")
