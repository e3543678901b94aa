"""The Graph IR's views: printer, verifier, JSON round trip, networkx and DOT.

Graphs come from a table of traced functions (and their gradient graphs); each goes through
trace -> to_json -> from_json and must print the same, dump the same text and compute the same
numbers. Hand-built broken graphs and malformed JSON must each give one GraphError that says
what is wrong and where.
"""
from __future__ import annotations

import json
import math
import re

import ml_dtypes
import numpy as np
import pytest

import backends
import graphdsl
from graphdsl import dtypes as _dt
from graphdsl import ops
from graphdsl.autodiff import grad
from graphdsl.errors import GraphError, SourceLoc
from graphdsl.graph import Graph, Node, graph_from_json
from graphdsl.printer import format_graph
from graphdsl.serialize import decode_value, encode_value, graph_to_json
from graphdsl.types import Dim, TensorType
from graphdsl.verify import verify

RNG = np.random.default_rng(0)


# -- the graphs under test ------------------------------------------------------------------------
def _mlp(x, w, b):
    h = (x @ w + b).tanh() * 0.5
    return {"loss": (h * h).sum(), "h": h}


def _shapes(x):
    y = x.reshape(-1, 2, 4).transpose(0, 2, 1)           # f32[batch,4,2]: -1 solved symbolically
    g = ops.gelu(y, approximate="tanh")
    m = ops.where(g > 0.0, g, float("-inf"))
    return {"s": m.sum(axis=(1,), keepdims=True), "i": g.astype("int32"), "e": ops.gelu(y)}


def _creation(x):
    ids = ops.iota(shape=(x.shape[0], 3), axis=1, dtype=graphdsl.int32)
    ones = ops.full(shape=(x.shape[0], 3), value=1.5, dtype=graphdsl.float32)
    big = np.arange(12, dtype=np.float32).reshape(3, 4) / 7     # > 8 elements: printed by type
    low = x.astype("bfloat16") * 0.1
    table = np.array([1.5, np.inf, -0.0, np.nan], dtype=ml_dtypes.bfloat16)
    return {"a": ids.astype("float32") + ones, "b": x @ big, "c": low.sum(axis=1, keepdims=True) + table,
            "d": ops.where(x > 1e30, float("inf"), x)}


def _mlp_grad():
    return grad(graphdsl.trace(_mlp, x="f32[batch,4]", w="f32[4,3]", b="f32[3]"), wrt=["w", "b"])


GRAPHS = {
    "mlp": lambda: graphdsl.trace(_mlp, x="f32[batch,4]", w="f32[4,3]", b="f32[3]"),
    "mlp_grad": _mlp_grad,
    "shapes": lambda: graphdsl.trace(_shapes, x="f32[batch,8]"),
    "creation": lambda: graphdsl.trace(_creation, x="f32[batch,3]"),
}


def _inputs(g: Graph, batch: int = 2) -> dict[str, np.ndarray]:
    out = {}
    for name, node in {**g.inputs, **g.params}.items():
        shape = node.type.shape.evaluate({"batch": batch})
        out[name] = RNG.standard_normal(shape).astype(node.type.dtype.np)
    return out


@pytest.fixture(params=sorted(GRAPHS), ids=str)
def graph(request) -> Graph:
    return GRAPHS[request.param]()


# -- round trips ----------------------------------------------------------------------------------
def test_traced_graphs_verify(graph):
    assert verify(graph) is graph


@pytest.mark.parametrize("locs", [True, False])
def test_json_round_trip_prints_the_same(graph, locs):
    loaded = graph_from_json(graph_to_json(graph))
    assert format_graph(loaded, locs=locs) == format_graph(graph, locs=locs)


def test_json_text_is_stable(graph):
    text = graph_to_json(graph)
    assert graph_to_json(graph) == text
    assert graph_to_json(graph_from_json(text)) == text
    json.loads(text)  # standard JSON: no NaN/Infinity literals


def test_json_round_trip_computes_the_same(graph):
    loaded = Graph.from_json(graph.to_json())
    args = _inputs(graph)
    want = backends.compile(graph, "numpy")(**args)
    got = backends.compile(loaded, "numpy")(**args)
    assert list(got) == list(want)
    for k in want:
        assert (got[k].dtype, got[k].shape) == (want[k].dtype, want[k].shape)
        assert got[k].tobytes() == want[k].tobytes(), k   # bit-exact (bf16 NaN included)


def test_round_trip_keeps_sources_order_and_meta():
    def f(a, b, c):
        return {"out": c * 2.0}

    g = graphdsl.trace(f, a="f32[2]", b="i32[]", c="f32[2]")
    g = Graph(g.outputs, name="f", sources=g.sources(), meta={"step": 3, "lr": 1e-3, "tags": ["x"]})
    loaded = graph_from_json(graph_to_json(g))
    assert list(loaded.inputs) == ["a", "b", "c"]
    assert [n.op for n in loaded.nodes] == [n.op for n in g.nodes]
    assert loaded.meta == {"step": 3, "lr": 1e-3, "tags": ["x"]}
    assert type(loaded.meta["step"]) is int


def test_save_and_load(tmp_path):
    g = GRAPHS["mlp"]()
    g.save(tmp_path / "g.json")
    assert str(Graph.load(tmp_path / "g.json")) == str(g)
    with pytest.raises(GraphError, match="cannot read graph file"):
        Graph.load(tmp_path / "missing.json")


# -- attribute and array encoding ------------------------------------------------------------------
def _same(a, b) -> bool:
    """Equal values of exactly the same Python types, all the way down (nan equals nan)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


ATTR_VALUES = [
    1, 1.0, -0.0, 0.1, True, False, None, "tanh", "", (), (1,), (1, 2.0, True),
    ((1, 2), (3, (4.5, None))), float("inf"), float("-inf"), float("nan"), (float("inf"), 1),
    graphdsl.bfloat16, graphdsl.int32, Dim("batch"), Dim("batch") * Dim("seq") + 8, (Dim("batch"), 4),
    [1, (2, 3)], {"k": (1, 2.5)}, 2 ** 70,
]


@pytest.mark.parametrize("value", ATTR_VALUES, ids=repr)
def test_attr_values_round_trip_exactly(value):
    data = json.loads(json.dumps(encode_value(value), allow_nan=False))
    assert _same(decode_value(data, "attrs.x"), value)


@pytest.mark.parametrize("dtype", [d.name for d in _dt.ALL])
def test_constant_arrays_round_trip_bit_exact(dtype):
    dt = _dt.dtype(dtype)
    raw = np.array([[0.0, -0.0, 1.5], [np.inf, -np.inf, np.nan]]) if dt.is_float else [[0, 1, 1], [1, 0, 1]]
    arr = np.asarray(raw).astype(dt.np)
    back = decode_value(json.loads(json.dumps(encode_value(arr))), "value")
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert back.tobytes() == arr.tobytes()


def test_unsupported_attr_value_is_a_graph_error():
    with pytest.raises(GraphError, match=r"nodes\[0\]\.attrs\.f.*object"):
        encode_value(object(), "nodes[0].attrs.f")


# -- the printer -----------------------------------------------------------------------------------
def test_printer_exact_text():
    w = graphdsl.Parameter((4, 3))

    def f(x):
        h = x @ w
        return {"out": (h + 1.0).tanh(), "s": h.sum(axis=-1)}

    g = graphdsl.trace(f, params={"l0.w": w}, x="f32[batch,4]")
    assert format_graph(g, locs=False) == "\n".join([
        "graph f(%x: f32[batch,4]) params(%l0.w: f32[4,3]) {",
        "  %0: f32[batch,3] = matmul(%x, %l0.w)",
        "  %1: f32[] = constant(1.0)",
        "  %2: f32[batch,3] = add(%0, %1)",
        "  %3: f32[batch,3] = tanh(%2)",
        "  %4: f32[batch] = sum(%0, axis=(1,), keepdims=False)",
        "  return {out: %3, s: %4}",
        "}",
    ])


def test_printer_locations_are_aligned_comments():
    text = format_graph(GRAPHS["mlp"]())
    located = [line for line in text.splitlines() if "#" in line]
    assert located and all(re.search(r"# tests/test_ir\.py:\d+$", line) for line in located)
    assert len({line.index("#") for line in located}) == 1
    assert "#" not in format_graph(GRAPHS["mlp"](), locs=False)


def test_printer_constants_inline_small_and_summarize_large():
    text = format_graph(GRAPHS["creation"](), locs=False)
    assert "= constant(<f32[3,4]>)" in text
    assert "bf16[4] = constant([1.5, inf, -0.0, nan])" in text
    assert "f32[] = constant(inf)" in text
    assert "iota(shape=(batch, 3), axis=1, dtype=int32)" in text


def test_printer_same_structure_same_text():
    assert str(GRAPHS["mlp_grad"]()) == str(GRAPHS["mlp_grad"]())
    other = graphdsl.trace(lambda x, w, b: _mlp(x, w, b * 2.0), name="_mlp",
                           x="f32[batch,4]", w="f32[4,3]", b="f32[3]")
    assert format_graph(other, locs=False) != format_graph(GRAPHS["mlp"](), locs=False)


# -- the verifier ----------------------------------------------------------------------------------
def _x(name="x", t="f32[2,3]"):
    return Node("input", (), {"name": name}, TensorType.parse(t))


def _bad(kind: str) -> Graph:
    """A graph with one kind of defect, built by hand as a broken pass would."""
    x, y = _x(), _x("y")
    loc = SourceLoc("model.py", 7, "z = x + y")
    if kind == "wrong type":
        return Graph({"o": Node("add", (x, y), {}, TensorType.parse("f32[2,4]"), loc)})
    if kind == "wrong arity":
        return Graph({"o": Node("add", (x,), {}, x.type, loc)})
    if kind == "unknown op":
        return Graph({"o": Node("frobnicate", (x,), {}, x.type, loc)})
    if kind == "missing attr":
        return Graph({"o": Node("sum", (x,), {"axis": None}, TensorType.parse("f32[]"), loc)})
    if kind == "unknown attr":
        return Graph({"o": Node("tanh", (x,), {"fast": True}, x.type, loc)})
    if kind == "rejected by the type rule":
        return Graph({"o": Node("matmul", (x, y), {}, x.type, loc)})
    if kind == "attribute out of range":
        return Graph({"o": Node("sum", (x,), {"axis": (5,), "keepdims": False}, x.type, loc)})
    if kind == "constant mismatch":
        c = Node("constant", (), {"value": np.zeros(3, np.float64)}, TensorType.parse("f32[3]"))
        return Graph({"o": c})
    if kind == "duplicate input names":
        return Graph({"o": Node("add", (x, _x("x")), {}, x.type)})
    if kind == "used before defined":
        g = Graph({"o": Node("add", (x, y), {}, x.type)})
        g.nodes = g.nodes[::-1]
        return g
    if kind == "output not in graph":
        g = Graph({"o": Node("tanh", (x,), {}, x.type)})
        g.outputs["p"] = _x("p")
        return g
    raise AssertionError(kind)


VERIFY_CASES = {
    "wrong type": r"type is f32\[2,4\], but add of \(f32\[2,3\], f32\[2,3\]\) gives f32\[2,3\]",
    "wrong arity": r"add takes 2 inputs, got 1",
    "unknown op": r"unknown op 'frobnicate'",
    "missing attr": r"sum attributes: missing \['keepdims'\]",
    "unknown attr": r"tanh attributes: unknown \['fast'\]",
    "attribute out of range": r"sum rejects its attributes: axis 5 is out of range for rank 2",
    "rejected by the type rule": r"type rule of matmul rejects the inputs: inner dims differ",
    "constant mismatch": r"float64 array of shape \[3\], but its type says f32\[3\]",
    "duplicate input names": r"name 'x' is used by two sources",
    "used before defined": r"input 0 \(%x\) is used before it is defined",
    "output not in graph": r"output 'p' is not a node of this graph",
}


@pytest.mark.parametrize("kind", sorted(VERIFY_CASES))
def test_verifier_catches(kind):
    with pytest.raises(GraphError, match=VERIFY_CASES[kind]) as info:
        verify(_bad(kind))
    assert "failed verification" in str(info.value)


def test_verifier_shows_the_line_and_location():
    with pytest.raises(GraphError) as info:
        verify(_bad("wrong type"))
    msg = str(info.value)
    assert "%0: f32[2,4] = add(%x, %y)" in msg
    assert "at model.py:7   z = x + y" in msg


def test_verifier_lists_every_problem():
    x = _x()
    bad1 = Node("tanh", (x,), {}, TensorType.parse("f32[9]"))
    bad2 = Node("frobnicate", (bad1,), {}, x.type)
    bad3 = Node("add", (bad2,), {}, x.type)
    with pytest.raises(GraphError, match=r"\(3 problems\)") as info:
        verify(Graph({"o": bad3}))
    msg = str(info.value)
    assert "tanh of (f32[2,3]) gives f32[2,3]" in msg and "frobnicate" in msg and "add takes 2" in msg


# -- malformed JSON ----------------------------------------------------------------------------------
def _first(doc: dict, op: str) -> int:
    return next(i for i, n in enumerate(doc["nodes"]) if n["op"] == op)


def _on_doc(change):
    """A text mutation that parses the document, applies ``change(doc)`` and dumps it again."""
    def mutate(text):
        doc = json.loads(text)
        change(doc)
        return json.dumps(doc)
    return mutate


def _set(where, value):
    """Set the item ``where(doc)`` points at (a (container, key) pair) to ``value``."""
    def change(doc):
        container, key = where(doc)
        container[key] = value
    return _on_doc(change)


def _delete(where):
    def change(doc):
        container, key = where(doc)
        del container[key]
    return _on_doc(change)


def _forward_input(doc):
    """Make matmul's first input the id of a node defined after it."""
    i = _first(doc, "matmul")
    doc["nodes"][i]["inputs"][0] = doc["nodes"][i + 1]["id"]


def _node(op, *keys):
    """(container, key) of ``nodes[i].keys...`` for the first node with ``op``."""
    def at(doc):
        obj = doc["nodes"][_first(doc, op)]
        for k in keys[:-1]:
            obj = obj[k]
        return obj, keys[-1]
    return at


# (name, mutation of the parsed document or the raw text, regex with the JSON path)
MALFORMED = [
    ("not json", lambda text: text[:-5], r"not JSON"),
    ("not an object", lambda text: "[1, 2]", r"expected an object"),
    ("nan literal", lambda text: text.replace('"version": 1', '"version": NaN'), r"NaN is not valid JSON"),
    ("format tag", _set(lambda d: (d, "format"), "onnx"), r"at format: expected 'graphdsl-ir'"),
    ("version", _set(lambda d: (d, "version"), 2), r"at version: this library reads version 1"),
    ("bad meta", _set(lambda d: (d, "meta"), {"k": {"float": "huge"}}), r"at meta\.k\.float: unknown"),
    ("missing nodes", _delete(lambda d: (d, "nodes")), r"at nodes: missing"),
    ("missing outputs", _delete(lambda d: (d, "outputs")), r"at outputs: missing"),
    ("missing type", _delete(_node("matmul", "type")), r"nodes\[\d+\]\.type: missing"),
    ("missing op", _delete(_node("tanh", "op")), r"nodes\[\d+\]\.op: missing"),
    ("unknown op", _set(_node("tanh", "op"), "tahn"), r"nodes\[\d+\]\.op: unknown op 'tahn'.*tanh"),
    ("dangling input", _set(_node("matmul", "inputs", 1), 999), r"nodes\[\d+\]\.inputs\[1\]: 999"),
    ("forward input", _on_doc(_forward_input), r"nodes\[\d+\]\.inputs\[0\]: \d+ is not the id of an earlier"),
    ("input not an int", _set(_node("matmul", "inputs", 0), "x"), r"nodes\[\d+\]\.inputs\[0\]: 'x'"),
    ("bad dtype in type", _set(_node("matmul", "type"), "q32[batch,3]"), r"nodes\[\d+\]\.type: unknown dtype"),
    ("bad type string", _set(_node("matmul", "type"), "f32(batch)"), r"nodes\[\d+\]\.type: cannot parse"),
    ("bad dim name", _set(_node("matmul", "type"), "f32[ba$ch,3]"), r"nodes\[\d+\]\.type: bad dim name"),
    ("bad base64", _set(_node("constant", "attrs", "value", "array", "data"), "@@not base64@@"),
     r"nodes\[\d+\]\.attrs\.value\.array\.data: not valid base64"),
    ("short data", _set(_node("constant", "attrs", "value", "array", "data"), "AAAA"),
     r"nodes\[\d+\]\.attrs\.value\.array\.data: 3 bytes, but float32\[\] needs 4"),
    ("bad array dtype", _set(_node("constant", "attrs", "value", "array", "dtype"), "complex64"),
     r"nodes\[\d+\]\.attrs\.value\.array\.dtype: unknown dtype"),
    ("unknown tag", _set(_node("sum", "attrs", "axis"), {"weird": 1}), r"nodes\[\d+\]\.attrs\.axis\.weird"),
    ("bad dim attr", _set(_node("sum", "attrs", "axis"), {"dim": "no way"}), r"nodes\[\d+\]\.attrs\.axis\.dim"),
    ("bad loc", _set(_node("tanh", "loc"), ["f.py", "seven", ""]), r"nodes\[\d+\]\.loc: expected"),
    ("attrs not an object", _set(_node("tanh", "attrs"), [1]), r"nodes\[\d+\]\.attrs: expected an object, got an array"),
    ("node not an object", _set(lambda d: (d["nodes"], 3), 42), r"nodes\[3\]: expected an object, got an integer"),
    ("duplicate id", _set(lambda d: (d["nodes"][1], "id"), 0), r"nodes\[1\]\.id: id 0 is used twice"),
    ("dangling output", _set(lambda d: (d["outputs"], "loss"), 77), r"outputs\.loss: 77 is not a node id"),
    ("input list names a non-input", _set(lambda d: (d["inputs"], 0), 4), r"inputs\[0\]: node 4 has op 'add', not 'input'"),
    ("unlisted input", _set(lambda d: (d, "inputs"), [0, 1]), r"nodes\[\d+\]: input node is not listed in inputs"),
    ("wrong node type", _set(_node("tanh", "type"), "f32[batch,7]"),
     r"failed verification.*type is f32\[batch,7\], but tanh"),
    ("wrong attrs", _set(_node("sum", "attrs"), {"axis": None, "keepdims": False, "bogus": 1}),
     r"failed verification.*unknown \['bogus'\]"),
]


@pytest.mark.parametrize("mutate,match", [pytest.param(m, r, id=n) for n, m, r in MALFORMED])
def test_malformed_json_is_one_graph_error(mutate, match):
    bad = mutate(graph_to_json(GRAPHS["mlp"]()))
    with pytest.raises(GraphError, match=re.compile(match, re.S)):
        graph_from_json(bad)


def test_malformed_bytes_and_non_text():
    with pytest.raises(GraphError, match="not UTF-8"):
        graph_from_json(b"\xff\xfe")
    with pytest.raises(GraphError, match="takes JSON text"):
        graph_from_json(None)
    with pytest.raises(GraphError, match="nested too deeply"):
        graph_from_json("[" * 100_000 + "]" * 100_000)


# -- networkx and DOT ----------------------------------------------------------------------------------
def _edges(g: Graph) -> set:
    return {(id(i), id(n)) for n in g.nodes for i in n.inputs}


def test_networkx_counts_and_attributes(graph):
    nxg = graph.to_networkx()
    assert nxg.number_of_nodes() == len(graph.nodes)
    assert nxg.number_of_edges() == len(_edges(graph))
    ops_seen = sorted(op for _, op in nxg.nodes(data="op") if op not in ("input", "param", "constant"))
    assert ops_seen == sorted(n.op for n in graph.nodes if not n.is_source)
    for name, node in graph.inputs.items():
        assert nxg.nodes[f"%{name}"]["type"] == str(node.type)
    assert set(nxg.graph["outputs"]) == set(graph.outputs)


def test_networkx_keeps_input_positions():
    g = graphdsl.trace(lambda x, y: {"o": x * x - y}, x="f32[3]", y="f32[3]")
    nxg = g.to_networkx()
    assert nxg.edges["%x", "%0"]["positions"] == (0, 1)
    assert nxg.edges["%y", "%1"]["index"] == 1
    assert nxg.nodes["%1"]["label"] == "sub\nf32[3]"


def test_dot_names_every_op_and_styles_sources(graph):
    dot = graph.to_dot()
    assert dot.startswith("digraph ") and dot.rstrip().endswith("}")
    for op in graph.op_counts():
        assert f'label="{op}\\n' in dot
    for name in graph.inputs:
        assert f'"%{name}" [label="{name}\\n' in dot
    for name in graph.outputs:
        assert f'"output:{name}" [label=' in dot
    assert "shape=invhouse" in dot and "shape=house" in dot
    assert dot.count(" -> ") == sum(len(n.inputs) for n in graph.nodes) + len(graph.outputs)


# -- the structural hash --------------------------------------------------------------------------
def test_structural_hash_ignores_source_lines_names_and_meta_but_not_the_computation():
    def f(x, w):
        return {"y": (x @ w).sum(axis=-1) * 2.0}

    def g(x, w):  # the same computation, on other lines, under another name
        y = x @ w
        return {"y": y.sum(axis=-1) * 2.0}

    a = graphdsl.trace(f, x="f32[batch,4]", w="f32[4,3]")
    b = graphdsl.trace(g, x="f32[batch,4]", w="f32[4,3]")
    assert a.name != b.name and a.to_json() != b.to_json()
    assert a.structural_hash() == b.structural_hash()
    assert Graph(b.outputs, name="other", sources=b.sources(), meta={"source": "elsewhere.onnx"}
                 ).structural_hash() == a.structural_hash()
    differ = [graphdsl.trace(lambda x, w: {"y": (x @ w).sum(axis=-1) * 3.0}, x="f32[batch,4]", w="f32[4,3]"),
              graphdsl.trace(lambda x, w: {"y": (x @ w).sum(axis=0) * 2.0}, x="f32[batch,4]", w="f32[4,3]"),
              graphdsl.trace(lambda x, w: {"z": (x @ w).sum(axis=-1) * 2.0}, x="f32[batch,4]", w="f32[4,3]"),
              graphdsl.trace(f, w="f32[4,3]", x="f32[batch,4]"),                    # the inputs' order
              graphdsl.trace(lambda x, w: {"y": (x @ w).sum(axis=-1) * 2.0}, x="f32[seq,4]", w="f32[4,3]")]
    hashes = {a.structural_hash(), *(d.structural_hash() for d in differ)}
    assert len(hashes) == 1 + len(differ)


def test_an_attribute_missing_from_an_older_file_reads_as_its_default():
    """Files written before an op gained an attribute (cast's saturate and round_mode) still load:
    the attribute takes its default. A required attribute must be in the file."""
    import json
    g = graphdsl.trace(lambda x: {"y": x.astype("float16").sum(axis=0)}, x="f32[2,3]")
    doc = json.loads(g.to_json())
    for node in doc["nodes"]:
        if node["op"] == "cast":
            del node["attrs"]["saturate"], node["attrs"]["round_mode"]
        if node["op"] == "sum":
            del node["attrs"]["keepdims"]
    back = graphdsl.Graph.from_json(json.dumps(doc))
    cast = next(n for n in back.nodes if n.op == "cast")
    assert cast.attrs["saturate"] is True and cast.attrs["round_mode"] == "up"
    assert next(n for n in back.nodes if n.op == "sum").attrs["keepdims"] is False
    for node in doc["nodes"]:
        if node["op"] == "cast":
            del node["attrs"]["dtype"]
    with pytest.raises(GraphError, match=r"cast attributes: missing \['dtype'\]"):
        graphdsl.Graph.from_json(json.dumps(doc))
