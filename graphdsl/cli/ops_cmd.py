"""`graphdsl ops`: every op in the registry, as a table, as JSON, or as docs/ops.md.

docs/ops.md is generated here, from the one declaration of each op (graphdsl/ops/<group>.py) and
from the backends' lowering tables, so it cannot drift from the code: tests/test_ops_doc.py
regenerates it in memory and fails when the file differs. It lives in the command line because
only the command line may read both the core and the backends (tests/test_architecture.py).

The dtypes of an op's type rule are read off the rule itself by probing it: ``infer`` is called on
every combination of (non-storage) dtypes, one per input, on [3,3] inputs with the default
attributes. That is conclusive when what it accepts is either one dtype shared by all inputs or
each input's dtypes independently of the others. For any other op (a required attribute, a dtype
attribute, inputs of different shapes, a rule such as ``where``'s that ties some inputs and not
others) the op declares a short summary with ``defop(types=...)``; a test fails for an op that
declares one the probe could read.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import click

from graphdsl import dtypes as _dt
from graphdsl.errors import GraphDSLError
from graphdsl.registry import REQUIRED, OpDef, all_ops
from graphdsl.types import TensorType

COMMAND = "graphdsl ops --markdown docs/ops.md"
PROBE_SHAPE = (3, 3)


# -- what the registry says about an op ------------------------------------------------------
def group_of(op: OpDef) -> str:
    """The op group: the stem of the graphdsl/ops/<group>.py that declared the op."""
    return op.module.rsplit(".", 1)[-1] if op.module.startswith("graphdsl.ops.") else op.module


def gradient_of(op: OpDef) -> str:
    if not op.differentiable:
        return "none (not differentiable)"
    return "vjp" if op.vjp is not None else "via decomposition"


def inputs_of(op: OpDef) -> str:
    if op.inputs:
        return ", ".join(f"{n[:-1]} (optional)" if n.endswith("?") else n for n in op.inputs)
    low, high = op.arity
    if high is None:
        return f"{low} or more tensors"
    if low == high:
        return "none" if low == 0 else f"{low} tensor{'s' if low > 1 else ''}"
    return f"{low} to {high} tensors"


def attrs_of(op: OpDef) -> str:
    if not op.attrs:
        return "none"
    return ", ".join(f"`{k}` (required)" if v is REQUIRED else f"`{k}={_shown(v)}`"
                     for k, v in op.attrs.items())


def _shown(value) -> str:
    return value.name if isinstance(value, _dt.DType) else repr(value)


def probe_types(op: OpDef) -> str | None:
    """The dtypes ``op``'s type rule takes and gives, read by calling it; None when inconclusive."""
    low, high = op.arity
    if low != high or not 1 <= low <= 3 or not op.is_primitive or REQUIRED in op.attrs.values():
        return None
    if any(isinstance(v, _dt.DType) for v in op.attrs.values()):
        return None   # the result's dtype is an attribute: probing the default would say float32
    results = {}
    for combo in itertools.product(_dt.ALL, repeat=low):
        types = [TensorType(PROBE_SHAPE, d) for d in combo]
        try:
            attrs = op.normalize(*types, **op.attrs) if op.normalize else dict(op.attrs)
            results[combo] = op.infer(*types, **attrs).dtype
        except GraphDSLError:
            continue
    if not results:
        return None
    per_input = [sorted({c[i] for c in results}, key=_dt.ALL.index) for i in range(low)]
    if low == 1 or set(results) == {(d,) * low for d in per_input[0]}:
        takes = _kinds(per_input[0]) + (" (all inputs one dtype)" if low > 1 else "")
    elif set(results) == set(itertools.product(*per_input)):
        takes = "; ".join(f"input {i + 1} {_kinds(ds)}" for i, ds in enumerate(per_input))
    else:
        return None
    outs = set(results.values())
    if all(out == combo[0] for combo, out in results.items()):
        gives = "same dtype" if low == 1 or "one dtype" in takes else "input 1's dtype"
    elif len(outs) == 1:
        gives = next(iter(outs)).name
    else:
        return None
    return f"{takes} → {gives}"


def _kinds(dtypes: list) -> str:
    """``float, int`` for every float and int dtype; dtype names for the rest."""
    if set(dtypes) == set(_dt.ALL):
        return "any dtype"
    words, left = [], list(dtypes)
    for kind in ("float", "int", "bool"):
        every = [d for d in _dt.ALL if d.kind == kind]
        if all(d in left for d in every):
            words.append(kind)
            left = [d for d in left if d.kind != kind]
    return ", ".join(words + [d.name for d in left])


def types_of(op: OpDef) -> str:
    return op.types or probe_types(op) or ""


# -- what the backends' tables say ---------------------------------------------------------------
def lowering_tables() -> dict:
    """The TVM and ONNX export tables, filled (importing their rule packages fills them)."""
    import backends.onnx.lower  # noqa: F401
    import backends.tvm.rules  # noqa: F401
    from backends.onnx.table import EXPORT
    from backends.tvm.table import TVM
    return {"tvm": TVM, "onnx": EXPORT}


BACKENDS = ("numpy", "llvm, cuda", "onnx export")


def backends_of(op: OpDef, tables: dict) -> dict[str, tuple[str, str]]:
    """backend -> (how it computes the op, the detail): its table's rows or the op's decomposition.

    ``how`` is ``reference``, ``row``, ``N rows`` or ``decomposition``; a table with several rows
    for the op names them, highest priority first (the first whose ``when`` holds is chosen)."""
    out = {"numpy": ("reference", "") if op.ref is not None else ("decomposition", "expanded when traced")}
    for key, label in (("tvm", "llvm, cuda"), ("onnx", "onnx export")):
        rows = tables[key].rows(op.name)
        if len(rows) > 1:
            out[label] = (f"{len(rows)} rows", ", ".join(f"`{r.fn.__name__}`" for r in rows))
        else:
            out[label] = ("row", "") if rows else ("decomposition" if op.decompose is not None else "none", "")
    return out


@dataclass(frozen=True)
class OpRow:
    name: str
    group: str
    doc: str
    inputs: str
    attrs: str
    types: str
    gradient: str
    backends: dict


def op_rows(tables: dict | None = None) -> list[OpRow]:
    """Every op, by group then name; backends filled only when ``tables`` is given."""
    rows = [OpRow(name, group_of(op), op.doc, inputs_of(op), attrs_of(op), types_of(op), gradient_of(op),
                  backends_of(op, tables) if tables is not None else {})
            for name, op in all_ops().items()]
    return sorted(rows, key=lambda r: (r.group, r.name))


def markdown(rows: list[OpRow]) -> str:
    """docs/ops.md."""
    lines = [
        "# Ops",
        "",
        f"<!-- Generated by `{COMMAND}` from the op registry and the backends' lowering tables. "
        "Do not edit: change the op's `defop` (graphdsl/ops/<group>.py) or a table row, then rerun. -->",
        "",
        f"Generated by `{COMMAND}`; `tests/test_ops_doc.py` fails when it is stale. "
        f"{len(rows)} ops, grouped by the file declaring them (`graphdsl/ops/<group>.py`; each "
        "backend's rows for a group are in the file of the same name). What every backend does at the "
        "edges (NaN, -inf rows, integer overflow, out-of-range indices, cast rounding) is in "
        "[semantics.md](semantics.md).",
        "",
        "- **types**: the dtypes the type rule takes and the result's dtype; `float` is every float "
        "dtype (float64, float32, float16, bfloat16), `int` every integer dtype (int8 to int64, uint8 "
        "to uint64), `any dtype` all of those and bool. Only "
        "`cast` takes or gives the storage dtypes (float8, float4, int4, int2).",
        "- **gradient**: a VJP rule of its own, through its decomposition, or none.",
        "- **numpy**: the op's reference implementation (the specification every backend is checked "
        "against). **llvm, cuda**: a row of the TVM table (`backends/tvm/rules/`). **onnx export**: a "
        "row of the export table (`backends/onnx/lower/`). `decomposition`: the backend lowers the ops "
        "the op decomposes into.",
        "",
        "| op | group | gradient | numpy | llvm, cuda | onnx export |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r.backends[k][0] for k in BACKENDS]
        lines.append(f"| [`{r.name}`](#{r.name}) | {r.group} | {r.gradient} | " + " | ".join(cells) + " |")
    for group in sorted({r.group for r in rows}):
        lines += ["", f"## {group} ops", "", f"Declared in `graphdsl/ops/{group}.py`."]
        for r in (r for r in rows if r.group == group):
            lines += ["", f"### {r.name}", "", r.doc, "",
                      f"- inputs: {r.inputs}",
                      f"- attributes: {r.attrs}",
                      f"- types: {r.types}",
                      f"- gradient: {r.gradient}"]
            lines += [f"- {backend}: {how}" + (f" ({detail})" if detail else "")
                      for backend, (how, detail) in r.backends.items()]
    return "\n".join(lines) + "\n"


# -- the command -----------------------------------------------------------------------------------
@click.command("ops")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a table.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the op reference as Markdown to this file (`graphdsl ops --markdown docs/ops.md` "
                   "regenerates the project's docs/ops.md), including which backends lower each op.")
def ops_command(as_json: bool, markdown_path: Path | None):
    """List every op in the registry: what it computes, attributes, gradient rule, decomposition."""
    if markdown_path is not None:
        from graphdsl.files import atomic_write_text
        try:
            tables = lowering_tables()
        except ImportError as e:
            raise click.ClickException(f"the op reference reads the TVM and ONNX lowering tables, which "
                                       f"need tvm and onnx installed: {e}") from None
        text = markdown(op_rows(tables))
        atomic_write_text(markdown_path, text)
        click.echo(f"wrote {markdown_path} ({len(all_ops())} ops)")
        return
    ops = all_ops()
    rows = [{"op": r.name, "group": r.group, "attrs": {k: repr(v) for k, v in ops[r.name].attrs.items()},
             "primitive": ops[r.name].is_primitive, "gradient": r.gradient,
             "decomposition": ops[r.name].decompose is not None, "types": r.types, "doc": r.doc}
            for r in sorted(op_rows(), key=lambda r: r.name)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(r["op"]) for r in rows)
    for r in rows:
        attrs = ", ".join(f"{k}={v}" for k, v in r["attrs"].items())
        kind = "" if r["primitive"] else " [composite]"
        click.echo(f"{r['op']:<{width}}  ({attrs}){kind}  grad: {r['gradient']}")
        click.echo(f"{'':<{width}}  {r['doc']}")
    click.echo(f"\n{len(rows)} ops (docs/ops.md has their types and backends)")
