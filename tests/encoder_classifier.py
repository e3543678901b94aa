"""A tiny 2-layer Transformer encoder classifier with a padding mask, shared by the training tests."""
import numpy as np

from graphdsl import nn


class EncoderClassifier(nn.Module):
    def __init__(self, vocab=16, d_model=32, n_classes=4):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.encoder = nn.TransformerEncoder(2, d_model=d_model, n_heads=4, d_ff=64, dropout=0.1)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, ids, mask):
        h = self.encoder(self.embed(ids), mask=nn.functional.padding_mask_bias(mask))
        return self.head(h[:, 0])


def padded_batch(rng: np.random.Generator, n: int = 6, seq: int = 10) -> dict[str, np.ndarray]:
    """Random ids and labels; the last 3 positions are padding the mask must hide."""
    mask = np.ones((n, seq), np.int64)
    mask[:, seq - 3:] = 0
    return {"ids": rng.integers(0, 16, (n, seq)), "labels": rng.integers(0, 4, n), "mask": mask}
