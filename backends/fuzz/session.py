"""The fuzzing loop: generate a batch, check it on every target, minimize and save each finding.

Batch ``i`` of a session with seed ``s`` is ``generate_batch((s, i))``: the sequence of graphs
depends on the seed only, and the time budget only decides how far along it a session gets, so
two sessions with one seed test the same graphs (``max_graphs`` makes the count exact too).
A finding's minimization runs to completion (bounded by ``minimize_checks`` compiles) even when
it passes the time budget, so a report never holds a half-shrunk graph.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from graphdsl.graph import Graph

from . import reproducer
from .generate import generate_batch
from .minimize import minimize
from .run import Finding, check, gradient_graph, reference


@dataclass
class Report:
    seed: int
    seconds: float
    targets: list[str]
    graphs: int = 0
    batches: int = 0
    elapsed: float = 0.0
    findings: list[dict] = field(default_factory=list)

    @property
    def disagreements(self) -> int:
        return len(self.findings)

    def to_dict(self) -> dict:
        return {"seed": self.seed, "seconds": self.seconds, "targets": self.targets,
                "graphs": self.graphs, "batches": self.batches, "elapsed": round(self.elapsed, 2),
                "graphs_per_minute": round(60.0 * self.graphs / self.elapsed, 1) if self.elapsed else None,
                "disagreements": self.disagreements, "findings": self.findings}


def fuzz(*, seconds: float = 60.0, targets: Sequence[str] = ("numpy", "llvm", "onnxruntime"),
         passes: bool = False, grad: bool = False, seed: int = 0, max_graphs: int | None = None,
         out_dir="fuzz-findings", batch: int = 6, minimize_checks: int = 40,
         compilers: Mapping[str, Callable] | None = None,
         on_batch: Callable[[Report, list[dict]], None] | None = None) -> Report:
    """Fuzz for about ``seconds`` (at least one batch); reproducers go to ``out_dir``."""
    targets = list(dict.fromkeys(["numpy", *targets]))
    report = Report(seed, seconds, targets)
    start = time.monotonic()
    seen: set[tuple] = set()     # signatures of the findings saved: one reproducer per bug
    while report.batches == 0 or time.monotonic() - start < seconds:
        if max_graphs is not None and report.graphs >= max_graphs:
            break
        n = batch if max_graphs is None else min(batch, max_graphs - report.graphs)
        graph, inputs = generate_batch((seed, report.batches), n, grad=grad)
        context = {"seed": seed, "batch": report.batches, "batch_size": n, "grad": grad, "passes": passes}
        new = []
        try:
            subject = gradient_graph(graph) if grad else graph
        except Exception as e:   # noqa: BLE001  (a valid graph that autodiff refuses is a finding)
            subject, found = graph, [Finding("crash", "autodiff", "traced", f"{type(e).__name__}: {e}"[:300],
                                             error_type=type(e).__name__)]
        else:
            found = check(subject, inputs, targets, optimize=passes, compilers=compilers)
        for f in distinct(found):
            if f.kind == "crash" and (f.target, f.detail) in seen:
                continue                  # the same exception, word for word: no second minimization
            small, small_inputs, final = shrink(subject, inputs, f, compilers, minimize_checks)
            signature = (final.kind, final.target, final.stage, tuple(sorted(small.op_counts())))
            if signature in seen:         # minimized to the same ops as one saved before
                continue
            seen.update([signature, (f.target, f.detail)])
            path = reproducer.save(out_dir, small, small_inputs, final, context)
            entry = {"kind": final.kind, "target": final.target, "stage": final.stage,
                     "targets": ["numpy"] if final.target in ("numpy", "passes", "autodiff")
                     else ["numpy", final.target],
                     "reason": final.summary(), "file": str(path),
                     "nodes": sum(1 for n in small.nodes if not n.is_source), "ops": small.op_counts(),
                     "dtypes": sorted({n.type.dtype.name for n in small.nodes})}
            report.findings.append(entry)
            new.append(entry)
        report.graphs += n
        report.batches += 1
        report.elapsed = time.monotonic() - start
        if on_batch is not None:
            on_batch(report, new)
    report.elapsed = time.monotonic() - start
    return report


def distinct(findings: list[Finding]) -> list[Finding]:
    """One finding per kind of bug: an "optimized" finding that repeats a "traced" one (same
    target, kind and exception) is the same bug seen twice."""
    out: list[Finding] = []
    for f in findings:
        unstaged = lambda x: x.key[:2] + x.key[3:]   # noqa: E731  (the key without the stage)
        if not any(unstaged(g) == unstaged(f) for g in out):
            out.append(f)
    return out


def shrink(graph: Graph, inputs: dict, finding: Finding, compilers, max_checks: int):
    """The minimized graph, its inputs and its finding (as seen on the minimized graph)."""
    if finding.target == "autodiff":      # grad() refused the forward graph: kept as it is
        return graph, inputs, finding
    only = (finding.target, finding.stage)
    run_on = ["numpy"] if finding.target in ("numpy", "passes") else ["numpy", finding.target]

    def findings_of(g, x):
        return check(g, x, run_on, optimize=finding.stage == "optimized", compilers=compilers, only=only)

    def still(g, x):
        return any(h.same(finding) for h in findings_of(g, x))

    def values(g, x):
        ref = reference(g, x, compilers)
        return None if isinstance(ref, BaseException) else ref[1]

    suspects = sorted(finding.outputs, key=lambda k: -finding.difference.get(k, {}).get("worst", 0))
    small, small_inputs = minimize(graph, inputs, still, max_checks=max_checks, reference=values,
                                   suspects=suspects)
    final = next((h for h in findings_of(small, small_inputs) if h.same(finding)), finding)
    return small, small_inputs, final
