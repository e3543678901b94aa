"""GPT-style decoder-only language model (the GPT-2 layout), its graphs, and its decoding step.

The model: token + learned position embeddings, embedding dropout, ``n_layer`` pre-LN blocks
(causal self-attention, then a GELU-tanh MLP; nn.TransformerEncoderLayer with ``norm_first``),
a final LayerNorm and an LM head tied to the token embedding (``logits = h @ wte^T``). Training
is teacher forcing: the loss is the NLL of each next token, labels shifted inside the model as in
Hugging Face (``labels == IGNORE`` is skipped, e.g. padding).

Graphs (all with symbolic batch and sequence lengths):

    loss_graph(model)     ids, labels i64[batch,seq]            -> loss, token_acc
    forward_graph(model)  ids i64[batch,seq]                    -> logits f32[batch,seq,vocab]
    prefill_graph(model)  ids i64[batch,seq]                    -> logits, log_probs, present_key.i/value.i
    decode_graph(model)   ids i64[batch,new], past_key.i/value.i f32[batch,heads,past,head_dim]
                                                                -> logits, log_probs, present_key.i/value.i

``log_probs`` is the log-softmax of the last position, ``[batch, vocab]``; the ``present`` caches
are ``[batch, heads, past+new, head_dim]``. ``gpt_step(model, params, opt_level=2)`` wraps the prefill
and decode graphs, optimized by the passes and compiled, as the step function of
models/decoding.py (greedy, beam search).

Parameter names and their Hugging Face GPT2LMHeadModel counterparts (``transformer.`` prefix;
HF's Conv1D stores ``[in, out]`` weights like our Linear, so no transposes):

    ours                          Hugging Face
    wte.weight                    transformer.wte.weight  (lm_head.weight is the same, tied)
    wpe.weight                    transformer.wpe.weight
    h.{i}.norm1.weight / .bias    transformer.h.{i}.ln_1.weight / .bias
    h.{i}.attn.q.weight / .bias   transformer.h.{i}.attn.c_attn.weight[:, 0:D]   / .bias[0:D]
    h.{i}.attn.k.weight / .bias   transformer.h.{i}.attn.c_attn.weight[:, D:2D]  / .bias[D:2D]
    h.{i}.attn.v.weight / .bias   transformer.h.{i}.attn.c_attn.weight[:, 2D:3D] / .bias[2D:3D]
    h.{i}.attn.o.weight / .bias   transformer.h.{i}.attn.c_proj.weight / .bias
    h.{i}.norm2.weight / .bias    transformer.h.{i}.ln_2.weight / .bias
    h.{i}.ffn.fc1.weight / .bias  transformer.h.{i}.mlp.c_fc.weight / .bias
    h.{i}.ffn.fc2.weight / .bias  transformer.h.{i}.mlp.c_proj.weight / .bias
    ln_f.weight / .bias           transformer.ln_f.weight / .bias
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

import graphdsl as gd
from graphdsl import dtypes as _dt
from graphdsl import nn, ops
from graphdsl.errors import GraphDSLError
from graphdsl.graph import Graph
from graphdsl.tracing import Parameter, as_tensor

from .registry import ModelSpec, register

IGNORE = -100  # label value that the loss skips (padding)


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    dropout: float = 0.1               # GPT-2's embd/attn/resid_pdrop, all the same
    layer_norm_eps: float = 1e-5
    activation: str = "gelu_tanh"
    n_inner: int | None = None         # MLP width; None means 4 * n_embd
    seq_len: int = 64                  # length of the training sequences ``batch`` makes
    dtype: str = "float32"

    @property
    def d_ff(self) -> int:
        return self.n_inner or 4 * self.n_embd

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


class GPT(nn.Module):
    """``forward(ids [B, S]) -> logits [B, S, vocab]``; ``forward_cached`` for generation."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        c, dt = config, _dt.dtype(config.dtype)
        self.config = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd, dtype=dt)
        self.wpe = nn.Embedding(c.n_positions, c.n_embd, dtype=dt)
        self.drop = nn.Dropout(c.dropout)
        self.h = nn.ModuleList(
            nn.TransformerEncoderLayer(c.n_embd, c.n_head, c.d_ff, c.dropout, c.activation,
                                       norm_first=True, eps=c.layer_norm_eps, dtype=dt)
            for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd, c.layer_norm_eps, dtype=dt)
        # GPT-2 scales the init of the projections into the residual stream by 1/sqrt(2 n_layer).
        resid_init = ("normal", 0.02 / math.sqrt(2 * c.n_layer))
        for block in self.h:
            for lin in (block.attn.o, block.ffn.fc2):
                lin.weight = Parameter(tuple(lin.weight.shape), dt, init=resid_init)

    def forward(self, ids):
        h = self._embed(ids, _positions(ids))
        for block in self.h:
            h = block(h, causal=True)
        return self.lm_head(self.ln_f(h))

    def forward_cached(self, ids, past=None):
        """``(logits [B, T, vocab], cache)`` for new tokens ``ids [B, T]`` after the cached ones.

        ``past`` is None (prefill) or the cache a previous call returned: one ``(k, v)`` pair per
        block, each ``[B, heads, P, head_dim]``. The new tokens sit at positions ``P .. P+T-1``.
        """
        positions = _positions(ids)
        if past is not None:
            positions = positions + ops.numel(as_tensor(past[0][0]), axis=2, dtype=_dt.int64)
        h = self._embed(ids, positions)
        past = past if past is not None else [None] * len(self.h)
        cache = []
        for block, block_past in zip(self.h, past):
            h, kv = block.forward_cached(h, block_past)
            cache.append(kv)
        return self.lm_head(self.ln_f(h)), cache

    def lm_head(self, h):
        """Tied to the token embedding: ``h @ wte^T``."""
        return h @ as_tensor(self.wte.weight).mT

    def _embed(self, ids, positions):
        return self.drop(self.wte(ids) + self.wpe(positions))


def _positions(ids):
    """``0 .. seq-1`` for ids ``[B, seq]`` (seq may be symbolic)."""
    return ops.iota(shape=(ids.shape[1],), axis=0, dtype=_dt.int64)


# -- graphs ------------------------------------------------------------------------------------
IDS = "i64[batch,seq]"


def loss_graph(model: GPT) -> Graph:
    """Teacher forcing: position t predicts ``labels[t+1]``; ``IGNORE`` labels are skipped."""
    dt = _dt.dtype(model.config.dtype)

    def gpt_loss(ids, labels):
        logits = model(ids)[:, :-1]
        targets = labels[:, 1:]
        valid = targets != IGNORE
        correct = (logits.argmax(axis=-1) == targets) & valid
        n_valid = ops.maximum(valid.astype(dt).sum(), 1.0)
        return {"loss": ops.cross_entropy(logits, targets, ignore_index=IGNORE),
                "token_acc": correct.astype(dt).sum() / n_valid}

    return gd.trace(gpt_loss, params=model, ids=IDS, labels=IDS)


def forward_graph(model: GPT) -> Graph:
    """Inference: ``logits`` at every position."""
    def gpt_forward(ids):
        return {"logits": model(ids)}

    return gd.trace(gpt_forward, params=model, ids=IDS)


def cache_spec(config: GPTConfig) -> str:
    """The type of one cached key or value tensor: ``f32[batch,heads,past,head_dim]``."""
    return f"{_dt.dtype(config.dtype).short}[batch,{config.n_head},past,{config.head_dim}]"


def prefill_graph(model: GPT) -> Graph:
    """The prompt in one call: logits, last-position ``log_probs`` and the cache (``present_*``)."""
    def gpt_prefill(ids):
        return _step_outputs(*model.forward_cached(ids))

    return gd.trace(gpt_prefill, params=model, training=False, ids=IDS)


def decode_graph(model: GPT) -> Graph:
    """One generation step over the cache: new ``ids [batch, new]`` and ``past_*`` inputs."""
    n = model.config.n_layer
    spec = cache_spec(model.config)
    past_specs = {f"past_{kind}.{i}": spec for i in range(n) for kind in ("key", "value")}

    def gpt_decode(ids, **past):
        cache = [(past[f"past_key.{i}"], past[f"past_value.{i}"]) for i in range(n)]
        return _step_outputs(*model.forward_cached(ids, cache))

    return gd.trace(gpt_decode, params=model, training=False, ids="i64[batch,new]", **past_specs)


def _step_outputs(logits, cache) -> dict:
    out = {"logits": logits, "log_probs": logits[:, -1].log_softmax(axis=-1)}
    for i, (k, v) in enumerate(cache):
        out[f"present_key.{i}"], out[f"present_value.{i}"] = k, v
    return out


# -- the decoding step -------------------------------------------------------------------------
class GPTStep:
    """The step function of models/decoding.py over GPT's compiled prefill and decode graphs.

    ``step(ids [n, t], cache) -> (log_probs [n, vocab], cache)``: with ``cache=None`` the ids are
    the prompt (prefill), else the tokens that follow the cached ones. The cache is a dict
    ``{"key.i", "value.i": [n, heads, length, head_dim]}``, batch on axis 0. Both graphs are
    optimized by ``passes.optimize(graph, opt_level)`` before compiling (2: fused attention).
    """

    def __init__(self, model: GPT, params: dict[str, np.ndarray], target: str = "numpy", opt_level: int = 2):
        import backends
        import passes
        self.config = model.config
        self.params = dict(params)
        self.prefill = backends.compile(passes.optimize(prefill_graph(model), opt_level), target)
        self.decode = backends.compile(passes.optimize(decode_graph(model), opt_level), target)

    def __call__(self, ids, cache):
        ids = np.asarray(ids, dtype=np.int64)
        past_len = 0 if cache is None else cache["key.0"].shape[2]
        if past_len + ids.shape[1] > self.config.n_positions:
            raise GraphDSLError(f"GPT step: {past_len} cached + {ids.shape[1]} new tokens exceed "
                                f"n_positions={self.config.n_positions}",
                                hint="generate fewer tokens or use a shorter prompt")
        if cache is None:
            out = self.prefill(ids=ids, **self.params)
        else:
            past = {f"past_{k}": v for k, v in cache.items()}
            out = self.decode(ids=ids, **past, **self.params)
        new_cache = {k[len("present_"):]: v for k, v in out.items() if k.startswith("present_")}
        return out["log_probs"], new_cache


def gpt_step(model: GPT, params: dict[str, np.ndarray], target: str = "numpy", opt_level: int = 2) -> GPTStep:
    """GPT's step function for ``decoding.greedy`` / ``decoding.beam_search`` (optimizes and compiles once)."""
    return GPTStep(model, params, target, opt_level)


# -- data: continue the stories of the built-in corpus ------------------------------------------
@functools.lru_cache(maxsize=None)
def document_ids(max_len: int) -> tuple[np.ndarray, ...]:
    """Each corpus document as ``[BOS] tokens... [EOS]``, cut to ``max_len`` tokens (word level)."""
    from .data.corpus import load_corpus
    from .data.tokenizer import load_tokenizer
    tok = load_tokenizer()
    docs = []
    for doc in load_corpus().documents:
        ids = [tok.bos_id] + [i for s in doc for i in tok.encode(s)] + [tok.eos_id]
        arr = np.asarray(ids[:max_len], np.int64)
        arr.flags.writeable = False  # shared by every caller (cached)
        docs.append(arr)
    return tuple(docs)


def pack(docs, seq_len: int, pad_id: int = 0) -> dict[str, np.ndarray]:
    """Pad token sequences to ``[n, seq_len]``: ``ids`` (``pad_id`` fill) and ``labels`` (``IGNORE``)."""
    n = len(docs)
    out = {"ids": np.full((n, seq_len), pad_id, np.int64), "labels": np.full((n, seq_len), IGNORE, np.int64)}
    for i, d in enumerate(docs):
        d = d[:seq_len]
        out["ids"][i, :len(d)] = d
        out["labels"][i, :len(d)] = d
    return out


def make_batch(config: GPTConfig, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """``n`` random corpus documents, word-level, padded to ``config.seq_len``."""
    from .data.tokenizer import load_tokenizer
    tok = load_tokenizer()
    if tok.vocab_size > config.vocab_size:
        raise GraphDSLError(f"the corpus tokenizer has {tok.vocab_size} tokens but the model only "
                            f"{config.vocab_size}", hint="raise GPTConfig.vocab_size")
    docs = document_ids(config.seq_len)
    return pack([docs[i] for i in rng.integers(0, len(docs), n)], config.seq_len, tok.pad_id)


# -- the registered sizes -----------------------------------------------------------------------
CORPUS_VOCAB = 768  # >= the built-in word tokenizer's vocabulary (647); spare ids stay unused


def _spec(name: str, description: str, config: GPTConfig) -> ModelSpec:
    return register(ModelSpec(
        name=name, family="gpt", description=description, config=config, build=GPT,
        loss=loss_graph, forward=forward_graph, batch=make_batch, attention_blocks=config.n_layer))


_spec("gpt-tiny", "GPT-2-style decoder, 2 layers, d=64; continues the built-in stories",
      GPTConfig(vocab_size=CORPUS_VOCAB, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                dropout=0.0, seq_len=48))
_spec("gpt-mini", "GPT-2-style decoder, 4 layers, d=256; continues the built-in stories",
      GPTConfig(vocab_size=CORPUS_VOCAB, n_positions=128, n_embd=256, n_layer=4, n_head=4,
                dropout=0.1, seq_len=96))
_spec("gpt2-small", "GPT-2 small (12 layers, d=768, 50257 vocab, 1024 positions)",
      GPTConfig())
