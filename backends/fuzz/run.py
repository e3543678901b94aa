"""Run one graph on several targets and report every way they disagree with the reference.

``check(graph, inputs, targets)`` returns a list of ``Finding``s, empty when all agree:
  - "crash": compiling or running raised (any exception: a fuzzer wants the runtime's own too),
    on a target, on the numpy reference itself (a valid graph must run there), or in the passes;
  - "mismatch": an output differs from the reference beyond tolerance.py's formula.
Stage "traced" runs the graph as traced; with ``optimize=True`` stage "optimized" also runs
``passes.optimize(graph, level=2)`` on every target, numpy included, against the reference of
the graph as traced, so a pass that changes the numbers is caught on numpy already.

``compilers`` maps a target name to ``fn(graph) -> executable``; the default is
``backends.compile`` (the TVM targets without the disk cache: fuzz graphs never come back).
Tests pass a fake target this way.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from graphdsl.graph import Graph

from . import tolerance as tol

OPTIONS = {"llvm": {"cache": False}, "cuda": {"cache": False}}


@dataclass
class Finding:
    kind: str                  # "mismatch" or "crash"
    target: str                # the target that disagrees: "numpy" (crash), "llvm", ..., "passes"
    stage: str                 # "traced" or "optimized"
    detail: str                # the error message, or the worst output and its error
    outputs: list[str] = field(default_factory=list)   # mismatching outputs
    error_type: str | None = None                      # crash: the exception's class
    worst: float | None = None                         # mismatch: largest error / allowance
    difference: dict = field(default_factory=dict)     # mismatch: per output, its numbers

    @property
    def key(self) -> tuple:
        """What must stay the same while the minimizer shrinks a graph: kind, target, stage and,
        for a crash, the exception's class and the first words of its message (digits dropped),
        so that one InternalError of TVM does not slide into another."""
        words = ""
        if self.kind == "crash":
            message = self.detail.split(":", 1)[-1]
            words = " ".join(re.sub(r"[0-9]+", "", message).split()[:4])
        return self.kind, self.target, self.stage, self.error_type, words

    def same(self, other: "Finding") -> bool:
        return self.key == other.key

    def summary(self) -> str:
        where = self.target if self.stage == "traced" else f"{self.target} after passes"
        return f"{self.kind} on {where}: {self.detail}"


def gradient_graph(graph: Graph) -> Graph:
    """The loss, the outputs and the gradient of ``loss`` with respect to every float input."""
    from graphdsl.autodiff import grad
    wrt = [k for k, n in graph.inputs.items() if n.type.dtype.is_float]
    return grad(graph, wrt=wrt, loss="loss")


def compiler_for(target: str, compilers: Mapping[str, Callable] | None = None) -> Callable:
    if compilers and target in compilers:
        return compilers[target]
    import backends
    return lambda graph: backends.compile(graph, target, **OPTIONS.get(target, {}))


def reference(graph: Graph, inputs: Mapping, compilers=None):
    """The numpy values of the outputs and of every node: (outputs, {node: value}), or the exception."""
    every = dict(graph.outputs)
    every.update({f"__node{i}": n for i, n in enumerate(graph.nodes) if not n.is_source and n not in
                  set(graph.outputs.values())})
    try:
        values = compiler_for("numpy", compilers)(graph.with_outputs(every))(dict(inputs))
    except Exception as e:   # noqa: BLE001  (a crash of the reference is a finding too)
        return e
    by_node = {every[k]: v for k, v in values.items()}
    by_node.update({n: inputs[n.name] for n in graph.nodes if n.op == "input" and n.name in inputs})
    return {k: values[k] for k in graph.outputs}, by_node


def _crash(target: str, stage: str, e: BaseException) -> Finding:
    text = str(e).strip().splitlines()
    return Finding("crash", target, stage, f"{type(e).__name__}: {text[0] if text else ''}"[:300],
                   error_type=type(e).__name__)


def compare(graph: Graph, got: Mapping, want: Mapping, magnitudes: dict, target: str, stage: str,
            original: Graph | None = None, shapes: dict | None = None) -> Finding | None:
    """A mismatch finding for ``got`` against ``want`` (tolerances from ``original``'s nodes)."""
    original = original or graph
    bad, difference = [], {}
    for name, w in want.items():
        node = original.outputs[name]
        t = tol.tolerance_for(original, node, magnitudes, shapes) if node.type.dtype.is_float else None
        worst = tol.disagreement(got[name], w, t) if name in got else float("inf")
        if worst is not None:
            bad.append(name)
            difference[name] = {"worst": worst, **(t.to_dict() if t else {})}
    if not bad:
        return None
    name = max(bad, key=lambda k: difference[k]["worst"])
    worst = difference[name]["worst"]
    return Finding("mismatch", target, stage, f"{name} is off by {worst:.3g}x its tolerance",
                   outputs=bad, worst=worst, difference=difference)


def check(graph: Graph, inputs: Mapping, targets: Sequence[str], *, optimize: bool = False,
          compilers: Mapping[str, Callable] | None = None, only: tuple[str, str] | None = None) -> list[Finding]:
    """Every finding of ``graph`` on ``targets`` (``only``: just that (target, stage), for the minimizer)."""
    ref = reference(graph, inputs, compilers)
    if isinstance(ref, BaseException):
        return [_crash("numpy", "traced", ref)]
    want, values = ref
    magnitudes = {n: tol.magnitude(v) for n, v in values.items()}
    shapes = {n: tuple(np.shape(v)) for n, v in values.items()}
    findings: list[Finding] = []
    wanted = lambda target, stage: only is None or only == (target, stage)   # noqa: E731
    for target in targets:
        if target == "numpy" or not wanted(target, "traced"):
            continue
        findings += _run(graph, graph, inputs, want, (magnitudes, shapes), target, "traced", compilers)
    if optimize and any(wanted(t, "optimized") for t in list(targets) + ["passes"]):
        import passes
        try:
            fast = passes.optimize(graph, level=2)
        except Exception as e:   # noqa: BLE001
            return findings + [_crash("passes", "optimized", e)]
        for target in targets:
            if wanted(target, "optimized"):
                findings += _run(fast, graph, inputs, want, (magnitudes, shapes), target, "optimized", compilers)
    return findings


def _run(graph, original, inputs, want, facts, target, stage, compilers) -> list[Finding]:
    try:
        got = compiler_for(target, compilers)(graph)(dict(inputs))
    except Exception as e:   # noqa: BLE001
        return [_crash(target, stage, e)]
    found = compare(graph, got, want, facts[0], target, stage, original, facts[1])
    return [found] if found else []
