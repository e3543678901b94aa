"""The reference's index semantics on every backend, one table row per edge case.

Empty index tensors are valid (the result is empty); a negative or too-large index, a class target
outside [0, C) that is not ignore_index, and a slice typed on a symbolic dim that does not fit at
run time all raise the reference's error (the op, the bad index, the axis size, the user's line) on
numpy, llvm and onnxruntime alike. Nothing is clipped or wrapped. ``check_nan=True`` names the op
that made a NaN on every backend, and a call whose memory cannot be allocated is a GraphDSLError.

Every row runs on one graph holding all the indexing ops (one llvm compile for the table): a row
changes the inputs of one op, the others stay valid.
"""
from __future__ import annotations

import functools
import re

import numpy as np
import pytest

import backends
import graphdsl as gd
from graphdsl import ops
from graphdsl.errors import GraphDSLError, InputError

pytest.importorskip("onnxruntime")

BACKENDS = ["numpy", "llvm", "onnxruntime"]
HERE = "test_semantics_indices.py"


def _model(t, i, x, j, ia, ua, sa, us, logits, tg, lp, nt, oh, s, r, lx):
    return {
        "take": ops.take(t, i, axis=0),                                  # symbolic table rows n
        "gather": ops.gather(x, j, axis=1),
        "index_add": ops.index_add(ia, ua, axis=0, size=t.shape[0]),     # symbolic size n
        "scatter_add": ops.scatter_add(sa, us, axis=1, size=4),
        "ce": ops.cross_entropy(logits, tg, reduction="none"),
        "nll": ops.nll(lp, nt, reduction="none"),
        "one_hot": ops.one_hot(oh, depth=4),
        "head": ops.slice(s, axis=0, start=1, stop=3),                   # typed [2, 2] on dim w
        "tail": r[-3:],                                                  # [v-3 : v]
        "log": ops.log(lx),
    }


GRAPH = gd.trace(_model, t="f32[n,3]", i="i64[k]", x="f32[2,4]", j="i64[2,q]", ia="i64[a]",
                 ua="f32[a,3]", sa="i64[2,c]", us="f32[2,c]", logits="f32[m,4]", tg="i64[m]",
                 lp="f32[p,4]", nt="i32[p]", oh="i64[h]", s="f32[w,2]", r="f32[v,2]", lx="f32[3]")


def _i64(*v):
    return np.array(v, np.int64)


def _empty_aligned_i64():
    """An empty int64 array as NumPy makes them (strides 0) whose data is 64-byte aligned, so the
    llvm backend could pass it to TVM without a copy (TVM refuses strides 0 as not compact)."""
    buf = np.zeros(16, np.int64)
    offset = -buf.ctypes.data % 64
    return np.ndarray((0,), np.int64, buffer=buf.data, offset=offset, strides=(0,))


def _f32(*shape):
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape) / 4


BASE = {
    "t": _f32(5, 3), "i": _i64(4, 0, 2),
    "x": _f32(2, 4), "j": np.array([[3, 0], [1, 1]]),
    "ia": _i64(1, 1, 4), "ua": _f32(3, 3),
    "sa": np.array([[0, 3], [2, 2]]), "us": _f32(2, 2),
    "logits": _f32(2, 4), "tg": _i64(3, -100),
    "lp": np.log(np.full((2, 4), 0.25, np.float32)), "nt": np.array([0, 2], np.int32),
    "oh": _i64(0, 3, 7, -1),                     # outside [0, depth): a row of zeros, not an error
    "s": _f32(4, 2), "r": _f32(3, 2),
    "lx": np.array([1.0, 2.0, 3.0], np.float32),
}
NO_TAKE = {"i": _i64(), "ia": _i64(), "ua": _f32(0, 3)}   # an empty table [0, 3] needs empty indices
EMPTY = {"i": _i64(), "j": np.zeros((2, 0), np.int64), "ia": _i64(), "ua": _f32(0, 3),
         "sa": np.zeros((2, 0), np.int64), "us": _f32(2, 0), "logits": _f32(0, 4), "tg": _i64(),
         "lp": _f32(0, 4), "nt": np.zeros(0, np.int32), "oh": _i64()}

# (id, inputs changed from BASE, None (valid: same numbers everywhere) or (error class, message regex))
CASES = [
    ("baseline", {}, None),
    ("take: empty indices", {"i": _i64()}, None),
    ("take: empty indices, 64-byte aligned", {"i": _empty_aligned_i64()}, None),
    ("take: empty table and empty indices", {"t": _f32(0, 3), **NO_TAKE}, None),
    ("gather: empty indices", {"j": np.zeros((2, 0), np.int64)}, None),
    ("index_add: empty indices", {"ia": _i64(), "ua": _f32(0, 3)}, None),
    ("scatter_add: empty indices", {"sa": np.zeros((2, 0), np.int64), "us": _f32(2, 0)}, None),
    ("cross_entropy: empty targets", {"logits": _f32(0, 4), "tg": _i64()}, None),
    ("cross_entropy: every target ignored", {"tg": _i64(-100, -100)}, None),
    ("nll: empty targets", {"lp": _f32(0, 4), "nt": np.zeros(0, np.int32)}, None),
    ("one_hot: empty indices", {"oh": _i64()}, None),
    ("every index tensor empty", EMPTY, None),
    ("slice: symbolic dims just large enough", {"s": _f32(3, 2), "r": _f32(3, 2)}, None),
    ("take: negative index", {"i": _i64(4, -1, 0)},
     (GraphDSLError, r"^take: index -1 is out of range for axis 0 of size 5 \(valid: 0 to 4\)")),
    ("take: index equal to the size", {"i": _i64(5)},
     (GraphDSLError, r"^take: index 5 is out of range for axis 0 of size 5")),
    ("take: from an empty table", {"t": _f32(0, 3), **NO_TAKE, "i": _i64(0)},
     (GraphDSLError, r"^take: index 0 is out of range for axis 0 of size 0")),
    ("gather: negative index", {"j": np.array([[-1, 0], [1, 1]])},
     (GraphDSLError, r"^gather: index -1 is out of range for axis 1 of size 4")),
    ("gather: index equal to the size", {"j": np.array([[4, 0], [1, 1]])},
     (GraphDSLError, r"^gather: index 4 is out of range for axis 1 of size 4")),
    ("index_add: negative index", {"ia": _i64(1, -2, 0)},
     (GraphDSLError, r"^index_add: index -2 is out of range for axis 0 of size 5")),
    ("index_add: into an empty axis", {"t": _f32(0, 3), **NO_TAKE, "ia": _i64(0), "ua": _f32(1, 3)},
     (GraphDSLError, r"^index_add: index 0 is out of range for axis 0 of size 0")),
    ("scatter_add: index equal to the size", {"sa": np.array([[0, 4], [2, 2]])},
     (GraphDSLError, r"^scatter_add: index 4 is out of range for axis 1 of size 4")),
    ("cross_entropy: negative target", {"tg": _i64(-2, 0)},
     (InputError, r"^cross_entropy: target -2 is out of range for 4 classes")),
    ("cross_entropy: target equal to the classes", {"tg": _i64(4, -100)},
     (InputError, r"^cross_entropy: target 4 is out of range for 4 classes")),
    ("nll: negative int32 target", {"nt": np.array([-1, 0], np.int32)},
     (InputError, r"^nll: target -1 is out of range for 4 classes")),
    ("slice: symbolic dim too short", {"s": _f32(2, 2)},
     (GraphDSLError, r"^slice: slice \[1:3\] is out of range for axis 0 of size 2")),
    ("slice: negative start before the front", {"r": _f32(2, 2)},
     (GraphDSLError, r"^slice: slice \[-1:2\] is out of range for axis 0 of size 2")),
]

NAN_CASES = [
    ("check_nan: NaN-free call", {}, None),
    ("check_nan: log of a negative", {"lx": np.array([1.0, -1.0, 2.0], np.float32)},
     (GraphDSLError, r"^log: produced NaN at \[1\] from inputs without NaN")),
    ("check_nan: NaN input", {"lx": np.array([1.0, np.nan, 2.0], np.float32)},
     (InputError, r"^input 'lx' contains NaN at \[1\]")),
]


@functools.cache
def _exe(target: str, check_nan: bool = False):
    return backends.compile(GRAPH, target, check_nan=check_nan)


def _close(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name, ref in want.items():
        out = np.asarray(got[name])
        assert (out.dtype, out.shape) == (ref.dtype, ref.shape), f"{name}: {out.dtype}{out.shape} vs reference"
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=name)


def _check_row(target: str, change: dict, expect, check_nan: bool = False) -> None:
    feed = {**BASE, **change}
    if expect is None:
        _close(_exe(target, check_nan)(feed), _exe("numpy", check_nan)(feed))
        return
    cls, pattern = expect
    with pytest.raises(GraphDSLError) as info:
        _exe(target, check_nan)(feed)
    err = info.value
    assert type(err) is cls, f"{target} raised {type(err).__name__}: {err}"
    assert re.search(pattern, str(err)), f"{target}: {err}"
    if cls is not InputError or "target" in pattern:     # an op's error names the user's line
        assert HERE in str(err), f"{target}: no source line in {err}"


@pytest.mark.parametrize("target", BACKENDS)
@pytest.mark.parametrize("change, expect", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_indices_follow_the_reference(target, change, expect):
    _check_row(target, change, expect)


@pytest.mark.parametrize("target", BACKENDS)
@pytest.mark.parametrize("change, expect", [c[1:] for c in NAN_CASES], ids=[c[0] for c in NAN_CASES])
def test_check_nan_names_the_op_on_every_backend(target, change, expect):
    _check_row(target, change, expect, check_nan=True)


@pytest.mark.parametrize("target", BACKENDS)
def test_check_nan_is_off_by_default(target):
    """Also after a check_nan compile: llvm's compile cache hands out the module without the check."""
    _exe(target, True)
    feed = {**BASE, "lx": np.array([1.0, -1.0, 2.0], np.float32)}
    assert np.isnan(backends.compile(GRAPH, target)(feed)["log"][1])


def test_check_nan_names_a_nan_the_reference_does_not_make():
    """A backend's own NaN (a kernel bug) is named as such: the reference run finds no op to blame."""
    from backends.checks import NanCheck
    feed = {**BASE}
    arrays, env = backends.bind_inputs(GRAPH, (), feed)
    outputs = {**_exe("numpy")(feed), "take": np.full((3, 3), np.nan, np.float32)}
    with pytest.raises(GraphDSLError, match=r"output 'take' has NaN at \[0, 0\] on the llvm backend, from "
                                            r"inputs without NaN, and the NumPy reference makes none"):
        NanCheck(GRAPH, "llvm").after(arrays, env, outputs)


def test_the_checked_model_is_only_the_runtimes():
    """Only the onnxruntime backend adds the index checks: an exported file has the graph's outputs."""
    from backends.onnx import export
    assert [o.name for o in export(GRAPH).graph.output] == list(GRAPH.outputs)
    model = _exe("onnxruntime").model
    assert len(model.graph.output) == len(GRAPH.outputs) + 6    # take, gather, 2 scatters, 2 losses


# -- a call whose memory cannot be allocated ---------------------------------------------------------
# n is bound by an input that holds nothing ([n, 0]); the one value [n, n] needs 4 PiB, more than
# any machine's address space, so every backend fails at once, whatever the overcommit policy.
HUGE = gd.trace(lambda x: ops.full(shape=(x.shape[0], x.shape[0]), value=1.0), x="f32[n,k]")


@pytest.mark.parametrize("target", BACKENDS)
def test_an_allocation_failure_is_named_with_its_bytes(target):
    with pytest.raises(GraphDSLError) as info:
        backends.compile(HUGE, target)(x=np.zeros((2 ** 25, 0), np.float32))
    text = str(info.value)
    assert re.search(r"^full: .*\b4\.0+ PiB", text), text
    assert HERE in text
    if target != "numpy":
        assert "n=33554432" in text and "4503599627370496 bytes" in text, text
        assert info.value.__cause__ is None and info.value.__suppress_context__   # no TVM/ORT traceback
