"""The Graph IR as readable text: one line per node, with the user's source line as a comment.

```
graph encoder(%x: f32[batch,64]) params(%w: f32[64,64]) {
  %0: f32[batch,64] = matmul(%x, %w)          # model.py:12
  %1: f32[] = constant(0.125)
  %2: f32[batch,64] = mul(%0, %1)             # model.py:13
  return {out: %2}
}
```

Inputs and parameters print by name, every other value by its position (``%0``, ``%1``, ...),
so the same graph always prints the same text, and two graphs print alike iff they have the same
structure (large constants print by type only). The verifier reuses ``format_node`` to show the
offending line.
"""
from __future__ import annotations

import json
import re

import numpy as np

from . import dtypes as _dt
from .dtypes import DType
from .errors import GraphDSLError, UnknownOpError
from .node import Node
from .types import Dim

INLINE_CONSTANT_MAX = 8   # constants with at most this many elements print their values
HEADER_WIDTH_MAX = 100    # a longer header lists its parameters one per line
LOC_COLUMN_MAX = 80       # location comments align at the longest line, up to this column

_PLAIN_NAME = re.compile(r"[A-Za-z_][\w.\-/]*")


def quote_name(name: str) -> str:
    """A name as printed: bare when it looks like an identifier path, else a JSON string."""
    return name if isinstance(name, str) and _PLAIN_NAME.fullmatch(name) else json.dumps(str(name))


def value_names(graph) -> dict[Node, str]:
    """node -> its printed SSA name: ``%x`` for inputs/params, ``%0``, ``%1``, ... for the rest."""
    names: dict[Node, str] = {}
    counter = 0
    for node in graph.nodes:
        if node.op in ("input", "param"):
            names[node] = "%" + quote_name(node.attrs.get("name", "?"))
        else:
            names[node] = f"%{counter}"
            counter += 1
    return names


def format_scalar(value, dtype: DType) -> str:
    """One array element, written so that distinct values of ``dtype`` print differently."""
    if dtype.is_bool:
        return str(bool(value))
    if dtype.is_int:
        return str(int(value))
    if dtype == _dt.bfloat16:   # every bfloat16 is a float32; float32's shortest form is unique
        value = np.float32(value)
    return str(np.asarray(value)[()])


def format_array(arr: np.ndarray, dtype: DType) -> str:
    if arr.ndim == 0:
        return format_scalar(arr[()], dtype)
    return "[" + ", ".join(format_array(sub, dtype) for sub in arr) + "]"


def format_attr(value) -> str:
    """An attribute value: DTypes by name, Dims as expressions, strings quoted, tuples in parens."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (DType, Dim)) or value is None:
        return str(value)
    if isinstance(value, tuple):
        inner = ", ".join(format_attr(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(format_attr(v) for v in value) + "]"
    if isinstance(value, np.ndarray):
        return format_constant(value)
    return repr(value)


def format_constant(arr) -> str:
    """A constant's value: inline when small, else its type in angle brackets."""
    if not isinstance(arr, np.ndarray):
        return repr(arr)
    try:
        dtype = _dt.dtype(arr.dtype)
    except GraphDSLError:  # not one of our dtypes: the verifier reports it; print NumPy's name
        return f"<{arr.dtype}{list(arr.shape)}>"
    if arr.size <= INLINE_CONSTANT_MAX:
        return format_array(arr, dtype)
    return f"<{dtype.short}[{','.join(str(d) for d in arr.shape)}]>"


def _ordered_attrs(node) -> list[tuple[str, object]]:
    """The node's attrs in the op's declaration order (unknown keys after, sorted)."""
    from .registry import get
    try:
        declared = [k for k in get(node.op).attrs if k in node.attrs]
    except UnknownOpError:
        declared = []
    rest = sorted(k for k in node.attrs if k not in declared)
    return [(k, node.attrs[k]) for k in declared + rest]


def format_node(node, names: dict[Node, str]) -> str:
    """``%3: f32[batch,64] = add(%1, %2)``; inputs not in ``names`` print as ``%?``."""
    target = names.get(node, "%?")
    if node.op == "constant" and set(node.attrs) == {"value"}:
        args = [format_constant(node.attrs["value"])]
    else:
        args = [names.get(i, "%?") for i in node.inputs]
        args += [f"{k}={format_attr(v)}" for k, v in _ordered_attrs(node)]
    return f"{target}: {node.type} = {node.op}({', '.join(args)})"


def _source_list(nodes, names) -> str:
    return ", ".join(f"{names[n]}: {n.type}" for n in nodes)


def format_graph(graph, locs: bool = True) -> str:
    """The whole graph as text; ``locs=False`` leaves out the source-line comments."""
    names = value_names(graph)
    head = f"graph {quote_name(graph.name)}({_source_list(graph.inputs.values(), names)})"
    if graph.params:
        params = f" params({_source_list(graph.params.values(), names)})"
        if len(head) + len(params) > HEADER_WIDTH_MAX:  # one parameter per line
            params = " params(\n" + "".join(
                f"    {names[n]}: {n.type},\n" for n in graph.params.values()) + ")"
        head += params
    body = [(format_node(n, names), n.loc) for n in graph.nodes if n.op not in ("input", "param")]
    located = [len(text) for text, loc in body if loc is not None]
    column = min(max(located, default=0), LOC_COLUMN_MAX)
    lines = [head + " {"]
    for text, loc in body:
        if locs and loc is not None:
            text = f"{text.ljust(column)}  # {loc.short}"
        lines.append("  " + text)
    outs = ", ".join(f"{quote_name(k)}: {names.get(v, '%?')}" for k, v in graph.outputs.items())
    lines.append(f"  return {{{outs}}}")
    lines.append("}")
    return "\n".join(lines)


__all__ = ["format_graph", "format_node", "format_attr", "format_constant", "value_names",
           "quote_name"]
