"""GPT (models/gpt.py): the forward pass against NumPy, the loss, gradients, causality, the
key/value cache against full re-computation, decoding on the model, and gpt-tiny learning text."""
from __future__ import annotations

import math

import numpy as np
import pytest

import backends
import models
from graphdsl.autodiff import GRAD_PREFIX, grad
from graphdsl.errors import GraphDSLError
from graphdsl.optim import AdamW, StepRunner, WarmupCosine, make_train_step
from models import gpt
from models.decoding import beam_search, greedy

CFG = gpt.GPTConfig(vocab_size=37, n_positions=24, n_embd=32, n_layer=2, n_head=4, dropout=0.0)


@pytest.fixture(scope="module")
def tiny():
    """A tiny GPT with large random weights (so that every position's logits differ visibly)."""
    model = gpt.GPT(CFG).eval()
    rng = np.random.default_rng(0)
    params = {k: (v + rng.normal(0, 0.3, v.shape)).astype(np.float32) for k, v in model.init(0).items()}
    exes = {name: backends.compile(make(model), "numpy") for name, make in
            [("forward", gpt.forward_graph), ("loss", gpt.loss_graph), ("prefill", gpt.prefill_graph),
             ("decode", gpt.decode_graph)]}
    return model, params, exes


def logits_of(tiny, ids):
    _, params, exes = tiny
    return exes["forward"](ids=np.asarray(ids), **params)["logits"].astype(np.float64)


# -- an independent NumPy GPT-2 ----------------------------------------------------------------
def numpy_gpt(p, ids, cfg):
    def ln(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + cfg.layer_norm_eps) * p[f"{name}.weight"] + p[f"{name}.bias"]

    def lin(x, name):
        return x @ p[f"{name}.weight"] + p[f"{name}.bias"]

    def heads(x):
        return x.reshape(b, s, cfg.n_head, -1).transpose(0, 2, 1, 3)

    p = {k: v.astype(np.float64) for k, v in p.items()}
    b, s = ids.shape
    h = p["wte.weight"][ids] + p["wpe.weight"][:s]
    allowed = np.tril(np.ones((s, s), bool))
    for i in range(cfg.n_layer):
        a = ln(h, f"h.{i}.norm1")
        q, k, v = (heads(lin(a, f"h.{i}.attn.{n}")) for n in "qkv")
        scores = np.where(allowed, q @ k.transpose(0, 1, 3, 2) / math.sqrt(cfg.head_dim), -np.inf)
        w = np.exp(scores - scores.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        h = h + lin((w @ v).transpose(0, 2, 1, 3).reshape(b, s, -1), f"h.{i}.attn.o")
        m = lin(ln(h, f"h.{i}.norm2"), f"h.{i}.ffn.fc1")
        m = 0.5 * m * (1 + np.tanh(math.sqrt(2 / math.pi) * (m + 0.044715 * m ** 3)))
        h = h + lin(m, f"h.{i}.ffn.fc2")
    return ln(h, "ln_f") @ p["wte.weight"].T


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


# -- forward and loss ------------------------------------------------------------------------------
def test_forward_matches_numpy_gpt2(tiny):
    ids = np.random.default_rng(1).integers(0, CFG.vocab_size, (3, 11))
    got = logits_of(tiny, ids)
    assert got.shape == (3, 11, CFG.vocab_size)
    np.testing.assert_allclose(got, numpy_gpt(tiny[1], ids, CFG), atol=2e-4, rtol=1e-4)


def test_parameter_names_follow_the_documented_hf_table():
    names = set(gpt.GPT(CFG).parameters())
    per_block = {f"{m}.{w}" for m in ("norm1", "norm2", "attn.q", "attn.k", "attn.v", "attn.o",
                                      "ffn.fc1", "ffn.fc2") for w in ("weight", "bias")}
    want = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"}
    want |= {f"h.{i}.{n}" for i in range(CFG.n_layer) for n in per_block}
    assert names == want  # no lm_head: it is wte, tied
    for name in want:
        assert name.split(".")[-2] in gpt.__doc__ or name.startswith(("wte", "wpe"))


def test_loss_is_the_nll_of_the_next_token(tiny):
    rng = np.random.default_rng(2)
    ids = rng.integers(0, CFG.vocab_size, (3, 9))
    labels = ids.copy()
    labels[0, 6:] = gpt.IGNORE   # padding at the end of row 0
    labels[2, 3] = gpt.IGNORE
    _, params, exes = tiny
    out = exes["loss"](ids=ids, labels=labels, **params)
    logp = log_softmax(logits_of(tiny, ids))[:, :-1]
    targets = labels[:, 1:]
    valid = targets != gpt.IGNORE
    picked = np.take_along_axis(logp, np.where(valid, targets, 0)[..., None], -1)[..., 0]
    assert np.isfinite(out["loss"])
    assert out["loss"] == pytest.approx(-picked[valid].mean(), rel=1e-5)
    acc = ((logp.argmax(-1) == targets) & valid).sum() / valid.sum()
    assert out["token_acc"] == pytest.approx(acc)


def test_gradients_match_central_differences():
    cfg = gpt.GPTConfig(vocab_size=7, n_positions=6, n_embd=8, n_layer=2, n_head=2, dropout=0.0,
                        dtype="float64")
    model = gpt.GPT(cfg).eval()
    rng = np.random.default_rng(3)
    params = {k: v + rng.normal(0, 0.3, v.shape) for k, v in model.init(1).items()}
    batch = {"ids": rng.integers(0, 7, (2, 5)), "labels": rng.integers(0, 7, (2, 5))}
    batch["labels"][1, 4] = gpt.IGNORE
    lg = gpt.loss_graph(model)
    loss = backends.compile(lg, "numpy")
    grads = backends.compile(grad(lg, wrt=list(params)), "numpy")(**batch, **params)
    eps = 1e-6
    for name, value in params.items():
        for flat in rng.choice(value.size, size=min(3, value.size), replace=False):
            idx = np.unravel_index(flat, value.shape)

            def at(delta):
                p = dict(params)
                p[name] = value.copy()
                p[name][idx] += delta
                return float(loss(**batch, **p)["loss"])
            numeric = (at(eps) - at(-eps)) / (2 * eps)
            analytic = grads[GRAD_PREFIX + name][idx]
            assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8), (name, idx, analytic, numeric)


def test_causal_a_later_token_never_changes_earlier_logits(tiny):
    ids = np.random.default_rng(4).integers(0, CFG.vocab_size, (1, 10))
    other = ids.copy()
    other[0, 6] = (ids[0, 6] + 1) % CFG.vocab_size
    a, b = logits_of(tiny, ids), logits_of(tiny, other)
    np.testing.assert_array_equal(a[:, :6], b[:, :6])
    assert np.abs(a[:, 6:] - b[:, 6:]).min(axis=-1).max() > 1e-3  # every later position changes


# -- the key/value cache --------------------------------------------------------------------------
def cache_of(out):
    return {k[len("present_"):]: v for k, v in out.items() if k.startswith("present_")}


def test_kv_cache_decoding_equals_full_recomputation(tiny):
    _, params, exes = tiny
    ids = np.random.default_rng(5).integers(0, CFG.vocab_size, (2, 16))
    full = logits_of(tiny, ids)
    out = exes["prefill"](ids=ids[:, :5], **params)
    np.testing.assert_allclose(out["logits"], full[:, :5], atol=1e-5)
    cache = cache_of(out)
    for t in range(5, 12):                          # one token per step
        out = exes["decode"](ids=ids[:, t:t + 1], **{f"past_{k}": v for k, v in cache.items()}, **params)
        cache = cache_of(out)
        assert cache["key.1"].shape == (2, CFG.n_head, t + 1, CFG.head_dim)
        np.testing.assert_allclose(out["logits"][:, 0], full[:, t], atol=1e-5)
        np.testing.assert_allclose(out["log_probs"], log_softmax(full[:, t]), atol=1e-5)
    out = exes["decode"](ids=ids[:, 12:], **{f"past_{k}": v for k, v in cache.items()}, **params)
    np.testing.assert_allclose(out["logits"], full[:, 12:], atol=1e-5)  # several new tokens at once


def test_decode_graph_takes_a_symbolic_past():
    g = gpt.decode_graph(gpt.GPT(CFG))
    assert str(g.inputs["past_key.0"].type) == f"f32[batch,{CFG.n_head},past,{CFG.head_dim}]"
    assert str(g.outputs["present_value.1"].type) == f"f32[batch,{CFG.n_head},new+past,{CFG.head_dim}]"
    assert str(g.outputs["log_probs"].type) == f"f32[batch,{CFG.vocab_size}]"


class Counting:
    """Wraps an executable and records the shape of the ids it was called with."""

    def __init__(self, exe):
        self.exe, self.shapes = exe, []

    def __call__(self, **feeds):
        self.shapes.append(feeds["ids"].shape)
        return self.exe(**feeds)


def rerun_step(tiny):
    """A step function without a cache: re-runs the whole sequence through the forward graph."""
    def step(ids, cache):
        seq = ids if cache is None else np.concatenate([cache["seq"], ids], axis=1)
        return log_softmax(logits_of(tiny, seq)[:, -1]), {"seq": seq}
    return step


def test_greedy_with_cache_equals_greedy_by_rerun_and_costs_one_step_per_token(tiny):
    model, params, _ = tiny
    step = gpt.gpt_step(model, params)
    step.prefill, step.decode = Counting(step.prefill), Counting(step.decode)
    prompt = np.random.default_rng(6).integers(0, CFG.vocab_size, (3, 4))
    cached = greedy(step, prompt, 10)
    assert step.prefill.shapes == [(3, 4)] and step.decode.shapes == [(3, 1)] * 9
    np.testing.assert_array_equal(cached, greedy(rerun_step(tiny), prompt, 10))


def test_beam_search_on_gpt(tiny):
    model, params, _ = tiny
    step = gpt.gpt_step(model, params)
    prompt = np.random.default_rng(7).integers(0, CFG.vocab_size, (2, 3))
    seqs, scores = beam_search(step, prompt, beam_width=1, max_new_tokens=6)
    np.testing.assert_array_equal(seqs[:, 0], greedy(step, prompt, 6))
    # Width 4 with EOS: every score is its sequence's log-probability under a full re-run
    # (this checks that the cache follows the beams when they are reordered).
    eos = 3
    seqs, scores = beam_search(step, prompt, beam_width=4, max_new_tokens=6, eos_id=eos,
                               length_penalty=0.7)
    assert np.isfinite(scores).all() and (np.diff(scores, axis=1) <= 0).all()
    for b in range(2):
        for seq, score in zip(seqs[b], scores[b]):
            new = list(seq[3:])
            n_new = new.index(eos) + 1 if eos in new else len(new)
            logp = log_softmax(logits_of(tiny, seq[None, :3 + n_new]))[0]
            total = sum(logp[2 + i, seq[3 + i]] for i in range(n_new))
            assert score == pytest.approx(total / n_new ** 0.7, rel=1e-4)


def test_generating_past_n_positions_is_an_error(tiny):
    model, params, _ = tiny
    with pytest.raises(GraphDSLError, match="exceed n_positions=24"):
        greedy(gpt.gpt_step(model, params), np.zeros((1, 20), np.int64), 10)


# -- the registry and gpt-tiny on its task --------------------------------------------------------------
def test_registered_sizes():
    assert {"gpt-tiny", "gpt-mini", "gpt2-small"} <= set(models.names())
    small = models.get("gpt2-small")
    c = small.config
    assert (c.n_layer, c.n_embd, c.n_head, c.vocab_size, c.n_positions) == (12, 768, 12, 50257, 1024)
    assert small.module().num_parameters() == 124_439_808  # GPT-2 small, as Hugging Face counts it
    for name in ("gpt-tiny", "gpt-mini", "gpt2-small"):  # one textbook softmax per attention block
        spec = models.get(name)
        assert spec.forward(spec.module().eval()).op_counts()["softmax"] == spec.attention_blocks


def test_gpt_tiny_spec_batch_and_initial_loss():
    spec = models.get("gpt-tiny")
    batch = spec.example_batch(4)
    assert batch["ids"].shape == batch["labels"].shape == (4, spec.config.seq_len)
    model = spec.module()
    out = backends.compile(spec.loss(model), "numpy")(**batch, **model.init(0))
    # small initial weights: close to the uniform distribution over the vocabulary
    assert out["loss"] == pytest.approx(math.log(spec.config.vocab_size), rel=0.02)


def test_gpt_tiny_learns_to_continue_stories():
    """Teacher forcing on six corpus documents: the loss falls 20x within 60 steps (~5 s), and
    greedy decoding from each document's first four tokens writes the next 30 as in the corpus."""
    spec = models.get("gpt-tiny")
    model = spec.module()
    docs, openings = [], set()
    for d in gpt.document_ids(spec.config.seq_len):  # documents that differ after the first name
        if len(d) >= 34 and tuple(d[2:5]) not in openings and len(docs) < 6:
            docs.append(d)
            openings.add(tuple(d[2:5]))
    batch = gpt.pack(docs, spec.config.seq_len)
    step = make_train_step(spec.loss(model), AdamW(lr=1e-2, weight_decay=0.0), clip_norm=1.0,
                           schedule=WarmupCosine(5, 60))
    runner = StepRunner(backends.compile(step, "numpy"), model.init(0))
    losses = [runner.step(batch)["loss"] for _ in range(60)]
    assert losses[-1] < losses[0] / 20, f"loss went {losses[0]:.3f} -> {losses[-1]:.3f}"
    out = greedy(gpt.gpt_step(model, runner.params), np.stack([d[:4] for d in docs]), 30)
    np.testing.assert_array_equal(out, np.stack([d[:34] for d in docs]))
