"""The built-in text corpus: documents of sentences, read from a text file shipped in the package.

    corpus = load_corpus()                  # "stories": ~760 documents, ~5000 sentences, ~200 KB
    corpus.documents[0]                     # ('Anna went to the market with seven coins.', ...)
    train, valid = corpus.split(0.1)        # by whole documents, deterministic

File format: one sentence per line, documents separated by blank lines (see NOTICE.txt for
where the text comes from and its licence).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphdsl.errors import GraphDSLError

DATA_DIR = Path(__file__).parent
CORPORA = {"stories": DATA_DIR / "stories.txt"}


@dataclass(frozen=True, eq=False)
class Corpus:
    """A named tuple of documents, each a tuple of sentences (plain strings)."""

    name: str
    documents: tuple[tuple[str, ...], ...]

    @functools.cached_property
    def sentences(self) -> tuple[str, ...]:
        return tuple(s for doc in self.documents for s in doc)

    @property
    def text(self) -> str:
        """The whole corpus in its file format."""
        return "\n\n".join("\n".join(doc) for doc in self.documents) + "\n"

    def split(self, valid_fraction: float = 0.1, seed: int = 0) -> tuple["Corpus", "Corpus"]:
        """(train, valid): a random ``valid_fraction`` of the documents goes to valid."""
        if not 0.0 < valid_fraction < 1.0:
            raise GraphDSLError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
        order = np.random.default_rng(seed).permutation(len(self.documents))
        n_valid = max(1, int(round(valid_fraction * len(self.documents))))
        valid = set(order[:n_valid].tolist())
        docs = self.documents
        return (Corpus(f"{self.name}/train", tuple(d for i, d in enumerate(docs) if i not in valid)),
                Corpus(f"{self.name}/valid", tuple(d for i, d in enumerate(docs) if i in valid)))

    def __len__(self):
        return len(self.documents)

    def __repr__(self):
        return f"Corpus({self.name!r}, {len(self.documents)} documents, {len(self.sentences)} sentences)"


def parse_documents(text: str) -> tuple[tuple[str, ...], ...]:
    """Split text in the corpus file format into documents of sentences."""
    docs = []
    for block in text.split("\n\n"):
        lines = tuple(line.strip() for line in block.splitlines() if line.strip())
        if lines:
            docs.append(lines)
    return tuple(docs)


@functools.lru_cache(maxsize=None)
def load_corpus(name: str = "stories") -> Corpus:
    """The built-in corpus ``name`` (see ``CORPORA``), read once and cached."""
    if name not in CORPORA:
        raise GraphDSLError(f"unknown corpus {name!r}", hint=f"built-in corpora: {', '.join(CORPORA)}")
    return Corpus(name, parse_documents(CORPORA[name].read_text(encoding="utf-8")))
