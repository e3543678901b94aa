"""Shrink a graph that shows a finding to a small one that still shows it (delta debugging).

The minimizer works on the Graph IR, so it shrinks any graph: a batch of fuzz graphs, a gradient
graph, a user's graph loaded from JSON. A candidate is kept when ``still(graph, inputs)`` (the
same kind of finding: same target, stage, kind, exception class) holds for it. Three moves:

  1. outputs: ddmin over the output names (a batch of independent graphs splits here first);
  2. bypass: replace an op node by one of its inputs of the same type (``a + b`` by ``a``: a
     loss summing several graphs' terms loses one graph per success);
  3. cut: replace an op node by a new graph input that holds the node's reference value, which
     drops everything above the node and keeps every value below it exactly as it was (no
     domain or finiteness is lost, since the value is the one the graph computed);
  4. retarget, last, on the small graph: its one output moved to the earliest node that still
     shows the finding (``sum(softmax(x))`` to ``softmax(x)``).
Moves 2 and 3 repeat until neither succeeds, visiting nodes from the outputs up so the first
successes remove the most. Each candidate costs one compile per target, so ``max_checks``
bounds the work.
"""
from __future__ import annotations

import time
from typing import Callable, Mapping

import numpy as np

from graphdsl.errors import GraphDSLError
from graphdsl.graph import Graph
from graphdsl.node import Node, topo_sort
from graphdsl.types import Dim

Still = Callable[[Graph, dict], bool]


def rebuild(graph: Graph, subst: Mapping[Node, Node], outputs: list[str] | None = None) -> Graph:
    """``graph`` with each node in ``subst`` replaced (same type), keeping only what the outputs
    use; inputs keep their declared order, unused ones are dropped."""
    env: dict[Node, Node] = {}
    for n in graph.nodes:
        if n in subst:
            env[n] = subst[n]
        elif n.is_source or not n.inputs:
            env[n] = n
        else:
            new_inputs = tuple(env[i] for i in n.inputs)
            env[n] = n if new_inputs == n.inputs else n.replace(inputs=new_inputs)
    names = list(graph.outputs) if outputs is None else outputs
    outs = {k: env[graph.outputs[k]] for k in names}
    declared = [env[n] for n in graph.sources()]
    declared += [n for n in subst.values() if n.op == "input" and n not in declared]
    return Graph(outs, name=graph.name, sources=used_sources(declared, outs.values()), meta=graph.meta)


def bare(node: Node) -> set[str]:
    """The symbols that are whole dims of ``node``'s type (``n`` in ``[n, 4]``, not in ``[3*n]``)."""
    return {name for d in node.type.shape if isinstance(d, Dim)
            for name in d.symbols if d == Dim(name)}


def used_sources(declared, outputs) -> list[Node]:
    """The declared inputs and params the outputs use, in order, and for each symbolic dim that
    only appears inside an expression there (``3*n``), the first declared input that binds it
    alone: a caller binds ``n`` from an axis of size ``n``, never by solving ``3*n``."""
    reachable = set(topo_sort(list(outputs)))
    kept = [n for n in declared if n in reachable]
    needed = {s for n in kept for s in n.type.shape.symbols}
    bound = {s for n in kept for s in bare(n)}
    for n in declared:
        missing = (needed - bound) & bare(n)
        if n not in kept and n.op == "input" and missing:
            kept.append(n)
            bound |= bare(n)
    return [n for n in declared if n in set(kept)]       # in declared order


def _inputs_for(graph: Graph, values: Mapping[str, np.ndarray]) -> dict:
    return {k: values[k] for k in graph.inputs}


class Minimizer:
    def __init__(self, still: Still, *, max_checks: int = 60, deadline: float | None = None,
                 reference: Callable[[Graph, dict], dict | None] | None = None):
        self.still = still
        self.max_checks = max_checks
        self.deadline = deadline
        self.reference = reference      # graph, inputs -> {node: value} (for cuts), or None
        self.checks = 0

    def _budget(self) -> bool:
        return self.checks < self.max_checks and (self.deadline is None or time.monotonic() < self.deadline)

    def _try(self, graph: Graph, inputs: dict) -> bool:
        if not self._budget():
            return False
        self.checks += 1
        try:
            graph.verify()
        except GraphDSLError:
            return False
        return bool(self.still(graph, inputs))

    def run(self, graph: Graph, inputs: dict, suspects: list[str] = ()) -> tuple[Graph, dict]:
        for name in suspects:            # an output known to show the finding: one check
            if name in graph.outputs and len(graph.outputs) > 1:
                g = rebuild(graph, {}, [name])
                if self._try(g, _inputs_for(g, inputs)):
                    graph, inputs = g, _inputs_for(g, inputs)
                    break
        graph, inputs = self.outputs(graph, inputs)
        changed = True
        while changed and self._budget():
            changed = False
            for move in (self.bypass, self.cut):
                smaller, smaller_inputs = move(graph, inputs)
                if smaller is not None:
                    graph, inputs, changed = smaller, smaller_inputs, True
        return self.retarget(graph, inputs)

    # -- 1. outputs: ddmin ----------------------------------------------------------------------
    def outputs(self, graph: Graph, inputs: dict) -> tuple[Graph, dict]:
        names = list(graph.outputs)
        n = 2
        while len(names) >= 2 and self._budget():
            chunks = [names[i::n] for i in range(n)]
            reduced = False
            for chunk in chunks + [[x for x in names if x not in c] for c in chunks]:
                if not chunk or len(chunk) == len(names):
                    continue
                g = rebuild(graph, {}, chunk)
                if self._try(g, _inputs_for(g, inputs)):
                    names, n, reduced = chunk, max(2, n - 1) if len(chunk) > 1 else 2, True
                    break
            if not reduced:
                if n >= len(names):
                    break
                n = min(len(names), 2 * n)
        g = rebuild(graph, {}, names)
        return g, _inputs_for(g, inputs)

    # -- 1b. end the graph earlier: a single output moved to a node it depends on -------------
    def retarget(self, graph: Graph, inputs: dict) -> tuple[Graph, dict]:
        if len(graph.outputs) != 1:
            return graph, inputs
        (name, out), = graph.outputs.items()
        for node in [n for n in topo_sort([out]) if not n.is_source and n is not out]:
            g = Graph({name: node}, name=graph.name, meta=graph.meta,
                      sources=used_sources(graph.sources(), [node]))
            if self._try(g, _inputs_for(g, inputs)):
                return g, _inputs_for(g, inputs)
        return graph, inputs

    # -- 2. cut a node into an input holding its value ------------------------------------------
    def cut(self, graph: Graph, inputs: dict):
        values = self.reference(graph, inputs) if self.reference else None
        if not values:
            return None, None
        for node in reversed([n for n in graph.nodes if not n.is_source and n in values]):
            name = _fresh_name(graph, inputs)
            fresh = Node("input", (), {"name": name}, node.type)
            g = rebuild(graph, {node: fresh})
            new_inputs = {**inputs, name: np.asarray(values[node])}
            new_inputs = _inputs_for(g, new_inputs)
            if len(g.nodes) < len(graph.nodes) and self._try(g, new_inputs):
                return g, new_inputs
        return None, None

    # -- 3. bypass a node: use one of its inputs of the same type -------------------------------
    def bypass(self, graph: Graph, inputs: dict):
        for node in reversed([n for n in graph.nodes if not n.is_source]):
            for operand in dict.fromkeys(node.inputs):
                if operand.type != node.type:
                    continue
                g = rebuild(graph, {node: operand})
                if self._try(g, _inputs_for(g, inputs)):
                    return g, _inputs_for(g, inputs)
        return None, None


def _fresh_name(graph: Graph, inputs: Mapping) -> str:
    i = 0
    while f"cut{i}" in graph.inputs or f"cut{i}" in inputs:
        i += 1
    return f"cut{i}"


def minimize(graph: Graph, inputs: Mapping, still: Still, *, max_checks: int = 60,
             seconds: float | None = None, reference=None, suspects=()) -> tuple[Graph, dict]:
    """The smallest graph (and its inputs) found for which ``still`` holds; ``graph`` itself
    must show it. ``reference(graph, inputs) -> {node: value}`` enables cuts; ``suspects``
    are outputs to try alone first (a mismatch names the outputs that differ)."""
    deadline = None if seconds is None else time.monotonic() + seconds
    m = Minimizer(still, max_checks=max_checks, deadline=deadline, reference=reference)
    return m.run(graph, dict(inputs), list(suspects))
