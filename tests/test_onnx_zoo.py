"""Every zoo model on ONNX Runtime: forward and loss graphs match the NumPy reference.

Models up to RUN_LIMIT parameters run on both backends; the base-size ones (the same code at a
larger config) are exported and checked by onnx.checker and strict shape inference only, which
keeps this module within seconds.
"""
from __future__ import annotations

import numpy as np
import pytest

import backends
from backends.onnx import export

pytest.importorskip("onnxruntime")
import models  # noqa: E402

RUN_LIMIT = 5_000_000


def _names():
    return models.names()


def _feed(graph, batch: dict, params: dict, rng) -> dict:
    """The graph's inputs: from the batch where it has them, the others drawn from their types."""
    env = {}
    for name, node in graph.inputs.items():
        if name in batch:
            for d, size in zip(node.type.shape, batch[name].shape):
                if not isinstance(d, int):
                    env.setdefault(str(d), size)
    feed = {}
    for name, node in graph.inputs.items():
        if name in batch:
            feed[name] = batch[name]
        elif name == "seed":
            feed[name] = np.array(3, np.int32)
        else:
            shape = tuple(d if isinstance(d, int) else env.get(str(d), 2) for d in node.type.shape)
            dt = node.type.dtype
            feed[name] = (rng.standard_normal(shape).astype(dt.np) if dt.is_float
                          else rng.integers(0, 2, shape).astype(dt.np))
    return {**feed, **{k: v for k, v in params.items() if k in graph.params}}


def _compare(graph, feed, what):
    want = backends.compile(graph, "numpy")(**feed)
    got = backends.compile(graph, "onnxruntime")(**feed)
    for name, ref in want.items():
        assert got[name].dtype == ref.dtype and got[name].shape == ref.shape, f"{what}: {name}"
        if ref.dtype.kind == "f":
            np.testing.assert_allclose(got[name], ref, atol=2e-4, rtol=2e-3, err_msg=f"{what}: {name}")
        else:
            np.testing.assert_array_equal(got[name], ref, err_msg=f"{what}: {name}")


@pytest.mark.parametrize("name", _names())
def test_zoo_model_on_onnxruntime(name):
    spec = models.get(name)
    module = spec.module()
    forward = spec.forward(module.eval())
    module.train()
    loss = spec.loss(module)
    if module.num_parameters() > RUN_LIMIT:
        export(forward)   # checker and strict shape inference against our types
        export(loss)
        return
    params = module.init(seed=0)
    batch = spec.example_batch(batch_size=2, seed=0)
    rng = np.random.default_rng(0)
    _compare(forward, _feed(forward, batch, params, rng), f"{name} forward")
    _compare(loss, _feed(loss, batch, params, rng), f"{name} loss")


def test_the_zoo_is_not_empty():
    assert _names(), "models.names() lists no model"


@pytest.mark.parametrize("name", [n for n in _names() if n.endswith("-tiny")])
def test_exported_zoo_models_import_back_exactly(name):
    """Our export, imported again, computes the very same numbers as the original graph."""
    import graphdsl
    spec = models.get(name)
    module = spec.module()
    forward = spec.forward(module.eval())
    params = module.init(seed=0)
    back = graphdsl.from_onnx(export(forward, params=params))
    assert not back.params and list(back.inputs) == list(forward.inputs)
    feed = _feed(forward, spec.example_batch(batch_size=2, seed=0), params, np.random.default_rng(0))
    want = backends.compile(forward, "numpy")(**feed)
    got = backends.compile(back, "numpy")(**{k: v for k, v in feed.items() if k in back.inputs})
    for key, ref in want.items():
        np.testing.assert_allclose(got[key], ref, rtol=1e-6, atol=1e-6, err_msg=f"{name}: {key}")
