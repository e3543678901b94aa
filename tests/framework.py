"""What the test modules share: the op table as test cases, tracing a row, inputs and feeds, the one
graph holding every sample, and which graphdsl/ops module declares each op.

Test modules import these from here, never another test module's private names. The op table
(tests/optable/<group>.py, one file per graphdsl/ops/<group>.py, rows defined in tests/opinfo.py)
becomes test cases Thunder-style: ``@ops()`` instantiates a test once per (row, sample), with ids
like ``softmax-masked_rows``; ``@ops(backends=("numpy", "onnxruntime"))`` once per (row, sample,
backend), ``softmax-masked_rows-onnxruntime``; ``dtypes=`` keeps the samples of some dtypes. The
instantiation is data, so a new row or backend needs no new loop in a test body.
"""
from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pytest

import graphdsl
import graphdsl.ops
from graphdsl import registry
from graphdsl.autodiff import grad
from graphdsl.types import TensorType
from tests import optable
from tests.opinfo import OpInfo, Sample


# -- the op table ---------------------------------------------------------------------------------
def optable_modules() -> dict[str, object]:
    """group -> the tests/optable/<group>.py module (group named like graphdsl/ops/<group>.py)."""
    return {m.name: importlib.import_module(f"tests.optable.{m.name}")
            for m in pkgutil.iter_modules(optable.__path__)}


# every row of every tests/optable file
ROWS: list[OpInfo] = [row for module in optable_modules().values() for row in module.OPS]


def float_inputs(sample: Sample) -> list[int]:
    """Positions of the sample's floating-point inputs: those a gradient is taken for."""
    return [i for i, a in enumerate(sample.inputs) if a.dtype.kind == "f"]


def has_gradient(row: OpInfo, sample: Sample) -> bool:
    """The sample takes part in gradient checks: asked for, the op differentiable, a float input."""
    return sample.grad and registry.get(row.op).differentiable and bool(float_inputs(sample))


def sample_dtype(sample: Sample) -> str:
    """The dtype a sample is "in": its first float input's, else its first input's ("none": no input)."""
    floats = float_inputs(sample)
    if floats:
        return str(sample.inputs[floats[0]].dtype)
    return str(sample.inputs[0].dtype) if sample.inputs else "none"


def _sample_params(rows: Iterable[OpInfo], keep: Callable[[OpInfo, Sample], bool]) -> list:
    return [pytest.param(row, s, id=f"{row.op}-{s.name or i}")
            for row in rows for i, s in enumerate(row.samples) if keep(row, s)]


# pytest.param(row, sample) per sample (per error case), id "op-sample"; GRAD_SAMPLES: has_gradient's
SAMPLES = _sample_params(ROWS, lambda row, s: True)
GRAD_SAMPLES = _sample_params(ROWS, has_gradient)
ERRORS = [pytest.param(row, e, id=f"{row.op}-{e.name or i}")
          for row in ROWS for i, e in enumerate(row.errors)]


def ops(kind: str = "samples", *, backends: Iterable[str] = (), dtypes: Iterable[str] | None = None,
        where: Callable[[OpInfo, Sample], bool] | None = None):
    """Instantiate a test over the op table (Thunder's ``@ops``): a ``pytest.mark.parametrize``.

    kind "samples" or "gradients" gives arguments ``row, sample`` (gradients: the samples of
    ``has_gradient``); "errors" gives ``row, case``. ``backends`` adds a ``backend`` argument, one
    case per backend; ``dtypes`` keeps the samples whose ``sample_dtype`` is listed; ``where(row,
    sample)`` keeps the samples it accepts.
    """
    if kind == "errors":
        if dtypes is not None or where is not None:
            raise ValueError("ops('errors') takes no dtypes= or where=: error cases are types, not arrays")
        names, params = "row,case", ERRORS
    elif kind in ("samples", "gradients"):
        wanted = set(dtypes) if dtypes is not None else None
        params = [p for p in (SAMPLES if kind == "samples" else GRAD_SAMPLES)
                  if (wanted is None or sample_dtype(p.values[1]) in wanted)
                  and (where is None or where(*p.values))]
        names = "row,sample"
    else:
        raise ValueError(f"ops() kind is 'samples', 'gradients' or 'errors', not {kind!r}")
    backends = tuple(backends)
    if backends:
        names += ",backend"
        params = [pytest.param(*p.values, b, id=f"{p.id}-{b}") for p in params for b in backends]
    return pytest.mark.parametrize(names, params)


# -- tracing a row --------------------------------------------------------------------------------
def input_types(arrays) -> list[TensorType]:
    """The TensorType of each array: the types a sample's graph is traced with."""
    return [TensorType(a.shape, graphdsl.dtypes.dtype(a.dtype)) for a in arrays]


def trace_row(row: OpInfo, types, attrs) -> graphdsl.Graph:
    """A graph calling the row's op once: inputs ``x0, x1, ...`` of ``types``, output ``out``."""
    names = [f"x{i}" for i in range(len(types))]
    fn = row.fn()

    def body(**xs):
        return fn(*[xs[n] for n in names], **attrs)

    return graphdsl.trace(body, name=row.op, **dict(zip(names, types)))


def sample_feed(sample: Sample) -> dict[str, np.ndarray]:
    """The inputs of ``trace_row``'s graph for this sample: ``{"x0": ..., "x1": ...}``."""
    return {f"x{i}": a for i, a in enumerate(sample.inputs)}


# -- every sample in one graph (a compile is what costs on TVM) ---------------------------------
def sample_key(k: int, i: int) -> str:
    """Input ``i`` of sample ``k`` in the one-graph forms below."""
    return f"s{k}/x{i}"


def all_samples_graph():
    """One graph computing every sample: output ``s<k>`` from inputs ``s<k>/x<i>``; and its feed."""
    specs, feed = {}, {}
    for k, p in enumerate(SAMPLES):
        for i, (a, t) in enumerate(zip(p.values[1].inputs, input_types(p.values[1].inputs))):
            specs[sample_key(k, i)], feed[sample_key(k, i)] = t, a

    def body(**xs):
        outs = {}
        for k, p in enumerate(SAMPLES):
            row, sample = p.values
            args = [xs[sample_key(k, i)] for i in range(len(sample.inputs))]
            outs[f"s{k}"] = row.fn()(*args, **sample.attrs)
        return outs
    return graphdsl.trace(body, name="all_samples", **specs), feed


def all_gradients_graph():
    """grad of sum_k sum(w_k * op_k(x_k)) w.r.t. every float input of every GRAD_SAMPLES sample
    (in float64); the loss's gradient w.r.t. sample k's inputs is sample k's own. Returns the
    gradient graph, its feed and the names of the inputs differentiated."""
    specs, feed, wrt = {}, {}, []
    for k, p in enumerate(GRAD_SAMPLES):
        row, sample = p.values
        inputs = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in sample.inputs]
        for i, (a, t) in enumerate(zip(inputs, input_types(inputs))):
            specs[sample_key(k, i)], feed[sample_key(k, i)] = t, a
        wrt += [sample_key(k, i) for i in float_inputs(sample)]
        out_type = graphdsl.trace(lambda **xs: row.fn()(*xs.values(), **sample.attrs),
                                  **{f"x{i}": t for i, t in enumerate(input_types(inputs))}).outputs["out"].type
        weights = np.random.default_rng(k).standard_normal(tuple(out_type.shape.evaluate({})))
        specs[f"s{k}/w"], feed[f"s{k}/w"] = TensorType(weights.shape, graphdsl.float64), weights

    def loss(**xs):
        total = 0.0
        for k, p in enumerate(GRAD_SAMPLES):
            row, sample = p.values
            out = row.fn()(*[xs[sample_key(k, i)] for i in range(len(sample.inputs))], **sample.attrs)
            total = total + (out * xs[f"s{k}/w"]).sum()
        return {"loss": total}
    return grad(graphdsl.trace(loss, name="all_gradients", **specs), wrt=wrt), feed, wrt


# -- op groups ------------------------------------------------------------------------------------
OPS_DIR = Path(graphdsl.ops.__file__).parent    # graphdsl/ops: one module per op group


def _called_name(call: ast.Call) -> str | None:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def _declarers(trees) -> set[str]:
    """``defop`` and the helpers of graphdsl/ops that call it with a name they are given
    (``_compare("less", np.less)``), wherever the helper is defined."""
    names = {"defop"}
    for tree in trees:
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef) and any(
                    isinstance(c, ast.Call) and _called_name(c) == "defop" for c in ast.walk(fn)):
                names.add(fn.name)
    return names


def op_groups() -> dict[str, str]:
    """op name -> the group declaring it: the stem of the graphdsl/ops/<group>.py whose source calls
    ``defop("name", ...)`` or a helper that calls defop (``_compare("less", ...)``). Read from the
    source, not the modules' globals: a module's namespace also holds the ops it imports."""
    trees = {path.stem: ast.parse(path.read_text(), filename=str(path)) for path in sorted(OPS_DIR.glob("*.py"))}
    declarers = _declarers(trees.values())
    groups: dict[str, str] = {}
    for group, tree in trees.items():
        for call in ast.walk(tree):
            if not (isinstance(call, ast.Call) and call.args and isinstance(call.args[0], ast.Constant)
                    and isinstance(call.args[0].value, str) and _called_name(call) in declarers):
                continue
            name = call.args[0].value
            if name in groups:
                raise AssertionError(f"op {name!r} is declared in graphdsl/ops/{groups[name]}.py "
                                     f"and graphdsl/ops/{group}.py")
            groups[name] = group
    return groups
