"""The training job the kill harness (tests/test_checkpoint_kill.py) starts and SIGKILLs.

    python -m tests.kill_worker CKPT_DIR

Resumes from the newest snapshot in CKPT_DIR when there is one, then trains, saving a snapshot
after every step (the newest 2 kept), until it is killed or reaches ``LAST_STEP``. Batches and
dropout are functions of the step, so a resumed run computes what an uninterrupted one does.
"""
from __future__ import annotations

import sys

import numpy as np

from graphdsl import nn, ops, trace
from graphdsl.optim import AdamW, WarmupCosine

LAST_STEP = 100_000


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(16, 1)

    def forward(self, x, y):
        h = self.drop(ops.relu(self.fc1(x)))
        return {"loss": ops.mean((self.fc2(h)[:, 0] - y) ** 2)}


def make_graph():
    net = Net().train()
    return net, trace(net, params=net, x="f32[batch,8]", y="f32[batch]", name="killnet")


def batch(step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([7, step])
    x = rng.standard_normal((16, 8)).astype(np.float32)
    return {"x": x, "y": (x.sum(axis=1) * 0.5).astype(np.float32)}


def fresh_trainer():
    from models.trainer import Trainer
    net, graph = make_graph()
    return graph, Trainer(graph, net.init(seed=0), AdamW(lr=1e-2, weight_decay=0.01), clip_norm=1.0,
                          schedule=WarmupCosine(warmup_steps=10, total_steps=LAST_STEP), seed=3, progress=False)


def main(directory: str) -> None:
    from models import checkpoint
    from models.trainer import Trainer
    if checkpoint.snapshots(directory):
        _, graph = make_graph()
        trainer = Trainer.load(directory, graph, progress=False)
    else:
        _, trainer = fresh_trainer()
    print("ready", trainer.step, flush=True)
    while trainer.step < LAST_STEP:
        trainer.fit(batch, steps=1)
        trainer.save(directory, keep=2)


if __name__ == "__main__":
    main(sys.argv[1])
