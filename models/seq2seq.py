"""Encoder-decoder Transformer (BART layout) with T5's span-corruption pretraining objective.

The model is BART-shaped: one token embedding shared by the encoder, the decoder and the tied LM
head; learned absolute positions; a LayerNorm on the embeddings; post-LN encoder and decoder stacks
(graphdsl.nn); a bias on the logits. Training is teacher forcing: the decoder reads the targets
shifted right behind a start token and the loss is the NLL of the targets, padding ignored.

Data preparation lives here too: ``span_corruption`` (random spans -> sentinels in the encoder
input; the decoder predicts sentinel + span for each span, then EOS) and a string-reversal task
that a tiny model learns in seconds, both over the built-in corpus and its word tokenizer
(models/data: ``[BOS]`` starts the decoder, ``[EOS]`` ends a target, ``<extra_id_i>`` are the
sentinels).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

import graphdsl as gd
from graphdsl import dtypes as _dt
from graphdsl import nn, ops
from graphdsl.errors import GraphDSLError
from graphdsl.graph import Graph
from graphdsl.nn import functional as F
from graphdsl.tracing import Parameter, as_tensor

from .registry import ModelSpec, register

IGNORE = -100       # label value that the loss skips (padding)
CORPUS_VOCAB = 768  # >= the built-in word tokenizer's vocabulary (647); spare ids stay unused


@dataclass(frozen=True)
class Seq2SeqConfig:
    vocab_size: int = CORPUS_VOCAB
    d_model: int = 32
    n_heads: int = 4
    n_encoder_layers: int = 2
    n_decoder_layers: int = 2
    d_ff: int = 64
    max_len: int = 64                  # learned positions per side
    dropout: float = 0.0
    init_std: float = 0.02             # std of the encoder/decoder weights (embeddings: 0.02)
    activation: str = "gelu"
    eps: float = 1e-5
    task: str = "span"                 # what ``batch`` makes: "span" (pretraining) or "reverse"
    seq_len: int = 32                  # tokens per text that span corruption cuts
    reverse_len: int = 10              # longest string of the reverse task
    dtype: str = "float32"


class Seq2Seq(nn.Module):
    """``forward(src_ids [B,S], src_mask [B,S], dec_ids [B,T]) -> logits [B,T,V]``."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        c, dt = config, _dt.dtype(config.dtype)
        self.config = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model, dtype=dt)
        self.encoder_pos = nn.Embedding(c.max_len, c.d_model, dtype=dt)
        self.decoder_pos = nn.Embedding(c.max_len, c.d_model, dtype=dt)
        self.encoder_embed_norm = nn.LayerNorm(c.d_model, c.eps, dtype=dt)
        self.decoder_embed_norm = nn.LayerNorm(c.d_model, c.eps, dtype=dt)
        self.embed_drop = nn.Dropout(c.dropout)
        stack = dict(dropout=c.dropout, activation=c.activation, eps=c.eps, dtype=dt)
        self.encoder = nn.TransformerEncoder(c.n_encoder_layers, c.d_model, c.n_heads, c.d_ff, **stack)
        self.decoder = nn.TransformerDecoder(c.n_decoder_layers, c.d_model, c.n_heads, c.d_ff, **stack)
        self.lm_bias = Parameter((c.vocab_size,), dt, init="zeros")
        for name, p in self.named_parameters():
            if name.startswith(("encoder.", "decoder.")) and name.endswith(".weight") and p.shape.rank == 2:
                p.init = ("normal", c.init_std)

    def encode(self, src_ids, src_mask):
        """Encoder states ``[B, S, D]``; padding (``src_mask == 0``) is never attended to."""
        h = self._embed(src_ids, self.encoder_pos, self.encoder_embed_norm, _positions(src_ids))
        return self.encoder(h, mask=F.padding_mask(src_mask))

    def decode(self, dec_ids, memory, src_mask):
        """Logits ``[B, T, V]`` of the next token at each decoder position (causal)."""
        h = self._embed(dec_ids, self.decoder_pos, self.decoder_embed_norm, _positions(dec_ids))
        h = self.decoder(h, memory, memory_mask=F.padding_mask(src_mask))
        return self.lm_head(h)

    def forward(self, src_ids, src_mask, dec_ids):
        return self.decode(dec_ids, self.encode(src_ids, src_mask), src_mask)

    def decode_cached(self, dec_ids, memory_kv, src_mask, past=None):
        """``(logits [B, T, V], cache)`` for decoder tokens ``dec_ids [B, T]`` after the cached ones.

        ``memory_kv`` is ``decoder.memory_keys_values(memory)`` (one cross-attention ``(k, v)`` per
        layer, computed once per source); ``past`` is None or the cache of the previous call (one
        self-attention ``(k, v)`` per layer, ``[B, heads, P, head_dim]``): the new tokens sit at
        positions ``P .. P+T-1``.
        """
        positions = _positions(dec_ids)
        if past is not None:
            positions = positions + ops.numel(as_tensor(past[0][0]), axis=2, dtype=_dt.int64)
        h = self._embed(dec_ids, self.decoder_pos, self.decoder_embed_norm, positions)
        h, cache = self.decoder.forward_cached(h, memory_kv, past, memory_mask=F.padding_mask(src_mask))
        return self.lm_head(h), cache

    def lm_head(self, h):
        """Tied to the token embedding: ``h @ embed^T + lm_bias``."""
        return h @ as_tensor(self.embed.weight).mT + self.lm_bias

    def _embed(self, ids, pos_table, norm, positions):
        h = self.embed(ids) + pos_table(positions)
        return self.embed_drop(norm(h))


def _positions(ids):
    """``0 .. seq-1`` for ids ``[B, seq]`` (seq may be symbolic)."""
    return ops.iota(shape=(ids.shape[1],), axis=0, dtype=_dt.int64)


# -- graphs ------------------------------------------------------------------------------------
BATCH_SPECS = dict(src_ids="i64[batch,src]", src_mask="i64[batch,src]", dec_ids="i64[batch,tgt]")


def loss_graph(model: Seq2Seq) -> Graph:
    """Teacher-forced NLL over the non-ignored labels; also outputs ``token_acc``."""
    dt = _dt.dtype(model.config.dtype)

    def seq2seq_loss(src_ids, src_mask, dec_ids, labels):
        logits = model(src_ids, src_mask, dec_ids)
        valid = labels != IGNORE
        correct = (logits.argmax(axis=-1) == labels) & valid
        n_valid = ops.maximum(valid.astype(dt).sum(), 1.0)
        return {"loss": ops.cross_entropy(logits, labels, ignore_index=IGNORE),
                "token_acc": correct.astype(dt).sum() / n_valid}

    return gd.trace(seq2seq_loss, params=model, labels="i64[batch,tgt]", **BATCH_SPECS)


def forward_graph(model: Seq2Seq) -> Graph:
    """Inference: ``logits`` for the given decoder inputs."""
    def seq2seq_forward(src_ids, src_mask, dec_ids):
        return {"logits": model(src_ids, src_mask, dec_ids)}

    return gd.trace(seq2seq_forward, params=model, **BATCH_SPECS)


def _kv_spec(config: Seq2SeqConfig, length: str) -> str:
    """The type of one cached key or value: ``f32[batch,heads,<length>,head_dim]``."""
    return (f"{_dt.dtype(config.dtype).short}[batch,{config.n_heads},{length},"
            f"{config.d_model // config.n_heads}]")


def prefill_graph(model: Seq2Seq) -> Graph:
    """Encoder, cross-attention keys/values and the decoder over the prompt, in one call.

    Outputs ``log_probs`` (last position), ``logits``, ``memory_key.i``/``memory_value.i`` (for
    every later step) and the self-attention cache ``key.i``/``value.i``.
    """
    def seq2seq_prefill(src_ids, src_mask, dec_ids):
        memory_kv = model.decoder.memory_keys_values(model.encode(src_ids, src_mask))
        logits, cache = model.decode_cached(dec_ids, memory_kv, src_mask)
        out = _step_outputs(logits, cache)
        for i, (k, v) in enumerate(memory_kv):
            out[f"memory_key.{i}"], out[f"memory_value.{i}"] = k, v
        return out

    return gd.trace(seq2seq_prefill, params=model, training=False, **BATCH_SPECS)


def decode_graph(model: Seq2Seq) -> Graph:
    """One decoder step over the caches: new ``dec_ids [batch, new]`` after ``key.i``/``value.i``."""
    n, c = model.config.n_decoder_layers, model.config
    specs = {f"{pre}{kind}.{i}": _kv_spec(c, length) for i in range(n) for kind in ("key", "value")
             for pre, length in (("memory_", "src"), ("", "past"))}

    def seq2seq_decode(src_mask, dec_ids, **kv):
        memory_kv = [(kv[f"memory_key.{i}"], kv[f"memory_value.{i}"]) for i in range(n)]
        past = [(kv[f"key.{i}"], kv[f"value.{i}"]) for i in range(n)]
        return _step_outputs(*model.decode_cached(dec_ids, memory_kv, src_mask, past))

    return gd.trace(seq2seq_decode, params=model, training=False, src_mask=BATCH_SPECS["src_mask"],
                    dec_ids="i64[batch,new]", **specs)


def _step_outputs(logits, cache) -> dict:
    out = {"logits": logits, "log_probs": logits[:, -1].log_softmax(axis=-1)}
    for i, (k, v) in enumerate(cache):
        out[f"key.{i}"], out[f"value.{i}"] = k, v
    return out


class Seq2SeqStep:
    """The step function of models/decoding.py for one batch of sources.

    ``step(ids [n, t], cache) -> (log_probs [n, vocab], cache)``. The first call (``cache=None``)
    runs the encoder on the sources once, computes every decoder layer's cross-attention keys and
    values once, and runs the decoder over the prompts ``ids`` (one per source, usually
    ``[[BOS]]``). Later calls run one decoder step. The cache, rows on axis 0 so beam search can
    reorder it, holds ``src_mask``, ``memory_key.i``/``memory_value.i`` and ``key.i``/``value.i``.
    Both graphs are optimized by ``passes.optimize(graph, opt_level)`` before compiling (2: fused
    attention).
    """

    def __init__(self, model: Seq2Seq, params: dict[str, np.ndarray], src_ids, src_mask,
                 target: str = "numpy", opt_level: int = 2):
        import backends
        import passes
        self.config = model.config
        self.src_ids = np.asarray(src_ids, np.int64)
        self.src_mask = np.asarray(src_mask, np.int64)
        self.prefill = backends.compile(passes.optimize(prefill_graph(model), opt_level), target)
        self.decode = backends.compile(passes.optimize(decode_graph(model), opt_level), target)
        # the decode step needs no encoder parameters: each executable gets its own
        self.prefill_params = {k: params[k] for k in self.prefill.graph.params}
        self.decode_params = {k: params[k] for k in self.decode.graph.params}

    def __call__(self, ids, cache):
        ids = np.asarray(ids, dtype=np.int64)
        past_len = 0 if cache is None else cache["key.0"].shape[2]
        if past_len + ids.shape[1] > self.config.max_len:
            raise GraphDSLError(f"seq2seq step: {past_len} cached + {ids.shape[1]} new tokens exceed "
                                f"max_len={self.config.max_len}", hint="generate fewer tokens")
        if cache is None:
            if len(ids) != len(self.src_ids):
                raise GraphDSLError(f"seq2seq step: {len(ids)} prompts for {len(self.src_ids)} sources",
                                    hint="give one decoder prompt (e.g. [BOS]) per source")
            out = self.prefill(src_ids=self.src_ids, src_mask=self.src_mask, dec_ids=ids,
                               **self.prefill_params)
            cache = {"src_mask": self.src_mask}
        else:
            out = self.decode(dec_ids=ids, **cache, **self.decode_params)
        cache = {**cache, **{k: v for k, v in out.items() if k not in ("logits", "log_probs")}}
        return out["log_probs"], cache


def seq2seq_step(model: Seq2Seq, params: dict[str, np.ndarray], src_ids, src_mask,
                 target: str = "numpy", opt_level: int = 2) -> Seq2SeqStep:
    """The step function for ``decoding.greedy`` / ``decoding.beam_search`` over these sources
    (prefill and decode graphs optimized at ``opt_level``, then compiled)."""
    return Seq2SeqStep(model, params, src_ids, src_mask, target, opt_level)


# -- span corruption ---------------------------------------------------------------------------
def span_corruption(tokens: Sequence[int], rng, *, sentinels: Sequence[int], eos_id: int,
                    noise_density: float = 0.15, mean_span_length: float = 3.0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """T5's objective: ``(encoder input, decoder target)`` for one token sequence.

    About ``noise_density`` of the tokens, in spans of mean length ``mean_span_length``, are cut
    out; span i becomes ``sentinels[i]`` in the input, and the target is ``sentinels[i]`` followed
    by span i's tokens, for each span in order, then ``eos_id``. Spans never touch each other.
    ``rng`` is a seed or a ``np.random.Generator``: the same seed gives the same corruption.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    rng = np.random.default_rng(rng)
    n = len(tokens)
    if n < 2:
        raise GraphDSLError(f"span_corruption needs at least 2 tokens, got {n}")
    n_noise = min(max(int(round(n * noise_density)), 1), n - 1)
    n_spans = min(max(int(round(n_noise / mean_span_length)), 1), n - n_noise)
    if n_spans > len(sentinels):
        raise GraphDSLError(f"span_corruption: {n_spans} spans but only {len(sentinels)} sentinels",
                            hint="pass more sentinels or shorter sequences")
    noise_lens = _random_split(n_noise, n_spans, rng)
    keep_lens = _random_split(n - n_noise, n_spans, rng)
    noise_first = bool(rng.integers(2))
    inputs, targets, pos = [], [], 0
    for i in range(n_spans):
        if not noise_first:
            inputs.extend(tokens[pos:pos + keep_lens[i]])
            pos += keep_lens[i]
        inputs.append(sentinels[i])
        targets.append(sentinels[i])
        targets.extend(tokens[pos:pos + noise_lens[i]])
        pos += noise_lens[i]
        if noise_first:
            inputs.extend(tokens[pos:pos + keep_lens[i]])
            pos += keep_lens[i]
    targets.append(eos_id)
    return np.asarray(inputs, np.int64), np.asarray(targets, np.int64)


def _random_split(total: int, parts: int, rng: np.random.Generator) -> list[int]:
    """``parts`` positive ints summing to ``total``, uniformly over such compositions."""
    cuts = np.sort(rng.choice(total - 1, parts - 1, replace=False) + 1) if parts > 1 else []
    return np.diff([0, *cuts, total]).astype(int).tolist()


def uncorrupt(inputs: Sequence[int], targets: Sequence[int], *, sentinels: Sequence[int],
              eos_id: int) -> np.ndarray:
    """Put the target's spans back in place of the input's sentinels (inverse of span_corruption)."""
    spans, current = {}, None
    for t in targets:
        t = int(t)
        if t == eos_id:
            break
        if t in sentinels:
            current = spans.setdefault(t, [])
        elif current is None:
            raise GraphDSLError("span targets must start with a sentinel")
        else:
            current.append(t)
    out = []
    for t in inputs:
        out.extend(spans[int(t)] if int(t) in spans else [int(t)])
    return np.asarray(out, np.int64)


# -- batches -----------------------------------------------------------------------------------
def pack(pairs: Sequence[tuple[np.ndarray, np.ndarray]], *, pad_id: int, bos_id: int
         ) -> dict[str, np.ndarray]:
    """Pad ``(source, target)`` pairs into the loss graph's inputs.

    ``dec_ids`` are the targets shifted right behind ``bos_id``; ``labels`` are the targets with
    ``IGNORE`` on padding; ``src_mask`` is 1 on real source tokens.
    """
    src_len = max(len(s) for s, _ in pairs)
    tgt_len = max(len(t) for _, t in pairs)
    n = len(pairs)
    out = {"src_ids": np.full((n, src_len), pad_id, np.int64),
           "src_mask": np.zeros((n, src_len), np.int64),
           "dec_ids": np.full((n, tgt_len), pad_id, np.int64),
           "labels": np.full((n, tgt_len), IGNORE, np.int64)}
    for i, (s, t) in enumerate(pairs):
        out["src_ids"][i, :len(s)] = s
        out["src_mask"][i, :len(s)] = 1
        out["dec_ids"][i, :len(t)] = np.concatenate([[bos_id], t[:-1]])
        out["labels"][i, :len(t)] = t
    return out


def _tokenizer(config: Seq2SeqConfig):
    from .data.tokenizer import load_tokenizer
    tok = load_tokenizer()
    if tok.vocab_size > config.vocab_size:
        raise GraphDSLError(f"the corpus tokenizer has {tok.vocab_size} tokens but the model only "
                            f"{config.vocab_size}", hint="raise Seq2SeqConfig.vocab_size")
    return tok


@functools.lru_cache(maxsize=None)
def _corpus_ids() -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """(each document's token ids, each sentence's token ids) of the built-in corpus."""
    from .data.corpus import load_corpus
    from .data.tokenizer import load_tokenizer
    tok, corpus = load_tokenizer(), load_corpus()
    docs = tuple(np.asarray([i for s in d for i in tok.encode(s)], np.int64) for d in corpus.documents)
    sentences = tuple(np.asarray(tok.encode(s), np.int64) for s in corpus.sentences)
    return docs, sentences


def _window(ids: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random run of ``length`` consecutive tokens (all of ``ids`` when it is shorter)."""
    if len(ids) <= length:
        return ids
    start = int(rng.integers(0, len(ids) - length + 1))
    return ids[start:start + length]


def span_pairs(config: Seq2SeqConfig, rng: np.random.Generator, n: int):
    """Span corruption of ``n`` random ``seq_len``-token windows of the corpus documents."""
    tok = _tokenizer(config)
    docs, _ = _corpus_ids()
    return [span_corruption(_window(docs[int(rng.integers(len(docs)))], config.seq_len, rng), rng,
                            sentinels=tok.sentinel_ids, eos_id=tok.eos_id) for _ in range(n)]


def reverse_pairs(config: Seq2SeqConfig, rng: np.random.Generator, n: int, min_len: int = 3):
    """``(x, reversed(x) + [eos])`` for runs ``x`` of ``min_len..reverse_len`` words of corpus
    sentences: "Anna bought six apples ." -> ". apples six bought Anna [EOS]"."""
    tok = _tokenizer(config)
    _, sentences = _corpus_ids()
    pairs = []
    while len(pairs) < n:
        sentence = sentences[int(rng.integers(len(sentences)))]
        if len(sentence) >= min_len:
            x = _window(sentence, int(rng.integers(min_len, config.reverse_len + 1)), rng)
            pairs.append((x, np.concatenate([x[::-1], [tok.eos_id]])))
    return pairs


TASKS = {"span": span_pairs, "reverse": reverse_pairs}


def make_batch(config: Seq2SeqConfig, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """A batch of ``config.task``: "span" (span-corruption pretraining) or "reverse"."""
    if config.task not in TASKS:
        raise GraphDSLError(f"unknown seq2seq task {config.task!r}", hint=f"use one of {list(TASKS)}")
    tok = _tokenizer(config)
    return pack(TASKS[config.task](config, rng, n), pad_id=tok.pad_id, bos_id=tok.bos_id)


# -- the registered sizes -----------------------------------------------------------------------
def _spec(name: str, description: str, config: Seq2SeqConfig) -> ModelSpec:
    return register(ModelSpec(
        name=name, family="bart", description=description, config=config, build=Seq2Seq,
        loss=loss_graph, forward=forward_graph, batch=make_batch,
        attention_blocks=config.n_encoder_layers + 2 * config.n_decoder_layers))


_spec("bart-tiny", "BART-style encoder-decoder, 2+2 layers, d=32; span corruption of the stories",
      Seq2SeqConfig(init_std=0.1))
_spec("bart-mini", "BART-style encoder-decoder, 4+4 layers, d=128; span corruption of the stories",
      Seq2SeqConfig(d_model=128, n_heads=4, n_encoder_layers=4, n_decoder_layers=4, d_ff=512,
                    max_len=128, dropout=0.1, init_std=0.05, seq_len=64))
_spec("bart-base", "BART-base shape (6+6 layers, d=768, 50265 vocab, 1024 positions)",
      Seq2SeqConfig(vocab_size=50265, d_model=768, n_heads=12, n_encoder_layers=6, n_decoder_layers=6,
                    d_ff=3072, max_len=1024, dropout=0.1, seq_len=128))
