"""Greedy and beam search (models/decoding.py) on hand-made step functions with known answers.

A table step function gives each next-token distribution from the generated prefix, so the best
sequence and its score are computed by hand or by enumerating every sequence.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from graphdsl.errors import GraphDSLError
from models.decoding import beam_search, greedy, reorder_cache

EOS = 0


class TableStep:
    """``probs(prefix)`` -> next-token distribution; the cache holds the rows' token histories.

    Records the shape of the ids of each call, to check one step per generated token.
    """

    def __init__(self, probs, prompt_len: int):
        self.probs, self.prompt_len = probs, prompt_len
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, ids, cache):
        self.calls.append(ids.shape)
        seq = ids if cache is None else np.concatenate([cache["seq"], ids], axis=1)
        with np.errstate(divide="ignore"):  # a zero probability is a log-prob of -inf
            rows = [np.log(np.asarray(self.probs(tuple(r[self.prompt_len:].tolist())), float)) for r in seq]
        return np.stack(rows), {"seq": seq}


def table(entries: dict, default):
    return lambda prefix: entries.get(prefix, default)


def brute_force(probs, vocab: int, max_new: int, length_penalty: float, eos_id=EOS):
    """Every sequence (ended by EOS or by the length limit) with its score, best first."""
    out = []
    for length in range(1, max_new + 1):
        for seq in itertools.product(range(vocab), repeat=length):
            if eos_id in seq[:-1]:
                continue
            if seq[-1] != eos_id and length < max_new:
                continue
            total = sum(math.log(probs(seq[:i])[seq[i]]) for i in range(length))
            out.append((total / length ** length_penalty, seq))
    return sorted(out, key=lambda h: -h[0])


# -- greedy ---------------------------------------------------------------------------------------
def test_greedy_takes_the_argmax_and_stops_at_eos():
    # prefix () -> token 2; (2,) -> 1; (2, 1) -> EOS for row 0's path
    probs = table({(): [0.1, 0.2, 0.7], (2,): [0.1, 0.6, 0.3], (2, 1): [0.8, 0.1, 0.1]}, [0.2, 0.5, 0.3])
    step = TableStep(probs, prompt_len=1)
    out = greedy(step, np.array([[5], [6]]), max_new_tokens=6, eos_id=EOS)
    np.testing.assert_array_equal(out, [[5, 2, 1, 0], [6, 2, 1, 0]])
    assert step.calls == [(2, 1), (2, 1), (2, 1)]  # prefill, then one step per token; stops at EOS


def test_greedy_pads_rows_that_finished_early():
    out = greedy(last_token_step, np.array([[1], [2]]), 4, eos_id=EOS, pad_id=9)
    np.testing.assert_array_equal(out, [[1, 0, 9], [2, 1, 0]])


def last_token_step(ids, cache):
    """Next token by the last one: after 1 -> EOS (p=.9); after 2 -> 1; otherwise -> 2."""
    seq = ids if cache is None else np.concatenate([cache["seq"], ids], axis=1)
    nxt = {1: [0.9, 0.05, 0.05], 2: [0.1, 0.8, 0.1]}
    return np.log(np.array([nxt.get(int(r[-1]), [0.1, 0.1, 0.8]) for r in seq])), {"seq": seq}


def test_greedy_without_eos_runs_max_new_tokens_and_takes_one_prompt():
    step = TableStep(table({}, [0.2, 0.3, 0.5]), prompt_len=2)
    out = greedy(step, np.array([3, 4]), max_new_tokens=3)
    np.testing.assert_array_equal(out, [3, 4, 2, 2, 2])
    assert step.calls == [(1, 2), (1, 1), (1, 1)]


# -- beam search: the answers known by hand ----------------------------------------------------------
# Greedy takes A (0.5) then at best 0.36; beam search finds B B (0.4 * 0.9 = 0.36 > 0.18).
A, B = 1, 2
TRAP = table({(): [0.1, 0.5, 0.4], (A,): [0.3, 0.36, 0.34], (B,): [0.05, 0.05, 0.9]}, [0.1, 0.45, 0.45])


def test_beam_search_finds_the_sequence_greedy_misses():
    g = greedy(TableStep(TRAP, 1), np.array([7]), 2)
    np.testing.assert_array_equal(g, [7, A, A])  # 0.5 * 0.36 = 0.18
    seqs, scores = beam_search(TableStep(TRAP, 1), np.array([7]), beam_width=2, max_new_tokens=2,
                               length_penalty=0.0)
    np.testing.assert_array_equal(seqs[0], [7, B, B])
    assert scores[0] == pytest.approx(math.log(0.4 * 0.9))
    assert scores[1] == pytest.approx(math.log(0.5 * 0.36))  # second best: greedy's


def test_eos_hypothesis_and_length_penalty():
    # EOS right away has p=0.5; the best long path: A (0.5) then A (0.8) then EOS (0.9) -> 0.36
    probs = table({(): [0.5, 0.5, 0.0], (A,): [0.1, 0.8, 0.1], (A, A): [0.9, 0.05, 0.05]},
                  [0.9, 0.05, 0.05])
    short, long = [EOS], [A, A, EOS]
    for lp, best, best_score in [(0.0, short, math.log(0.5)),          # sums: -0.69 vs -1.02
                                 (2.0, long, math.log(0.36) / 9)]:     # -0.69 vs -0.11
        seqs, scores = beam_search(TableStep(probs, 1), np.array([A]), beam_width=2, max_new_tokens=5,
                                   length_penalty=lp, eos_id=EOS, pad_id=8, early_stopping="never")
        got = seqs[0, 1:1 + len(best)].tolist()
        assert got == best and scores[0] == pytest.approx(best_score), (lp, seqs, scores)
        assert (seqs[0, 1 + len(best):] == 8).all()  # padded after EOS


def test_beam_search_stops_once_done():
    # EOS is always the likeliest token: with width 2, two finished hypotheses come quickly
    step = TableStep(table({}, [0.7, 0.2, 0.1]), 1)
    seqs, scores = beam_search(step, np.array([5]), beam_width=2, max_new_tokens=50, eos_id=EOS,
                               length_penalty=1.0, early_stopping=True)
    assert len(step.calls) <= 3 and seqs.shape[-1] <= 4
    np.testing.assert_allclose(scores, [math.log(0.7), math.log(0.2 * 0.7) / 2])


# -- beam search: exhaustive search and greedy as special cases -----------------------------------------
def random_table(seed: int, vocab: int, eos_bias: float = 0.0):
    rng = np.random.default_rng(seed)
    cache: dict = {}

    def probs(prefix):
        if prefix not in cache:
            logits = rng.standard_normal(vocab) * 1.5
            logits[EOS] += eos_bias
            p = np.exp(logits)
            cache[prefix] = p / p.sum()
        return cache[prefix]
    return probs


@pytest.mark.parametrize("seed,length_penalty", [(0, 1.0), (1, 0.0), (2, 2.0), (3, -0.5), (4, 1.0)])
def test_wide_beam_equals_exhaustive_search(seed, length_penalty):
    """Width >= every candidate: beam search ranks all sequences exactly as enumeration does."""
    vocab, max_new = 3, 4
    probs = random_table(seed, vocab)
    width = (vocab - 1) ** (max_new - 1) * vocab
    seqs, scores = beam_search(TableStep(probs, 1), np.array([9]), width, max_new,
                               length_penalty=length_penalty, eos_id=EOS, early_stopping="never")
    want = brute_force(probs, vocab, max_new, length_penalty)[:width]
    np.testing.assert_allclose(scores, [s for s, _ in want], rtol=1e-12)
    for got, (_, seq) in zip(seqs, want):
        assert got[1:1 + len(seq)].tolist() == list(seq)


@pytest.mark.parametrize("seed,eos_id,length_penalty", [(0, None, 1.0), (1, None, 0.0), (2, EOS, 1.0),
                                                         (3, EOS, 0.0), (4, EOS, 2.0)])
def test_width_one_equals_greedy(seed, eos_id, length_penalty):
    probs = random_table(seed, vocab=5, eos_bias=-1.0)
    prompts = np.array([[1, 2], [3, 4], [2, 2]])
    g = greedy(TableStep(probs, 0), prompts, 8, eos_id=eos_id)
    seqs, scores = beam_search(TableStep(probs, 0), prompts, 1, 8, length_penalty=length_penalty,
                               eos_id=eos_id)
    np.testing.assert_array_equal(seqs[:, 0], g)


def test_batched_prompts_equal_one_at_a_time():
    probs = random_table(7, vocab=4, eos_bias=0.5)
    prompts = np.array([[1, 3], [2, 1]])
    both = beam_search(TableStep(probs, 0), prompts, 3, 5, eos_id=EOS)
    for i in range(2):
        one = beam_search(TableStep(probs, 0), prompts[i], 3, 5, eos_id=EOS)
        np.testing.assert_allclose(both.scores[i], one.scores)
        width = one.sequences.shape[-1]
        np.testing.assert_array_equal(both.sequences[i, :, :width], one.sequences)


# -- the interface ---------------------------------------------------------------------------------
def test_reorder_cache_moves_rows_of_every_array():
    cache = {"k": np.arange(6).reshape(3, 2), "mem": np.array([10, 11, 12])}
    out = reorder_cache(cache, [2, 2, 0])
    np.testing.assert_array_equal(out["k"], [[4, 5], [4, 5], [0, 1]])
    np.testing.assert_array_equal(out["mem"], [12, 12, 10])


@pytest.mark.parametrize("call,match", [
    (lambda s: greedy(s, np.zeros((2, 0), int), 3), "non-empty int array"),
    (lambda s: greedy(s, np.array([0.5]), 3), "non-empty int array"),
    (lambda s: greedy(s, np.array([1]), 0), "max_new_tokens and beam_width must be >= 1"),
    (lambda s: beam_search(s, np.array([1]), 0, 3), "max_new_tokens and beam_width must be >= 1"),
    (lambda s: beam_search(s, np.array([1]), 2, 3, early_stopping="sometimes"), "early_stopping"),
    (lambda s: greedy(lambda ids, c: (np.zeros(3), {}), np.array([1]), 2), r"log_probs \[n=1, vocab\]"),
])
def test_bad_arguments(call, match):
    with pytest.raises(GraphDSLError, match=match):
        call(TableStep(table({}, [0.5, 0.5]), 1))
