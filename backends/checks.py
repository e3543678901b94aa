"""Run-time checks of a compiled module, as plain data so that saved artifacts keep them.

The NumPy reference raises when an index is out of range or a symbolic slice does not fit; the TVM
kernels clip instead (a bad index never reads outside a buffer), and these checks raise the
reference's error after the call. A RangeCheck reads the [min, max] of the indices that the module
returns as an extra output; a SliceCheck needs only the sizes of the symbolic dims.

The checks are plain data and import no TVM, so they live here, beside both backends that make
them: the TVM rows (backends/tvm/rules) and the onnxruntime backend make the same ones
(``index_check`` and ``slice_check_for`` say which nodes need one), and so does ``check_nan``
(``NanCheck``) for both.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, replace

import numpy as np

from graphdsl.errors import GraphDSLError, InputError, SourceLoc
from graphdsl.types import Dim, Shape, parse_dim

# op -> the position of its indices among the node's inputs
INDICES_AT = {"take": 1, "gather": 1, "index_add": 0, "scatter_add": 0, "cross_entropy": 1, "nll": 1}


def _size(text: str, env: dict) -> int:
    d = _parse(text)
    return d.evaluate(env) if isinstance(d, Dim) else int(d)


@functools.lru_cache(maxsize=1024)
def _parse(text: str):
    return parse_dim(text)


def loc_to_dict(loc: SourceLoc | None):
    return None if loc is None else {"file": loc.file, "line": loc.line, "code": loc.code,
                                     "inner": loc_to_dict(loc.inner)}


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
    count: str | None = None      # how many indices there are, as a dim: "batch*seq"

    def verify(self, lo_hi: np.ndarray, env: dict) -> None:
        """Raise the reference's error unless lo_hi = [min, max] of the indices lies in [0, size).
        An empty index tensor is valid, and its [min, max] is whatever the buffer held (a TVM
        reduction initialises in its first iteration, and there is none): a range that looks
        bad counts only when ``count``, at this call's sizes, is not 0 (so a good call pays nothing)."""
        n = _size(self.size, env)
        lo, hi = int(lo_hi[0]), int(lo_hi[1])
        if lo >= 0 and hi < n or self.count is not None and _size(self.count, env) == 0:
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
    """The check of ``node``'s indices (its input at ``INDICES_AT[node.op]``) against ``size``."""
    at = INDICES_AT.get(node.op)
    count = None if at is None else str(Shape(node.inputs[at].type.shape).numel())
    return RangeCheck(node.op, axis, str(size), kind, ignore_index, loc_to_dict(node.loc), count=count)


def index_check(node) -> tuple[int, RangeCheck] | None:
    """(the position of the indices among ``node``'s inputs, their check) for an op that reads or
    writes at data-dependent indices, as its reference checks them; None for any other op."""
    op, a = node.op, node.attrs
    if op in ("take", "gather"):
        check = range_check(node, a["axis"], node.inputs[0].type.shape[a["axis"]])
    elif op in ("index_add", "scatter_add"):
        check = range_check(node, a["axis"], a["size"])
    elif op in ("cross_entropy", "nll"):
        x = node.inputs[0].type
        check = range_check(node, x.rank - 1, x.shape[-1], "target", a["ignore_index"])
    else:
        return None
    return INDICES_AT[op], check


def slice_check(node, size, start, stop) -> SliceCheck:
    return SliceCheck(node.op, node.attrs["axis"], str(size), str(start), str(stop), loc_to_dict(node.loc))


def slice_check_for(node) -> SliceCheck | None:
    """The bounds check of a slice (or slice_grad) typed on a symbolic dim: its type assumed the
    dim was large enough, so each call checks it (the reference does); None when nothing is symbolic."""
    a = node.attrs
    if node.op == "slice":
        size = node.inputs[0].type.shape[a["axis"]]
    elif node.op == "slice_grad":
        size = a["size"]
    else:
        return None
    stop = size if a["stop"] is None else a["stop"]
    if a["step"] > 0 and any(isinstance(v, Dim) for v in (size, a["start"], stop)):
        return slice_check(node, size, a["start"], stop)
    return None


def rebind(checks, graph) -> list:
    """The checks with the source lines of ``graph``'s nodes: a cached module serves every graph
    with the same structural hash (the same nodes in the same order), and its errors must point at
    the lines of the graph it is called for, not of the one it was compiled from."""
    nodes = graph.nodes
    return [replace(c, loc=loc_to_dict(nodes[c.node].loc)) if c.node is not None and c.node < len(nodes)
            else c for c in checks]


def to_json(checks) -> list[dict]:
    return [{"type": type(c).__name__, **asdict(c)} for c in checks]


def from_json(items) -> list:
    kinds = {"RangeCheck": RangeCheck, "SliceCheck": SliceCheck}
    return [kinds[d.pop("type")](**d) for d in (dict(i) for i in items)]


# -- check_nan and failed calls, for the backends whose kernels cannot stop mid-graph -----------------
class NanCheck:
    """``check_nan=True`` on llvm, cuda and onnxruntime: the reference's errors, found after the call.

    Their kernels run the whole graph at once, so they cannot stop at the op that made a NaN as
    the NumPy backend does. Instead, when an input or an output of a call holds a NaN, the NumPy
    reference is run on the same inputs with ``check_nan=True``: it rejects a NaN input, or stops
    at the first op that made a NaN and names it and its line. A NaN that the reference does not
    make is the backend's own, and is named as such. A NaN-free call costs a scan of its inputs
    and outputs.
    """

    def __init__(self, graph, target: str):
        self.graph, self.target = graph, target
        self._reference = None

    def before(self, arrays: dict, env: dict) -> None:
        if any(_has_nan(a) for a in arrays.values()):
            self._reference_run(arrays, env)      # raises the reference's InputError

    def after(self, arrays: dict, env: dict, outputs: dict) -> None:
        bad = next((k for k, a in outputs.items() if _has_nan(a)), None)
        if bad is None:
            return
        self._reference_run(arrays, env)          # raises at the first op that made a NaN
        raise GraphDSLError(f"graph {self.graph.name!r}: output {bad!r} has NaN at {_first_nan(outputs[bad])} "
                            f"on the {self.target} backend, from inputs without NaN, and the NumPy "
                            f"reference makes none", hint=f"a {self.target} kernel differs from the "
                            f"reference here: compare them with backends.compare(graph, ['{self.target}'], inputs)")

    def _reference_run(self, arrays: dict, env: dict) -> None:
        if self._reference is None:
            from .numpy_backend import NumpyExecutable
            self._reference = NumpyExecutable(self.graph, check_nan=True)
        self._reference.run(arrays, env)


def _has_nan(arr: np.ndarray) -> bool:
    return arr.dtype.kind == "f" and bool(np.isnan(arr).any())


def _first_nan(arr: np.ndarray) -> list[int]:
    return [int(i) for i in np.argwhere(np.isnan(arr))[0]]


def call_sizes(env: dict) -> str:
    """The sizes of a call's symbolic dims, for messages: "batch=2, seq=10"."""
    return ", ".join(f"{k}={v}" for k, v in sorted(env.items())) or "no symbolic dims"


def is_allocation_failure(text: str) -> bool:
    """Whether a runtime's error message says an allocation failed (TVM: std::bad_alloc; ONNX
    Runtime: "Failed to allocate memory", "bad allocation")."""
    low = text.lower()
    return "bad_alloc" in low or "bad alloc" in low or "failed to allocate" in low


def out_of_memory(graph, target: str, env: dict, detail: str) -> GraphDSLError:
    """The error for a call whose memory could not be allocated: the graph, the sizes of the call,
    and the graph's largest value at those sizes with its bytes (runtimes do not say which
    allocation failed nor its size, so the largest value is what there is to name)."""
    node, shape, nbytes = largest_value(graph, env)
    return GraphDSLError(f"graph {graph.name!r} on {target} with {call_sizes(env)}: out of memory ({detail}); "
                         f"its largest value, {node.type} = {list(shape)}, needs {nbytes} bytes "
                         f"({_human(nbytes)})", op=None if node.is_source else node.op, loc=node.loc,
                         hint="call it with smaller sizes (batch, sequence length), or on a machine with more memory")


def largest_value(graph, env: dict):
    """(node, its shape, its bytes) of the graph's largest value at the call's sizes."""
    best = None
    for node in graph.nodes:
        shape = tuple(d.evaluate(env) if isinstance(d, Dim) else int(d) for d in node.type.shape)
        nbytes = int(np.prod(shape, dtype=object)) * node.type.dtype.np.itemsize
        if best is None or nbytes > best[2]:
            best = (node, shape, nbytes)
    return best


def _human(nbytes: int) -> str:
    size = float(nbytes)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            break
        size /= 1024
    return f"{nbytes} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
