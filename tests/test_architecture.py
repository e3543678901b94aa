"""The architecture as tests: no import cycles, the layering of the four packages, no private imports.

The import graph is read from the source with ``ast`` (every import statement counts, the lazy ones
inside functions too: a lazy import is still a dependency, it only hides the cycle until run time).
A plain ``import a.b`` from inside ``a`` adds no edge to ``a`` (it runs ``a`` anyway); a name taken
from a package above (``from . import compile_for`` in ``backends/tvm/cuda.py``) is an edge to that
package's ``__init__`` like any other. The layering rules are those of docs/architecture.md ("Layers"):

    graphdsl (the core)   imports none of the others (graphdsl/cli excepted: it is the command line)
    passes                imports only graphdsl
    backends              imports graphdsl and passes
    models                imports graphdsl, backends and passes
    graphdsl.cli          is imported by no one outside it (``python -m graphdsl`` is its entry)
    graphdsl.testing      the pytest plugin: a top layer like the command line (it compares the
                          backends); no module of the four packages imports it, tests do
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("graphdsl", "passes", "backends", "models")
CLI = "graphdsl.cli"
CLI_ENTRY = "graphdsl.__main__"   # ``python -m graphdsl``: part of the command line
TESTING = "graphdsl.testing"      # the pytest plugin users' tests load: it may import every package
ALLOWED = {                      # package -> the packages of ours it may import (itself included)
    "graphdsl": {"graphdsl"},
    "passes": {"passes", "graphdsl"},
    "backends": {"backends", "graphdsl", "passes"},
    "models": {"models", "graphdsl", "backends", "passes"},
}


@dataclass(frozen=True)
class Import:
    """One import statement's target inside our packages."""

    module: str      # the importing module
    target: str      # the module it names (the longest prefix that is a module of ours)
    names: tuple     # the names a ``from ... import`` takes from it (empty for ``import a.b``)
    line: int
    statement: str   # as written, made absolute: ``from graphdsl.ops.common import sum_to``

    @property
    def where(self) -> str:
        return f"{module_path(self.module)}:{self.line}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_path(module: str) -> str:
    return MODULES[module].relative_to(ROOT).as_posix()


def _modules(packages) -> dict[str, Path]:
    return {module_name(p): p for pkg in packages for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = _modules(PACKAGES + ("tests",))


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute module a (possibly relative) ``from`` import names."""
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _ours(dotted: str) -> str | None:
    """The longest prefix of ``dotted`` that is one of our modules (None for third-party code)."""
    parts = dotted.split(".")
    while parts and ".".join(parts) not in MODULES:
        parts.pop()
    return ".".join(parts) or None


def imports_of(module: str) -> list[Import]:
    """Every import statement of ``module`` that reaches one of our modules."""
    path = MODULES[module]
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _ours(alias.name)
                if target:
                    found.append(Import(module, target, (), node.lineno, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.level, node.module)
            for alias in node.names:   # ``from pkg import submodule`` names the submodule
                target = _ours(f"{base}.{alias.name}") or _ours(base)
                if target:
                    found.append(Import(module, target, (alias.name,), node.lineno,
                                        f"from {base} import {alias.name}"))
    return found


def import_graph() -> nx.DiGraph:
    """module -> module for our four packages; each edge keeps the import lines that make it."""
    graph = nx.DiGraph()
    for module in MODULES:
        if module.split(".")[0] not in PACKAGES:
            continue
        graph.add_node(module)
        for imp in imports_of(module):
            if imp.target == module:
                continue
            if module.startswith(imp.target + ".") and not imp.names:
                continue   # ``import a.b`` from inside a: it runs a anyway, and takes nothing from it
            if imp.target.split(".")[0] not in PACKAGES:
                continue
            if graph.has_edge(module, imp.target):
                graph.edges[module, imp.target]["lines"].append(imp.where)
            else:
                graph.add_edge(module, imp.target, lines=[imp.where])
    return graph


GRAPH = import_graph()


def _describe_cycle(graph: nx.DiGraph, members: set) -> str:
    edges = [f"      {a} -> {b}  ({', '.join(graph.edges[a, b]['lines'])})"
             for a in sorted(members) for b in sorted(graph.successors(a)) if b in members]
    return f"  {len(members)} modules: {', '.join(sorted(members))}\n" + "\n".join(edges)


def test_the_import_graph_has_no_cycle():
    cycles = [c for c in nx.strongly_connected_components(GRAPH) if len(c) > 1]
    assert not cycles, (f"{len(cycles)} import cycle(s); break each by moving the shared code down a "
                        f"layer or by binding a hook from the higher module:\n"
                        + "\n".join(_describe_cycle(GRAPH, c) for c in cycles))


def _package(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_the_layers_below_it(package):
    allowed = ALLOWED[package]
    wrong = [f"  {module} -> {target}  ({', '.join(GRAPH.edges[module, target]['lines'])})"
             for module, target in GRAPH.edges
             if _package(module) == package and _package(target) not in allowed and not _top(module)]
    assert not wrong, (f"{package} may import only {', '.join(sorted(allowed))}; these imports cross "
                       f"the layering:\n" + "\n".join(sorted(wrong)))


def _top(module: str) -> bool:
    """The command line and the test plugin: above every package, imported by none."""
    return module in (CLI, CLI_ENTRY, TESTING) or module.startswith(CLI + ".")


def test_no_package_imports_the_test_plugin():
    wrong = [f"  {module} -> {TESTING}  ({', '.join(GRAPH.edges[module, TESTING]['lines'])})"
             for module in GRAPH.predecessors(TESTING)] if TESTING in GRAPH else []
    assert not wrong, "graphdsl.testing is for tests; no module of the library may import it:\n" + "\n".join(wrong)


def test_only_the_command_line_imports_the_command_line():
    def in_cli(m):
        return m == CLI or m.startswith(CLI + ".") or m == CLI_ENTRY
    wrong = [f"  {module} -> {target}  ({', '.join(GRAPH.edges[module, target]['lines'])})"
             for module, target in GRAPH.edges if in_cli(target) and not in_cli(module)]
    assert not wrong, "graphdsl.cli is the top layer; nothing else may import it:\n" + "\n".join(wrong)


# Inside the core, each module imports only its own layer and the layers before it. The views of a
# graph sit below Graph (Graph's facade methods call them; they read graphs by their attributes),
# and the modules above tracing bind their hooks into it (registry.bind_tracer, graph.bind_inliner,
# tracing.bind_indexing) instead of being imported from below.
CORE_LAYERS = (
    ("errors", "dtypes", "types", "files", "progress", "weights"),
    ("registry", "lowering"),
    ("node",),
    ("printer", "verify", "serialize", "analysis"),
    ("graph",),
    ("tracing",),
    ("interpreter",),
    ("autodiff",),
    ("ops",),
    ("nn", "optim", "onnx"),
)
LAYER_OF = {name: i for i, layer in enumerate(CORE_LAYERS) for name in layer}


def _core_layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYER_OF.get(parts[1]) if parts[0] == "graphdsl" and len(parts) > 1 else None


def test_every_core_module_has_a_layer():
    loose = sorted(m for m in GRAPH.nodes if m.startswith("graphdsl.") and _core_layer(m) is None
                   and not _top(m))
    assert not loose, f"place these modules in CORE_LAYERS: {loose}"


def test_the_core_imports_only_its_own_layer_and_those_below():
    upward = [f"  {m} (layer {_core_layer(m)}) -> {t} (layer {_core_layer(t)})  "
              f"({', '.join(GRAPH.edges[m, t]['lines'])})"
              for m, t in GRAPH.edges
              if _core_layer(m) is not None and _core_layer(t) is not None and _core_layer(t) > _core_layer(m)]
    assert not upward, ("these core imports point up the layers "
                        f"({' < '.join('/'.join(layer) for layer in CORE_LAYERS)}):\n" + "\n".join(sorted(upward)))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_imports() -> list[str]:
    """``from m import _name`` (or from a module named ``_m``) across our modules and the tests."""
    found = []
    for module in MODULES:
        for imp in imports_of(module):
            private_module = any(_private(part) for part in imp.target.split("."))
            taken = [n for n in imp.names if _private(n)]
            if private_module or taken:
                found.append(f"  {imp.where}: {imp.statement}")
    return found


def test_no_module_imports_another_modules_private_names():
    found = private_imports()
    assert not found, ("private names (a leading underscore, or in a module whose name has one) are "
                       "private to their module; make the name public or move it where both can "
                       "use it:\n" + "\n".join(found))


def test_the_checker_sees_lazy_imports_and_relative_ones():
    """The graph is only as good as its reader: a lazy import inside a function counts, and a
    relative one resolves to the module it names."""
    assert ("models.gpt", "backends") in GRAPH.edges          # ``import backends`` inside a method
    assert ("backends", "backends.compare") in GRAPH.edges    # ``from .compare import compare``
    assert ("graphdsl.ops.nn", "graphdsl.ops.reduce") in GRAPH.edges
