"""graphdsl.testing: assert_backends_agree, its failure message, and the pytest plugin.

A wrong backend is a fake target registered in ``backends.TARGETS``: the numpy backend with every
softmax 1% too large, so the message must name softmax (not the matmul before it) as the first
node that diverges. The plugin's option, fixture and marker run a small user test file through
``pytester`` (in process, so it shares this process's modules and their monkeypatches; one run
in a subprocess shows the entry point loads the plugin). Only one test compiles for llvm.
"""
from __future__ import annotations

import inspect
import re
import sys

import numpy as np
import pytest

import backends
import graphdsl as gd
from graphdsl import ops
from graphdsl.errors import TargetError
from graphdsl.testing import assert_backends_agree, default_targets, unavailable, worst_element

pytest_plugins = ["pytester"]


def compile_skewed(graph, **options):
    """The numpy backend with softmax's reference 1% too large (the fake target 'skewed')."""
    exe = backends.compile(graph, "numpy")
    for node, step in list(exe.steps.items()):
        if node.op == "softmax":
            exe.steps[node] = step._replace(ref=lambda x, _ref=step.ref, **attrs: _ref(x, **attrs) * np.float32(1.01))
    return exe


def compile_broken(graph, **options):
    raise RuntimeError("the fake target cannot build anything")


@pytest.fixture
def fakes(monkeypatch):
    monkeypatch.setitem(backends.TARGETS, "skewed", f"{__name__}:compile_skewed")
    monkeypatch.setitem(backends.TARGETS, "broken", f"{__name__}:compile_broken")


def block(x, w):
    h = x @ w
    p = ops.softmax(h, axis=-1)
    return {"y": p * 2.0, "total": p.sum()}


SOFTMAX_LINE = inspect.getsourcelines(block)[1] + 2


def feed(rows=2):
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((rows, 8)).astype("float32"),
            "w": rng.standard_normal((8, 8)).astype("float32")}


def test_agreeing_targets_pass_for_a_function_and_a_graph():
    targets = ["numpy"] + (["onnxruntime"] if unavailable("onnxruntime") is None else [])
    assert_backends_agree(block, feed(), targets=targets)
    assert_backends_agree(block, feed(), targets=targets, grad=True)
    graph = gd.trace(block, x="f32[rows,8]", w="f32[8,8]")
    assert_backends_agree(graph, feed(rows=5), targets=targets)
    assert_backends_agree(block, feed(rows=3), targets=targets, specs={"x": "f32[rows,8]", "w": "f32[8,8]"})


def test_llvm_agrees_forward_and_gradient():
    """The one llvm compile here: the gradient graph holds the forward outputs too."""
    assert_backends_agree(block, feed(), targets=["llvm"], grad=True)


def _parse(message: str, output: str) -> dict:
    m = re.search(rf"skewed disagrees with numpy on output '{re.escape(output)}' \((?P<type>[^)]*)\): "
                  r"worst \|diff\| (?P<diff>\S+) at index \((?P<index>[\d, ]*)\): skewed (?P<got>\S+), "
                  r"numpy (?P<want>\S+) \(tolerance (?P<atol>\S+) \+ (?P<rtol>\S+)\*\|numpy\|; "
                  r"(?P<off>\d+) of (?P<size>\d+) elements off\)", message)
    assert m, message
    return m.groupdict()


def test_a_wrong_target_names_the_worst_element_and_the_first_diverging_node(fakes):
    inputs = feed()
    with pytest.raises(AssertionError) as info:
        assert_backends_agree(block, inputs, targets=["numpy", "skewed"])
    message = str(info.value)
    assert message.startswith("1 of 2 target(s) disagree with numpy:"), message
    y = _parse(message, "y")
    assert y["type"] == "f32[2,8]" and y["size"] == "16"
    index = tuple(int(i) for i in y["index"].split(","))
    want = backends.compile(gd.trace(block, x="f32[2,8]", w="f32[8,8]"), "numpy")(inputs)["y"]
    got = backends.compile(gd.trace(block, x="f32[2,8]", w="f32[8,8]"), "skewed")(inputs)["y"]
    assert np.isclose(float(y["want"]), want[index], rtol=1e-5) and np.isclose(float(y["got"]), got[index], rtol=1e-5)
    assert index == np.unravel_index(np.argmax(np.abs(got - want)), want.shape)   # the error grows faster than its allowance
    assert _parse(message, "total")["index"] == ""                                 # a scalar: index ()
    first = re.search(r"first diverging node %1: f32\[2,8\] = softmax\(%0, axis=1\) at (\S+):(\d+)\s+(.*)", message)
    assert first, message
    assert first.group(1).endswith("test_testing_plugin.py") and int(first.group(2)) == SOFTMAX_LINE
    assert first.group(3).strip() == "p = ops.softmax(h, axis=-1)"


def test_gradients_of_a_wrong_target_are_named_too(fakes):
    with pytest.raises(AssertionError) as info:
        assert_backends_agree(block, feed(), targets=["skewed"], grad=True)
    message = str(info.value)
    assert "on the gradient graph" in message
    for name in ("grad/x", "grad/w", "y", "total"):
        _parse(message, name)
    assert "and 1 more output(s) beyond tolerance: 'loss'" in message    # four listed, the furthest off first
    assert re.search(r"first diverging node %1: f32\[2,8\] = softmax", message), message


def test_a_target_that_fails_and_looser_tolerances(fakes):
    with pytest.raises(AssertionError, match=r"broken failed on graph 'block': RuntimeError: the fake target"):
        assert_backends_agree(block, feed(), targets=["broken"])
    assert_backends_agree(block, feed(), targets=["skewed"], atol=0.1)     # 1% of values below 2
    with pytest.raises(AssertionError, match=r"tolerance 0\.001 \+ 0\*\|numpy\|"):
        assert_backends_agree(block, feed(), targets=["skewed"], atol=1e-3, rtol=0.0)


def test_integers_must_be_equal_and_shapes_must_match():
    got, want = np.array([[1, 2], [3, 4]], np.int64), np.array([[1, 2], [3, 9]], np.int64)
    assert worst_element("llvm", got, want, None) == \
        "worst |diff| 5 at index (1, 1): llvm 4, numpy 9 (must be equal; 1 of 4 elements off)"
    assert worst_element("llvm", got[:1], want, None) == "llvm gives int64[1, 2], numpy int64[2, 2]"


def test_unavailable_targets_skip_under_pytest_and_unknown_ones_are_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)      # as if it were not installed
    assert unavailable("onnxruntime") == "onnxruntime is not installed"
    assert "onnxruntime" not in default_targets() and default_targets()[0] == "numpy"
    with pytest.raises(pytest.skip.Exception, match="onnxruntime: onnxruntime is not installed"):
        assert_backends_agree(block, feed(), targets=["onnxruntime"])
    with pytest.raises(TargetError, match="unknown target 'tpu'"):
        assert_backends_agree(block, feed(), targets=["tpu"])


USER_TEST = '''
import numpy as np
import pytest
from graphdsl import ops
from graphdsl.testing import assert_backends_agree

def f(x):
    return ops.softmax(x * 2.0, axis=-1)

X = {"x": np.linspace(-1, 1, 12, dtype="float32").reshape(3, 4)}

def test_every_target(graphdsl_target):
    assert_backends_agree(f, X, targets=[graphdsl_target])

@pytest.mark.graphdsl_targets("numpy")
def test_numpy_only(graphdsl_target):
    assert graphdsl_target == "numpy"

def test_default_targets():
    assert_backends_agree(f, X)
'''


def test_the_option_and_fixture_parametrize_and_skip_with_the_reason(pytester, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_inprocess("--graphdsl-targets", "numpy,onnxruntime", "-rs", "-v")
    result.assert_outcomes(passed=3, skipped=1)
    result.stdout.fnmatch_lines(["*test_every_target?numpy? PASSED*", "*test_every_target?onnxruntime? SKIPPED*",
                                 "*test_numpy_only?numpy? PASSED*",
                                 "SKIPPED*onnxruntime: onnxruntime is not installed*"])


def test_the_marker_and_the_default_targets(pytester):
    pytester.makepyfile(test_user=USER_TEST + '''
@pytest.mark.graphdsl_targets("numpy", "onnxruntime")
def test_outside_the_option(graphdsl_target):
    pass
''')
    result = pytester.runpytest_inprocess("--graphdsl-targets", "numpy", "-rs")
    result.assert_outcomes(passed=4, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*onnxruntime: not among --graphdsl-targets numpy*"])
    collected = pytester.runpytest_inprocess("--collect-only", "-q", "test_user.py::test_every_target")
    ids = re.findall(r"test_every_target\[(\w+)\]", collected.stdout.str())
    assert ids == default_targets()


def test_assert_backends_agree_follows_the_option(pytester, fakes):
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_inprocess("--graphdsl-targets", "numpy,skewed", "test_user.py::test_default_targets")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "skewed disagrees with numpy on output 'out' (f32[3,4]): worst |diff|" in text, text
    assert "first diverging node %2: f32[3,4] = softmax(%1, axis=1) at test_user.py:7" in text, text


def test_bad_option_and_marker_values_are_usage_errors(pytester):
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_inprocess("--graphdsl-targets", "numpy,tpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--graphdsl-targets: unknown target 'tpu'*"])
    pytester.makepyfile(test_marked='''
import pytest

@pytest.mark.graphdsl_targets("gpu")
def test_marked(graphdsl_target):
    pass
''')
    marked = pytester.runpytest_inprocess("test_marked.py")
    marked.assert_outcomes(errors=1)
    marked.stdout.fnmatch_lines(["*graphdsl_targets marker: unknown target 'gpu'*"])


def test_the_entry_point_loads_the_plugin_in_a_fresh_process(pytester):
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_subprocess("--graphdsl-targets", "numpy", "-k", "every_target")
    result.assert_outcomes(passed=1, deselected=2)
    disabled = pytester.runpytest_inprocess("-p", "no:graphdsl", "--graphdsl-targets", "numpy")
    assert disabled.ret == pytest.ExitCode.USAGE_ERROR
