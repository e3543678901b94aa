"""The graph verifier: every invariant a pass or a loaded file could break, checked in one sweep.

``verify(graph)`` collects ALL problems and raises one GraphError listing each with the node's
printed line and its source location, so a broken pass shows everything it broke at once.
Checks: SSA order, registered ops, arity, attribute names, attribute values in the canonical form
the op's ``normalize`` gives them (so a loaded ``slice start=-2``, ``sum axis=(2, 0)``,
``transpose perm=(-1, 1, 0)`` or ``softmax axis=true`` is refused before any backend sees it, and
every op declared with a ``normalize`` gets the check), types agree with the op's type rule,
unique input/param names, outputs are nodes of the graph, constants match their type.
It reads a graph by its attributes (``nodes``, ``inputs``, ``params``, ``outputs``) and does not
import Graph, whose ``verify`` method calls it.
"""
from __future__ import annotations

import numpy as np

from .errors import GraphDSLError, GraphError, UnknownOpError
from .node import Node
from .printer import format_node, value_names
from .registry import get
from .types import TensorType


def _check_source(node: Node) -> list[str]:
    """Problems of an input/param/constant node (they have no registry entry)."""
    out = []
    if node.inputs:
        out.append(f"a {node.op} node takes no inputs, has {len(node.inputs)}")
    want = {"value"} if node.op == "constant" else {"name"}
    if set(node.attrs) != want:
        out.append(f"a {node.op} node has attributes {sorted(want)}, got {sorted(node.attrs)}")
        return out
    if node.op != "constant":
        if not isinstance(node.attrs["name"], str) or not node.attrs["name"]:
            out.append(f"{node.op} name must be a non-empty string, got {node.attrs['name']!r}")
        return out
    value = node.attrs["value"]
    if not isinstance(value, np.ndarray):
        return out + [f"constant value must be a NumPy array, got {type(value).__name__}"]
    t = node.type
    if not t.shape.is_static:
        out.append(f"constant type {t} has symbolic dims")
    elif tuple(value.shape) != tuple(t.shape) or value.dtype != t.dtype.np:
        out.append(f"constant value is a {value.dtype} array of shape {list(value.shape)}, "
                   f"but its type says {t}")
    return out


def _check_op(node: Node) -> list[str]:
    """Problems of a registry-op node: op known, arity, attribute names, type rule agrees."""
    try:
        op = get(node.op)
    except UnknownOpError as e:
        return [f"unknown op {node.op!r}" + (f" ({e.hint})" if e.hint else "")]
    out = []
    lo, hi = op.arity
    n = len(node.inputs)
    if n < lo or (hi is not None and n > hi):
        want = f"{lo}" if lo == hi else f"{lo} to {hi if hi is not None else 'any number of'}"
        out.append(f"{node.op} takes {want} inputs, got {n}")
    have, declared = set(node.attrs), set(op.attrs)
    if have != declared:
        parts = []
        if declared - have:
            parts.append(f"missing {sorted(declared - have)}")
        if have - declared:
            parts.append(f"unknown {sorted(have - declared)}")
        out.append(f"{node.op} attributes: {'; '.join(parts)}")
    if out:
        return out
    types = [i.type for i in node.inputs]
    if op.normalize is not None:
        try:
            canonical = op.normalize(*types, **dict(node.attrs))
        except GraphDSLError as e:
            return [f"{node.op} rejects its attributes: {e.message}"]
        except Exception as e:  # noqa: BLE001  an ill-typed attribute in a hand-built or loaded node
            shown = ", ".join(f"{k}={v!r}" for k, v in node.attrs.items())
            return [f"{node.op} rejects its attributes ({shown}): {type(e).__name__}: {e}"]
        odd = [k for k, v in canonical.items() if k in node.attrs and not _same(node.attrs[k], v)]
        if odd:
            return [f"{node.op} attribute {k}={node.attrs[k]!r} is not in canonical form: it means {canonical[k]!r}"
                    for k in odd]
    try:
        inferred = op.infer(*types, **dict(node.attrs))
    except GraphDSLError as e:
        return [f"the type rule of {node.op} rejects the inputs: {e.message}"]
    except Exception as e:  # ill-typed attrs in a hand-built or loaded node
        return [f"the type rule of {node.op} fails: {type(e).__name__}: {e}"]
    if inferred != node.type:
        out.append(f"type is {node.type}, but {node.op} of "
                   f"({', '.join(str(i.type) for i in node.inputs)}) gives {inferred}")
    return out


def _same(a, b) -> bool:
    """Equal and of the same kind: ``True`` is not the axis 1, nor ``1.0``, nor ``[1]``."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if type(a) is not type(b):
        return False
    return bool(a == b)


def _check_node(node: Node, defined: set[Node], in_graph: set[Node], names: dict[Node, str]) -> list[str]:
    if not isinstance(node.type, TensorType):
        return [f"type must be a TensorType, got {type(node.type).__name__}"]
    out = []
    for pos, inp in enumerate(node.inputs):
        if not isinstance(inp, Node):
            out.append(f"input {pos} is not a Node: {type(inp).__name__}")
        elif inp not in in_graph:
            out.append(f"input {pos} ({inp.op}: {inp.type}) is not a node of this graph")
        elif inp not in defined:
            out.append(f"input {pos} ({names[inp]}) is used before it is defined")
    if out:
        return out
    return _check_source(node) if node.is_source else _check_op(node)


def problems(graph) -> list[str]:
    """Every problem of ``graph``, one string each (empty when the graph is well formed)."""
    names = value_names(graph)
    in_graph = set(graph.nodes)
    defined: set[Node] = set()
    found: list[str] = []
    seen_names: dict[str, Node] = {}
    for node in graph.nodes:
        if node in defined:
            found.append(f"{format_node(node, names)}\n    appears twice in the node list")
            continue
        node_problems = _check_node(node, defined, in_graph, names)
        if node.op in ("input", "param") and isinstance(node.attrs.get("name"), str):
            name = node.attrs["name"]
            if name in seen_names:
                node_problems.append(f"name {name!r} is used by two sources "
                                     f"({seen_names[name].op} and {node.op})")
            seen_names[name] = node
        for p in node_problems:
            where = f"\n    at {node.loc}" if node.loc is not None else ""
            found.append(f"{format_node(node, names)}\n    {p}{where}")
        defined.add(node)
    for kind, table in (("input", graph.inputs), ("param", graph.params)):
        for name, node in table.items():
            if node not in in_graph or node.op != kind or node.attrs.get("name") != name:
                found.append(f"graph.{kind}s[{name!r}] is not the {kind} node named {name!r} "
                             f"in the node list")
    for name, node in graph.outputs.items():
        if not isinstance(node, Node) or node not in in_graph:
            found.append(f"output {name!r} is not a node of this graph")
    return found


def verify(graph):
    """Raise one GraphError listing every problem of ``graph``; return the graph when it is fine."""
    found = problems(graph)
    if found:
        listing = "\n".join(f"  - {p}" for p in found)
        raise GraphError(f"graph {graph.name!r} failed verification ({len(found)} problem"
                         f"{'s' if len(found) != 1 else ''}):\n{listing}")
    return graph


__all__ = ["verify", "problems"]
