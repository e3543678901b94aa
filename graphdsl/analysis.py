"""Views of a graph for analysis and drawing: a networkx DiGraph and DOT source.

Both key nodes by the printer's SSA names (``%x``, ``%3``), so a node in a drawing, in networkx
and in the printed IR is the same name. networkx is imported when ``to_networkx`` is called;
``to_dot`` needs nothing (render the text with Graphviz's ``dot`` if you have it).
"""
from __future__ import annotations

import json

from .printer import format_constant, quote_name, value_names

# How each kind of node is drawn.
_DOT_STYLE = {
    "input": 'shape=invhouse, style=filled, fillcolor="#cfe2ff"',
    "param": 'shape=box, style="filled,rounded", fillcolor="#e2e3e5"',
    "constant": 'shape=box, style=dashed, fontsize=10',
    "op": "shape=box",
    "output": 'shape=house, style=filled, fillcolor="#d1e7dd"',
}


def _label(node, names) -> str:
    if node.op in ("input", "param"):
        return f"{names[node][1:]}\n{node.type}"
    if node.op == "constant":
        return f"constant {format_constant(node.attrs.get('value'))}\n{node.type}"
    return f"{node.op}\n{node.type}"


def _kind(node) -> str:
    return node.op if node.op in ("input", "param", "constant") else "op"


def to_networkx(graph):
    """A ``networkx.DiGraph``: nodes keyed by SSA name with ``op``, ``type``, ``label``, ``kind``
    (and ``outputs``, the output names a node provides); an edge per (producer, user) pair with
    ``index`` (the first input position) and ``positions`` (all of them: ``x * x`` uses x twice).
    """
    import networkx as nx
    names = value_names(graph)
    outputs: dict = {}   # node -> the output names it provides
    for k, v in graph.outputs.items():
        outputs.setdefault(v, []).append(k)
    g = nx.DiGraph(name=graph.name, outputs={k: names[v] for k, v in graph.outputs.items()})
    for node in graph.nodes:
        g.add_node(names[node], op=node.op, type=str(node.type), label=_label(node, names),
                   kind=_kind(node), outputs=tuple(outputs.get(node, ())))
    for node in graph.nodes:
        dst = names[node]
        for pos, inp in enumerate(node.inputs):
            src = names[inp]
            if g.has_edge(src, dst):
                g.edges[src, dst]["positions"] += (pos,)
            else:
                g.add_edge(src, dst, index=pos, positions=(pos,))
    return g


def _dot_str(text: str) -> str:
    """A DOT double-quoted string (JSON's escapes are DOT's: ``\\n`` breaks a label's line)."""
    return json.dumps(text, ensure_ascii=False)


def to_dot(graph) -> str:
    """DOT source: nodes labelled ``op\\ntype``; inputs, params, constants and outputs styled apart."""
    names = value_names(graph)
    lines = [f"digraph {_dot_str(graph.name)} {{", "  rankdir=TB;", '  node [fontname="monospace"];']
    for node in graph.nodes:
        lines.append(f"  {_dot_str(names[node])} [label={_dot_str(_label(node, names))}, "
                     f"{_DOT_STYLE[_kind(node)]}];")
    for node in graph.nodes:
        for pos, inp in enumerate(node.inputs):
            extra = f' [label="{pos}"]' if len(node.inputs) > 1 else ""
            lines.append(f"  {_dot_str(names[inp])} -> {_dot_str(names[node])}{extra};")
    for k, v in graph.outputs.items():
        out_id = _dot_str(f"output:{k}")
        lines.append(f"  {out_id} [label={_dot_str(quote_name(k))}, {_DOT_STYLE['output']}];")
        lines.append(f"  {_dot_str(names[v])} -> {out_id};")
    lines.append("}")
    return "\n".join(lines) + "\n"


__all__ = ["to_networkx", "to_dot"]
