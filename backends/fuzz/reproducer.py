"""A finding saved as one JSON file that replays it: the graph, the exact inputs, what differed.

    {"format": "graphdsl-fuzz-reproducer", "version": 1,
     "status": "open",                    # "fixed" once the targets agree (tests/regressions/)
     "reason": "mismatch on llvm: ...",   # the finding as the fuzzer saw it
     "kind": "mismatch" | "crash", "target": "llvm", "stage": "traced" | "optimized",
     "targets": ["numpy", "llvm"], "error_type": null | "InternalError",
     "difference": {output: {"worst", "dtype", "reduction", "magnitude", "atol", "rtol"}},
     "nodes": 3, "ops": {"exp": 1, ...},
     "fuzzer": {"seed": 0, "batch": 7, "grad": false, "passes": true},
     "graph": {... graph.to_json() ...},
     "inputs": {name: {"array": {"dtype", "shape", "data": base64}}}}

Inputs are stored bit for bit (graphdsl.serialize's array encoding, bfloat16 included), so a
replay sees the values that showed the finding, including those the minimizer cut out of the
middle of the graph. The file name is a digest of the graph and the finding, so the same bug
found twice is one file. Files are written atomically (graphdsl.files).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from graphdsl.errors import GraphDSLError
from graphdsl.files import atomic_write_text
from graphdsl.graph import Graph
from graphdsl.serialize import decode_value, encode_value

from .run import Finding, check, gradient_graph

FORMAT = "graphdsl-fuzz-reproducer"


@dataclass
class Reproducer:
    graph: Graph
    inputs: dict[str, np.ndarray]
    kind: str
    target: str
    stage: str
    doc: dict

    def replay(self, compilers=None) -> list[Finding]:
        """The findings of this graph now, on the reproducer's target and stage only."""
        if self.target == "autodiff":      # the forward graph, which grad() refused
            try:
                gradient_graph(self.graph)
            except Exception as e:   # noqa: BLE001
                return [Finding("crash", "autodiff", self.stage, f"{type(e).__name__}: {e}"[:300],
                                error_type=type(e).__name__)]
            return []
        targets = ["numpy"] if self.target in ("numpy", "passes") else ["numpy", self.target]
        return check(self.graph, self.inputs, targets, optimize=self.stage == "optimized",
                     compilers=compilers, only=(self.target, self.stage))


def name_of(graph: Graph, finding: Finding) -> str:
    key = f"{graph.structural_hash()}|{finding.kind}|{finding.target}|{finding.stage}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def document(graph: Graph, inputs: Mapping, finding: Finding, fuzzer: Mapping | None = None) -> dict:
    targets = ["numpy"] if finding.target in ("numpy", "passes") else ["numpy", finding.target]
    return {
        "format": FORMAT, "version": 1, "status": "open", "reason": finding.summary(),
        "kind": finding.kind, "target": finding.target, "stage": finding.stage, "targets": targets,
        "error_type": finding.error_type, "difference": finding.difference,
        "nodes": sum(1 for n in graph.nodes if not n.is_source), "ops": graph.op_counts(),
        "fuzzer": dict(fuzzer or {}),
        "graph": json.loads(graph.to_json()),
        "inputs": {k: encode_value(np.asarray(v), f"inputs.{k}") for k, v in inputs.items()},
    }


def save(directory, graph: Graph, inputs: Mapping, finding: Finding, fuzzer: Mapping | None = None) -> Path:
    """Write the reproducer under ``directory`` (created if needed); returns its path."""
    path = Path(directory) / f"{name_of(graph, finding)}.json"
    doc = document(graph, inputs, finding, fuzzer)
    atomic_write_text(path, json.dumps(_json_ready(doc), indent=1) + "\n")
    return path


def load(path) -> Reproducer:
    """Read a reproducer; a malformed file is a GraphDSLError naming it."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise GraphDSLError(f"cannot read fuzz reproducer {path}: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise GraphDSLError(f"{path} is not a fuzz reproducer (no \"format\": \"{FORMAT}\")")
    missing = [k for k in ("kind", "target", "stage", "graph", "inputs") if k not in doc]
    if missing:
        raise GraphDSLError(f"fuzz reproducer {path} lacks {', '.join(missing)}")
    graph = Graph.from_json(json.dumps(doc["graph"]))
    inputs = {k: decode_value(v, f"{path.name}:inputs.{k}") for k, v in doc["inputs"].items()}
    absent = [k for k in graph.inputs if k not in inputs]
    if absent:
        raise GraphDSLError(f"fuzz reproducer {path} has no values for inputs {absent}")
    return Reproducer(graph, inputs, doc["kind"], doc["target"], doc["stage"], doc)


def _json_ready(value):
    """Strict JSON: non-finite floats (an infinite error ratio) as strings."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return repr(value)
    return value
