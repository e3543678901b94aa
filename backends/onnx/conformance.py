"""ONNX's own backend test suite, run on our importer and backends (issue 13).

The onnx wheel ships its operator conformance cases (``onnx.backend.test``: a model, its inputs and
the outputs ONNX's reference computes) and the ``onnx.backend.base.Backend`` interface they are run
through. ``GraphdslBackend`` is that interface over ``graphdsl.from_onnx`` and ``backends.compile``,
so the cases check what a user importing an ONNX file gets, end to end, on any of our targets.
``check_case`` runs one case and says where it stopped (refused at import, crashed at import,
compile or run, or wrong numbers); ``tests/test_onnx_conformance.py`` and
``tools/onnx_conformance.py`` are its two users.

Many node cases give a value the importer must know (ReduceSum's axes, Reshape's shape, TopK's k)
as a graph input. Our graphs keep such values in their types, so those inputs are fixed at import
to the values the call brings (``from_onnx(model, constants=...)``, what a user of such a model
does): the backend imports and compiles per distinct value (``SpecializingRep``).
"""
from __future__ import annotations

import functools
import re
import time
import warnings
from dataclasses import dataclass

import onnx
from onnx.backend.base import Backend, BackendRep
from onnx.backend.test.loader import load_model_tests
from onnx.backend.test.runner import Runner

import graphdsl
from backends.targets import compile as compile_graph
from graphdsl.errors import GraphDSLError, GraphError

# outcomes of check_case, in the order reports list them
PASSED, REFUSED, WRONG, CRASH_IMPORT, CRASH_COMPILE, CRASH_RUN = (
    "passed", "refused at import", "wrong numbers", "crash at import", "crash at compile",
    "crash at run")
OUTCOMES = (PASSED, REFUSED, WRONG, CRASH_IMPORT, CRASH_COMPILE, CRASH_RUN)


class GraphdslRep(BackendRep):
    """A compiled model, called the way ONNX's runner calls one: inputs and outputs by position.
    ``fixed`` names the inputs the import fixed to values (``import_for``): they are not passed on."""

    def __init__(self, model: onnx.ModelProto, graph, exe, fixed=frozenset()):
        g = model.graph
        initializers = {t.name for t in g.initializer}
        self.input_names = [vi.name for vi in g.input if vi.name not in initializers]
        self.output_names = [vi.name for vi in g.output]
        self.fixed = frozenset(fixed)
        passed = [n for n in self.input_names if n not in self.fixed]
        if list(graph.inputs) != passed or list(graph.outputs) != self.output_names:
            raise AssertionError(   # the importer promises ONNX's names and order; say so if not
                f"imported graph renamed or reordered the ONNX model's inputs/outputs: inputs "
                f"{list(graph.inputs)} vs {self.input_names}, outputs {list(graph.outputs)} vs "
                f"{self.output_names}")
        self.graph = graph
        self.exe = exe

    def run(self, inputs, **kwargs):
        if len(inputs) != len(self.input_names):
            raise ValueError(f"the model takes {len(self.input_names)} inputs "
                             f"({', '.join(self.input_names)}), got {len(inputs)}")
        named = dict(zip(self.input_names, inputs))
        results = self.exe({k: v for k, v in named.items() if k not in self.fixed})
        return [results[name] for name in self.output_names]


def import_for(model: onnx.ModelProto, named_inputs: dict):
    """``(graph, fixed)``: the model imported with the inputs whose values the importer must know
    (axes, shapes, k, given as graph inputs by ONNX's node tests) fixed to the call's values with
    ``from_onnx(constants=...)``, as a user of such a model would. An import that needs no value
    fixes none; one that still fails for another reason raises."""
    fixed: dict = {}
    while True:
        try:
            graph = graphdsl.from_onnx(model, constants=fixed)
            if "seed" in graph.inputs and "seed" not in named_inputs:
                raise GraphError("the imported graph draws random numbers from a 'seed' input (training-mode "
                                 "Dropout), which the ONNX model does not have: its outputs cannot be compared")
            return graph, frozenset(fixed)
        except GraphDSLError as e:
            wanted = [n for n in getattr(e, "value_inputs", []) if n not in fixed and n in named_inputs]
            if not wanted:
                raise
            fixed.update({n: _array(named_inputs[n]) for n in wanted})


class SpecializingRep(BackendRep):
    """A model the importer can read only with some inputs' values known: imported and compiled
    at each call for the values it brings (cached by them), the other inputs passed as usual."""

    def __init__(self, model: onnx.ModelProto, target: str):
        self.model, self.target = model, target
        g = model.graph
        initializers = {t.name for t in g.initializer}
        self.input_names = [vi.name for vi in g.input if vi.name not in initializers]
        self._reps: dict = {}

    def run(self, inputs, **kwargs):
        named = dict(zip(self.input_names, inputs))
        graph, fixed = import_for(self.model, named)
        key = tuple((n, _array(named[n]).tobytes(), _array(named[n]).shape) for n in sorted(fixed))
        if key not in self._reps:
            self._reps[key] = GraphdslRep(self.model, graph, compile_graph(graph, self.target), fixed)
        return self._reps[key].run(inputs, **kwargs)


class GraphdslBackend(Backend):
    """ONNX models through ``graphdsl.from_onnx`` and ``backends.compile(graph, target)``.

    One class per target (``backend_for("llvm")``); the target is a class attribute because the
    runner takes a backend class, not an instance. Import and compile errors propagate: a case
    using an op we refuse must fail, with our message.
    """

    target = "numpy"

    @classmethod
    def prepare(cls, model, device="CPU", **kwargs):
        """Import and compile ``model`` (an ``onnx.ModelProto``, what the runner passes)."""
        if not isinstance(model, onnx.ModelProto):
            raise TypeError(f"prepare takes an onnx.ModelProto, got {type(model).__name__}; "
                            f"for a file use graphdsl.from_onnx(path) and backends.compile")
        if not cls.supports_device(device):
            raise ValueError(f"graphdsl's ONNX backend runs on CPU only, not {device!r}")
        try:
            graph = graphdsl.from_onnx(model)
        except GraphDSLError as e:
            if getattr(e, "value_inputs", None):   # needs input values: import at the call
                return SpecializingRep(model, cls.target)
            raise
        return GraphdslRep(model, graph, compile_graph(graph, cls.target))

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"


@functools.cache
def backend_for(target: str) -> type[GraphdslBackend]:
    """The Backend class running ``target`` (``numpy`` or ``llvm``); one class per target."""
    if target == GraphdslBackend.target:
        return GraphdslBackend
    return type(f"GraphdslBackend_{target}", (GraphdslBackend,), {"target": target})


@functools.cache
def node_cases() -> tuple:
    """ONNX's node test cases (one operator each, or a function expanded into several nodes).

    This onnx version builds them in memory from its ``case/node`` scripts (about 8 s), running
    its reference to get the expected outputs; nothing is read from or written to disk.
    """
    with warnings.catch_warnings():   # its scripts cast inf/NaN on purpose, and numpy says so
        warnings.simplefilter("ignore", RuntimeWarning)
        cases = load_model_tests(kind="node")
    return tuple(sorted(cases, key=lambda c: c.name))


def run_case(case, target: str = "numpy") -> None:
    """Run one case exactly as ``onnx.backend.test.runner.Runner`` does: prepare once, then every
    data set through ``rep.run`` and the runner's own comparison (dtype, shape, and values within
    the case's rtol/atol). Raises on any failure."""
    rep = backend_for(target).prepare(case.model, "CPU")
    for inputs, expected in case.data_sets:
        outputs = rep.run([_array(x) for x in inputs])
        Runner.assert_similar_outputs([_array(x) for x in expected], outputs,
                                      rtol=case.rtol, atol=case.atol)


@dataclass(frozen=True)
class Result:
    """How one case went on one target: ``op`` the ONNX op it tests (``case_op``), ``outcome`` one
    of OUTCOMES, ``error`` the exception's type and first line (empty when it passed)."""

    name: str
    op: str
    target: str
    outcome: str
    error: str
    seconds: float


def check_case(case, target: str = "numpy") -> Result:
    """``run_case``, but each stage's exception is caught and classified instead of raised."""
    start = time.perf_counter()
    stage = CRASH_IMPORT
    try:
        first_inputs = [_array(x) for x in case.data_sets[0][0]] if case.data_sets else []
        names = [vi.name for vi in case.model.graph.input
                 if vi.name not in {t.name for t in case.model.graph.initializer}]
        try:
            graph, fixed = import_for(case.model, dict(zip(names, first_inputs)))
        except GraphDSLError as e:
            return _result(case, target, REFUSED, e, start)
        stage = CRASH_COMPILE
        rep = GraphdslRep(case.model, graph, compile_graph(graph, target), fixed)
        for inputs, expected in case.data_sets:
            stage = CRASH_RUN
            outputs = rep.run([_array(x) for x in inputs])
            stage = WRONG
            Runner.assert_similar_outputs([_array(x) for x in expected], outputs,
                                          rtol=case.rtol, atol=case.atol)
    except MemoryError:   # the machine's state, not a verdict on the case
        raise
    except Exception as e:   # noqa: BLE001 -- every failure is a data point of the report
        return _result(case, target, stage, e, start)
    return Result(case.name, case_op(case), target, PASSED, "", time.perf_counter() - start)


def describe(error: BaseException) -> str:
    """``Type: first line`` of an exception: what a report or an expected-failure reason shows.

    numpy's assertions put their point in a headline of one or two lines, then the counts and
    values of the mismatch: the headline is kept, and ACTUAL/DESIRED when they are what differs
    (a shape, a dtype, a number of outputs), not the values of a whole output.
    """
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not isinstance(error, AssertionError):
        return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]
    head = []
    for line in lines:
        if line.startswith(("Mismatch", "Max ", "ACTUAL", "DESIRED", "[", "x:", "y:")):
            break
        head.append(line)
    if "shape" in " ".join(head) or head[:1] == ["Items are not equal:"]:
        head += [line for line in lines if line.startswith(("ACTUAL", "DESIRED"))]
    return f"{type(error).__name__}: {' '.join(head)}"[:300]


def is_expanded(case) -> bool:
    """Whether ``case`` is a function op's body expanded into its nodes (``test_x_expanded``,
    ``test_x_expanded_ver18``): ONNX adds one for each case of an op defined as a function."""
    return re.search(r"_expanded(_ver\d+)?$", case.name) is not None


def case_op(case) -> str:
    """The ONNX op a case tests: its node's op type, or for an expanded case, the op type of the
    case it expands (every multi-node node case is one). A model of several nodes that expands
    nothing (not a node case) is named by its op types joined with ``+``."""
    if is_expanded(case):
        return case_op(_cases_by_name()[re.sub(r"_expanded(_ver\d+)?$", "", case.name)])
    ops = (n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in case.model.graph.node)
    return "+".join(dict.fromkeys(ops))


@functools.cache
def _cases_by_name() -> dict:
    return {c.name: c for c in node_cases()}


def _result(case, target, outcome, error, start) -> Result:
    return Result(case.name, case_op(case), target, outcome, describe(error), time.perf_counter() - start)


def _array(value):
    """The runner's inputs may be TensorProtos (its type hints say arrays); ours are arrays."""
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    return value
