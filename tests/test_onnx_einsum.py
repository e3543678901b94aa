"""ONNX Einsum, imported as our ops (graphdsl/onnx/ops_einsum.py): equations of every shape
(ellipsis, diagonals, scalar outputs, implicit outputs, broadcast size-1 axes, three operands)
against np.einsum on the NumPy backend, one model of several Einsum nodes on llvm, and the errors
a malformed equation or mismatched inputs raise."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper

import backends
import graphdsl
from graphdsl.errors import GraphError, ShapeError, TypeError_
from graphdsl.onnx.ops_einsum import einsum

R = np.random.default_rng(0)

EQUATIONS = [   # (equation, the inputs' shapes)
    ("ij->ji", [(3, 4)]), ("ij->i", [(3, 4)]), ("ij", [(3, 4)]), ("ji", [(3, 4)]), ("ij->", [(3, 4)]),
    ("->", [()]), ("...", [(2, 3)]), ("...->...", [()]),
    ("ii->i", [(4, 4)]), ("ii", [(4, 4)]), ("iii->i", [(3, 3, 3)]), ("bii->bi", [(2, 3, 3)]),
    ("...ii ->...i", [(3, 5, 5)]), ("iji->ij", [(3, 2, 3)]), ("ii,jj->ij", [(3, 3), (2, 2)]),
    ("iij,jk->ik", [(3, 3, 2), (2, 5)]),
    ("i,i", [(5,), (5,)]), ("i,j->ij", [(3,), (4,)]), ("i,j", [(3,), (4,)]), ("ij,j->i", [(3, 4), (4,)]),
    ("ij,ij->", [(3, 4), (3, 4)]), ("ij,ij->ij", [(3, 4), (3, 4)]), ("ij,kl->", [(2, 3), (4, 5)]),
    ("ij,jk", [(2, 3), (3, 4)]), ("ba,cb", [(2, 3), (4, 2)]), ("Ab,ab", [(2, 3), (2, 3)]),
    ("bij, bjk -> bik", [(5, 2, 3), (5, 3, 4)]), ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),
    ("ijk,ikj->i", [(2, 3, 4), (2, 4, 3)]), ("ijk,jil->kl", [(2, 3, 4), (3, 2, 5)]),
    ("...ij,...jk", [(2, 1, 3, 4), (5, 4, 2)]), ("...i,...i->...i", [(2, 1, 3), (4, 3)]),
    ("a...,...a->...", [(3, 2, 4), (2, 4, 3)]), ("...i,i->...", [(2, 3, 4), (4,)]),
    ("ij,jk", [(2, 1), (3, 4)]), ("ij,ij->ij", [(2, 1), (2, 4)]), ("ij,jk->ik", [(2, 3), (1, 4)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]), ("i,i,i->", [(4,), (4,), (4,)]),
    ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]), ("ab,bc,ca", [(2, 3), (3, 4), (4, 2)]),
]


def einsum_model(nodes, inputs, outputs, dims=None):
    """A model of Einsum ``nodes`` ((equation, input names, output name)); ``inputs`` maps names to
    arrays, ``outputs`` names to expected arrays, ``dims`` names to dim names (dynamic axes)."""
    dims = dims or {}
    ins = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype),
                                         dims.get(name, list(a.shape))) for name, a in inputs.items()]
    outs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype),
                                          [f"{name}_{i}" for i in range(a.ndim)] if dims else list(a.shape))
            for name, a in outputs.items()]
    onnx_nodes = [helper.make_node("Einsum", list(names), [out], equation=eq) for eq, names, out in nodes]
    return helper.make_model(helper.make_graph(onnx_nodes, "einsum", ins, outs),
                             opset_imports=[helper.make_opsetid("", 18)])


def operands(shapes, dtype):
    if np.dtype(dtype).kind == "i":
        return [R.integers(-5, 6, s).astype(dtype) for s in shapes]
    return [R.standard_normal(s).astype(dtype) for s in shapes]


def run_one(equation, arrays, target="numpy", dims=None, want=None):
    """The graph imported from a one-node model, its output on ``target``, and np.einsum's."""
    names = [f"x{i}" for i in range(len(arrays))]
    want = np.asarray(np.einsum("".join(equation.split()), *arrays)) if want is None else want
    model = einsum_model([(equation, names, "y")], dict(zip(names, arrays)), {"y": want}, dims)
    graph = graphdsl.from_onnx(model)
    return graph, backends.compile(graph, target)(**dict(zip(names, arrays)))["y"], want


def assert_same(got, want, exact):
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    if exact:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "int64"])
@pytest.mark.parametrize("equation,shapes", EQUATIONS, ids=[f"{e}:{s}" for e, s in EQUATIONS])
def test_einsum_matches_numpy(equation, shapes, dtype):
    _, got, want = run_one(equation, operands(shapes, dtype))
    assert_same(got, want, exact=dtype == "int64")


def test_contractions_are_matmuls_and_diagonals_masks():
    """A summed label between two operands is one matmul, not a broadcast product; a diagonal is a
    mask and a sum, with no matmul."""
    graph, _, _ = run_one("bij,bjk->bik", operands([(2, 3, 4), (2, 4, 5)], "float32"))
    assert graph.op_counts() == {"matmul": 1}
    graph, _, _ = run_one("ijk,jil->kl", operands([(2, 3, 4), (3, 2, 5)], "float32"))
    assert graph.op_counts().get("matmul") == 1 and "mul" not in graph.op_counts()
    graph, _, _ = run_one("bii->bi", operands([(2, 3, 3)], "float32"))
    assert "matmul" not in graph.op_counts() and graph.op_counts()["where"] == 1


def test_symbolic_dims_stay_symbolic():
    """Dynamic axes: the batch of a batched matmul, and a diagonal over a named dim."""
    a, b = operands([(2, 3, 4), (2, 4, 5)], "float32")
    names = {"x0": ["batch", "m", 4], "x1": ["batch", 4, "n"]}
    graph, got, want = run_one("bij,bjk->bik", [a, b], dims=names)
    assert str(graph.outputs["y"].type) == "f32[batch,m,n]"
    assert_same(got, want, exact=False)
    x = operands([(2, 3, 3)], "float32")[0]
    graph, got, want = run_one("...ii->...i", [x], dims={"x0": ["batch", "n", "n"]})
    assert str(graph.outputs["y"].type) == "f32[batch,n]"
    assert_same(got, want, exact=False)
    exe = backends.compile(graph, "numpy")
    bigger = operands([(4, 5, 5)], "float32")[0]
    assert_same(exe(x0=bigger)["y"], np.einsum("...ii->...i", bigger), exact=False)


@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16])
def test_narrow_floats_sum_in_float32_and_round_once(dtype):
    """As ONNX's reference: the sums in float32, one rounding to the input dtype at the end."""
    a, b = (x.astype(dtype) for x in operands([(2, 3, 40), (2, 40, 4)], "float32"))
    want = np.einsum("bij,bjk->bik", a.astype(np.float32), b.astype(np.float32)).astype(dtype)
    _, got, _ = run_one("bij,bjk->bik", [a, b], want=want)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))


def test_einsum_on_llvm():
    """One compiled model holding float and integer Einsum nodes: matmul contractions (an integer
    one reading a transposed operand), a diagonal, a trace, a permute, an outer product, a
    broadcast ellipsis, three operands, and an Einsum fed by another."""
    f32 = lambda *shape: R.standard_normal(shape).astype(np.float32)  # noqa: E731
    i64 = lambda *shape: R.integers(-5, 6, shape)  # noqa: E731
    inputs = {"a": f32(2, 3, 4), "b": f32(2, 4, 5), "v": f32(4), "w": f32(5), "s": f32(3, 3), "t": f32(3, 1),
              "c": i64(3, 4), "d": i64(4, 5), "e": i64(2, 3, 3)}
    nodes = [("bij,bjk->bik", "ab", "mm"), ("...j,j->...", "av", "dot"), ("ii->i", "s", "diag"),
             ("ii", "s", "trace"), ("bij->jb", "a", "perm"), ("i,j->ij", "vw", "outer"),
             ("bij,bjk,k->bi", "abw", "three"), ("...i,...i->...i", "at", "bcast"), ("ij,jk->ik", "cd", "imm"),
             ("ij->", "c", "isum"), ("kii->ki", "e", "idiag"), ("ij,kj->ik", "cc", "gram"),
             ("kk->", ["gram"], "itrace")]
    env, wanted = dict(inputs), {}
    for eq, names, out in nodes:
        env[out] = wanted[out] = np.asarray(np.einsum(eq, *(env[n] for n in names)))
    onnx_nodes = [(eq, list(names), out) for eq, names, out in nodes]
    graph = graphdsl.from_onnx(einsum_model(onnx_nodes, inputs, wanted))
    got = backends.compile(graph, "llvm")(**inputs)
    for name, want in wanted.items():
        assert_same(got[name], want, exact=want.dtype.kind == "i")


ERRORS = [   # (equation, shapes, error, message)
    ("ij->k", [(2, 3)], GraphError, r"output term 'k' names 'k', which no input term has"),
    ("ij->i->j", [(2, 3)], GraphError, r"more than one '->'"),
    ("ij,jk", [(2, 3)], GraphError, r"has 2 input term\(s\) for 1 input\(s\)"),
    ("ijk", [(2, 3)], GraphError, r"input term 0 'ijk' names 3 axes of a rank-2 input"),
    ("ij", [(2, 3, 4)], GraphError, r"input term 0 'ij' names 2 axes of a rank-3 input"),
    ("ij->ii", [(2, 3)], GraphError, r"output term 'ii' names 'i' twice"),
    ("ij->i,j", [(2, 3)], GraphError, r"output term 'i,j' has a ','"),
    ("...ij->j", [(5, 2, 3)], GraphError, r"ellipsis stands for 1 axis\(es\), which the output term 'j' drops"),
    ("ii->i", [(2, 3)], ShapeError, r"label 'i' is repeated in one input over axes of sizes 2 and 3"),
    ("ij,jk", [(2, 3), (4, 5)], ShapeError, r"label 'j' has sizes 3 and 4, which do not broadcast"),
    ("...i,...i", [(2, 3), (4, 3)], ShapeError, r"ellipsis axis 0 has sizes 2 and 4"),
]


@pytest.mark.parametrize("equation,shapes,error,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_name_einsum_the_equation_and_the_shapes(equation, shapes, error, message):
    arrays = [np.ones(s, np.float32) for s in shapes]
    names = [f"x{i}" for i in range(len(arrays))]
    model = einsum_model([(equation, names, "y")], dict(zip(names, arrays)), {"y": np.ones((), np.float32)})
    with pytest.raises(error, match=message) as info:
        graphdsl.from_onnx(model)
    text = str(info.value)
    types = ", ".join(f"f32[{','.join(map(str, s))}]" for s in shapes)
    assert "ONNX Einsum node" in text and f"equation {equation!r} on {types}" in text


@pytest.mark.parametrize("arrays,message", [
    ([np.ones(3, np.float32), np.ones(3, np.float64)], r"mixes the dtypes float32, float64"),
    ([np.ones(3, bool), np.ones(3, bool)], r"takes numbers, not bool"),
])
def test_dtype_errors(arrays, message):
    model = einsum_model([("i,i", ["x0", "x1"], "y")], {"x0": arrays[0], "x1": arrays[1]},
                         {"y": np.ones((), arrays[0].dtype)})
    with pytest.raises(TypeError_, match=message):
        graphdsl.from_onnx(model)


@pytest.mark.parametrize("equation", ["i.j", "i#", "i1->i", "....i->i"])
def test_a_character_outside_the_grammar_is_refused(equation):
    """Traced directly: ONNX's own shape inference (run when a model loads) does not return on
    these equations, so no model reaches the importer with one."""
    with pytest.raises(GraphError, match=r"has the character\(s\) '[.#1]'|has more than one ellipsis"):
        graphdsl.trace(lambda x: einsum(equation, [x]), x="f32[2,3]")


LOAD_MALFORMED = """
import sys
import numpy as np
import graphdsl
from graphdsl.errors import GraphError
from tests.test_onnx_einsum import einsum_model
model = einsum_model([(sys.argv[1], ["x0"], "y")], {"x0": np.ones((2, 3), np.float32)},
                     {"y": np.ones((2,), np.float32)})
try:
    graphdsl.from_onnx(model)
except GraphError as e:
    print(str(e).splitlines()[0])
"""


@pytest.mark.parametrize("equation", ["i.j", "i#", "i1->i", "....i->i"])
def test_from_onnx_refuses_a_malformed_equation_before_shape_inference(equation):
    """onnx's infer_shapes never returns on these: load_model checks the equation first. In a
    subprocess with a timeout, so that a regression fails instead of hanging the suite."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", LOAD_MALFORMED, equation], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "has a malformed equation" in done.stdout and repr(equation) in done.stdout, done.stdout
