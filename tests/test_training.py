"""A 2-layer Transformer encoder's training step, one graph, lowers its loss on a fixed batch."""
import numpy as np

import backends
import graphdsl as gd
from graphdsl import ops
from graphdsl.optim import AdamW, StepRunner, make_train_step
from tests.encoder_classifier import EncoderClassifier, padded_batch


def test_two_layer_encoder_train_step_lowers_the_loss():
    model = EncoderClassifier()
    batch = padded_batch(np.random.default_rng(0), n=8)

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
    model = EncoderClassifier().eval()
    params = model.init(seed=1)
    fwd = backends.compile(gd.trace(lambda ids, mask: model(ids, mask), params=model,
                                    ids="i64[batch,seq]", mask="i64[batch,seq]"), "numpy")
    ids = np.array([[3, 5, 7, 0, 0]]); mask = np.array([[1, 1, 1, 0, 0]])
    other = ids.copy(); other[0, 3:] = [9, 11]
    a = fwd(ids=ids, mask=mask, **params)["out"]
    b = fwd(ids=other, mask=mask, **params)["out"]
    np.testing.assert_allclose(a, b, atol=1e-6)
