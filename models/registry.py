"""The zoo's registry: ``models.get("bert-tiny")`` returns everything needed to use a model.

A ModelSpec ties a config to the code that builds the module, traces its graphs and makes a batch,
so that tools (the CLI, the passes, the backends' comparison tests) treat every model alike:

    spec = models.get("gpt-tiny")
    model = spec.module()                      # an nn.Module built from spec.config
    loss_graph = spec.loss(model)              # traced training loss: outputs "loss" (+ metrics)
    forward_graph = spec.forward(model.eval()) # traced inference graph
    batch = spec.batch(np.random.default_rng(0), 4)  # inputs of loss_graph (no "seed")
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from graphdsl.errors import GraphDSLError
from graphdsl.graph import Graph
from graphdsl.nn import Module

# Modules of this package that are not model families (everything else is imported by _load).
_NOT_FAMILIES = {"registry", "trainer", "checkpoint", "data", "decoding", "hf", "hf_save", "finetune"}


@dataclass(frozen=True)
class ModelSpec:
    name: str                                         # "bert-tiny"
    family: str                                       # "bert"
    description: str                                  # one line for `graphdsl models`
    config: Any                                       # the family's config dataclass
    build: Callable[[Any], Module]                    # config -> module
    loss: Callable[[Module], Graph]                   # module -> traced pretraining-loss graph
    forward: Callable[[Module], Graph]                # module -> traced inference graph
    batch: Callable[[Any, np.random.Generator, int], dict[str, np.ndarray]]  # (config, rng, n)
    attention_blocks: int = 0                         # attention blocks in the forward pass

    def module(self) -> Module:
        return self.build(self.config)

    def example_batch(self, batch_size: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
        return self.batch(self.config, np.random.default_rng(seed), batch_size)


_SPECS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _SPECS:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _SPECS[spec.name] = spec
    return spec


def _load() -> None:
    """Import every family module (each registers its specs); cheap: no torch, no backends."""
    import pkgutil

    import models
    for info in pkgutil.iter_modules(models.__path__):
        if not info.name.startswith("_") and info.name not in _NOT_FAMILIES:
            importlib.import_module(f"models.{info.name}")


def get(name: str) -> ModelSpec:
    _load()
    if name not in _SPECS:
        close = difflib.get_close_matches(name, _SPECS, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"known models: {', '.join(sorted(_SPECS))}"
        raise GraphDSLError(f"unknown model {name!r}", hint=hint)
    return _SPECS[name]


def names() -> list[str]:
    _load()
    return sorted(_SPECS)
