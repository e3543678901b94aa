"""A word-level tokenizer built from a corpus: a fixed vocabulary, special tokens, encode/decode.

Text splits into words (letters and digits, with one inner apostrophe: ``o'clock``) and single
punctuation marks; case is kept. The vocabulary is the special tokens, then every corpus token by
falling count (ties alphabetical), so the same corpus always gives the same ids. Words outside the
vocabulary encode as ``[UNK]``. Special tokens written in the text (``The [MASK] is blue.``) are
recognized as themselves.

Special tokens and their fixed ids:

    0 [PAD]  1 [UNK]  2 [CLS]  3 [SEP]  4 [MASK]  5 [BOS]  6 [EOS]
    7 .. 7+n-1  <extra_id_0> .. <extra_id_{n-1}>   sentinels for span corruption (T5's names)

``decode`` joins tokens with spaces, with no space before ``. , ! ? ; :``, so for text written
that way (as the corpus is) ``decode(encode(text)) == text``.
"""
from __future__ import annotations

import collections
import functools
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from graphdsl.errors import GraphDSLError

PAD, UNK, CLS, SEP, MASK, BOS, EOS = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]"
BASE_SPECIALS = (PAD, UNK, CLS, SEP, MASK, BOS, EOS)
N_SENTINELS = 16
_NO_SPACE_BEFORE = set(".,!?;:")
_TOKEN_RE = re.compile(r"\[[A-Z]+\]|<extra_id_\d+>|\w+(?:'\w+)?|[^\w\s]")


def sentinel(i: int) -> str:
    return f"<extra_id_{i}>"


def split_words(text: str) -> list[str]:
    """The tokens of ``text`` as strings (words, punctuation marks, special tokens)."""
    return _TOKEN_RE.findall(text)


class Tokenizer:
    """``Tokenizer(vocab)``: ``vocab`` lists the tokens by id and starts with the special tokens."""

    def __init__(self, vocab: Sequence[str], n_sentinels: int = N_SENTINELS):
        specials = BASE_SPECIALS + tuple(sentinel(i) for i in range(n_sentinels))
        if tuple(vocab[:len(specials)]) != specials:
            raise GraphDSLError("a tokenizer vocabulary must start with the special tokens",
                                hint=f"expected {list(specials[:8])}..., got {list(vocab[:8])}...")
        if len(set(vocab)) != len(vocab):
            dup = [t for t, c in collections.Counter(vocab).items() if c > 1]
            raise GraphDSLError(f"duplicate tokens in the vocabulary: {dup[:5]}")
        self.vocab = list(vocab)
        self.token_to_id = {t: i for i, t in enumerate(self.vocab)}
        self.n_sentinels = n_sentinels
        self.n_special = len(specials)
        (self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id, self.bos_id,
         self.eos_id) = range(len(BASE_SPECIALS))

    # -- building and storing ---------------------------------------------------------------
    @classmethod
    def from_corpus(cls, corpus=None, *, max_size: int | None = None, min_count: int = 1,
                    n_sentinels: int = N_SENTINELS) -> "Tokenizer":
        """Build the vocabulary of ``corpus`` (a Corpus, or an iterable of strings; default: the
        built-in corpus): tokens seen at least ``min_count`` times, most frequent first, at most
        ``max_size`` ids in all."""
        if corpus is None:
            from .corpus import load_corpus
            corpus = load_corpus()
        texts = corpus.sentences if hasattr(corpus, "sentences") else corpus
        counts = collections.Counter(t for s in texts for t in split_words(s))
        specials = BASE_SPECIALS + tuple(sentinel(i) for i in range(n_sentinels))
        words = sorted((t for t, c in counts.items() if c >= min_count and t not in specials),
                       key=lambda t: (-counts[t], t))
        if max_size is not None:
            if max_size <= len(specials):
                raise GraphDSLError(f"max_size={max_size} leaves no room beside the "
                                    f"{len(specials)} special tokens")
            words = words[:max_size - len(specials)]
        return cls(list(specials) + words, n_sentinels)

    def save(self, path: str | Path) -> None:
        """One token per line, by id (like BERT's vocab.txt)."""
        Path(path).write_text("\n".join(self.vocab) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path, n_sentinels: int = N_SENTINELS) -> "Tokenizer":
        return cls(Path(path).read_text(encoding="utf-8").splitlines(), n_sentinels)

    # -- ids ----------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self):
        return len(self.vocab)

    @property
    def special_ids(self) -> tuple[int, ...]:
        return tuple(range(self.n_special))

    @property
    def sentinel_ids(self) -> tuple[int, ...]:
        return tuple(range(len(BASE_SPECIALS), self.n_special))

    def sentinel_id(self, i: int) -> int:
        if not 0 <= i < self.n_sentinels:
            raise GraphDSLError(f"sentinel {i} out of range: this tokenizer has {self.n_sentinels}")
        return len(BASE_SPECIALS) + i

    def is_special(self, ids) -> np.ndarray:
        """A bool array: True where an id is a special token (padding included)."""
        return np.asarray(ids) < self.n_special

    # -- text <-> ids -------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        return split_words(text)

    def encode(self, text: str, *, add_special: bool = False) -> list[int]:
        """Token ids of ``text``; ``add_special`` wraps them as ``[CLS] ... [SEP]``."""
        ids = [self.token_to_id.get(t, self.unk_id) for t in split_words(text)]
        return [self.cls_id, *ids, self.sep_id] if add_special else ids

    def encode_pair(self, a: str | list[int], b: str | list[int]) -> tuple[list[int], list[int]]:
        """``[CLS] a [SEP] b [SEP]`` and its token types (0 for the first part, 1 for the second)."""
        a_ids = self.encode(a) if isinstance(a, str) else list(a)
        b_ids = self.encode(b) if isinstance(b, str) else list(b)
        ids = [self.cls_id, *a_ids, self.sep_id, *b_ids, self.sep_id]
        return ids, [0] * (len(a_ids) + 2) + [1] * (len(b_ids) + 1)

    def decode(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        """Text of ``ids``; ``skip_special`` drops [PAD], [CLS], sentinels and the like."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < len(self.vocab)]
        if bad:
            raise GraphDSLError(f"token id {bad[0]} is out of range for a vocabulary of {len(self.vocab)}")
        out: list[str] = []
        for i in ids:
            if skip_special and i < self.n_special:
                continue
            tok = self.vocab[i]
            if out and tok not in _NO_SPACE_BEFORE:
                out.append(" ")
            out.append(tok)
        return "".join(out)

    def __repr__(self):
        return f"Tokenizer(vocab_size={self.vocab_size}, n_special={self.n_special})"


@functools.lru_cache(maxsize=None)
def load_tokenizer(corpus: str = "stories") -> Tokenizer:
    """The tokenizer of a built-in corpus (built once and cached)."""
    from .corpus import load_corpus
    return Tokenizer.from_corpus(load_corpus(corpus))
