"""Learning-rate schedules: multipliers of the optimizer's base learning rate, as graph code.

A schedule maps the step counter (the number of updates done so far, an int64 scalar) to a
float64 multiplier, like PyTorch's ``LambdaLR``: the update made at step ``s`` uses
``lr * schedule(s)``. ``value_at(s)`` computes the same number in plain Python, for logging and
tests. The warm-up schedules follow ``transformers``' ``get_*_schedule_with_warmup``; with a
warm-up the first update (step 0) therefore uses a learning rate of 0.
"""
from __future__ import annotations

import abc
import math

from graphdsl import dtypes as _dt
from graphdsl.errors import GraphDSLError
from graphdsl.ops import cos, maximum, minimum, where
from graphdsl.tracing import Tensor, current_builder

from .config import describe, rebuild


class Schedule(abc.ABC):
    """Base class: ``__call__(step) -> Tensor`` (graph code) and ``value_at(step) -> float``."""

    @abc.abstractmethod
    def __call__(self, step: Tensor) -> Tensor:
        """The multiplier at ``step`` (an integer or float scalar tensor), as a float64 scalar."""

    @abc.abstractmethod
    def value_at(self, step: int) -> float:
        """The same multiplier in plain Python."""

    def config(self) -> dict:
        """This schedule as plain data: ``{"class": "WarmupCosine", "warmup_steps": 2, ...}``, every
        constructor argument (graphdsl/optim/config.py); ``from_config`` rebuilds it."""
        return describe(self)

    @staticmethod
    def from_config(data) -> "Schedule":
        """The schedule ``config()`` described (its class looked up among Schedule's subclasses)."""
        return rebuild(Schedule, data)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "class")
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    """The base learning rate at every step."""

    def __call__(self, step):
        return current_builder().constant(1.0, _dt.float64)

    def value_at(self, step):
        return 1.0


class _Warmup(Schedule):
    def __init__(self, warmup_steps: int, total_steps: int):
        if warmup_steps < 0 or total_steps <= 0 or warmup_steps > total_steps:
            raise GraphDSLError(f"{type(self).__name__}: need 0 <= warmup_steps <= total_steps and "
                                f"total_steps > 0, got warmup_steps={warmup_steps}, total_steps={total_steps}")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)

    def _warm(self, s: Tensor) -> Tensor:
        return s / float(max(1, self.warmup_steps))

    def _warm_value(self, step: int) -> float:
        return step / max(1, self.warmup_steps)

    def _progress(self, s: Tensor) -> Tensor:
        """Fraction of the decay phase done, clamped to [0, 1]."""
        p = (s - float(self.warmup_steps)) / float(max(1, self.total_steps - self.warmup_steps))
        return minimum(maximum(p, 0.0), 1.0)

    def _progress_value(self, step: int) -> float:
        p = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return min(max(p, 0.0), 1.0)


class LinearWarmupDecay(_Warmup):
    """Linear from 0 to 1 over ``warmup_steps``, then linear down to 0 at ``total_steps`` (and 0 after)."""

    def __call__(self, step):
        s = _float(step)
        return where(s < float(self.warmup_steps), self._warm(s), 1.0 - self._progress(s))

    def value_at(self, step):
        if step < self.warmup_steps:
            return self._warm_value(step)
        return 1.0 - self._progress_value(step)


class WarmupCosine(_Warmup):
    """Linear warm-up, then half a cosine from 1 down to ``min_ratio`` at ``total_steps`` (and after)."""

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float = 0.0):
        super().__init__(warmup_steps, total_steps)
        if not 0.0 <= min_ratio <= 1.0:
            raise GraphDSLError(f"WarmupCosine: min_ratio must lie in [0, 1], got {min_ratio}")
        self.min_ratio = float(min_ratio)

    def __call__(self, step):
        s = _float(step)
        decay = self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + cos(self._progress(s) * math.pi))
        return where(s < float(self.warmup_steps), self._warm(s), decay)

    def value_at(self, step):
        if step < self.warmup_steps:
            return self._warm_value(step)
        cos = math.cos(math.pi * self._progress_value(step))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + cos)


def _float(step: Tensor) -> Tensor:
    return step.astype(_dt.float64) if step.dtype != _dt.float64 else step
