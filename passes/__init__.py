"""Graph-to-graph rewrites: the pattern language, the pass manager, and the passes.

    import passes
    fast = passes.optimize(graph, level=2)              # canonical, folded, fused
    fast = passes.run(graph, ["canonicalize", "fuse_attention"])
    print(passes.report(graph, level=2))                # what each pass changed
    train = passes.optimize_for_training(loss_graph)    # fuse the forward, then differentiate

Levels: 0 runs nothing; 1 cleans up (canonicalize, fold_constants, cse, dce); 2 also folds masks
and fuses attention, norms, GELU, bias + activation and residual + LayerNorm. Every pass keeps the
numbers the graph computes (see docs/passes.md for the argument, mask by mask). Each pass lives in
its own module, which starts with its rules (patterns written like the math, see pattern.py) and
declares the pass at its end: its name, what must run before it (``requires=``) and, for
fuse_attention, the report's ``attention`` section. ``LEVELS`` below orders them into pipelines,
each meeting every pass's ``requires=`` (tests/test_passes_requires.py).

Layering: this package imports only ``graphdsl``.
"""
from __future__ import annotations

from typing import Iterable

from graphdsl.errors import GraphDSLError
from graphdsl.graph import Graph

from .manager import (PASSES, Pass, PassManager, PassRecord, Report, Section, register, rule_pass,
                      unmet_requirements)
from .pattern import Alt, Match, Pat, exactly, opt, scalar_value
from .rewrite import PassError, Rule, rewrite

# importing a pass module registers its passes: this order is the order of PASSES
from . import canonicalize, constants, cse, masks, attention, norms, activations, transposes  # isort: skip

PASS_MODULES = (canonicalize, constants, cse, masks, attention, norms, activations, transposes)
CLEANUP = ["canonicalize", "fold_constants", "cse", "dce"]
LEVELS: dict[int, list[str]] = {
    0: [],
    1: CLEANUP,
    2: CLEANUP + ["fold_transposes", "fuse_softmax", "fold_masks", "cse", "fuse_attention", "fuse_layer_norm",
                  "fuse_gelu", "fuse_bias_activation", "fuse_add_layer_norm", "canonicalize", "cse", "dce"],
}


def pipeline(level: int) -> list[str]:
    """The pass names of an optimization level (a copy)."""
    if level not in LEVELS:
        raise GraphDSLError(f"unknown optimization level {level!r}", hint=f"use one of {sorted(LEVELS)}")
    return list(LEVELS[level])


def run(graph: Graph, names: Iterable[str], *, verify: bool = True, dump_ir=None) -> Graph:
    """Run the named passes in order (see ``passes.PASSES``)."""
    return PassManager(names, verify=verify, dump_ir=dump_ir).run(graph).graph


def optimize(graph: Graph, level: int = 2, *, verify: bool = True, dump_ir=None) -> Graph:
    """Run the pipeline of ``level`` (0, 1 or 2)."""
    return PassManager(pipeline(level), verify=verify, dump_ir=dump_ir).run(graph).graph


def report(graph: Graph, level: int = 2, *, names: Iterable[str] | None = None, verify: bool = True,
           dump_ir=None) -> Report:
    """Run a pipeline (``level``, or the passes in ``names``) and return what each pass did."""
    chosen = pipeline(level) if names is None else list(names)
    return PassManager(chosen, verify=verify, dump_ir=dump_ir).run(graph)


def optimize_for_training(loss_graph: Graph, level: int = 2, *, wrt=None, loss: str | None = None,
                          verify: bool = True) -> Graph:
    """The optimized gradient graph of ``loss_graph``: fuse the forward, differentiate, clean up.

    Fusing before differentiating is what gives a training graph fused ops: the fused ops carry
    their own gradient rules, while in a gradient graph of the textbook forward every softmax and
    mask feeds the backward too, so the guards (rightly) keep them apart.
    """
    from graphdsl.autodiff import grad
    forward = optimize(loss_graph, level, verify=verify)
    return optimize(grad(forward, wrt=wrt, loss=loss), level, verify=verify)


__all__ = ["Alt", "LEVELS", "Match", "PASSES", "Pass", "PassError", "PassManager", "PassRecord", "Pat",
           "Report", "Rule", "Section", "exactly", "opt", "optimize", "optimize_for_training", "pipeline",
           "register", "report", "rewrite", "rule_pass", "run", "scalar_value", "unmet_requirements"]
