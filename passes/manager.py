"""The pass manager: named passes, their ordering needs, verification, timing, IR dumps, reports.

Every pass is a function ``graph -> (graph, counts)`` registered under a name; ``counts`` says
what it did (rules fired, masks folded, nodes merged). A pass declares the passes whose output
its patterns expect (``requires=``) and may contribute a section to the report (``section=``).
``PassManager(names).run(graph)`` runs them in order; after each one it verifies the graph and
records the op histogram before and after and the time taken. When a pass raises, or leaves a
graph the verifier rejects, the error names the pass and the passes that ran before it.
``dump_ir=DIR`` writes the printed IR before the first pass and after each one (``00-input.txt``,
``01-canonicalize.txt``, ...). The manager knows no pass by name: the passes register themselves
in their modules, and the package (passes/__init__.py) orders them into levels.
"""
from __future__ import annotations

import difflib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from graphdsl.errors import GraphDSLError
from graphdsl.graph import Graph

from .rewrite import PassError, Rule, rewrite

REPORT_KEYS = ("graph", "passes", "totals", "final_ops")   # a section may not take these names


@dataclass(frozen=True)
class Section:
    """A named part of every pass report: ``summarize(final graph) -> {label: number}``."""

    name: str
    summarize: Callable[[Graph], dict]


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[Graph], tuple[Graph, Counter]]
    doc: str
    requires: tuple[str, ...] = ()    # passes that must run before this one, when both are listed
    section: Section | None = None


PASSES: dict[str, Pass] = {}


def register(name: str, run: Callable[[Graph], tuple[Graph, Counter]], doc: str, *,
             requires: Iterable[str] = (), section: Section | None = None) -> Pass:
    if name in PASSES:
        raise ValueError(f"pass {name!r} is registered twice")
    if section is not None and (section.name in REPORT_KEYS
                                or any(p.section and p.section.name == section.name for p in PASSES.values())):
        raise ValueError(f"pass {name!r}: the report already has a section {section.name!r}")
    PASSES[name] = Pass(name, run, doc, tuple(requires), section)
    return PASSES[name]


def rule_pass(name: str, rules: list[Rule], doc: str, **kw) -> Pass:
    """A pass that applies ``rules`` to a fixed point (``requires=``, ``section=`` as ``register``)."""
    return register(name, lambda graph: rewrite(graph, rules), doc, **kw)


def unmet_requirements(names: Iterable[str]) -> list[tuple[str, str]]:
    """``(pass, required)`` for every required pass that does not run before the pass in ``names``."""
    names = list(names)
    return [(name, req) for i, name in enumerate(names) for req in PASSES[name].requires
            if req not in names[:i]]


def check_order(names: list[str]) -> None:
    """Raise when a listed pass runs before a pass it requires that the list runs later.

    A required pass that is not listed at all counts as done: the graph may come from an earlier
    run (``run(run(g, ["canonicalize"]), ["fuse_gelu"])``); every pass keeps the numbers either
    way, it only matches fewer spellings on a graph not in the form it expects.
    """
    for name, req in unmet_requirements(names):
        if req not in PASSES:
            raise PassError(f"pass {name!r} requires {req!r}, which is not a registered pass")
        if req in names:
            others = [r for r in PASSES[name].requires if r != req]
            also = f" (it also requires {', '.join(others)})" if others else ""
            raise PassError(
                f"pass {name!r} requires {req} to run before it{also}, but the order given is: "
                f"{', '.join(names)}",
                hint=f"put {req} before {name}, or run a pipeline (passes.pipeline(level), "
                     f"graphdsl passes -O LEVEL), whose order meets every requirement")


@dataclass
class PassRecord:
    """What one pass did."""

    name: str
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    nodes_before: int
    nodes_after: int
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "ops_before": self.ops_before, "ops_after": self.ops_after,
                "nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
                "ms": round(self.seconds * 1e3, 3), "counts": self.counts}


class PassManager:
    """Runs named passes in order (see the module docstring)."""

    def __init__(self, names: Iterable[str], *, verify: bool = True, dump_ir: str | Path | None = None):
        self.names = list(names)
        unknown = [n for n in self.names if n not in PASSES]
        if unknown:
            close = [c for n in unknown for c in difflib.get_close_matches(n, PASSES, n=1)]
            hint = f"did you mean {', '.join(close)}?" if close else f"passes: {', '.join(PASSES)}"
            raise PassError(f"unknown pass{'es' if len(unknown) > 1 else ''} {unknown}", hint=hint)
        check_order(self.names)
        self.verify = verify
        self.dump_ir = Path(dump_ir) if dump_ir is not None else None

    def run(self, graph: Graph) -> "Report":
        records: list[PassRecord] = []
        self._dump(0, "input", graph)
        for i, name in enumerate(self.names, start=1):
            before, nodes_before = graph.op_counts(), len(graph.nodes)
            start = time.perf_counter()
            graph, counts = self._run_one(name, graph, [r.name for r in records])
            records.append(PassRecord(name, before, graph.op_counts(), nodes_before, len(graph.nodes),
                                      time.perf_counter() - start, dict(sorted(counts.items()))))
            self._dump(i, name, graph)
        return Report(graph, records)

    def _run_one(self, name: str, graph: Graph, before: list[str]) -> tuple[Graph, Counter]:
        try:
            out, counts = PASSES[name].run(graph)
            if self.verify:
                out.verify()
        except Exception as e:  # noqa: BLE001  any failure is reported with the pass that caused it
            ran = ", ".join(before) if before else "none"
            detail = e.message if isinstance(e, GraphDSLError) else f"{type(e).__name__}: {e}"
            hint = "rerun with dump_ir=DIR (graphdsl passes --dump-ir DIR) to see the IR before it"
            raise PassError(f"pass {name!r} failed: {detail}\n  passes run before it: {ran}",
                            op=getattr(e, "op", None), loc=getattr(e, "loc", None), hint=hint) from e
        return out, counts

    def _dump(self, index: int, name: str, graph: Graph) -> None:
        if self.dump_ir is None:
            return
        self.dump_ir.mkdir(parents=True, exist_ok=True)
        (self.dump_ir / f"{index:02d}-{name}.txt").write_text(str(graph) + "\n")


@dataclass
class Report:
    """The optimized graph and what each pass did; ``str(report)`` is the text table."""

    graph: Graph
    passes: list[PassRecord]

    @property
    def final_ops(self) -> dict[str, int]:
        return self.graph.op_counts()

    def totals(self) -> dict[str, int]:
        """Counts summed over all passes (e.g. ``attention``: blocks fused, ``masks``: folded)."""
        out: Counter = Counter()
        for r in self.passes:
            out.update(r.counts)
        return dict(sorted(out.items()))

    def sections(self) -> dict[str, dict]:
        """The report sections of the registered passes (``attention``: ops, causal, biases, ...),
        each a summary of the final graph, so every report has every section."""
        return {p.section.name: p.section.summarize(self.graph) for p in PASSES.values() if p.section}

    def summary(self, section: str) -> dict:
        """One section of the report (see ``sections``)."""
        sections = self.sections()
        if section not in sections:
            raise KeyError(f"no report section {section!r}; sections: {', '.join(sections)}")
        return sections[section]

    def to_dict(self) -> dict:
        return {"graph": self.graph.name, "passes": [r.to_dict() for r in self.passes],
                "totals": self.totals(), **self.sections(), "final_ops": self.final_ops}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        lines = [f"passes on graph {self.graph.name!r}:"]
        width = max([len(r.name) for r in self.passes] + [4])
        for r in self.passes:
            delta = _histogram_delta(r.ops_before, r.ops_after)
            counts = ", ".join(f"{k} {v}" for k, v in r.counts.items())
            what = "; ".join(p for p in (counts, delta) if p) or "no change"
            lines.append(f"  {r.name:<{width}}  {r.nodes_before:>5} -> {r.nodes_after:<5} nodes "
                         f"{r.seconds * 1e3:8.1f} ms  {what}")
        for name, summary in self.sections().items():
            lines.append(f"{name}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.items()))
        lines.append("final ops: " + ", ".join(f"{k} {v}" for k, v in self.final_ops.items()))
        return "\n".join(lines)


def _histogram_delta(before: dict, after: dict) -> str:
    parts = []
    for op in sorted(set(before) | set(after)):
        d = after.get(op, 0) - before.get(op, 0)
        if d:
            parts.append(f"{op} {d:+d}")
    return " ".join(parts)
