"""The one way CLI commands turn a zoo name into a traced graph."""
from __future__ import annotations


def zoo_graph(name: str, which: str):
    """``(spec, module, graph)`` for a zoo model: ``which`` is "forward" (eval mode) or "loss"."""
    import models
    spec = models.get(name)
    module = spec.module()
    if which == "forward":
        return spec, module, spec.forward(module.eval())
    return spec, module, spec.loss(module.train())
