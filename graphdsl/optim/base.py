"""What every optimizer shares: state slots, per-parameter learning rates, the update interface.

An optimizer is graph code. ``update`` runs while a training step is traced and returns new
parameter and state tensors; the whole step then compiles as one graph on every backend.
State is a flat dict keyed ``<slot>/<param>`` (``m/encoder.w``), zero-initialized.
"""
from __future__ import annotations

import abc
from typing import Mapping

import numpy as np

from graphdsl.errors import GraphDSLError
from graphdsl.tracing import Tensor
from graphdsl.types import TensorType

from .config import describe, rebuild


class Optimizer(abc.ABC):
    """Base class. Subclasses name their ``slots`` and write ``update_one`` as graph code.

    ``lr`` is the base learning rate (a schedule multiplies it). ``lr_scale`` maps a parameter
    name, or a prefix of names, to a factor on its learning rate; the longest match wins
    (``{"encoder.": 0.5, "encoder.layer0.": 0.25}``), for layer-wise decay.
    """

    slots: tuple[str, ...] = ()

    def __init__(self, lr: float, *, lr_scale: Mapping[str, float] | None = None):
        if not lr >= 0:
            raise GraphDSLError(f"{type(self).__name__}: the learning rate must be >= 0, got {lr!r}")
        self.lr = float(lr)
        self.lr_scale = {k: float(v) for k, v in (lr_scale or {}).items()}

    # -- state --------------------------------------------------------------------------
    def state_types(self, param_types: Mapping[str, TensorType]) -> dict[str, TensorType]:
        """The type of every state entry, one per slot and parameter, like the parameter's."""
        return {f"{slot}/{name}": t for slot in self.slots for name, t in param_types.items()}

    def init_state(self, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Initial state for ``params``: zeros shaped like each parameter, per slot."""
        return {f"{slot}/{name}": np.zeros_like(np.asarray(p))
                for slot in self.slots for name, p in params.items()}

    # -- learning rates -----------------------------------------------------------------
    def scale_for(self, name: str) -> float:
        """The ``lr_scale`` factor of one parameter: exact name, else longest prefix, else 1."""
        if name in self.lr_scale:
            return self.lr_scale[name]
        matches = [k for k in self.lr_scale if name.startswith(k)]
        return self.lr_scale[max(matches, key=len)] if matches else 1.0

    def param_lr(self, lr: Tensor, name: str, like: Tensor) -> Tensor:
        """The learning rate of parameter ``name`` as a scalar of its dtype."""
        scale = self.scale_for(name)
        return cast_like(lr * scale if scale != 1.0 else lr, like)

    # -- the step -----------------------------------------------------------------------
    def update(self, step: Tensor, params: Mapping[str, Tensor], grads: Mapping[str, Tensor],
               state: Mapping[str, Tensor], lr: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """New parameters and state, as graph code.

        ``step`` is the number of updates done before this one (an int64 scalar); ``lr`` the
        scheduled base learning rate (a float scalar); ``state`` holds this optimizer's keys.
        """
        shared = self.step_scalars(step)
        new_params: dict[str, Tensor] = {}
        new_state: dict[str, Tensor] = {}
        for name, p in params.items():
            slots = {s: state[f"{s}/{name}"] for s in self.slots}
            lr_p = self.param_lr(lr, name, p)
            p_new, slots_new = self.update_one(p, grads[name], slots, lr_p,
                                               {k: cast_like(v, p) for k, v in shared.items()})
            new_params[name] = p_new
            new_state.update({f"{s}/{name}": v for s, v in slots_new.items()})
        return new_params, new_state

    def step_scalars(self, step: Tensor) -> dict[str, Tensor]:
        """Scalars computed once per step and shared by every parameter (e.g. bias corrections)."""
        return {}

    @abc.abstractmethod
    def update_one(self, p: Tensor, g: Tensor, slots: dict[str, Tensor], lr: Tensor,
                   scalars: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """One parameter's update: ``(new value, {slot: new slot value})``.

        ``lr`` is this parameter's learning rate and ``scalars`` what ``step_scalars`` returned,
        both already cast to the parameter's dtype.
        """

    # -- as data ------------------------------------------------------------------------
    def config(self) -> dict:
        """This optimizer as plain data: ``{"class": "AdamW", "lr": ..., "betas": [...], ...}``,
        every constructor argument (graphdsl/optim/config.py); ``from_config`` rebuilds it."""
        return describe(self)

    @staticmethod
    def from_config(data: Mapping) -> "Optimizer":
        """The optimizer ``config()`` described (its class looked up among Optimizer's subclasses)."""
        return rebuild(Optimizer, data)

    def __repr__(self):
        return f"{type(self).__name__}(lr={self.lr})"


def cast_like(x: Tensor, like: Tensor) -> Tensor:
    """``x`` in ``like``'s dtype (no node when it already is)."""
    return x.astype(like.dtype) if x.dtype != like.dtype else x
