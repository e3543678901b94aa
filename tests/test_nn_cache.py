"""The key/value cache of graphdsl.nn (attention, layers, stacks): prefill then one step at a time
gives what the full causal forward gives, with a symbolic cached length; bad caches are errors."""
from __future__ import annotations

import numpy as np
import pytest

import backends
import graphdsl as gd
from graphdsl import nn
from graphdsl.errors import GraphDSLError, ShapeError

D, H, FF, LAYERS = 16, 4, 32, 2
DH = D // H
PAST = f"f32[batch,{H},past,{DH}]"


def perturbed(module, seed=0):
    rng = np.random.default_rng(seed)
    return {k: (v + rng.normal(0, 0.3, v.shape)).astype(np.float32) for k, v in module.init(seed).items()}


def run(graph, **feeds):
    return backends.compile(graph, "numpy")(**feeds)


def cached_graphs(stack, with_memory: bool):
    """(prefill, decode) graphs of ``stack.forward_cached``; outputs ``out``, ``k.i``, ``v.i``."""
    mem = {"memory": "f32[batch,src,16]"} if with_memory else {}

    def outputs(out, cache):
        return {"out": out, **{f"k.{i}": k for i, (k, _) in enumerate(cache)},
                **{f"v.{i}": v for i, (_, v) in enumerate(cache)}}

    def prefill(x, **m):
        return outputs(*stack.forward_cached(x, *m.values()))

    def decode(x, **kw):
        past = [(kw[f"k.{i}"], kw[f"v.{i}"]) for i in range(LAYERS)]
        memory = [kw["memory"]] if with_memory else []
        return outputs(*stack.forward_cached(x, *memory, past=past))

    past_specs = {f"{kind}.{i}": PAST for i in range(LAYERS) for kind in "kv"}
    return (gd.trace(prefill, params=stack, x=f"f32[batch,seq,{D}]", **mem),
            gd.trace(decode, params=stack, x=f"f32[batch,new,{D}]", **mem, **past_specs))


def decode_all(stack, params, x, memory=None, prompt=3):
    """Prefill ``prompt`` positions, then one position per call: the outputs, concatenated."""
    prefill, decode = cached_graphs(stack, memory is not None)
    mem = {} if memory is None else {"memory": memory}
    out = run(prefill, x=x[:, :prompt], **mem, **params)
    outs = [out["out"]]
    for t in range(prompt, x.shape[1]):
        cache = {k: v for k, v in out.items() if k != "out"}
        out = run(decode, x=x[:, t:t + 1], **cache, **mem, **params)
        assert out["k.0"].shape == (x.shape[0], H, t + 1, DH)
        outs.append(out["out"])
    return np.concatenate(outs, axis=1)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_stack_cache_equals_causal_forward(norm_first):
    stack = nn.TransformerEncoder(LAYERS, D, H, FF, dropout=0.0, norm_first=norm_first).eval()
    params = perturbed(stack)
    x = np.random.default_rng(1).standard_normal((2, 7, D)).astype(np.float32)
    full = run(gd.trace(lambda x: stack(x, causal=True), params=stack, x=f"f32[batch,seq,{D}]"),
               x=x, **params)["out"]
    np.testing.assert_allclose(decode_all(stack, params, x), full, atol=1e-5)


def test_decoder_stack_cache_equals_forward():
    stack = nn.TransformerDecoder(LAYERS, D, H, FF, dropout=0.0, norm_first=True).eval()
    params = perturbed(stack, 2)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, D)).astype(np.float32)
    memory = rng.standard_normal((2, 5, D)).astype(np.float32)
    full = run(gd.trace(lambda x, memory: stack(x, memory), params=stack, x=f"f32[batch,seq,{D}]",
                        memory="f32[batch,src,16]"), x=x, memory=memory, **params)["out"]
    np.testing.assert_allclose(decode_all(stack, params, x, memory), full, atol=1e-5)

    # memory keys/values computed once give the same as projecting the memory at every step
    def with_kv(x, memory):
        out, _ = stack.forward_cached(x, stack.memory_keys_values(memory))
        return out
    got = run(gd.trace(with_kv, params=stack, x=f"f32[batch,seq,{D}]", memory="f32[batch,src,16]"),
              x=x, memory=memory, **params)["out"]
    np.testing.assert_allclose(got, full, atol=1e-5)


def test_attend_to_precomputed_keys_values_equals_cross_attention():
    attn = nn.MultiHeadAttention(D, H)
    params = perturbed(attn, 4)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, D)).astype(np.float32)
    m = rng.standard_normal((2, 5, D)).astype(np.float32)
    specs = dict(x=f"f32[batch,tgt,{D}]", m=f"f32[batch,src,{D}]")
    want = run(gd.trace(lambda x, m: attn(x, m), params=attn, **specs), x=x, m=m, **params)["out"]
    got = run(gd.trace(lambda x, m: attn.attend(x, attn.keys_values(m)), params=attn, **specs),
              x=x, m=m, **params)["out"]
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("past,error,match", [
    (lambda k: k, GraphDSLError, r"a key/value cache entry is a \(k, v\) pair"),
    (lambda k: (k, k[:, :2]), ShapeError, r"cached v must be f32\[batch, 4, past, 4\]"),
])
def test_bad_cache_entries(past, error, match):
    attn = nn.MultiHeadAttention(D, H)

    def f(x, k):
        return attn.forward_cached(x, past(k))[0]
    with pytest.raises(error, match=match) as info:
        gd.trace(f, params=attn, x=f"f32[batch,1,{D}]", k=PAST)
    assert info.value.loc.file.endswith("test_nn_cache.py")


def test_cache_needs_one_entry_per_layer():
    stack = nn.TransformerEncoder(LAYERS, D, H, FF)
    with pytest.raises(GraphDSLError, match="one \\(k, v\\) pair per layer: expected 2, got 1 entries"):
        gd.trace(lambda x, k: stack.forward_cached(x, past=[(k, k)])[0], params=stack,
                 x=f"f32[batch,1,{D}]", k=PAST)
