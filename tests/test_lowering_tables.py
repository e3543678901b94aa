"""Every backend's lowering table against the op registry, and the rule that files mirror op groups.

Each op has a row or a decomposition on every backend; no table keeps rows for ops that no longer
exist; and every row is registered by the file named like its op's group::

    graphdsl/ops/<group>.py <-> backends/tvm/rules/<group>.py <-> backends/onnx/lower/<group>.py
                            <-> tests/optable/<group>.py

so a reader finds every backend's row for an op by the op's name. Each failure lists every offender
at once, grouped, with the file to fix. The tables are graphdsl.lowering.LoweringTable objects;
tests/test_lowering_table_type.py tests the type itself.
"""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from graphdsl import registry
from tests.framework import op_groups, optable_modules

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Backend:
    """Where one backend keeps its table, and the package of rule files that fills it."""
    name: str
    needs: str          # the package it cannot be imported without
    rules: str          # importing this package fills the table
    table_module: str
    table_name: str

    @property
    def rules_dir(self) -> str:
        return self.rules.replace(".", "/")

    def table(self):
        pytest.importorskip(self.needs)
        importlib.import_module(self.rules)
        return getattr(importlib.import_module(self.table_module), self.table_name)


TVM = Backend("tvm", "tvm", "backends.tvm.rules", "backends.tvm.table", "TVM")
EXPORT = Backend("onnx export", "onnx", "backends.onnx.lower", "backends.onnx.table", "EXPORT")
IMPORT = Backend("onnx import", "onnx", "graphdsl.onnx", "graphdsl.onnx.table", "IMPORT")
OP_BACKENDS = [pytest.param(b, id=b.name.replace(" ", "_")) for b in (TVM, EXPORT)]


def listing(by_group: dict[str, list[str]]) -> str:
    """``  group: a, b, c`` lines, one per group, sorted."""
    return "\n".join(f"  {group}: {', '.join(sorted(names))}" for group, names in sorted(by_group.items()))


def test_every_op_is_found_in_the_module_declaring_it():
    """op_groups() reads graphdsl/ops/*.py: it must find every registered op, or the checks below
    would pass by not looking."""
    unfound = sorted(set(registry.all_ops()) - set(op_groups()))
    assert not unfound, f"ops whose defop call tests/framework.op_groups does not find: {unfound}"


@pytest.mark.parametrize("backend", OP_BACKENDS)
def test_every_op_has_a_row_or_a_decomposition(backend):
    table, groups = backend.table(), op_groups()
    missing = defaultdict(list)
    for name, op in registry.all_ops().items():
        if name not in table and op.decompose is None:
            missing[groups.get(name, "?")].append(name)
    assert not missing, (f"ops with neither a {backend.name} row nor a decomposition (add the row to "
                         f"{backend.rules_dir}/<group>.py):\n{listing(missing)}")


@pytest.mark.parametrize("backend", OP_BACKENDS + [pytest.param(IMPORT, id="onnx_import")])
def test_no_table_has_rows_for_ops_that_no_longer_exist(backend):
    table = backend.table()
    if backend is IMPORT:
        import onnx
        known, what = {s.name for s in onnx.defs.get_all_schemas()}, "ONNX op types onnx.defs knows"
    else:
        known, what = set(registry.all_ops()), "registered ops"
    stale = table.stale(known)
    assert not stale, f"{backend.name} rows for keys that are not {what}: {stale}"


# -- files mirror the op groups -------------------------------------------------------------------
# The module that registered a row is read from the call stack at registration: a row's function
# may be made by a helper elsewhere (common.wide(R.exp) is defined in rules/common.py), so
# ``row.fn.__module__`` does not always name the rule file. Recording needs the rule modules
# imported afresh, hence a child interpreter.
RECORD = r"""
import importlib, json, sys
from graphdsl import lowering

rules, table_module, table_name, out = sys.argv[1:]
assert rules not in sys.modules, f"{rules} was imported before its registrations could be recorded"
seen = []
register = lowering.LoweringTable.register


def recording(self, key, fn=None, **options):
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_name != "<module>":
        frame = frame.f_back
    module = frame.f_globals.get("__name__", "?") if frame is not None else "?"
    seen.append((self, (key,) if isinstance(key, str) else tuple(key), module))
    return register(self, key, fn, **options)


lowering.LoweringTable.register = recording
importlib.import_module(rules)
table = getattr(importlib.import_module(table_module), table_name)
with open(out, "w") as f:
    json.dump([[key, module] for t, keys, module in seen if t is table for key in keys], f)
"""


def registrations(backend: Backend, tmp_path) -> list[tuple[str, str]]:
    """(op, module that registered the row) for every row of the backend's table, from a fresh
    interpreter importing the rule files with LoweringTable.register recording its caller."""
    backend.table()            # skips without the backend's package; fails here on an import error
    out = tmp_path / "rows.json"
    run = subprocess.run([sys.executable, "-c", RECORD, backend.rules, backend.table_module,
                          backend.table_name, str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"recording the {backend.name} registrations failed:\n{run.stderr[-3000:]}"
    return [tuple(r) for r in json.loads(out.read_text())]


@pytest.mark.parametrize("backend", OP_BACKENDS)
def test_every_row_is_registered_by_the_rule_file_of_its_op_group(backend, tmp_path):
    groups = op_groups()
    known_groups = set(groups.values())
    recorded = registrations(backend, tmp_path)
    assert {op for op, _ in recorded} == set(backend.table().keys()), "the recording missed rows"
    misplaced = []
    for op, module in sorted(set(recorded)):
        package, _, stem = module.rpartition(".")
        want = groups.get(op)
        if want is None:
            continue                # a stale row: test_no_table_has_rows_for_ops_that_no_longer_exist
        if package == backend.rules and stem == want:
            continue
        if package != backend.rules:
            where = f"{module} (not a file of {backend.rules_dir}/)"
        elif stem not in known_groups:
            where = f"{backend.rules_dir}/{stem}.py, which mirrors no graphdsl/ops module"
        else:
            where = f"{backend.rules_dir}/{stem}.py, the file of the {stem} group"
        misplaced.append(f"  {op} (declared in graphdsl/ops/{want}.py): registered by {where}; "
                         f"move the row to {backend.rules_dir}/{want}.py")
    assert not misplaced, f"{backend.name} rows outside the file of their op's group:\n" + "\n".join(misplaced)


def test_each_optable_file_holds_the_rows_of_its_op_group_only():
    groups = op_groups()
    known_groups = set(groups.values())
    wrong = []
    for group, module in optable_modules().items():
        if group not in known_groups:
            wrong.append(f"  tests/optable/{group}.py mirrors no graphdsl/ops module: move its rows "
                         f"({', '.join(sorted({r.op for r in module.OPS}))}) to their groups' files")
            continue
        for op in sorted({r.op for r in module.OPS if groups.get(r.op, group) != group}):
            wrong.append(f"  {op}: in tests/optable/{group}.py, declared in graphdsl/ops/{groups[op]}.py; "
                         f"move it to tests/optable/{groups[op]}.py")
    assert not wrong, "op-table rows outside the file of their op's group:\n" + "\n".join(wrong)
