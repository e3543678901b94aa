"""One training step as one graph: loss, gradients, clipping, schedule and optimizer update.

``make_train_step(loss_graph, optimizer)`` returns a Graph that any backend compiles whole:

  inputs   the loss graph's inputs (the batch, and ``seed`` when it has dropout),
           ``state/step`` (an int64 scalar: updates done so far) and ``state/<key>`` per
           optimizer state entry (``state/m/w``, ``state/v/w``, ...)
  params   the loss graph's parameters, same names (frozen ones too)
  outputs  ``loss``, the loss graph's other scalar outputs (metrics, same names), ``lr``
           (float64), ``grad_norm`` (when clipping), ``update/<param>`` per trainable parameter
           and ``state/<key>`` for the new state, including ``state/step`` + 1

``StepRunner`` holds parameters and state as NumPy arrays and feeds the outputs back in.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from graphdsl import dtypes as _dt
from graphdsl.autodiff import GRAD_PREFIX, grad
from graphdsl.errors import GraphError, TypeError_
from graphdsl.graph import Graph, Node
from graphdsl.tracing import Builder, tracing
from graphdsl.types import TensorType

from .base import Optimizer
from .clip import clip_by_global_norm
from .schedules import Schedule

STATE_PREFIX = "state/"
UPDATE_PREFIX = "update/"
STEP = "step"
STEP_TYPE = TensorType((), _dt.int64)


def make_train_step(loss_graph: Graph, optimizer: Optimizer, *, wrt: Iterable[str] | None = None,
                    clip_norm: float | None = None, schedule: Schedule | None = None,
                    loss: str = "loss", name: str | None = None) -> Graph:
    """The training-step graph of ``loss_graph`` (see the module docstring for its signature).

    ``wrt`` names the trainable parameters (default: every float parameter); the others are
    frozen: still parameters of the step, with no update. ``clip_norm`` clips the gradients by
    their global norm; ``schedule`` multiplies the optimizer's learning rate.
    """
    wrt = _trainable(loss_graph, wrt)
    g = grad(loss_graph, wrt=wrt, loss=loss)
    metrics = [k for k, n in loss_graph.outputs.items() if k != loss and n.type.rank == 0]
    _check_names(loss_graph, metrics)
    state_types = optimizer.state_types({w: loss_graph.params[w].type for w in wrt})

    b = Builder()
    with tracing(b):
        batch = {k: b.input(k, n.type) for k, n in loss_graph.inputs.items()}
        step = b.input(STATE_PREFIX + STEP, STEP_TYPE)
        state = {k: b.input(STATE_PREFIX + k, t) for k, t in state_types.items()}
        params = {k: b.param(k, n.type) for k, n in loss_graph.params.items()}
        outs = g({**batch, **params})
        grads = {w: outs[GRAD_PREFIX + w] for w in wrt}
        norm = None
        if clip_norm is not None:
            grads, norm = clip_by_global_norm(grads, clip_norm)
        lr = b.constant(optimizer.lr, _dt.float64)
        if schedule is not None:
            lr = lr * schedule(step)
        new_params, new_state = optimizer.update(step, {w: params[w] for w in wrt}, grads, state, lr)

        outputs: dict[str, Node] = {"loss": outs[loss].node}
        outputs.update({k: outs[k].node for k in metrics})
        outputs["lr"] = lr.node
        if norm is not None:
            outputs["grad_norm"] = norm.node
        outputs.update({UPDATE_PREFIX + w: new_params[w].node for w in wrt})
        outputs[STATE_PREFIX + STEP] = (step + 1).node
        outputs.update({STATE_PREFIX + k: new_state[k].node for k in state_types})
    return Graph(outputs, name=name or f"{loss_graph.name}_train_step", sources=b.sources,
                 meta=loss_graph.meta)


def _trainable(loss_graph: Graph, wrt: Iterable[str] | None) -> list[str]:
    params = loss_graph.params
    if wrt is None:
        return [k for k, n in params.items() if n.type.dtype.is_float]
    wrt = list(wrt)
    for w in wrt:
        if w not in params:
            where = "an input" if w in loss_graph.inputs else "not a parameter"
            raise GraphError(f"make_train_step: {w!r} is {where} of graph {loss_graph.name!r}",
                             hint=f"trainable names must be parameters: {list(params)[:8]}")
        if not params[w].type.dtype.is_float:
            raise TypeError_(f"make_train_step: cannot train {w!r} of type {params[w].type}")
    return wrt


def _check_names(loss_graph: Graph, metrics: list[str]) -> None:
    for k in loss_graph.inputs:
        if k.startswith(STATE_PREFIX):
            raise GraphError(f"make_train_step: input {k!r} clashes with the optimizer state inputs",
                             hint=f"rename inputs that start with {STATE_PREFIX!r}")
    for k in metrics:
        if k in ("loss", "lr", "grad_norm") or k.startswith((STATE_PREFIX, UPDATE_PREFIX)):
            raise GraphError(f"make_train_step: output {k!r} clashes with a train-step output",
                             hint="rename that output of the loss graph")


def zero_state(step_graph: Graph) -> dict[str, np.ndarray]:
    """Initial optimizer state for a train-step graph: zeros of every ``state/*`` input (step 0)."""
    out = {}
    for k, n in step_graph.inputs.items():
        if k.startswith(STATE_PREFIX):
            if not n.type.shape.is_static:
                raise GraphError(f"state input {k!r} has a symbolic shape {n.type}",
                                 hint="parameters (and so optimizer state) need static shapes")
            out[k[len(STATE_PREFIX):]] = np.zeros(tuple(n.type.shape), n.type.dtype.np)
    return out


class StepRunner:
    """Runs a compiled train step, keeping parameters and optimizer state between calls.

    ``exe`` is ``backends.compile(make_train_step(...), target)``; ``params`` the initial values
    of every parameter of the step; ``state`` (keys without ``state/``) defaults to zeros. When
    the step takes a ``seed`` the batch does not give, ``seed + step`` is used.
    """

    def __init__(self, exe, params: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray] | None = None,
                 *, seed: int = 0):
        self.exe = exe
        graph = exe.graph
        missing = sorted(set(graph.params) - set(params))
        if missing:
            raise GraphError(f"StepRunner: no initial value for parameters {missing}")
        self.params = {k: np.asarray(params[k]) for k in graph.params}
        self.state = dict(state) if state is not None else zero_state(graph)
        self.seed = int(seed)
        self._wants_seed = "seed" in graph.inputs

    @property
    def step_count(self) -> int:
        """Updates done so far."""
        return int(self.state[STEP])

    def step(self, batch: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Run one update on ``batch``; returns the scalar outputs (loss, lr, grad_norm, metrics)."""
        feed = {**batch, **self.params, **{STATE_PREFIX + k: v for k, v in self.state.items()}}
        if self._wants_seed and "seed" not in batch:
            feed["seed"] = np.int32((self.seed + self.step_count) % 2**31)
        out = self.exe(feed)
        metrics = {}
        for k, v in out.items():
            if k.startswith(UPDATE_PREFIX):
                self.params[k[len(UPDATE_PREFIX):]] = v
            elif k.startswith(STATE_PREFIX):
                self.state[k[len(STATE_PREFIX):]] = v
            else:
                metrics[k] = float(v)
        return metrics
