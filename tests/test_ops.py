"""Table-driven op tests: every row of tests/optable/*.py, every registry op covered."""
from __future__ import annotations

import re

import numpy as np
import pytest

import backends
import graphdsl
from graphdsl import registry
from graphdsl.autodiff import grad
from graphdsl.errors import GraphDSLError
from graphdsl.types import TensorType
from tests.framework import ROWS, float_inputs, input_types, ops, sample_dtype, sample_feed, trace_row


def test_every_op_has_a_row():
    covered = {row.op for row in ROWS}
    missing = sorted(set(registry.all_ops()) - covered)
    assert not missing, f"ops without a test row in tests/optable: {missing}"


def test_every_row_names_a_registered_op():
    unknown = sorted({row.op for row in ROWS} - set(registry.all_ops()))
    assert not unknown, f"rows for ops that are not registered: {unknown}"


def test_instantiation_is_op_by_sample_by_backend():
    """@ops(...) (tests/framework.py) as other modules use it: readable ids, the filters applied."""
    mark = ops(backends=("numpy", "onnxruntime"), dtypes=("float16",))
    names, params = mark.args
    assert names == "row,sample,backend"
    ids = [p.id for p in params]
    assert {"softmax-f16-numpy", "softmax-f16-onnxruntime"} <= set(ids), ids
    assert all(sample_dtype(p.values[1]) == "float16" for p in params)
    assert len(ids) == 2 * len(ops(dtypes=("float16",)).args[1]) and len(set(ids)) == len(ids)
    grads = ops("gradients", where=lambda row, sample: row.op == "softmax").args[1]
    assert [p.id for p in grads] == ["softmax-last", "softmax-middle", "softmax-large", "softmax-masked_rows"]
    with pytest.raises(ValueError, match="kind is"):
        ops("reference")


@ops()
def test_reference(row, sample):
    g = trace_row(row, input_types(sample.inputs), sample.attrs)
    out = backends.compile(g, "numpy")(**sample_feed(sample))["out"]
    want_type = g.outputs["out"].type
    assert out.dtype == want_type.dtype.np, f"reference gave {out.dtype}, type rule says {want_type}"
    assert tuple(out.shape) == tuple(want_type.shape) or not want_type.shape.is_static, \
        f"reference gave shape {out.shape}, type rule says {want_type}"
    if sample.expected is not None:
        expected = sample.expected(*sample.inputs) if callable(sample.expected) else sample.expected
        np.testing.assert_allclose(out.astype(np.float64) if out.dtype.kind == "f" else out,
                                   expected, atol=sample.atol, rtol=sample.rtol)


@ops("gradients")
def test_gradient(row, sample):
    """Gradients of sum(w * op(x)) against central differences, in float64."""
    inputs = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in sample.inputs]
    types = input_types(inputs)
    fn = row.fn()
    names = [f"x{i}" for i in range(len(inputs))]
    out_type = trace_row(row, types, sample.attrs).outputs["out"].type
    assert out_type.dtype.is_float, f"differentiable op {row.op} returned {out_type}"
    weights = np.random.default_rng(1).standard_normal(tuple(out_type.shape.evaluate({})))

    def loss(w, **xs):
        return {"loss": (fn(*[xs[n] for n in names], **sample.attrs) * w).sum()}

    g = graphdsl.trace(loss, name=f"{row.op}_loss", w=TensorType(weights.shape, graphdsl.float64),
                       **dict(zip(names, types)))
    wrt = [names[i] for i in float_inputs(sample)]
    exe = backends.compile(grad(g, wrt=wrt), "numpy")
    fwd = backends.compile(g, "numpy")
    feed = dict(zip(names, inputs), w=weights)
    got = exe(**feed)
    eps = 1e-6
    for name in wrt:
        x = feed[name]
        numeric = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            plus, minus = x.copy(), x.copy()
            plus[idx] += eps
            minus[idx] -= eps
            numeric[idx] = (fwd(**{**feed, name: plus})["loss"] - fwd(**{**feed, name: minus})["loss"]) / (2 * eps)
        np.testing.assert_allclose(got[f"grad/{name}"], numeric, atol=row.grad_atol, rtol=row.grad_rtol,
                                   err_msg=f"d loss / d {name} for {row.op}: analytic vs central differences")


@ops("errors")
def test_error(row, case):
    with pytest.raises(case.error) as info:
        trace_row(row, [TensorType.parse(t) for t in case.inputs], case.attrs)
    err = info.value
    assert isinstance(err, GraphDSLError)
    assert re.search(case.match, str(err), re.S), f"message {str(err)!r} does not match {case.match!r}"
    assert err.op is not None, "the error must name the op"
    assert err.loc is not None and "tests" in err.loc.file, f"the error must point at the user's line: {err.loc}"
