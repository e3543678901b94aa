"""Encoder-decoder (models/seq2seq.py): the forward pass against NumPy, the loss, gradients,
padding and causality, span corruption, the cached decoding step, and bart-tiny learning to
reverse word strings (then decoding them greedily and by beam search)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import backends
import models
from graphdsl.autodiff import GRAD_PREFIX, grad
from graphdsl.errors import GraphDSLError
from graphdsl.optim import AdamW, LinearWarmupDecay, StepRunner, make_train_step
from models import seq2seq as s2s
from models.data import load_tokenizer
from models.decoding import beam_search, greedy

CFG = s2s.Seq2SeqConfig(vocab_size=29, d_model=16, n_heads=4, n_encoder_layers=2, n_decoder_layers=2,
                        d_ff=24, max_len=12)
TOK = load_tokenizer()
BOS, EOS = TOK.bos_id, TOK.eos_id


@pytest.fixture(scope="module")
def small():
    """A small model with large random weights (so that every position's logits differ visibly)."""
    model = s2s.Seq2Seq(CFG).eval()
    rng = np.random.default_rng(0)
    params = {k: (v + rng.normal(0, 0.3, v.shape)).astype(np.float32) for k, v in model.init(0).items()}
    exes = {"forward": backends.compile(s2s.forward_graph(model), "numpy"),
            "loss": backends.compile(s2s.loss_graph(model), "numpy")}
    return model, params, exes


def random_batch(rng, n=3, src=7, tgt=6, vocab=CFG.vocab_size):
    """Random ids with ragged padding on both sides (labels IGNORE after each target's end)."""
    src_len, tgt_len = rng.integers(2, src + 1, n), rng.integers(1, tgt + 1, n)
    src_len[0], tgt_len[0] = src, tgt
    batch = {"src_ids": rng.integers(3, vocab, (n, src)), "dec_ids": rng.integers(3, vocab, (n, tgt)),
             "src_mask": (np.arange(src) < src_len[:, None]).astype(np.int64)}
    batch["labels"] = np.where(np.arange(tgt) < tgt_len[:, None], rng.integers(3, vocab, (n, tgt)),
                               s2s.IGNORE)
    return batch


def logits_of(small, batch):
    _, params, exes = small
    keys = ("src_ids", "src_mask", "dec_ids")
    return exes["forward"](**{k: batch[k] for k in keys}, **params)["logits"].astype(np.float64)


# -- an independent NumPy BART -------------------------------------------------------------------
def np_ln(p, name, x, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p[f"{name}.weight"] + p[f"{name}.bias"]


def np_lin(p, name, x):
    return x @ p[f"{name}.weight"] + p[f"{name}.bias"]


def np_attn(p, name, x, kv, allowed, n_heads):
    """One head at a time; ``allowed [B, Sq, Sk]`` is True where a query may see a key."""
    q, k, v = np_lin(p, f"{name}.q", x), np_lin(p, f"{name}.k", kv), np_lin(p, f"{name}.v", kv)
    dh = x.shape[-1] // n_heads
    out = np.zeros_like(q)
    for h in range(n_heads):
        cols = slice(h * dh, (h + 1) * dh)
        s = q[..., cols] @ k[..., cols].transpose(0, 2, 1) / math.sqrt(dh)
        s = np.where(allowed, s, -np.inf)
        e = np.exp(s - s.max(-1, keepdims=True))
        out[..., cols] = (e / e.sum(-1, keepdims=True)) @ v[..., cols]
    return np_lin(p, f"{name}.o", out)


def np_ffn(p, name, x):
    h = np_lin(p, f"{name}.fc1", x)
    return np_lin(p, f"{name}.fc2", 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2))))


def numpy_bart(p, src_ids, src_mask, dec_ids, cfg=CFG):
    """Post-LN encoder-decoder written from the formulas: returns logits [B, T, V]."""
    p = {k: v.astype(np.float64) for k, v in p.items()}
    S, T = src_ids.shape[1], dec_ids.shape[1]
    x = np_ln(p, "encoder_embed_norm", p["embed.weight"][src_ids] + p["encoder_pos.weight"][:S])
    see_src = np.broadcast_to(src_mask[:, None, :] != 0, (len(src_ids), S, S))
    for i in range(cfg.n_encoder_layers):
        pre = f"encoder.layers.{i}"
        x = np_ln(p, f"{pre}.norm1", x + np_attn(p, f"{pre}.attn", x, x, see_src, cfg.n_heads))
        x = np_ln(p, f"{pre}.norm2", x + np_ffn(p, f"{pre}.ffn", x))
    y = np_ln(p, "decoder_embed_norm", p["embed.weight"][dec_ids] + p["decoder_pos.weight"][:T])
    causal = np.broadcast_to(np.tril(np.ones((T, T), bool)), (len(dec_ids), T, T))
    cross = np.broadcast_to(src_mask[:, None, :] != 0, (len(src_ids), T, S))
    for i in range(cfg.n_decoder_layers):
        pre = f"decoder.layers.{i}"
        y = np_ln(p, f"{pre}.norm1", y + np_attn(p, f"{pre}.self_attn", y, y, causal, cfg.n_heads))
        y = np_ln(p, f"{pre}.norm2", y + np_attn(p, f"{pre}.cross_attn", y, x, cross, cfg.n_heads))
        y = np_ln(p, f"{pre}.norm3", y + np_ffn(p, f"{pre}.ffn", y))
    return y @ p["embed.weight"].T + p["lm_bias"]


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


# -- the model -----------------------------------------------------------------------------------
def test_forward_matches_numpy_bart(small):
    batch = random_batch(np.random.default_rng(1))
    got = logits_of(small, batch)
    assert got.shape == (3, 6, CFG.vocab_size)
    want = numpy_bart(small[1], batch["src_ids"], batch["src_mask"], batch["dec_ids"])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_loss_is_the_nll_of_the_targets_and_token_acc_counts_hits(small):
    batch = random_batch(np.random.default_rng(2))
    _, params, exes = small
    out = exes["loss"](**batch, **params)
    logp = np_log_softmax(logits_of(small, batch))
    nll, hits, count = 0.0, 0, 0
    for b, t in zip(*np.nonzero(batch["labels"] != s2s.IGNORE)):
        label = batch["labels"][b, t]
        nll -= logp[b, t, label]
        hits += int(logp[b, t].argmax() == label)
        count += 1
    assert np.isfinite(out["loss"]) and count < batch["labels"].size  # some labels were ignored
    np.testing.assert_allclose(out["loss"], nll / count, rtol=1e-5)
    np.testing.assert_allclose(out["token_acc"], hits / count, rtol=1e-6)


def test_gradients_match_central_differences():
    cfg = dataclasses.replace(CFG, d_model=8, n_heads=2, n_encoder_layers=1, n_decoder_layers=1,
                              d_ff=12, dtype="float64", init_std=0.3)
    model = s2s.Seq2Seq(cfg)
    rng = np.random.default_rng(3)
    params = {k: v + rng.normal(0, 0.2, v.shape) for k, v in model.init(3).items()}
    batch = random_batch(rng, n=2, src=5, tgt=4)
    names = ["embed.weight", "encoder_pos.weight", "encoder.layers.0.attn.q.weight",
             "decoder.layers.0.cross_attn.k.weight", "decoder.layers.0.self_attn.v.bias", "lm_bias"]
    loss = s2s.loss_graph(model)
    exe = backends.compile(grad(loss, wrt=names), "numpy")
    analytic = exe(**batch, **params)
    f = backends.compile(loss, "numpy")
    eps = 1e-6
    for name in names:
        flat = params[name].reshape(-1)
        for j in rng.choice(flat.size, 3, replace=False):
            old = flat[j]
            flat[j] = old + eps
            up = f(**batch, **params)["loss"]
            flat[j] = old - eps
            down = f(**batch, **params)["loss"]
            flat[j] = old
            numeric = (up - down) / (2 * eps)
            got = analytic[GRAD_PREFIX + name].reshape(-1)[j]
            assert abs(got - numeric) <= 1e-6 + 1e-5 * abs(numeric), f"{name}[{j}]: {got} vs {numeric}"


def test_encoder_padding_changes_nothing(small):
    rng = np.random.default_rng(4)
    batch = random_batch(rng, n=2, src=5)
    batch["src_mask"][:] = 1
    padded = dict(batch, src_ids=np.concatenate([batch["src_ids"], rng.integers(3, 29, (2, 4))], axis=1),
                  src_mask=np.concatenate([batch["src_mask"], np.zeros((2, 4), np.int64)], axis=1))
    np.testing.assert_allclose(logits_of(small, padded), logits_of(small, batch), atol=1e-5)


def test_decoder_is_causal(small):
    batch = random_batch(np.random.default_rng(5))
    base = logits_of(small, batch)
    for t in range(batch["dec_ids"].shape[1]):
        changed = dict(batch, dec_ids=batch["dec_ids"].copy())
        changed["dec_ids"][:, t] = changed["dec_ids"][:, t] % 25 + 3  # another token
        out = logits_of(small, changed)
        np.testing.assert_allclose(out[:, :t], base[:, :t], atol=1e-5)
        assert np.abs(out[:, t] - base[:, t]).max() > 1e-3


def test_graph_has_one_softmax_per_attention_block():
    spec = models.get("bart-tiny")
    g = s2s.forward_graph(s2s.Seq2Seq(CFG))
    assert g.op_counts()["softmax"] == CFG.n_encoder_layers + 2 * CFG.n_decoder_layers
    assert spec.attention_blocks == 2 + 2 * 2


# -- span corruption -----------------------------------------------------------------------------
SENTINELS = tuple(range(1000, 1016))
SPAN_ROWS = [  # (length, seed, noise_density, mean_span_length, expected noise tokens, spans)
    (20, 0, 0.15, 3.0, 3, 1),
    (40, 1, 0.15, 3.0, 6, 2),
    (100, 2, 0.15, 3.0, 15, 5),
    (100, 3, 0.3, 2.0, 30, 15),
    (2, 4, 0.15, 3.0, 1, 1),
    (9, 5, 0.5, 1.0, 4, 4),     # spans of one token, one kept token between each pair
]


@pytest.mark.parametrize("length,seed,density,mean,n_noise,n_spans", SPAN_ROWS)
def test_span_corruption_structure(length, seed, density, mean, n_noise, n_spans):
    tokens = np.arange(length) + 10
    inputs, targets = s2s.span_corruption(tokens, seed, sentinels=SENTINELS, eos_id=EOS,
                                          noise_density=density, mean_span_length=mean)
    used = list(SENTINELS[:n_spans])
    assert [t for t in inputs if t in SENTINELS] == used           # sentinels in order, once each
    assert [t for t in targets if t in SENTINELS] == used
    assert targets[0] == SENTINELS[0] and targets[-1] == EOS and list(targets).count(EOS) == 1
    assert len(targets) == n_noise + n_spans + 1                    # sentinel + span per span, EOS
    assert len(inputs) == length - n_noise + n_spans
    at = np.isin(inputs, SENTINELS)
    assert not (at[1:] & at[:-1]).any()                             # two spans never touch
    np.testing.assert_array_equal(
        s2s.uncorrupt(inputs, targets, sentinels=SENTINELS, eos_id=EOS), tokens)
    again = s2s.span_corruption(tokens, seed, sentinels=SENTINELS, eos_id=EOS,
                                noise_density=density, mean_span_length=mean)
    np.testing.assert_array_equal(again[0], inputs)                 # same seed, same corruption
    np.testing.assert_array_equal(again[1], targets)


def test_span_corruption_varies_with_the_seed_and_places_spans_everywhere():
    tokens = np.arange(40) + 10
    seen, starts_with_span = set(), 0
    for seed in range(200):
        inputs, targets = s2s.span_corruption(tokens, seed, sentinels=SENTINELS, eos_id=EOS)
        seen.add(tuple(targets))
        starts_with_span += inputs[0] == SENTINELS[0]
        noise = set(targets.tolist()) - set(SENTINELS) - {EOS}
        assert noise.isdisjoint(inputs.tolist())
    assert len(seen) > 150 and 60 < starts_with_span < 140


def test_span_corruption_errors():
    with pytest.raises(GraphDSLError, match="at least 2 tokens"):
        s2s.span_corruption([5], 0, sentinels=SENTINELS, eos_id=EOS)
    with pytest.raises(GraphDSLError, match="only 2 sentinels"):
        s2s.span_corruption(np.arange(100), 0, sentinels=SENTINELS[:2], eos_id=EOS)


def test_span_batch_rebuilds_windows_of_the_corpus():
    spec = models.get("bart-tiny")
    batch = spec.example_batch(6, seed=7)
    docs, _ = s2s._corpus_ids()
    corpus = b"".join(d.astype(">i4").tobytes() for d in docs)
    for i in range(6):
        src = batch["src_ids"][i][batch["src_mask"][i] == 1]
        labels = batch["labels"][i][batch["labels"][i] != s2s.IGNORE]
        n = len(labels)
        np.testing.assert_array_equal(batch["dec_ids"][i, :n], np.concatenate([[BOS], labels[:-1]]))
        assert (batch["src_ids"][i][batch["src_mask"][i] == 0] == TOK.pad_id).all()
        text = s2s.uncorrupt(src, labels, sentinels=TOK.sentinel_ids, eos_id=EOS)
        assert 2 <= len(text) <= spec.config.seq_len and text.astype(">i4").tobytes() in corpus


def test_registered_sizes():
    assert {"bart-tiny", "bart-mini", "bart-base"} <= set(models.names())
    for name in ("bart-tiny", "bart-mini"):
        spec = models.get(name)
        inputs = set(spec.loss(spec.module()).inputs) - {"seed"}   # bart-mini has dropout
        assert set(spec.example_batch(2)) == inputs
    base = models.get("bart-base")
    assert base.family == "bart" and base.attention_blocks == 18
    assert 130e6 < base.module().num_parameters() < 145e6    # BART-base: 139M
    with pytest.raises(GraphDSLError, match="unknown seq2seq task"):
        s2s.make_batch(dataclasses.replace(CFG, task="sort"), np.random.default_rng(0), 2)


# -- training and decoding -----------------------------------------------------------------------
def train(spec_name, config, steps, lr, batch_size=32, seed=0):
    spec = models.get(spec_name)
    model = spec.build(config)
    step = make_train_step(spec.loss(model), AdamW(lr=lr), clip_norm=1.0,
                           schedule=LinearWarmupDecay(30, steps))
    runner = StepRunner(backends.compile(step, "numpy"), model.init(seed))
    rng = np.random.default_rng(seed)
    losses = [runner.step(spec.batch(config, rng, batch_size))["loss"] for _ in range(steps)]
    return model, runner.params, losses


@pytest.fixture(scope="module")
def reverser():
    """bart-tiny trained on the reverse task (about 10 s on numpy)."""
    config = dataclasses.replace(models.get("bart-tiny").config, task="reverse")
    model, params, losses = train("bart-tiny", config, steps=400, lr=6e-3)
    return model.eval(), params, losses, config


def test_bart_tiny_learns_to_reverse(reverser):
    *_, losses, _ = reverser
    first, last = np.mean(losses[:5]), np.mean(losses[-20:])
    assert np.all(np.isfinite(losses))
    assert last < first / 10, f"loss went {first:.3f} -> {last:.3f}"


def test_span_corruption_pretraining_lowers_the_loss():
    spec = models.get("bart-tiny")
    _, _, losses = train("bart-tiny", spec.config, steps=80, lr=6e-3, batch_size=16)
    first, last = np.mean(losses[:3]), np.mean(losses[-10:])
    assert last < first / 1.5, f"loss went {first:.3f} -> {last:.3f}"


@pytest.fixture(scope="module")
def reverse_examples(reverser):
    model, params, _, config = reverser
    pairs = s2s.reverse_pairs(config, np.random.default_rng(123), 8)
    batch = s2s.pack(pairs, pad_id=TOK.pad_id, bos_id=BOS)
    step = s2s.seq2seq_step(model, params, batch["src_ids"], batch["src_mask"])
    return pairs, batch, step


def decoded(seq):
    """The generated tokens after the start token, up to and including EOS."""
    seq = list(seq[1:])
    return seq[:seq.index(EOS) + 1] if EOS in seq else seq


def test_greedy_and_beam_search_reverse_new_strings(reverse_examples, reverser):
    pairs, _, step = reverse_examples
    max_new = reverser[3].reverse_len + 1
    prompts = np.full((len(pairs), 1), BOS)
    g = greedy(step, prompts, max_new, eos_id=EOS)
    beams = beam_search(step, prompts, 3, max_new, eos_id=EOS)
    want = [list(t) for _, t in pairs]
    greedy_right = sum(decoded(s) == w for s, w in zip(g, want))
    beam_right = sum(decoded(s[0]) == w for s, w in zip(beams.sequences, want))
    assert greedy_right >= 7 and beam_right >= 7, (greedy_right, beam_right)
    assert np.all(np.diff(beams.scores, axis=1) <= 0)  # best first


def test_beam_width_one_equals_greedy(reverse_examples, reverser):
    pairs, _, step = reverse_examples
    prompts = np.full((len(pairs), 1), BOS)
    g = greedy(step, prompts, 8, eos_id=EOS)
    b = beam_search(step, prompts, 1, 8, eos_id=EOS).sequences[:, 0]
    np.testing.assert_array_equal(b[:, :g.shape[1]], g)
    assert (b[:, g.shape[1]:] == EOS).all()


class Recorder:
    """Wraps a step function: keeps the log-probs it returned and the number of calls."""

    def __init__(self, step):
        self.step, self.log_probs = step, []

    def __call__(self, ids, cache):
        lp, cache = self.step(ids, cache)
        self.log_probs.append(lp)
        return lp, cache


def test_cached_decoding_equals_full_recomputation(reverse_examples, reverser):
    model, params = reverser[:2]
    pairs, batch, step = reverse_examples
    # a decoder step never touches the encoder nor re-projects the memory for cross-attention
    assert not [k for k in step.decode.graph.params if k.startswith("encoder") or ".cross_attn.k." in k
                or ".cross_attn.v." in k]
    rec = Recorder(step)
    seqs = greedy(rec, np.full((len(pairs), 1), BOS), 6)           # no EOS: six full steps
    assert len(rec.log_probs) == 6 and seqs.shape == (8, 7)         # one call per new token
    fwd = backends.compile(s2s.forward_graph(model), "numpy")
    full = fwd(src_ids=batch["src_ids"], src_mask=batch["src_mask"], dec_ids=seqs[:, :-1],
               **params)["logits"].astype(np.float64)
    np.testing.assert_allclose(np.stack(rec.log_probs, axis=1), np_log_softmax(full), atol=1e-4)

    # Greedy by re-running the whole forward graph each step gives the same tokens.
    def rerun(ids, cache):
        seq = ids if cache is None else np.concatenate([cache["seq"], ids], axis=1)
        logits = fwd(src_ids=batch["src_ids"], src_mask=batch["src_mask"], dec_ids=seq, **params)["logits"]
        return np_log_softmax(logits[:, -1].astype(np.float64)), {"seq": seq}

    np.testing.assert_array_equal(greedy(rerun, np.full((len(pairs), 1), BOS), 6), seqs)


def test_step_checks_prompts_and_length(reverse_examples):
    _, _, step = reverse_examples
    with pytest.raises(GraphDSLError, match="3 prompts for 8 sources"):
        step(np.full((3, 1), BOS), None)
    with pytest.raises(GraphDSLError, match="exceed max_len"):
        step(np.full((8, 65), BOS), None)
