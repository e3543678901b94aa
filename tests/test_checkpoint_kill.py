"""The kill harness: a training job (tests/kill_worker.py) that saves a checkpoint after every step is
SIGKILLed at seeded random moments, 50 times; after each kill the newest snapshot must load, be
consistent, be no older than before the kill, and hold exactly the parameters and optimizer state
of an uninterrupted run at its step. Prints the figures (runs, torn, lost, steps)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from models import checkpoint
from models.trainer import Trainer
from tests import kill_worker

KILLS = 50
ROOT = Path(__file__).resolve().parents[1]


class Reference:
    """The uninterrupted run, stepped forward on demand."""

    def __init__(self):
        self.graph, self.trainer = kill_worker.fresh_trainer()

    def at(self, step: int) -> Trainer:
        assert step >= self.trainer.step, "snapshots never go back in time"
        while self.trainer.step < step:
            self.trainer.fit(kill_worker.batch, steps=1)
        return self.trainer


def _start(directory: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.kill_worker", str(directory)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_during_training_never_tears_or_loses_a_checkpoint(tmp_path):
    rng = np.random.default_rng(2026)
    directory = tmp_path / "ckpt"
    reference = Reference()
    torn = lost = 0
    newest = -1
    steps_seen = []
    started = time.perf_counter()
    for run in range(KILLS):
        job = _start(directory)
        ready = job.stdout.readline()                         # imports done, checkpoint loaded
        assert ready.startswith("ready"), job.stderr.read()[-2000:]
        time.sleep(float(rng.uniform(0.0, 0.25)))             # then a kill anywhere in the loop
        job.send_signal(signal.SIGKILL)
        job.wait()
        job.stdout.close()
        job.stderr.close()
        if not checkpoint.snapshots(directory):
            continue                                          # killed before its first save
        try:
            resumed = Trainer.load(directory, reference.graph, progress=False)
        except Exception:                                     # noqa: BLE001  (counted, then reported)
            torn += 1
            continue
        if resumed.step < newest:
            lost += 1
        newest = max(newest, resumed.step)
        steps_seen.append(resumed.step)
        want = reference.at(resumed.step)
        for k, v in want.params.items():
            np.testing.assert_array_equal(resumed.params[k], v, err_msg=f"run {run}: {k} at step {resumed.step}")
        for k, v in want.runner.state.items():
            np.testing.assert_array_equal(resumed.runner.state[k], v, err_msg=f"run {run}: state {k}")
    seconds = time.perf_counter() - started
    print(f"kill harness: {KILLS} runs killed, {torn} torn, {lost} lost, resumed at steps "
          f"{steps_seen[0] if steps_seen else None}..{newest}, {seconds:.0f} s")
    assert torn == 0 and lost == 0
    assert len(steps_seen) >= KILLS - 5 and newest > KILLS, "the runs got far enough to save and resume"
    leftovers = [p.name for p in directory.iterdir() if not checkpoint.SNAPSHOT.match(p.name)]
    assert all(name.startswith(".step-") for name in leftovers)   # only our temporaries, if any
    assert os.path.isdir(directory)
