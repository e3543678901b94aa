"""Table-driven op tests: every row of tests/optable/*.py, every registry op covered."""
from __future__ import annotations

import importlib
import pkgutil
import re

import numpy as np
import pytest

import backends
import graphdsl
from graphdsl import registry
from graphdsl.autodiff import grad
from graphdsl.errors import GraphDSLError
from graphdsl.types import TensorType
from tests import optable
from tests.opinfo import OpInfo


def _all_rows() -> list[OpInfo]:
    rows = []
    for mod in pkgutil.iter_modules(optable.__path__):
        rows.extend(importlib.import_module(f"tests.optable.{mod.name}").OPS)
    return rows


ROWS = _all_rows()
SAMPLES = [pytest.param(row, s, id=f"{row.op}-{s.name or i}")
           for row in ROWS for i, s in enumerate(row.samples)]
ERRORS = [pytest.param(row, e, id=f"{row.op}-{e.name or i}")
          for row in ROWS for i, e in enumerate(row.errors)]


def _trace(row: OpInfo, types, attrs):
    names = [f"x{i}" for i in range(len(types))]
    fn = row.fn()

    def body(**xs):
        return fn(*[xs[n] for n in names], **attrs)

    return graphdsl.trace(body, name=row.op, **dict(zip(names, types)))


def _types(arrays):
    return [TensorType(a.shape, graphdsl.dtypes.dtype(a.dtype)) for a in arrays]


def test_every_op_has_a_row():
    covered = {row.op for row in ROWS}
    missing = sorted(set(registry.all_ops()) - covered)
    assert not missing, f"ops without a test row in tests/optable: {missing}"


def test_every_row_names_a_registered_op():
    unknown = sorted({row.op for row in ROWS} - set(registry.all_ops()))
    assert not unknown, f"rows for ops that are not registered: {unknown}"


@pytest.mark.parametrize("row,sample", SAMPLES)
def test_reference(row, sample):
    g = _trace(row, _types(sample.inputs), sample.attrs)
    out = backends.compile(g, "numpy")(**{f"x{i}": a for i, a in enumerate(sample.inputs)})["out"]
    want_type = g.outputs["out"].type
    assert out.dtype == want_type.dtype.np, f"reference gave {out.dtype}, type rule says {want_type}"
    assert tuple(out.shape) == tuple(want_type.shape) or not want_type.shape.is_static, \
        f"reference gave shape {out.shape}, type rule says {want_type}"
    if sample.expected is not None:
        expected = sample.expected(*sample.inputs) if callable(sample.expected) else sample.expected
        np.testing.assert_allclose(out.astype(np.float64) if out.dtype.kind == "f" else out,
                                   expected, atol=sample.atol, rtol=sample.rtol)


def _float_inputs(sample):
    return [i for i, a in enumerate(sample.inputs) if a.dtype.kind == "f"]


@pytest.mark.parametrize("row,sample", [p for p in SAMPLES
                                        if p.values[1].grad and registry.get(p.values[0].op).differentiable
                                        and _float_inputs(p.values[1])])
def test_gradient(row, sample):
    """Gradients of sum(w * op(x)) against central differences, in float64."""
    inputs = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in sample.inputs]
    types = _types(inputs)
    fn = row.fn()
    names = [f"x{i}" for i in range(len(inputs))]
    out_type = _trace(row, types, sample.attrs).outputs["out"].type
    assert out_type.dtype.is_float, f"differentiable op {row.op} returned {out_type}"
    weights = np.random.default_rng(1).standard_normal(tuple(out_type.shape.evaluate({})))

    def loss(w, **xs):
        return {"loss": (fn(*[xs[n] for n in names], **sample.attrs) * w).sum()}

    g = graphdsl.trace(loss, name=f"{row.op}_loss", w=TensorType(weights.shape, graphdsl.float64),
                       **dict(zip(names, types)))
    wrt = [names[i] for i in _float_inputs(sample)]
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


@pytest.mark.parametrize("row,case", ERRORS)
def test_error(row, case):
    with pytest.raises(case.error) as info:
        _trace(row, [TensorType.parse(t) for t in case.inputs], case.attrs)
    err = info.value
    assert isinstance(err, GraphDSLError)
    assert re.search(case.match, str(err), re.S), f"message {str(err)!r} does not match {case.match!r}"
    assert err.op is not None, "the error must name the op"
    assert err.loc is not None and "tests" in err.loc.file, f"the error must point at the user's line: {err.loc}"
