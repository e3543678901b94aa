"""Data preparation for BERT pretraining: sentence pairs for NSP, 80/10/10 masking, padding.

    data = PretrainingData(load_corpus(), load_tokenizer(), seq_len=48)
    batch = data.batch(np.random.default_rng(0), 16)
    # input_ids, token_type_ids, attention_mask [16, 48]; mlm_labels [16, 48]; nsp_labels [16]

Conventions (those of Hugging Face's BertForPreTraining):
- NSP label 0: sentence B is the sentence that follows A in its document ("IsNext");
  1: B is a random sentence from another document ("NotNext"). Each with probability 1/2.
- MLM labels hold the original id at the chosen positions and IGNORE_INDEX (-100) elsewhere.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from graphdsl.errors import GraphDSLError

from .corpus import Corpus
from .tokenizer import Tokenizer

IGNORE_INDEX = -100


def pad_sequences(seqs: Sequence[Sequence[int]], length: int | None = None, pad_id: int = 0,
                  dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
    """``(ids [n, length], attention_mask [n, length])``: right-padded with ``pad_id``; the mask
    is 1 on real tokens. ``length`` defaults to the longest sequence; longer ones are an error."""
    longest = max((len(s) for s in seqs), default=0)
    length = longest if length is None else length
    if longest > length:
        raise GraphDSLError(f"a sequence of {longest} tokens does not fit length {length}",
                            hint="truncate first or pass a larger length")
    ids = np.full((len(seqs), length), pad_id, dtype=dtype)
    mask = np.zeros((len(seqs), length), dtype=dtype)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = 1
    return ids, mask


def mask_tokens(ids: np.ndarray, tokenizer: Tokenizer, rng: np.random.Generator,
                mlm_probability: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """BERT's masking procedure on a batch of ids ``[n, seq]``: ``(inputs, labels)``.

    In each row, ``max(1, round(p * c))`` of the ``c`` non-special tokens are chosen (uniformly,
    without replacement; special tokens and padding never are). Of the chosen, 80% become
    [MASK], 10% a random non-special token, 10% stay unchanged. ``labels`` holds the original id
    at the chosen positions and IGNORE_INDEX elsewhere.
    """
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise GraphDSLError(f"mask_tokens takes ids [batch, seq], got shape {list(ids.shape)}")
    if not 0.0 < mlm_probability < 1.0:
        raise GraphDSLError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
    candidate = ~tokenizer.is_special(ids)
    n_cand = candidate.sum(axis=1)
    n_pick = np.where(n_cand > 0, np.maximum(1, np.rint(mlm_probability * n_cand)), 0).astype(np.int64)
    # Rank candidates by a random key; non-candidates sort last. The n_pick lowest are chosen.
    keys = np.where(candidate, rng.random(ids.shape), np.inf)
    ranks = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
    chosen = ranks < n_pick[:, None]

    u = rng.random(ids.shape)
    random_ids = rng.integers(tokenizer.n_special, tokenizer.vocab_size, ids.shape)
    inputs = ids.copy()
    inputs[chosen & (u < 0.8)] = tokenizer.mask_id
    swap = chosen & (u >= 0.8) & (u < 0.9)
    inputs[swap] = random_ids[swap]
    labels = np.where(chosen, ids, IGNORE_INDEX).astype(ids.dtype)
    return inputs, labels


def nsp_pairs(corpus: Corpus, rng: np.random.Generator, n: int) -> list[tuple[str, str, int]]:
    """``n`` sentence pairs ``(a, b, label)``; label 0: b follows a, 1: b is from another document."""
    docs = corpus.documents
    multi = [i for i, d in enumerate(docs) if len(d) >= 2]
    if not multi or len(docs) < 2:
        raise GraphDSLError(f"{corpus!r} needs at least two documents, one of two sentences or more")
    out = []
    for _ in range(n):
        d = multi[rng.integers(len(multi))]
        i = int(rng.integers(len(docs[d]) - 1))
        if rng.random() < 0.5:
            out.append((docs[d][i], docs[d][i + 1], 0))
        else:
            other = int(rng.integers(len(docs) - 1))
            other += other >= d  # any document but d
            out.append((docs[d][i], docs[other][int(rng.integers(len(docs[other])))], 1))
    return out


def truncate_pair(a: list[int], b: list[int], max_tokens: int) -> tuple[list[int], list[int]]:
    """Drop tokens from the end of the longer of the two (``b`` on a tie) until both fit in ``max_tokens``."""
    a, b = list(a), list(b)
    while len(a) + len(b) > max_tokens:
        (a if len(a) > len(b) else b).pop()
    return a, b


class PretrainingData:
    """Makes BERT pretraining batches (MLM + NSP) from a corpus; sentences are encoded once."""

    def __init__(self, corpus: Corpus, tokenizer: Tokenizer, seq_len: int = 48,
                 mlm_probability: float = 0.15):
        if seq_len < 5:
            raise GraphDSLError(f"seq_len={seq_len} is too short for [CLS] a [SEP] b [SEP]")
        self.corpus, self.tokenizer = corpus, tokenizer
        self.seq_len, self.mlm_probability = seq_len, mlm_probability
        self._ids = {s: tokenizer.encode(s) for s in corpus.sentences}

    def batch(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        """``input_ids``, ``token_type_ids``, ``attention_mask``, ``mlm_labels`` [n, seq_len] and
        ``nsp_labels`` [n], all int64."""
        seqs, types, nsp = [], [], []
        for a, b, label in nsp_pairs(self.corpus, rng, batch_size):
            a_ids, b_ids = truncate_pair(self._ids[a], self._ids[b], self.seq_len - 3)
            ids, tt = self.tokenizer.encode_pair(a_ids, b_ids)
            seqs.append(ids)
            types.append(tt)
            nsp.append(label)
        ids, attention_mask = pad_sequences(seqs, self.seq_len, self.tokenizer.pad_id)
        token_type_ids, _ = pad_sequences(types, self.seq_len, 0)
        inputs, labels = mask_tokens(ids, self.tokenizer, rng, self.mlm_probability)
        return {"input_ids": inputs, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
                "mlm_labels": labels, "nsp_labels": np.asarray(nsp, dtype=np.int64)}
