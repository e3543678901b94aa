"""Graphs as JSON that round-trips exactly, and loading that fails with the JSON path of the problem.

Layout (one node per line, so diffs of saved graphs are readable)::

    {"format": "graphdsl-ir", "version": 1, "name": ..., "meta": {...},
     "inputs": [node ids], "params": [node ids],
     "nodes": [{"id", "op", "inputs": [ids], "attrs", "type": "f32[batch,64]", "loc"}, ...],
     "outputs": {name: id}}

Attribute values are JSON where JSON is exact (str, bool, int, finite float, None; tuples as
arrays); everything else is a one-key object: ``{"float": "inf"}``, ``{"dtype": "float32"}``,
``{"dim": "batch*seq"}``, ``{"list": [...]}``, ``{"dict": {...}}`` and
``{"array": {"dtype", "shape", "data"}}`` with the raw bytes in base64. Decoding builds the same
Python types back (tuples, not lists) without eval or pickle. ``decode_graph`` gives the parts of
the graph (the keyword arguments of ``Graph``); ``graphdsl.graph.graph_from_json`` assembles and
verifies it, so this module reads graphs by their attributes and never imports Graph.
"""
from __future__ import annotations

import base64
import binascii
import json
import math

import numpy as np

from . import dtypes as _dt
from .dtypes import DType
from .errors import GraphDSLError, GraphError, SourceLoc, UnknownOpError
from .node import SOURCE_OPS, Node, topo_sort
from .registry import REQUIRED, get
from .types import Dim, TensorType, parse_dim

FORMAT = "graphdsl-ir"
VERSION = 1


# -- encoding ----------------------------------------------------------------------------------
def encode_value(value, path: str = "value"):
    """An attribute (or meta) value as JSON-ready data; ``path`` names it in errors."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, DType):
        return {"dtype": value.name}
    if isinstance(value, Dim):
        return {"dim": str(value)}
    if isinstance(value, tuple):
        return [encode_value(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, list):
        return {"list": [encode_value(v, f"{path}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise GraphError(f"cannot save {path}: dict keys must be strings, got {bad[0]!r}")
        return {"dict": {k: encode_value(v, f"{path}.{k}") for k, v in value.items()}}
    if isinstance(value, np.ndarray):
        return {"array": _encode_array(value, path)}
    raise GraphError(f"cannot save {path}: {type(value).__name__} {value!r} is not an attribute value",
                     hint="attributes are int, float, bool, str, None, DType, Dim, tuples and arrays")


def _encode_array(arr: np.ndarray, path: str) -> dict:
    try:
        dt = _dt.dtype(arr.dtype)
    except GraphDSLError:
        raise GraphError(f"cannot save {path}: arrays of dtype {arr.dtype} are not supported") from None
    data = np.ascontiguousarray(arr).tobytes()
    return {"dtype": dt.name, "shape": list(arr.shape), "data": base64.b64encode(data).decode("ascii")}


def _encode_node(node: Node, i: int, ids: dict[Node, int]) -> dict:
    loc = node.loc
    return {
        "id": i,
        "op": node.op,
        "inputs": [ids[x] for x in node.inputs],
        "attrs": {k: encode_value(v, f"nodes[{i}].attrs.{k}") for k, v in node.attrs.items()},
        "type": str(node.type),
        "loc": _encode_loc(loc),
    }


def _encode_loc(loc: SourceLoc | None):
    """``[file, line, code]``, with the nn module's ``[file, line, code]`` appended when there is one."""
    if loc is None:
        return None
    out = [loc.file, loc.line, loc.code]
    if loc.inner is not None:
        out.append(_encode_loc(loc.inner))
    return out


def graph_to_json(graph) -> str:
    """The graph as JSON text; the same graph always gives the same text."""
    ids = {n: i for i, n in enumerate(graph.nodes)}
    for name, node in graph.outputs.items():
        if node not in ids:
            raise GraphError(f"cannot save graph {graph.name!r}: output {name!r} is not one of its nodes")
    head = {
        "format": FORMAT,
        "version": VERSION,
        "name": graph.name,
        "meta": encode_value(dict(graph.meta), "meta")["dict"],
        "inputs": [ids[n] for n in graph.inputs.values()],
        "params": [ids[n] for n in graph.params.values()],
    }
    dump = lambda v: json.dumps(v, allow_nan=False, ensure_ascii=False)  # noqa: E731
    lines = ["{"] + [f"  {dump(k)}: {dump(v)}," for k, v in head.items()]
    nodes = [dump(_encode_node(n, i, ids)) for i, n in enumerate(graph.nodes)]
    lines.append('  "nodes": [')
    lines.append(",\n".join(f"    {n}" for n in nodes))
    lines.append("  ],")
    lines.append(f'  "outputs": {dump({k: ids[v] for k, v in graph.outputs.items()})}')
    lines.append("}")
    return "\n".join(lines) + "\n"


def structural_hash(graph) -> str:
    """A digest of what the graph computes: ops, attributes, types, constants, wiring and the
    calling convention (input, parameter and output names, in order).

    Source locations, the graph's name and its meta (where it was traced or imported from) are
    left out, so a comment added to the model file, or the same model traced from another script,
    hashes the same. The compile cache and checkpoints key on it.
    """
    import hashlib
    ids = {n: i for i, n in enumerate(graph.nodes)}
    digest = hashlib.sha256()
    for i, node in enumerate(graph.nodes):
        row = {"op": node.op, "inputs": [ids[x] for x in node.inputs], "type": str(node.type),
               "attrs": {k: encode_value(v, f"nodes[{i}].attrs.{k}") for k, v in sorted(node.attrs.items())}}
        digest.update(json.dumps(row, sort_keys=True, allow_nan=False).encode())
        digest.update(b"\n")
    tail = {"inputs": [ids[n] for n in graph.inputs.values()],
            "params": [ids[n] for n in graph.params.values()],
            "outputs": [[k, ids[v]] for k, v in graph.outputs.items()]}
    digest.update(json.dumps(tail, sort_keys=True).encode())
    return digest.hexdigest()


# -- decoding ----------------------------------------------------------------------------------
def _fail(path: str, message: str, hint: str | None = None):
    raise GraphError(f"bad graph JSON at {path}: {message}", hint=hint)


def _field(obj, key: str, kinds, path: str):
    """``obj[key]`` checked to be one of ``kinds`` (bool is never accepted as an int)."""
    if not isinstance(obj, dict):
        _fail(path, f"expected an object, got {_json_kind(obj)}")
    if key not in obj:
        _fail(f"{path}.{key}" if path else key, "missing")
    value = obj[key]
    where = f"{path}.{key}" if path else key
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _as_tuple(kinds)):
        names = " or ".join(_JSON_KINDS[k] for k in _as_tuple(kinds))
        _fail(where, f"expected {names}, got {_json_kind(value)} {json.dumps(value)}"[:200])
    return value


def _as_tuple(kinds) -> tuple:
    return kinds if isinstance(kinds, tuple) else (kinds,)


_JSON_KINDS = {dict: "an object", list: "an array", str: "a string", int: "an integer",
               float: "a number", bool: "true/false", type(None): "null"}


def _json_kind(value) -> str:
    return _JSON_KINDS.get(type(value), type(value).__name__)


_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def decode_value(data, path: str):
    """The inverse of ``encode_value``; raises GraphError naming ``path`` on malformed data."""
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return tuple(decode_value(v, f"{path}[{i}]") for i, v in enumerate(data))
    if not isinstance(data, dict) or len(data) != 1:
        _fail(path, f"expected a value or a one-key tagged object, got {json.dumps(data)[:80]}")
    (tag, body), = data.items()
    where = f"{path}.{tag}"
    if tag == "float" and body in _NONFINITE:
        return _NONFINITE[body]
    if tag == "dtype" and isinstance(body, str):
        return _decode(lambda: _dt.dtype(body), where)
    if tag == "dim" and isinstance(body, str):
        return _decode(lambda: parse_dim(body), where)
    if tag == "list" and isinstance(body, list):
        return [decode_value(v, f"{where}[{i}]") for i, v in enumerate(body)]
    if tag == "dict" and isinstance(body, dict):
        return {k: decode_value(v, f"{where}.{k}") for k, v in body.items()}
    if tag == "array" and isinstance(body, dict):
        return _decode_array(body, where)
    _fail(where, f"unknown or malformed tagged value {json.dumps(data)[:80]}",
          hint="tags are float, dtype, dim, list, dict, array")


def _decode(make, path: str):
    try:
        return make()
    except GraphDSLError as e:
        _fail(path, e.message)


def _decode_array(body: dict, path: str) -> np.ndarray:
    dt = _decode(lambda: _dt.dtype(_field(body, "dtype", str, path)), f"{path}.dtype")
    shape = _field(body, "shape", list, path)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        _fail(f"{path}.shape", f"expected a list of sizes, got {shape}")
    text = _field(body, "data", str, path)
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        _fail(f"{path}.data", "not valid base64")
    count = math.prod(shape)
    if len(raw) != count * dt.np.itemsize:
        _fail(f"{path}.data", f"{len(raw)} bytes, but {dt.name}{shape} needs {count * dt.np.itemsize}")
    return np.frombuffer(raw, dtype=dt.np).reshape(shape).copy()


def _decode_node(data, i: int, by_id: dict[int, Node]) -> tuple[int, Node]:
    path = f"nodes[{i}]"
    nid = _field(data, "id", int, path)
    if nid in by_id:
        _fail(f"{path}.id", f"id {nid} is used twice")
    op = _field(data, "op", str, path)
    if op not in SOURCE_OPS:
        try:
            get(op)
        except UnknownOpError as e:
            _fail(f"{path}.op", f"unknown op {op!r}", hint=e.hint)
    inputs = []
    for j, ref in enumerate(_field(data, "inputs", list, path)):
        if not isinstance(ref, int) or isinstance(ref, bool) or ref not in by_id:
            _fail(f"{path}.inputs[{j}]", f"{ref!r} is not the id of an earlier node")
        inputs.append(by_id[ref])
    attrs_data = _field(data, "attrs", dict, path)
    attrs = {k: decode_value(v, f"{path}.attrs.{k}") for k, v in attrs_data.items()}
    if op not in SOURCE_OPS:
        # an attribute added to an op after a file was written reads as its default (cast's
        # saturate and round_mode came with the float8 dtypes); a required one must be there
        for name, default in get(op).attrs.items():
            if name not in attrs and default is not REQUIRED:
                attrs[name] = default
    if op in ("input", "param") and not isinstance(attrs.get("name"), str):
        _fail(f"{path}.attrs.name", f"an {op} node needs a string name")
    type_text = _field(data, "type", str, path)
    ttype = _decode(lambda: TensorType.parse(type_text), f"{path}.type")
    loc_data = _field(data, "loc", (list, type(None)), path) if "loc" in data else None
    return nid, Node(op, inputs, attrs, ttype, _decode_loc(loc_data, f"{path}.loc"))


def _decode_loc(data, path: str, depth: int = 0) -> SourceLoc | None:
    if data is None:
        return None
    ok = (isinstance(data, list) and len(data) in (3, 4) and isinstance(data[0], str)
          and isinstance(data[2], str) and isinstance(data[1], int) and not isinstance(data[1], bool)
          and (len(data) == 3 or (depth == 0 and isinstance(data[3], list))))
    if not ok:
        _fail(path, f"expected [file, line, code] (and optionally an inner [file, line, code]) "
                    f"or null, got {data!r}"[:200])
    inner = _decode_loc(data[3], f"{path}[3]", depth + 1) if len(data) == 4 else None
    return SourceLoc(data[0], data[1], data[2], inner)


def _source_order(nodes: list[Node], inputs: list[Node], params: list[Node]) -> list[Node]:
    """Inputs then params, interleaved so that unused ones keep their order in the node list.

    Graph puts unused sources first, in declaration order; this rebuilds a declaration order that
    gives back both the input/param order and the node order.
    """
    is_source = set(inputs + params)
    prefix = []
    for n in nodes:
        if n not in is_source:
            break
        prefix.append(n)
    queues = {"input": list(inputs), "param": list(params)}
    order: list[Node] = []
    for node in prefix:
        queue = queues[node.op]
        if node not in queue:
            continue
        k = queue.index(node)
        order.extend(queue[:k + 1])
        del queue[:k + 1]
    return order + queues["input"] + queues["param"]


def _source_ids(doc: dict, key: str, by_id: dict[int, Node], kind: str) -> list[Node]:
    out = []
    for j, ref in enumerate(_field(doc, key, list, "")):
        if not isinstance(ref, int) or isinstance(ref, bool) or ref not in by_id:
            _fail(f"{key}[{j}]", f"{ref!r} is not a node id")
        if by_id[ref].op != kind:
            _fail(f"{key}[{j}]", f"node {ref} has op {by_id[ref].op!r}, not {kind!r}")
        out.append(by_id[ref])
    return out


def decode_graph(text) -> dict:
    """The parts of a graph saved by ``graph_to_json``: ``Graph(**decode_graph(text))`` builds it.

    Any problem is a GraphError naming its JSON path (the graph is verified by whoever builds it:
    ``graphdsl.graph.graph_from_json``)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise GraphError(f"bad graph JSON: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not isinstance(text, str):
        raise GraphError(f"graph_from_json takes JSON text, got {type(text).__name__}")
    try:
        return _load(text)
    except RecursionError:
        raise GraphError("bad graph JSON: nested too deeply") from None


def _load(text: str) -> dict:
    try:
        doc = json.loads(text, parse_constant=lambda c: _fail("(text)", f"{c} is not valid JSON"))
    except json.JSONDecodeError as e:
        raise GraphError(f"bad graph JSON: not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(doc, dict):
        _fail("(top)", f"expected an object, got {_json_kind(doc)}")
    if doc.get("format") != FORMAT:
        _fail("format", f"expected {FORMAT!r}, got {doc.get('format')!r}")
    if doc.get("version") != VERSION or isinstance(doc.get("version"), bool):
        _fail("version", f"this library reads version {VERSION}, got {doc.get('version')!r}")
    name = _field(doc, "name", str, "")
    meta = {k: decode_value(v, f"meta.{k}") for k, v in _field(doc, "meta", dict, "").items()}
    by_id: dict[int, Node] = {}
    order: list[Node] = []
    for i, data in enumerate(_field(doc, "nodes", list, "")):
        nid, node = _decode_node(data, i, by_id)
        by_id[nid] = node
        order.append(node)
    inputs = _source_ids(doc, "inputs", by_id, "input")
    params = _source_ids(doc, "params", by_id, "param")
    listed = set(inputs + params)
    if len(listed) != len(inputs) + len(params):
        _fail("inputs", "a node is listed twice in inputs/params")
    for i, node in enumerate(order):
        if node.op in ("input", "param") and node not in listed:
            _fail(f"nodes[{i}]", f"{node.op} node is not listed in {node.op}s")
    outputs = {}
    for k, ref in _field(doc, "outputs", dict, "").items():
        if not isinstance(ref, int) or isinstance(ref, bool) or ref not in by_id:
            _fail(f"outputs.{k}", f"{ref!r} is not a node id")
        outputs[k] = by_id[ref]
    if not outputs:
        _fail("outputs", "a graph needs at least one output")
    kept = listed | set(topo_sort(outputs.values()))   # the nodes Graph keeps
    for i, node in enumerate(order):
        if node not in kept:
            _fail(f"nodes[{i}]", f"{node.op} node is not used by any output",
                  hint="remove dead nodes before saving, or add an output")
    return {"outputs": outputs, "name": name, "sources": _source_order(order, inputs, params), "meta": meta}


__all__ = ["graph_to_json", "decode_graph", "structural_hash", "encode_value", "decode_value", "FORMAT",
           "VERSION"]
