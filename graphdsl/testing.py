"""Compare backends in your own tests: ``assert_backends_agree`` and the pytest plugin.

    from graphdsl.testing import assert_backends_agree

    def test_block(graphdsl_target):                  # one test per target: test_block[numpy], [llvm], ...
        x = np.random.default_rng(0).standard_normal((2, 8)).astype("float32")
        assert_backends_agree(block, {"x": x}, targets=[graphdsl_target], grad=True)

``assert_backends_agree`` runs the graph (or traces the function) on NumPy, the reference, and on
each target, and raises an AssertionError naming the output, its worst element, both values, the
tolerance and the first node, in graph order, where the target already disagrees, with its op,
type and the user's source line. Tolerances are the differential fuzzer's, by dtype and
reduction length (``backends/fuzz/tolerance.py``, docs/semantics.md "Tolerances").

Installed with the package, the plugin (the ``pytest11`` entry point ``graphdsl``) adds
``--graphdsl-targets numpy,llvm`` (default: numpy and those of llvm, onnxruntime and cuda this
machine can run), the ``graphdsl_target`` fixture that runs a test once per chosen target (a
target this machine cannot run is skipped with the reason), and the marker
``@pytest.mark.graphdsl_targets("numpy", "llvm")`` that restricts a test to some targets.

The module sits at the top like the command line: it imports the backends, and no module of the
library imports it. The assertion works without pytest; the plugin's hooks exist only with it.
"""
from __future__ import annotations

import functools
import importlib.util
import inspect
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .errors import GraphDSLError, TargetError
from .graph import Graph
from .node import Node, topo_sort
from .printer import format_node, value_names

try:
    import pytest
except ImportError:      # the assertion works without pytest; the plugin needs it
    pytest = None

REFERENCE = "numpy"
OPTIONAL = ("llvm", "onnxruntime", "cuda")   # the targets beside the reference, in the default order
COTANGENT_SEED = 0
LISTED = 4                                   # outputs a message describes, the furthest off first
_SESSIONS: list[list[str] | None] = []       # the --graphdsl-targets of each active pytest session


# -- which targets this machine can run ----------------------------------------------------------

def _missing(module: str) -> bool:
    if module in sys.modules:            # ``sys.modules[name] = None`` blocks an import
        return sys.modules[module] is None
    return importlib.util.find_spec(module) is None


@functools.cache
def _gpu_reason() -> str | None:
    if not any(Path("/dev").glob("nvidia[0-9]*")) and shutil.which("nvidia-smi") is None:
        return "no CUDA GPU"             # known without importing TVM
    from backends.tvm.cuda import gpu_available
    return None if gpu_available() else "no CUDA GPU (TVM sees no CUDA device 0)"


def unavailable(target: str) -> str | None:
    """Why this machine cannot run ``target`` ("no CUDA GPU", ...), or None when it can."""
    if target in ("llvm", "cuda") and _missing("tvm"):
        return "TVM is not installed (the llvm and cuda targets need apache-tvm)"
    if target == "onnxruntime":
        for module in ("onnxruntime", "onnx"):
            if _missing(module):
                return f"{module} is not installed"
    if target == "cuda":
        return _gpu_reason()
    return None


def default_targets() -> list[str]:
    """numpy, then each of llvm, onnxruntime and cuda that this machine can run."""
    return [REFERENCE] + [t for t in OPTIONAL if unavailable(t) is None]


def parse_targets(text: str) -> list[str]:
    """``"numpy,llvm"`` -> ``["numpy", "llvm"]``, each a known target."""
    from backends.targets import TARGETS
    names = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not names:
        raise TargetError("no target given", hint="e.g. --graphdsl-targets numpy,llvm")
    for name in names:
        _check_known(name, TARGETS)
    return names


def _check_known(name: str, targets) -> None:
    if name not in targets:
        raise TargetError(f"unknown target {name!r}", hint=f"available targets: {', '.join(targets)}")


def selected_targets() -> list[str]:
    """The targets of the running pytest session's --graphdsl-targets, or the default ones."""
    chosen = _SESSIONS[-1] if _SESSIONS else None
    return list(chosen) if chosen is not None else default_targets()


# -- the assertion -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Bounds:
    """What a float element may differ by: ``atol + rtol * |reference|``."""

    atol: float
    rtol: float


def assert_backends_agree(graph_or_fn, inputs: Mapping, targets: Sequence[str] | None = None,
                          grad: bool = False, specs: Mapping | None = None,
                          rtol: float | None = None, atol: float | None = None) -> None:
    """Run ``graph_or_fn`` on numpy and on each of ``targets``; raise AssertionError where one differs.

    ``graph_or_fn``: a Graph, or a function or ``nn.Module`` to trace with ``specs`` (default: each
    argument's type read from its array in ``inputs``, so shapes are static). ``inputs``: an array
    for every input and parameter. ``targets``: default, those of --graphdsl-targets under pytest
    (else numpy and every other target this machine runs); a target given here that this machine
    cannot run skips the test under pytest (else raises TargetError).

    ``grad=True`` compares the gradients too, with respect to every float input and parameter, of
    the loss: the output ``loss`` when it is a float scalar, or the only output when that is one;
    otherwise ``sum(y * c_y)`` summed over the float outputs ``y``, each ``c_y`` a fixed random
    array of ``y``'s shape (fed as the input ``cotangent/<y>``): a plain sum would hide errors
    that sum to nothing (every row of a softmax sums to one).

    Float outputs agree within the fuzzer's formula (dtype, reduction length, magnitudes);
    ``rtol``/``atol`` replace its parts. Integer and bool outputs must be equal.
    """
    __tracebackhide__ = True     # pytest shows the caller's line and the message, not this code
    targets = _targets_to_run(targets)
    graph = graph_or_fn if isinstance(graph_or_fn, Graph) else _trace(graph_or_fn, inputs, specs)
    inputs = dict(inputs)
    if grad:
        graph, inputs = gradient_graph(graph, inputs)
    from backends.fuzz import run, tolerance
    ref = run.reference(graph, inputs)
    if isinstance(ref, BaseException):
        raise ref
    want, values = ref
    values.update({n: inputs[n.name] for n in graph.params.values() if n.name in inputs})
    facts = Facts(graph, values, {n: tolerance.magnitude(v) for n, v in values.items()},
                  {n: tuple(np.shape(v)) for n, v in values.items()}, atol, rtol)
    problems, cause = [], None
    for target in targets:
        try:
            got = _compile(graph, target)(inputs)
        except Exception as e:   # noqa: BLE001  (any failure of a target is a disagreement)
            problems.append(f"{target} failed on graph {graph.name!r}: {type(e).__name__}: {e}")
            cause = cause or e
            continue
        bad = [d for d in (facts.differ(target, name, got.get(name), want[name]) for name in want) if d]
        if bad:
            problems.append(_describe(bad) + "\n  " + first_divergence(facts, target, inputs, [d.node for d in bad]))
    if problems:
        what = " on the gradient graph (its outputs, the loss and grad/<name>)" if grad else ""
        raise AssertionError(f"{len(problems)} of {len(targets)} target(s) disagree with numpy{what}:\n"
                             + "\n".join(problems)) from cause


def _describe(bad: list["Difference"]) -> str:
    worst = sorted(bad, key=lambda d: -d.ratio)
    lines = [d.describe() for d in worst[:LISTED]]
    if len(worst) > LISTED:
        rest = [d.what.removeprefix("output ") for d in worst[LISTED:]]
        lines.append(f"and {len(rest)} more output(s) beyond tolerance: {', '.join(rest)}")
    return "\n".join(lines)


def _compile(graph: Graph, target: str):
    import backends
    return backends.compile(graph, target)


def _targets_to_run(targets) -> list[str]:
    if targets is None:
        return [t for t in selected_targets() if unavailable(t) is None]
    from backends.targets import TARGETS
    targets = [targets] if isinstance(targets, str) else list(targets)
    for t in targets:
        _check_known(t, TARGETS)
        reason = unavailable(t)
        if reason is not None:
            if pytest is not None and _SESSIONS:
                pytest.skip(f"{t}: {reason}")
            raise TargetError(f"cannot run target {t!r} here: {reason}")
    return targets


def _trace(fn: Callable, inputs: Mapping, specs: Mapping | None) -> Graph:
    from .tracing import trace
    if specs is None:
        specs = {k: np.asarray(inputs[k]) for k in _argument_names(fn, inputs)}
    return trace(fn, **specs)


def _argument_names(fn, inputs: Mapping) -> list[str]:
    """The names in ``inputs`` that ``fn`` takes as arguments (a Module's parameters excluded)."""
    owner = fn if callable(getattr(fn, "named_parameters", None)) else getattr(fn, "__self__", None)
    params = set(dict(owner.named_parameters())) if callable(getattr(owner, "named_parameters", None)) else set()
    target = fn.forward if owner is fn else fn
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return [k for k in inputs if k not in params]
    args = signature.parameters
    if any(p.kind is p.VAR_KEYWORD for p in args.values()):
        return [k for k in inputs if k not in params]
    return [k for k in inputs if k in args]


def gradient_graph(graph: Graph, inputs: Mapping) -> tuple[Graph, dict]:
    """The graph of ``graph``'s outputs, its loss and ``grad/<name>`` for every float input and
    parameter, and the inputs to run it on (with the cotangents when the loss is built)."""
    from .autodiff import grad
    wrt = [k for k, n in {**graph.inputs, **graph.params}.items() if n.type.dtype.is_float]
    if not wrt:
        raise GraphDSLError(f"grad=True: graph {graph.name!r} has no float input or parameter to "
                            "differentiate with respect to")
    loss = _scalar_loss(graph)
    if loss is not None:
        return grad(graph, wrt=wrt, loss=loss), dict(inputs)
    floats = [k for k, n in graph.outputs.items() if n.type.dtype.is_float]
    if not floats:
        raise GraphDSLError(f"grad=True: graph {graph.name!r} has no float output to differentiate",
                            hint=f"its outputs: {', '.join(f'{k} {n.type}' for k, n in graph.outputs.items())}")
    with_loss, loss = _cotangent_loss(graph, floats)
    want = _compile(graph, REFERENCE)(dict(inputs))
    rng = np.random.default_rng(COTANGENT_SEED)
    feed = dict(inputs)
    for k in floats:
        feed[f"cotangent/{k}"] = rng.standard_normal(np.shape(want[k])).astype(want[k].dtype)
    return grad(with_loss, wrt=wrt, loss=loss), feed


def _scalar_loss(graph: Graph) -> str | None:
    def scalar(name):
        node = graph.outputs[name]
        return node.type.rank == 0 and node.type.dtype.is_float
    if "loss" in graph.outputs and scalar("loss"):
        return "loss"
    if len(graph.outputs) == 1 and scalar(next(iter(graph.outputs))):
        return next(iter(graph.outputs))
    return None


def _cotangent_loss(graph: Graph, floats: list[str]) -> tuple[Graph, str]:
    """``graph`` with one more output: ``sum(y * cotangent/y)`` over the float outputs ``y``,
    summed in float64 when every one is float64, else in float32."""
    from .tracing import trace
    loss_name = "loss" if "loss" not in graph.outputs else "cotangent/loss"
    acc = "float64" if all(graph.outputs[k].type.dtype.name == "float64" for k in floats) else "float32"

    def with_loss(**xs):
        outs = graph({k: xs[k] for k in graph.inputs})
        terms = [(outs[k] * xs[f"cotangent/{k}"]).astype(acc).sum() for k in floats]
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return {**outs, loss_name: total}

    specs = {**{k: n.type for k, n in graph.inputs.items()},
             **{f"cotangent/{k}": graph.outputs[k].type for k in floats}}
    return trace(with_loss, name=graph.name, **specs), loss_name


# -- what differs and where it starts ------------------------------------------------------------

@dataclass
class Difference:
    """One output (or node) of a target that differs from the reference, for the message."""

    target: str
    what: str              # "output 'y'" or "node %7"
    node: Node
    text: str              # worst element, both values, the tolerance
    ratio: float           # the worst error divided by its allowance (inf: no tolerance holds)

    def describe(self) -> str:
        return f"{self.target} disagrees with numpy on {self.what} ({self.node.type}): {self.text}"


@dataclass
class Facts:
    """The reference's values at every node, and how a target's value is judged against them."""

    graph: Graph
    values: dict            # node -> the reference's value
    magnitudes: dict        # node -> its largest finite |value|
    shapes: dict            # node -> its shape
    atol: float | None      # the caller's, replacing the formula's
    rtol: float | None

    def bounds(self, node: Node) -> Bounds | None:
        """None for integers and bools (they must be equal)."""
        if not node.type.dtype.is_float:
            return None
        from backends.fuzz.tolerance import tolerance_for
        formula = tolerance_for(self.graph, node, self.magnitudes, self.shapes)
        return Bounds(formula.atol if self.atol is None else self.atol,
                      formula.rtol if self.rtol is None else self.rtol)

    def differ(self, target: str, name: str, got, want, node: Node | None = None) -> Difference | None:
        node = self.graph.outputs[name] if node is None else node
        what = f"output {name!r}" if name in self.graph.outputs and self.graph.outputs[name] is node \
            else f"node {value_names(self.graph)[node]}"
        if got is None:
            return Difference(target, what, node, f"{target} returns no {name!r}", float("inf"))
        bounds = self.bounds(node)
        from backends.fuzz.tolerance import disagreement
        ratio = disagreement(got, want, bounds)
        if ratio is None:
            return None
        return Difference(target, what, node, worst_element(target, np.asarray(got), np.asarray(want), bounds),
                          ratio)


def worst_element(target: str, got: np.ndarray, want: np.ndarray, bounds: Bounds | None) -> str:
    """The element furthest outside its tolerance, its index, both values and the tolerance."""
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"{target} gives {got.dtype}{list(got.shape)}, numpy {want.dtype}{list(want.shape)}"
    g, w = got.astype(np.float64), want.astype(np.float64)
    equal = (g == w) | (np.isnan(g) & np.isnan(w))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = np.where(equal, 0.0, np.nan_to_num(np.abs(g - w), nan=np.inf))
        if bounds is None:
            over, rule = diff, "must be equal"
        else:
            allowed = bounds.atol + bounds.rtol * np.abs(np.where(np.isfinite(w), w, 0.0))
            over = np.where(diff == 0, 0.0, diff / allowed)      # x / 0 = inf where nothing is allowed
            rule = f"tolerance {bounds.atol:.2g} + {bounds.rtol:.2g}*|numpy|"
    flat = int(np.argmax(over)) if over.size else 0
    index = tuple(int(i) for i in np.unravel_index(flat, want.shape)) if want.ndim else ()
    count = int(np.sum(diff > 0)) if bounds is None else int(np.sum(over > 1))
    return (f"worst |diff| {_number(diff[index])} at index {index}: {target} {_number(got[index])}, "
            f"numpy {_number(want[index])} ({rule}; {count} of {want.size} elements off)")


def _number(x) -> str:
    x = np.asarray(x)
    if x.dtype.kind in "biu":
        return str(x.item())
    return f"{float(x):.6g}"


def first_divergence(facts: Facts, target: str, inputs: Mapping, outputs: Sequence[Node]) -> str:
    """The earliest node, in graph order, above ``outputs`` whose value on ``target`` differs:
    the graph is compiled again with every such node as an output of its own."""
    cone = set(topo_sort(list(outputs)))
    nodes = [n for n in facts.graph.nodes if n in cone and not n.is_source]
    every = {f"node/{i}": n for i, n in enumerate(nodes)}
    try:
        got = _compile(facts.graph.with_outputs(every), target)(dict(inputs))
    except Exception as e:   # noqa: BLE001  (the message still names the outputs)
        return (f"(the first diverging node is unknown: {target} fails on the graph with every node "
                f"as an output: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    names = value_names(facts.graph)
    for key, node in every.items():
        found = facts.differ(target, key, got.get(key), facts.values[node], node)
        if found is not None:
            where = "" if node.loc is None else f" at {node.loc.short}" + (f"   {node.loc.code}" if node.loc.code else "")
            return f"first diverging node {format_node(node, names)}{where}\n    {found.text}"
    return (f"(with every node as an output of its own, {target} agrees at every node: the "
            "difference comes from how it computes the graph as given, e.g. its fused kernels)")


# -- the pytest plugin ---------------------------------------------------------------------------

if pytest is not None:
    def pytest_addoption(parser):
        group = parser.getgroup("graphdsl", "graphdsl backend comparison")
        group.addoption("--graphdsl-targets", metavar="T1,T2", default=None,
                        help="the targets the graphdsl_target fixture runs each test on and "
                             "assert_backends_agree compares with numpy (default: numpy and those of "
                             "llvm, onnxruntime, cuda this machine can run)")

    def pytest_configure(config):
        config.addinivalue_line("markers", "graphdsl_targets(*targets): run this test's graphdsl_target "
                                           "only on these targets (each one unavailable is skipped)")
        text = config.getoption("graphdsl_targets", None)
        try:
            _SESSIONS.append(parse_targets(text) if text is not None else None)
        except TargetError as e:
            raise pytest.UsageError(f"--graphdsl-targets: {e}") from None

    def pytest_unconfigure(config):
        if _SESSIONS:
            _SESSIONS.pop()

    def pytest_generate_tests(metafunc):
        if "graphdsl_target" not in metafunc.fixturenames:
            return
        explicit = _SESSIONS[-1] if _SESSIONS else None
        chosen = explicit if explicit is not None else default_targets()
        marker = metafunc.definition.get_closest_marker("graphdsl_targets")
        names = list(marker.args) if marker else chosen
        from backends.targets import TARGETS
        params = []
        for name in names:
            try:
                _check_known(name, TARGETS)
            except TargetError as e:
                pytest.fail(f"{metafunc.definition.nodeid}: graphdsl_targets marker: {e}", pytrace=False)
            reason = unavailable(name)
            if reason is None and explicit is not None and name not in explicit:
                reason = f"not among --graphdsl-targets {','.join(explicit)}"
            marks = [pytest.mark.skip(reason=f"{name}: {reason}")] if reason else []
            params.append(pytest.param(name, marks=marks, id=name))
        metafunc.parametrize("graphdsl_target", params, indirect=True)

    @pytest.fixture
    def graphdsl_target(request):
        """The graphdsl target this test runs on, one test per target of --graphdsl-targets
        (default: numpy and the available of llvm, onnxruntime, cuda); restrict it with
        ``@pytest.mark.graphdsl_targets("numpy", "llvm")``."""
        return request.param


__all__ = ["assert_backends_agree", "default_targets", "gradient_graph", "parse_targets",
           "selected_targets", "unavailable"]
