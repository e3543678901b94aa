"""One table type for every backend's rows: TVM lowering, ONNX export, ONNX import, the next one.

A row says how one backend computes one op::

    TVM = LoweringTable("tvm")

    @TVM.register("softmax")
    def softmax(cx, node, x): ...

    TVM.register("attention", flash_attention, when=flash_applies, priority=20)
    TVM.register("attention", cpu_fused_attention, when=cpu_fused_applies, priority=10)
    TVM.register("attention", generic_attention)                # priority 0, always

``table.choose(cx, node)`` is the highest-priority row whose ``when(cx, node)`` holds, so kernel
choice is data and each predicate is written once. Two rows for one op at one priority, or two
unconditional rows, are an error when the second is registered (at import), never a silent
overwrite. ``stale(known)`` lists rows for keys that no longer exist; tests call it.

A row's function is called ``fn(cx, node, *inputs)`` with the lowered values of the node's inputs
in order; for an op that declares optional inputs (``defop(inputs=("q", "k", "v", "bias?",
"seed?"))``) the optional ones come by name, ``None`` when absent: ``fn(cx, node, q, k, v, bias=...,
seed=...)``. ``call_row`` is the one place that spells this.

The type lives in the core, not in ``backends/``, because the ONNX importer (a frontend, in
``graphdsl/onnx``) keeps its rows in one too, and the core imports no backend.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable


def always(cx, node) -> bool:
    return True


@dataclass(frozen=True)
class Row:
    key: str
    fn: Callable
    when: Callable = always
    priority: int = 0

    @property
    def where(self) -> str:
        code = getattr(self.fn, "__code__", None)
        if code is None:
            return repr(self.fn)
        return f"{getattr(self.fn, '__qualname__', self.fn)} ({os.path.basename(code.co_filename)}:" \
               f"{code.co_firstlineno})"


class LoweringTable:
    """Rows keyed by op name (or, for an importer, by the foreign op type)."""

    def __init__(self, name: str):
        self.name = name
        self._rows: dict[str, list[Row]] = {}

    def register(self, key: str | Iterable[str], fn: Callable | None = None, *,
                 when: Callable | None = None, priority: int = 0):
        """Add a row for each key; used plain or as a decorator (``@table.register("op")``)."""
        keys = (key,) if isinstance(key, str) else tuple(key)

        def add(f: Callable) -> Callable:
            for k in keys:
                row = Row(k, f, when or always, priority)
                rows = self._rows.setdefault(k, [])
                for other in rows:
                    if other.priority == priority:
                        raise ValueError(f"{self.name} table: op {k!r} has two rows at priority {priority}: "
                                         f"{other.where} and {row.where}")
                    if when is None and other.when is always:
                        raise ValueError(f"{self.name} table: op {k!r} has two unconditional rows: "
                                         f"{other.where} and {row.where}")
                rows.append(row)
                rows.sort(key=lambda r: -r.priority)
            return f

        return add if fn is None else add(fn)

    # -- lookup -----------------------------------------------------------------------------
    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def keys(self) -> list[str]:
        return sorted(self._rows)

    def rows(self, key: str) -> list[Row]:
        """The rows for ``key``, highest priority first."""
        return list(self._rows.get(key, ()))

    def choose(self, cx, node, key: str | None = None) -> Row | None:
        """The highest-priority row for the node's op whose ``when(cx, node)`` holds, or None."""
        for row in self._rows.get(key if key is not None else node.op, ()):
            if row.when(cx, node):
                return row
        return None

    @contextlib.contextmanager
    def disabled(self, *fns: Callable):
        """Within the block, the rows calling one of ``fns`` are not chosen: a benchmark or a test
        compares a kernel's row with the rows below it (compile with ``cache=False`` then: the
        compile cache knows the graph, not the table)."""
        saved = {k: list(rows) for k, rows in self._rows.items()}
        unknown = [f for f in fns if not any(r.fn is f for rows in saved.values() for r in rows)]
        if unknown:
            raise ValueError(f"{self.name} table: no row calls {', '.join(map(repr, unknown))}")
        try:
            for k, rows in saved.items():
                self._rows[k] = [r for r in rows if r.fn not in fns]
            yield self
        finally:
            self._rows = saved

    def stale(self, known: Iterable[str]) -> list[str]:
        """Keys with rows that are not in ``known`` (ops that no longer exist)."""
        known = set(known)
        return sorted(k for k in self._rows if k not in known)

    def __repr__(self):
        return f"<LoweringTable {self.name}: {len(self._rows)} ops>"


def call_row(row: Row, cx, node, args: list) -> Any:
    """Call ``row.fn`` with the node's input values: required inputs by position, optional by name."""
    from .registry import get
    named = get(node.op).optional_inputs
    if not named:
        return row.fn(cx, node, *args)
    bound = get(node.op).bind_inputs(node, args)
    required = [bound[n] for n in get(node.op).required_inputs]
    return row.fn(cx, node, *required, **{n: bound.get(n) for n in named})
