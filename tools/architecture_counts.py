"""The architecture figures of issue #12, measured the same way before and after a change.

    .venv/bin/python tools/architecture_counts.py [ROOT]

Prints: import cycles among the library packages (every import statement, lazy ones included;
a plain ``import a.b`` inside ``a`` is not an edge to ``a``, a name taken from ``a`` is), backend registries (tables of rows
keyed by op), ``id(`` calls, and for softmax, layer_norm and attention the library files whose
code names the op (its declaration, every backend row, the passes that match it, its op-table
entry; docstrings and comments do not count): what a change to the op has to read. tests/test_architecture.py holds the rules; this prints
the numbers.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import networkx as nx

PACKAGES = ("graphdsl", "passes", "backends", "models")
OPS = ("softmax", "layer_norm", "attention")


def library_files(root: Path):
    for pkg in PACKAGES:
        yield from sorted((root / pkg).rglob("*.py"))


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> nx.DiGraph:
    """module -> modules it imports (anywhere in the file), restricted to the library."""
    mods = {module_name(root, p): p for p in library_files(root)}
    graph = nx.DiGraph()
    for mod, path in mods.items():
        graph.add_node(mod)
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):   # ``import a.b``: takes no name from a package above
                targets = [(a.name, False) for a in node.names]
            elif isinstance(node, ast.ImportFrom):   # each name taken: a submodule, or from the module
                base = _absolute(mod, is_pkg, node.level, node.module)
                targets = [(f"{base}.{a.name}", True) for a in node.names]
            else:
                continue
            for target, takes_name in targets:
                parts = target.split(".")
                while parts and ".".join(parts) not in mods:
                    parts.pop()
                found = ".".join(parts)
                if found and found != mod and (takes_name or not mod.startswith(found + ".")):
                    graph.add_edge(mod, found)
    return graph


def _absolute(mod: str, is_pkg: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def cycles(root: Path) -> list[list[str]]:
    return [sorted(c) for c in nx.strongly_connected_components(import_graph(root)) if len(c) > 1]


def registries(root: Path) -> list[str]:
    """Module-level tables of backend rows: LoweringTable instances, and the dicts they replaced."""
    pattern = re.compile(r"^(RULES|TABLE|LOWERINGS|HANDLERS)\b[^=\n]*=|^(\w+)\s*=\s*LoweringTable\(", re.M)
    found = []
    for path in library_files(root):
        rel = path.relative_to(root).parts
        if rel[0] == "passes" or rel[:2] == ("backends", "fuzz"):   # rewrite lists, tolerance tables: not rows
            continue
        for m in pattern.finditer(path.read_text()):
            found.append(f"{path.relative_to(root)}:{m.group(1) or m.group(2)}")
    return found


def op_files(root: Path, op: str) -> list[str]:
    """Library files whose code names ``op``: the string ``"op"`` (not in a docstring), or a name,
    attribute or function called ``op``. Docstrings and comments do not count; models and the
    command line use ops, they do not define them."""
    paths = list(library_files(root)) + sorted((root / "tests" / "optable").glob("*.py"))
    return [str(p.relative_to(root)) for p in paths
            if "cli" not in p.parts and p.parts[len(root.parts)] != "models" and _names(p, op)]


def _names(path: Path, op: str) -> bool:
    tree = ast.parse(path.read_text())
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)
                  and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and n.value == op and id(n) not in docstrings:
            return True
        if (isinstance(n, ast.Name) and n.id == op) or (isinstance(n, ast.Attribute) and n.attr == op):
            return True
        if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == op:
            return True
    return False


def main(argv: list[str]) -> None:
    root = Path(argv[0] if argv else ".").resolve()
    found = cycles(root)
    print(f"import cycles: {len(found)} {[len(c) for c in found]}")
    for c in found:
        print("   ", ", ".join(c))
    regs = registries(root)
    print(f"registries: {len(regs)} {regs}")
    calls = {p: len(re.findall(r"\bid\(", p.read_text())) for p in library_files(root)}
    print(f"id( calls: {sum(calls.values())} in {sum(1 for v in calls.values() if v)} files")
    for op in OPS:
        files = op_files(root, op)
        print(f"files naming {op}: {len(files)} {files}")
    if (root / "graphdsl" / "lowering.py").exists() and root == Path(__file__).resolve().parent.parent:
        for op, files in row_files(root).items():
            print(f"files declaring {op} or holding a row for it: {len(files)} {files}")


def row_files(root: Path) -> dict[str, list[str]]:
    """For this tree (LoweringTables): the file declaring each op, each backend table's rows for
    it, and its op-table entry: the files an op's change is written in."""
    import importlib
    import inspect
    sys.path.insert(0, str(root))
    from graphdsl import registry
    importlib.import_module("backends.tvm.rules")
    importlib.import_module("backends.onnx.lower")
    from backends.onnx.table import EXPORT
    from backends.tvm.table import TVM
    from tests.framework import op_groups
    groups = op_groups()
    out = {}
    for op in OPS:
        files = {inspect.getsourcefile(registry.get(op).ref)}
        for table in (TVM, EXPORT):
            files |= {inspect.getsourcefile(r.fn) for r in table.rows(op)}
        files.add(str(root / "tests" / "optable" / f"{groups[op]}.py"))
        out[op] = sorted(str(Path(f).resolve().relative_to(root)) for f in files)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
