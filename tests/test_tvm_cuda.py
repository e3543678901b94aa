"""The cuda target: CUDA source and PTX are produced on any machine with nvcc; numbers are checked
against NumPy where a GPU exists (the only reason these tests skip)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import backends
import models
from graphdsl.cli.tvm_cmd import model_case
from graphdsl.errors import TargetError


TINY = [n for n in models.names() if n.endswith("-tiny")]
NO_GPU = "no CUDA GPU on this machine: CUDA kernels are compiled and checked, not run"


def _gpu() -> bool:
    from backends.tvm.cuda import gpu_available
    return gpu_available()


@pytest.fixture(scope="module")
def built():
    """Every tiny zoo model's forward pass, and gpt-tiny's whole training step, built for cuda."""
    cases = {(name, False): model_case(name) for name in TINY}
    cases[("gpt-tiny", True)] = model_case("gpt-tiny", train=True)
    return {key: (graph, inputs, backends.compile(graph, "cuda")) for key, (graph, inputs) in cases.items()}


def test_cuda_source_and_ptx(built):
    assert shutil.which("nvcc"), "the CUDA toolkit's nvcc is needed to compile the generated CUDA to PTX"
    for (name, train), (graph, _, exe) in built.items():
        source, ptx = exe.cuda_source(), exe.ptx()
        assert "__global__" in source and "extern \"C\"" in source, name
        assert ".visible .entry" in ptx and ".target sm_90" in ptx, name


def test_emit_and_save_cuda_artifacts(built, tmp_path):
    from backends.tvm import devices
    _, _, exe = built[("gpt-tiny", False)]
    path = exe.save(tmp_path / "gpt")
    assert (path / "kernels.cu").read_text() == exe.cuda_source()
    assert (path / "kernels.ptx").read_text() == exe.ptx()
    again = devices.load(path)
    assert again.cuda_source() == exe.cuda_source() and again.target == "cuda"
    exe.save_source(tmp_path / "gpt.cu")
    assert (tmp_path / "gpt.cu").stat().st_size > 0


@pytest.mark.skipif(_gpu(), reason="this machine has a GPU: test_cuda_matches_numpy runs the kernels")
def test_calling_without_a_gpu_says_so(built):
    graph, inputs, exe = built[("gpt-tiny", False)]
    with pytest.raises(TargetError, match="needs an NVIDIA GPU"):
        exe(inputs)


@pytest.mark.parametrize("key", [(n, False) for n in TINY] + [("gpt-tiny", True)], ids=str)
@pytest.mark.skipif(not _gpu(), reason=NO_GPU)
def test_cuda_matches_numpy(built, key):
    graph, inputs, exe = built[key]
    want, got = backends.compile(graph, "numpy")(inputs), exe(inputs)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-4, rtol=1e-3, err_msg=f"{key}: {name}")


@pytest.fixture(scope="module")
def op_rows():
    """The op-table graphs of tests/test_tvm_ops.py (every sample; every gradient) built for cuda."""
    from tests.framework import all_gradients_graph, all_samples_graph
    (fwd, fwd_feed), (grd, grd_feed, _) = all_samples_graph(), all_gradients_graph()
    return [(fwd, fwd_feed, backends.compile(fwd, "cuda")), (grd, grd_feed, backends.compile(grd, "cuda"))]


def test_every_op_row_compiles_to_ptx(op_rows):
    for graph, _, exe in op_rows:
        assert ".visible .entry" in exe.ptx(), graph.name


@pytest.mark.skipif(not _gpu(), reason=NO_GPU)
def test_every_op_row_matches_numpy_on_the_gpu(op_rows):
    for graph, feed, exe in op_rows:
        want, got = backends.compile(graph, "numpy")(feed), exe(feed)
        for name in want:
            w = want[name]
            if w.dtype.kind == "f":
                np.testing.assert_allclose(got[name].astype(np.float64), w.astype(np.float64), atol=5e-3,
                                           rtol=5e-3, err_msg=f"{graph.name}: {name}")  # (f16 rows)
            else:
                np.testing.assert_array_equal(got[name], w, err_msg=f"{graph.name}: {name}")
