"""Integer arithmetic in every integer dtype (docs/semantics.md, "Integer arithmetic").

The expected values are Python integers reduced modulo 2**bits, computed here without NumPy's
arithmetic; the reference must give them, and llvm and onnxruntime must give the reference's.
The operands include the dtype's extremes, so every row exercises wrapping, and ``MIN // -1``
(which traps in x86's ``idiv``: on llvm it killed the process with SIGFPE).
"""
import numpy as np
import pytest

import backends
import graphdsl
from graphdsl import ops

INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def _wrap(v: int, dtype: str) -> int:
    """``v`` as the dtype holds it: modulo 2**bits, two's complement for a signed dtype."""
    info = np.iinfo(dtype)
    span = 1 << info.bits
    v %= span
    return v - span if v > info.max else v


def _floor_div(a: int, b: int) -> int:
    return a // (1 if b == 0 else b)


def _operands(dtype: str) -> tuple[list[int], list[int]]:
    info = np.iinfo(dtype)
    lo, hi = int(info.min), int(info.max)
    if lo < 0:
        return [hi, lo, lo, 7, -7, 100, -100, 3], [1, -1, 2, -2, 2, 0, 3, hi]
    return [hi, 0, 7, hi - 1, 3, 200 % (hi + 1), 1, hi // 2], [1, 1, 2, hi, 0, 3, 2, hi]


def _program(a, b):
    return {"add": a + b, "sub": a - b, "mul": a * b, "neg": -a, "div": ops.div(a, b),
            "max": ops.maximum(a, b), "less": a < b, "f64": a.astype("float64")}


EXPECTED = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "neg": lambda a, b: -a, "div": _floor_div, "max": max,
}


def _expected(dtype: str) -> dict[str, np.ndarray]:
    xs, ys = _operands(dtype)
    out = {name: np.array([_wrap(fn(a, b), dtype) for a, b in zip(xs, ys)], dtype)
           for name, fn in EXPECTED.items()}
    out["less"] = np.array([a < b for a, b in zip(xs, ys)])
    out["f64"] = np.array([float(a) for a in xs])
    return out


@pytest.fixture(scope="module", params=INT_DTYPES)
def case(request):
    dtype = request.param
    graph = graphdsl.trace(_program, a=f"{dtype}[8]", b=f"{dtype}[8]")
    xs, ys = _operands(dtype)
    feed = {"a": np.array(xs, dtype), "b": np.array(ys, dtype)}
    with np.errstate(over="ignore"):
        reference = backends.compile(graph, "numpy")(**feed)
    return dtype, graph, feed, reference


def test_reference_wraps_as_python_integers_modulo_the_width(case):
    dtype, _, _, reference = case
    for name, want in _expected(dtype).items():
        got = np.asarray(reference[name])
        assert got.dtype == want.dtype, (dtype, name, got.dtype)
        np.testing.assert_array_equal(got, want, err_msg=f"{dtype} {name}")


@pytest.mark.parametrize("target", ["llvm", "onnxruntime"])
def test_backends_give_the_reference_integers(case, target):
    dtype, graph, feed, reference = case
    got = backends.compile(graph, target)(**feed)
    for name, want in reference.items():
        g = np.asarray(got[name])
        assert g.dtype == np.asarray(want).dtype, (target, dtype, name, g.dtype)
        np.testing.assert_array_equal(g, want, err_msg=f"{target} {dtype} {name}")
