"""ONNX's own node conformance cases on the numpy target, with a strict expected-failure list.

Each of the installed onnx wheel's node cases (``onnx.backend.test.loader.load_model_tests(
kind="node")``: one operator, or an op's function body expanded, with inputs and the outputs of
ONNX's reference) is imported with ``graphdsl.from_onnx``, compiled for numpy and run through
``backends.onnx.conformance.run_case``, which checks the numbers with the runner's own comparison
(``Runner.assert_similar_outputs``: dtype, shape, and the case's rtol/atol, 1e-3/1e-7).

The rule: a case not in ``tests/onnx_conformance_expected.EXPECTED_FAILURES`` must pass; a case in
it must still fail (the test checks that it does: no case is skipped or marked xfail); a listed
case that passes fails the test,
naming the case, so the list can only shrink. ``tools/onnx_conformance.py --update-expected``
regenerates the list. On llvm this file runs a sample, the first two passing direct cases of
every op the importer handles (about 150 compiles, a minute); the tool runs all of them on llvm
(every importable case compiled, about eight minutes on two cores).

Why not ``onnx.backend.test.BackendTest(backend, __name__).test_cases`` itself: its ``xfail`` is
``unittest.expectedFailure``, which pytest does report strictly, but only as "Unexpected
success"; and the runner adds a ``_cuda`` twin of every case (skipped for a CPU backend) and the
other kinds of cases (``real`` downloads models), which it leaves out only by skipping them. This
suite skips nothing, so it parametrizes over the runner's loader and reuses its comparison. The
other offline kinds (``simple``, ``pytorch-converted``, ``pytorch-operator``) are 140 whole
models, not operators; 138 of them use opsets 6 to 12 with ops that changed before opset 13, so
the importer refuses them: they would add a list of refusals and no coverage, so they stay out.
"""
import unittest

import pytest

onnx = pytest.importorskip("onnx", reason="ONNX's conformance cases come with the onnx package")

from onnx.backend.test import BackendTest   # noqa: E402

from backends.onnx.conformance import (backend_for, case_op, describe, is_expanded,   # noqa: E402
                                       node_cases, run_case)
from tests.onnx_conformance_expected import EXPECTED_FAILURES, ONNX_VERSION   # noqa: E402

CASES = {c.name: c for c in node_cases()}
LIST = "tests/onnx_conformance_expected.py"
# each onnx release adds and changes cases: say so when the list was made with another one
VERSION_NOTE = "" if onnx.__version__ == ONNX_VERSION else (
    f" (the list was made with onnx {ONNX_VERSION}, this is onnx {onnx.__version__}: regenerate it "
    f"with tools/onnx_conformance.py --update-expected)")


@pytest.mark.parametrize("name", CASES)   # by name: pytest would print a failing case's arrays
def test_node_case(name):
    case = CASES[name]
    why = EXPECTED_FAILURES.get(name)
    if why is None:
        run_case(case, "numpy")
        return
    try:
        run_case(case, "numpy")
    except Exception as e:   # noqa: BLE001 -- a listed case must fail; its reason says why
        assert describe(e), f"{name}: listed ({why!r}) and failing without a message"
        return
    pytest.fail(f"{name} passes now but is listed in {LIST} ({why!r}): remove it from the "
                f"list (the list only shrinks), or run tools/onnx_conformance.py --update-expected"
                + VERSION_NOTE, pytrace=False)


def _llvm_sample(per_op: int = 2):
    """The first ``per_op`` passing direct cases (by name) of each op the importer handles: every
    import row compiled for llvm in ``make test`` (all 1884 cases on llvm take about 8 minutes on
    two cores, so the full run is tools/onnx_conformance.py --targets llvm)."""
    import graphdsl.onnx  # noqa: F401 -- fills the import table
    from graphdsl.onnx.table import IMPORT
    rows, taken = set(IMPORT.keys()), {}
    for name in sorted(CASES):
        case = CASES[name]
        if name in EXPECTED_FAILURES or is_expanded(case):
            continue
        op = case_op(case)
        if op in rows and taken.setdefault(op, 0) < per_op:
            taken[op] += 1
            yield name


@pytest.mark.parametrize("name", list(_llvm_sample()))
def test_node_case_on_llvm(name):
    """A case that passes on numpy passes on llvm too (the expected-failure list is numpy's)."""
    run_case(CASES[name], "llvm")


def test_expected_failures_are_real_cases_with_reasons():
    stale = sorted(set(EXPECTED_FAILURES) - set(CASES))
    assert not stale, f"{LIST} lists cases this onnx does not have{VERSION_NOTE}: {stale}"
    blank = sorted(k for k, why in EXPECTED_FAILURES.items() if not isinstance(why, str) or not why.strip())
    assert not blank, f"{LIST}: every expected failure needs a reason; these have none: {blank}"


def test_onnx_runner_drives_the_backend():
    """The adapter under ONNX's own runner: a case passes, and an unsupported op fails with our
    import error (the runner records it; nothing is swallowed)."""
    unsupported = next(k for k, why in sorted(EXPECTED_FAILURES.items()) if why.startswith("unsupported op"))
    suite = BackendTest(backend_for("numpy"), __name__).test_cases["OnnxBackendNodeModelTest"]
    passing, failing = unittest.TestResult(), unittest.TestResult()
    suite("test_abs_cpu").run(passing)
    suite(f"{unsupported}_cpu").run(failing)
    assert passing.wasSuccessful() and passing.testsRun == 1, passing.failures + passing.errors
    assert len(failing.errors) == 1, f"{unsupported} should fail on import: {failing.failures}"
    assert "GraphError" in failing.errors[0][1] and "cannot import" in failing.errors[0][1]
