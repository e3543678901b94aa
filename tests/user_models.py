"""Models a user writes in their own file, for the command-line tests (`tests/user_models.py:classifier`).

Each function follows the MODEL contract: it takes no arguments and returns a Graph or a
``(graph, params)`` pair.
"""
import numpy as np

import graphdsl as gd
from graphdsl import nn, ops

VOCAB, CLASSES, SEQ = 24, 3, 8


class Classifier(nn.Module):
    """A one-layer Transformer encoder over token ids; the class is the first token's."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.encoder = nn.TransformerEncoder(1, d_model=16, n_heads=2, d_ff=32, dropout=0.0)
        self.head = nn.Linear(16, CLASSES)

    def forward(self, ids, labels):
        logits = self.head(self.encoder(self.embed(ids))[:, 0])
        return {"loss": ops.cross_entropy(logits, labels), "logits": logits}


def classifier():
    model = Classifier()
    graph = gd.trace(model, params=model, ids=f"i64[batch,{SEQ}]", labels="i64[batch]")
    return graph, model.init(seed=0)


def classifier_graph_only():
    model = Classifier()
    return gd.trace(model, params=model, ids=f"i64[batch,{SEQ}]", labels="i64[batch]")


def classifier_data(n: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """A learnable task: the label is the first token modulo the class count."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, (n, SEQ))
    return {"ids": ids, "labels": ids[:, 0] % CLASSES}


class TinyLM(nn.Module):
    """A causal one-layer language model: ids -> logits."""

    def __init__(self, vocab: int = 700):
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0)
        self.out = nn.Linear(16, vocab)

    def forward(self, ids):
        return {"logits": self.out(self.layer(self.embed(ids), causal=True))}


def lm():
    model = TinyLM()
    return gd.trace(model, params=model, ids="i64[batch,seq]"), model.init(seed=0)


def not_a_graph():
    return 42


def raises():
    return {}["missing"]
