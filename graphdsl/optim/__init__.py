"""Optimizers, gradient clipping and learning-rate schedules, all as graph code.

``make_train_step`` puts the loss, its gradients and the update into one graph, so a whole
training step compiles (and is optimized) as one unit on every backend. Optimizers and schedules
describe themselves as data (``config()``, ``from_config``) so a checkpoint can record and rebuild them.
"""
from .adam import Adam, AdamW
from .base import Optimizer
from .clip import clip_by_global_norm, global_norm
from .schedules import Constant, LinearWarmupDecay, Schedule, WarmupCosine
from .sgd import SGD
from .step import StepRunner, make_train_step, zero_state

__all__ = ["Adam", "AdamW", "Constant", "LinearWarmupDecay", "Optimizer", "SGD", "Schedule",
           "StepRunner", "WarmupCosine", "clip_by_global_norm", "global_norm", "make_train_step",
           "zero_state"]
