"""Generation from any autoregressive model: greedy search and beam search over a step function.

A model takes part through one function, its *step* (GPT: ``models.gpt.gpt_step``; an
encoder-decoder writes its own over the same interface):

    step(ids, cache) -> (log_probs, cache)

    ids        int array [n, t]: with ``cache=None``, the prompts (the first call, "prefill");
               afterwards the one token just chosen for each row, [n, 1]
    cache      None, or what the previous call returned, possibly reordered along axis 0
    log_probs  float array [n, vocab]: log-probabilities of the token that follows each row
    cache      a dict of NumPy arrays whose axis 0 is the row (batch * beam): anything the model
               keeps between steps (keys/values per layer, an encoder's memory, ...)

Because every cache array has the row on axis 0, the search moves and copies hypotheses with one
rule for all models: ``reorder_cache(cache, rows)`` (``{k: v[rows]}``). The step is called once
per generated token, so a model with a key/value cache costs one step per token, not a re-run.

``greedy`` and ``beam_search`` take prompts ``[n, P]`` (or one prompt ``[P]``) and return the
prompt followed by the generated tokens; a hypothesis that ended with ``eos_id`` is padded after
it with ``pad_id`` (default: ``eos_id``).
"""
from __future__ import annotations

from typing import Callable, Mapping, NamedTuple, Optional

import numpy as np

from graphdsl.errors import GraphDSLError

Cache = Mapping[str, np.ndarray]
StepFn = Callable[[np.ndarray, Optional[Cache]], "tuple[np.ndarray, Cache]"]


def reorder_cache(cache: Cache, rows) -> dict[str, np.ndarray]:
    """Pick (and repeat) rows of every cache array: the new row ``i`` is the old row ``rows[i]``."""
    rows = np.asarray(rows, dtype=np.int64)
    return {k: v[rows] for k, v in cache.items()}


def _prompts(prompt) -> tuple[np.ndarray, bool]:
    """(prompts [n, P] int64, whether a single 1-D prompt was given)."""
    p = np.asarray(prompt)
    if p.dtype.kind not in "iu" or p.ndim not in (1, 2) or p.shape[-1] == 0:
        raise GraphDSLError(f"a prompt is a non-empty int array [P] or [n, P], got {p.dtype}{list(p.shape)}",
                            hint="start generation from at least one token, e.g. [BOS]")
    return np.atleast_2d(p).astype(np.int64), p.ndim == 1


def _call(step: StepFn, ids: np.ndarray, cache, n: int):
    log_probs, cache = step(ids, cache)
    log_probs = np.asarray(log_probs, dtype=np.float64)
    if log_probs.ndim != 2 or log_probs.shape[0] != n:
        raise GraphDSLError(f"a step function must return log_probs [n={n}, vocab], got shape "
                            f"{list(log_probs.shape)}", hint="return the last position's log-probabilities")
    return log_probs, cache


def _check_counts(max_new_tokens: int, width: int = 1) -> None:
    if max_new_tokens < 1 or width < 1:
        raise GraphDSLError(f"max_new_tokens and beam_width must be >= 1, got {max_new_tokens} and {width}")


# -- greedy ------------------------------------------------------------------------------------
def greedy(step: StepFn, prompt, max_new_tokens: int, eos_id: int | None = None,
           pad_id: int | None = None) -> np.ndarray:
    """Append the most probable token ``max_new_tokens`` times (or until every row ended with EOS).

    Returns ``[n, P + T]`` (``[P + T]`` for one prompt), ``T <= max_new_tokens`` the steps taken.
    """
    _check_counts(max_new_tokens)
    prompts, single = _prompts(prompt)
    n = len(prompts)
    pad = eos_id if pad_id is None else pad_id
    log_probs, cache = _call(step, prompts, None, n)
    out, done = [], np.zeros(n, bool)
    for t in range(max_new_tokens):
        tok = log_probs.argmax(axis=-1)
        if done.any():
            tok = np.where(done, pad, tok)
        out.append(tok)
        if eos_id is not None:
            done |= tok == eos_id
        if done.all() or t == max_new_tokens - 1:
            break
        log_probs, cache = _call(step, tok[:, None], cache, n)
    seqs = np.concatenate([prompts, np.stack(out, axis=1)], axis=1)
    return seqs[0] if single else seqs


# -- beam search ---------------------------------------------------------------------------------
class BeamOutput(NamedTuple):
    """``sequences [n, W, P + T]`` best first (padded with ``pad_id``) and their ``scores [n, W]``
    (``[W, P + T]`` and ``[W]`` for one prompt); a missing hypothesis scores ``-inf``."""
    sequences: np.ndarray
    scores: np.ndarray


def beam_search(step: StepFn, prompt, beam_width: int, max_new_tokens: int,
                length_penalty: float = 1.0, eos_id: int | None = None, pad_id: int | None = None,
                early_stopping: bool | str = False) -> BeamOutput:
    """Keep the ``beam_width`` best partial sequences by cumulative log-probability.

    Each step extends every live beam by every token and keeps the best ``beam_width`` of the
    extensions. An extension by ``eos_id`` among the top ``beam_width`` candidates becomes a
    finished hypothesis scored ``sum_logprobs / generated_len ** length_penalty`` (as in Hugging
    Face; ``generated_len`` counts the new tokens, EOS included); beams still live after
    ``max_new_tokens`` steps are finished the same way. ``length_penalty > 0`` favours longer
    sequences, ``< 0`` shorter ones.

    A prompt is done once it has ``beam_width`` finished hypotheses and, by ``early_stopping``:
    ``True``, nothing more; ``False`` (Hugging Face's default heuristic), when the best live beam
    scored at its current length cannot beat the worst finished one; ``"never"``, when no live beam
    can beat it at any length (exact: the search then returns the best hypotheses it can find).
    """
    _check_counts(max_new_tokens, beam_width)
    if early_stopping not in (True, False, "never"):
        raise GraphDSLError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    prompts, single = _prompts(prompt)
    n, width = len(prompts), beam_width
    pad = (eos_id if eos_id is not None else 0) if pad_id is None else pad_id

    log_probs, cache = _call(step, prompts, None, n)
    rows = np.repeat(np.arange(n), width)
    cache, log_probs = reorder_cache(cache, rows), log_probs[rows]
    scores = np.full((n, width), -np.inf)
    scores[:, 0] = 0.0                     # one live beam per prompt until the first expansion
    tokens = np.zeros((n, width, 0), np.int64)
    finished: list[list[tuple[float, np.ndarray]]] = [[] for _ in range(n)]
    done = np.zeros(n, bool)

    def score_of(total: float, length: int) -> float:
        return total / length ** length_penalty

    for t in range(max_new_tokens):
        vocab = log_probs.shape[-1]
        cand = (scores[..., None] + log_probs.reshape(n, width, vocab)).reshape(n, width * vocab)
        order = np.argsort(-cand, axis=1, kind="stable")[:, :2 * width]
        new_scores = np.full((n, width), -np.inf)
        src = np.zeros((n, width), np.int64)
        new_tok = np.full((n, width), pad, np.int64)
        for b in range(n):
            if done[b]:
                continue
            k = 0
            for rank, j in enumerate(order[b]):
                total = cand[b, j]
                if not np.isfinite(total):
                    break
                beam, tok = divmod(int(j), vocab)
                if eos_id is not None and tok == eos_id:
                    if rank < width:
                        seq = np.append(tokens[b, beam], tok)
                        _add(finished[b], width, score_of(total, t + 1), seq)
                    continue
                new_scores[b, k], src[b, k], new_tok[b, k] = total, beam, tok
                k += 1
                if k == width:
                    break
            done[b] = _is_done(finished[b], width, new_scores[b, 0], t + 1, max_new_tokens,
                               length_penalty, early_stopping)
        tokens = np.concatenate([tokens[np.arange(n)[:, None], src], new_tok[..., None]], axis=2)
        scores = np.where(done[:, None], -np.inf, new_scores)
        if done.all() or t == max_new_tokens - 1:
            break
        rows = (np.arange(n)[:, None] * width + src).reshape(-1)
        cache = reorder_cache(cache, rows)
        log_probs, cache = _call(step, new_tok.reshape(-1, 1), cache, n * width)

    for b in range(n):
        for w in range(width):
            if np.isfinite(scores[b, w]):
                _add(finished[b], width, score_of(scores[b, w], tokens.shape[2]), tokens[b, w])
    return _pack(prompts, finished, width, pad, single)


def _add(hyps: list, width: int, score: float, seq: np.ndarray) -> None:
    """Keep the ``width`` best finished hypotheses, best first."""
    hyps.append((float(score), np.asarray(seq, np.int64)))
    hyps.sort(key=lambda h: -h[0])
    del hyps[width:]


def _is_done(hyps: list, width: int, best_live: float, length: int, max_len: int,
             length_penalty: float, early_stopping) -> bool:
    """Whether a prompt's search can stop: ``width`` finished hypotheses no live beam can beat."""
    if len(hyps) < width:
        return False
    if early_stopping is True or not np.isfinite(best_live):
        return True
    if early_stopping == "never" and length_penalty > 0:
        length = max_len  # log-probs only fall, so the longest length gives the best bound
    return hyps[-1][0] >= best_live / length ** length_penalty


def _pack(prompts: np.ndarray, finished: list, width: int, pad: int, single: bool) -> BeamOutput:
    n, plen = prompts.shape
    longest = max((len(s) for hyps in finished for _, s in hyps), default=0)
    seqs = np.full((n, width, plen + longest), pad, np.int64)
    seqs[:, :, :plen] = prompts[:, None, :]
    scores = np.full((n, width), -np.inf)
    for b, hyps in enumerate(finished):
        for w, (score, seq) in enumerate(hyps):
            seqs[b, w, plen:plen + len(seq)] = seq
            scores[b, w] = score
    return BeamOutput(seqs[0], scores[0]) if single else BeamOutput(seqs, scores)
