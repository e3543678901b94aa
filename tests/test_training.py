"""A 2-layer Transformer encoder's training step, one graph, lowers its loss on a fixed batch."""
import numpy as np

import backends
import graphdsl as gd
from graphdsl import nn, ops
from graphdsl.optim import AdamW, StepRunner, make_train_step


class TinyEncoderClassifier(nn.Module):
    def __init__(self, vocab=16, d_model=32, n_classes=4):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.encoder = nn.TransformerEncoder(2, d_model=d_model, n_heads=4, d_ff=64, dropout=0.1)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, ids, mask):
        h = self.encoder(self.embed(ids), mask=nn.functional.padding_mask_bias(mask))
        return self.head(h[:, 0])


def test_two_layer_encoder_train_step_lowers_the_loss():
    model = TinyEncoderClassifier()
    rng = np.random.default_rng(0)
    batch = {"ids": rng.integers(0, 16, (8, 10)), "labels": rng.integers(0, 4, 8),
             "mask": np.ones((8, 10), np.int64)}
    batch["mask"][:, 7:] = 0  # padding that the mask must hide

    def loss_fn(ids, mask, labels):
        return {"loss": ops.cross_entropy(model(ids, mask), labels)}

    graph = gd.trace(loss_fn, params=model, ids="i64[batch,seq]", mask="i64[batch,seq]", labels="i64[batch]")
    assert "seed" in graph.inputs and graph.op_counts()["dropout"] == 6  # 2 per layer's sublayers + probs
    step = make_train_step(graph, AdamW(lr=3e-3), clip_norm=1.0)
    runner = StepRunner(backends.compile(step, "numpy"), model.init(seed=0))
    losses = [runner.step(batch)["loss"] for _ in range(40)]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0] / 5, f"loss went {losses[0]:.3f} -> {losses[-1]:.3f}"

    # The trained parameters, run in eval mode (no dropout), classify the batch correctly.
    model.eval()
    fwd = backends.compile(gd.trace(lambda ids, mask: model(ids, mask), params=model,
                                    ids="i64[batch,seq]", mask="i64[batch,seq]"), "numpy")
    logits = fwd(ids=batch["ids"], mask=batch["mask"], **runner.params)["out"]
    assert (logits.argmax(-1) == batch["labels"]).all()


def test_padding_tokens_do_not_change_the_output():
    model = TinyEncoderClassifier().eval()
    params = model.init(seed=1)
    fwd = backends.compile(gd.trace(lambda ids, mask: model(ids, mask), params=model,
                                    ids="i64[batch,seq]", mask="i64[batch,seq]"), "numpy")
    ids = np.array([[3, 5, 7, 0, 0]]); mask = np.array([[1, 1, 1, 0, 0]])
    other = ids.copy(); other[0, 3:] = [9, 11]
    a = fwd(ids=ids, mask=mask, **params)["out"]
    b = fwd(ids=other, mask=mask, **params)["out"]
    np.testing.assert_allclose(a, b, atol=1e-6)
