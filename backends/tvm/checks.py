"""Run-time checks of a compiled module, as plain data so that saved artifacts keep them.

The NumPy reference raises when an index is out of range or a symbolic slice does not fit; the TVM
kernels clip instead (a bad index never reads outside a buffer), and these checks raise the
reference's error after the call. A RangeCheck reads the [min, max] of the indices that the module
returns as an extra output; a SliceCheck needs only the sizes of the symbolic dims.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from graphdsl.errors import GraphDSLError, InputError, SourceLoc
from graphdsl.types import Dim, parse_dim


def _size(text: str, env: dict) -> int:
    d = parse_dim(text)
    return d.evaluate(env) if isinstance(d, Dim) else int(d)


def _loc_to_dict(loc: SourceLoc | None):
    return None if loc is None else {"file": loc.file, "line": loc.line, "code": loc.code,
                                     "inner": _loc_to_dict(loc.inner)}


def _loc_from_dict(d) -> SourceLoc | None:
    return None if d is None else SourceLoc(d["file"], d["line"], d["code"], _loc_from_dict(d["inner"]))


@dataclass(frozen=True)
class RangeCheck:
    """Every index (kind "index") or non-ignored class target (kind "target") is in [0, size)."""

    op: str
    axis: int
    size: str                     # a dim as text: "6", "vocab"
    kind: str = "index"
    ignore_index: int | None = None
    loc: dict | None = None
    node: int | None = None       # index in graph.nodes of the node checked (see rebind)

    def verify(self, lo_hi: np.ndarray, env: dict) -> None:
        n = _size(self.size, env)
        lo, hi = int(lo_hi[0]), int(lo_hi[1])
        if lo >= 0 and hi < n:
            return
        bad = lo if lo < 0 else hi
        if self.kind == "target":
            err = InputError(f"target {bad} is out of range for {n} classes", op=self.op,
                             hint=f"targets are in [0, {n}) or equal to ignore_index={self.ignore_index}")
        else:
            err = GraphDSLError(f"index {bad} is out of range for axis {self.axis} of size {n} "
                                f"(valid: 0 to {n - 1})", op=self.op,
                                hint="indices are never clipped or wrapped; check the ids against the size")
        raise err.with_loc(_loc_from_dict(self.loc))


@dataclass(frozen=True)
class SliceCheck:
    """A slice typed on a symbolic dim fits the dim's size at run time."""

    op: str
    axis: int
    size: str
    start: str
    stop: str
    loc: dict | None = None
    node: int | None = None

    def verify(self, env: dict) -> None:
        n, a, b = (_size(v, env) for v in (self.size, self.start, self.stop))
        if not (0 <= a <= n and 0 <= b <= n):
            raise GraphDSLError(f"slice [{a}:{b}] is out of range for axis {self.axis} of size {n}",
                                op=self.op, hint="the type was inferred assuming the symbolic dim is large enough"
                                ).with_loc(_loc_from_dict(self.loc))


def range_check(node, axis: int, size, kind: str = "index", ignore_index: int | None = None) -> RangeCheck:
    return RangeCheck(node.op, axis, str(size), kind, ignore_index, _loc_to_dict(node.loc))


def slice_check(node, size, start, stop) -> SliceCheck:
    return SliceCheck(node.op, node.attrs["axis"], str(size), str(start), str(stop), _loc_to_dict(node.loc))


def rebind(checks, graph) -> list:
    """The checks with the source lines of ``graph``'s nodes: a cached module serves every graph
    with the same structural hash (the same nodes in the same order), and its errors must point at
    the lines of the graph it is called for, not of the one it was compiled from."""
    nodes = graph.nodes
    return [replace(c, loc=_loc_to_dict(nodes[c.node].loc)) if c.node is not None and c.node < len(nodes)
            else c for c in checks]


def to_json(checks) -> list[dict]:
    return [{"type": type(c).__name__, **asdict(c)} for c in checks]


def from_json(items) -> list:
    kinds = {"RangeCheck": RangeCheck, "SliceCheck": SliceCheck}
    return [kinds[d.pop("type")](**d) for d in (dict(i) for i in items)]
