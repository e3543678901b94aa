"""The pass manager: named passes, pipelines by level, verification, timing, IR dumps, reports.

Every pass is a function ``graph -> (graph, counts)`` registered under a name; ``counts`` says
what it did (rules fired, masks folded, nodes merged). ``PassManager(names).run(graph)`` runs
them in order; after each one it verifies the graph and records the op histogram before and
after and the time taken. When a pass raises, or leaves a graph the verifier rejects, the error
names the pass and the passes that ran before it. ``dump_ir=DIR`` writes the printed IR before
the first pass and after each one (``00-input.txt``, ``01-canonicalize.txt``, ...).
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

from . import activations, attention, canonicalize, constants, masks, norms, transposes
from .cse import cse, dce
from .rewrite import PassError, Rule, rewrite


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[Graph], tuple[Graph, Counter]]
    doc: str


PASSES: dict[str, Pass] = {}


def register(name: str, run: Callable[[Graph], tuple[Graph, Counter]], doc: str) -> Pass:
    if name in PASSES:
        raise ValueError(f"pass {name!r} is registered twice")
    PASSES[name] = Pass(name, run, doc)
    return PASSES[name]


def rule_pass(name: str, rules: list[Rule], doc: str) -> Pass:
    """A pass that applies ``rules`` to a fixed point."""
    return register(name, lambda graph: rewrite(graph, rules), doc)


rule_pass("canonicalize", canonicalize.RULES, "div by constant to mul, constants right, transposes "
          "composed, identity reshapes/casts/transposes dropped")
rule_pass("fold_constants", constants.RULES, "evaluate nodes whose inputs are all constants")
register("cse", cse, "merge nodes that compute the same value")
register("dce", dce, "drop nodes no output needs")
rule_pass("fold_masks", masks.RULES, "mask chains before a softmax to one additive bias")
rule_pass("fuse_attention", attention.RULES, "softmax(scale * q @ k^T + bias) @ v to one attention op")
rule_pass("fuse_softmax", norms.SOFTMAX_RULES, "written-out exp(x - max) / sum to softmax")
rule_pass("fuse_layer_norm", norms.LN_RULES, "written-out LayerNorm / RMSNorm to layer_norm / rms_norm")
rule_pass("fuse_gelu", activations.GELU_RULES, "written-out GELU (erf and tanh forms) to gelu")
rule_pass("fuse_bias_activation", activations.BIAS_RULES, "act(x + bias) to bias_activation")
rule_pass("fuse_add_layer_norm", norms.ADD_LN_RULES, "layer_norm(a + b) to add_layer_norm")
rule_pass("fold_transposes", transposes.RULES, "a^T @ b^T to (b @ a)^T")

CLEANUP = ["canonicalize", "fold_constants", "cse", "dce"]
LEVELS: dict[int, list[str]] = {
    0: [],
    1: CLEANUP,
    2: CLEANUP + ["fold_transposes", "fuse_softmax", "fold_masks", "cse", "fuse_attention", "fuse_layer_norm",
                  "fuse_gelu", "fuse_bias_activation", "fuse_add_layer_norm", "canonicalize", "cse", "dce"],
}


def pipeline(level: int) -> list[str]:
    if level not in LEVELS:
        raise GraphDSLError(f"unknown optimization level {level!r}", hint=f"use one of {sorted(LEVELS)}")
    return list(LEVELS[level])


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

    def attention_summary(self) -> dict[str, int]:
        atts = [n for n in self.graph.nodes if n.op == "attention"]
        biases = {id(n.inputs[3]) for n in atts if n.attrs["has_bias"]}
        return {"attention_ops": len(atts), "causal": sum(1 for n in atts if n.attrs["causal"]),
                "with_bias": sum(1 for n in atts if n.attrs["has_bias"]), "distinct_biases": len(biases),
                "softmax_left": self.final_ops.get("softmax", 0)}

    def to_dict(self) -> dict:
        return {"graph": self.graph.name, "passes": [r.to_dict() for r in self.passes],
                "totals": self.totals(), "attention": self.attention_summary(),
                "final_ops": self.final_ops}

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
        summary = self.attention_summary()
        lines.append("attention: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.items()))
        lines.append("final ops: " + ", ".join(f"{k} {v}" for k, v in self.final_ops.items()))
        return "\n".join(lines)


def _histogram_delta(before: dict, after: dict) -> str:
    parts = []
    for op in sorted(set(before) | set(after)):
        d = after.get(op, 0) - before.get(op, 0)
        if d:
            parts.append(f"{op} {d:+d}")
    return " ".join(parts)
