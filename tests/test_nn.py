"""graphdsl.nn: modules traced and run on the NumPy backend against plain-NumPy implementations.

The references here are written from the textbook formulas with per-head loops and -inf masking,
independently of the library's op references. Also: parameter names, init determinism, dropout
in train/eval mode, gradients vs central differences, and where shape errors point.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

import backends
import graphdsl as gd
from graphdsl import nn
from graphdsl.autodiff import grad
from graphdsl.errors import GraphDSLError, ShapeError, TypeError_
from graphdsl.nn import functional as F

B, S, T, D, H, FF = 2, 5, 4, 16, 4, 32
TOL = dict(rtol=1e-5, atol=1e-5)


# -- NumPy references ----------------------------------------------------------------------------
_erf = np.vectorize(math.erf)


def key(name, leaf):
    return f"{name}.{leaf}" if name else leaf


def np_linear(p, name, x):
    return x @ p[key(name, "weight")] + p[key(name, "bias")]


def np_layer_norm(p, name, x, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p[key(name, "weight")] + p[key(name, "bias")]


def np_softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


NP_ACT = {
    "gelu": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
    "relu": lambda x: np.maximum(x, 0),
    "silu": lambda x: x / (1 + np.exp(-x)),
}


def np_ffn(p, name, x, act="gelu"):
    return np_linear(p, key(name, "fc2"), NP_ACT[act](np_linear(p, key(name, "fc1"), x)))


def np_mha(p, name, x, kv=None, *, n_heads=H, mask=None, bias=None, causal=False):
    """One head at a time: scores, -inf where not allowed, softmax, weighted values."""
    kv = x if kv is None else kv
    q, k, v = (np_linear(p, key(name, w), t) for w, t in (("q", x), ("k", kv), ("v", kv)))
    nb, sq, d = x.shape
    sk, dh = kv.shape[1], d // n_heads
    out = np.zeros((nb, sq, d))
    for b in range(nb):
        for h in range(n_heads):
            cols = slice(h * dh, (h + 1) * dh)
            scores = q[b, :, cols] @ k[b, :, cols].T / math.sqrt(dh)
            if bias is not None:
                scores = scores + np.broadcast_to(bias, (nb, n_heads, sq, sk))[b, h]
            allowed = np.ones((sq, sk), bool)
            if mask is not None:
                allowed &= np.broadcast_to(mask, (nb, n_heads, sq, sk))[b, h]
            if causal:
                allowed &= np.arange(sk)[None, :] <= np.arange(sq)[:, None] + (sk - sq)
            out[b, :, cols] = np_softmax(np.where(allowed, scores, -np.inf)) @ v[b, :, cols]
    return np_linear(p, key(name, "o"), out)


def np_encoder_layer(p, x, *, norm_first=False, mask=None, causal=False, act="gelu", prefix=""):
    def attn(h):
        return np_mha(p, f"{prefix}attn", h, mask=mask, causal=causal)

    def ffn(h):
        return np_ffn(p, f"{prefix}ffn", h, act)

    if norm_first:
        x = x + attn(np_layer_norm(p, f"{prefix}norm1", x))
        return x + ffn(np_layer_norm(p, f"{prefix}norm2", x))
    x = np_layer_norm(p, f"{prefix}norm1", x + attn(x))
    return np_layer_norm(p, f"{prefix}norm2", x + ffn(x))


def np_decoder_layer(p, x, memory, *, self_mask=None, memory_mask=None, prefix=""):
    x = np_layer_norm(p, f"{prefix}norm1", x + np_mha(p, f"{prefix}self_attn", x, mask=self_mask,
                                                      causal=True))
    x = np_layer_norm(p, f"{prefix}norm2", x + np_mha(p, f"{prefix}cross_attn", x, memory,
                                                      mask=memory_mask))
    return np_layer_norm(p, f"{prefix}norm3", x + np_ffn(p, f"{prefix}ffn", x))


# -- helpers -------------------------------------------------------------------------------------
def random_params(module, seed=0, scale=0.3):
    """Parameters far from their (tiny) defaults, so attention is not near-uniform."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, value in module.init(seed).items():
        base = 1.0 if np.all(value == 1) else 0.0   # norm scales stay near 1
        out[name] = (base + rng.standard_normal(value.shape) * scale).astype(value.dtype)
    return out


def randn(*shape, seed=1, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def run(g, **feed):
    return backends.compile(g, "numpy")(**feed)


def padding(lengths, seq):
    """[B, seq] int32 0/1 attention mask: the first ``lengths[b]`` tokens are real."""
    return (np.arange(seq)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)


# -- forward values vs NumPy ---------------------------------------------------------------------
x_spec = f"f32[batch,seq,{D}]"
mask_lengths = [5, 3]
bool_key_mask = padding(mask_lengths, S).astype(bool)[:, None, None, :]       # [B,1,1,S]
float_bias = randn(B, 1, S, S, seed=7) * 2                                    # [B,1,S,S]
as_bool_keys = lambda am: am.astype(bool)[:, None, None, :]  # noqa: E731


@dataclass
class Case:
    name: str
    make: Callable                  # () -> Module
    call: Callable                  # module -> the function to trace
    inputs: dict                    # name -> array
    ref: Callable                   # (params, **inputs) -> expected array, in float64
    specs: dict = field(default_factory=lambda: {"x": x_spec})


def _self(m):
    return m


x_in, x_tgt, mem = randn(B, S, D), randn(B, T, D), randn(B, S, D, seed=3)
dec_specs = {"x": f"f32[batch,tgt,{D}]", "memory": f"f32[batch,src,{D}]"}

FORWARD_CASES = [
    Case("linear", lambda: nn.Linear(D, 8), _self, dict(x=x_in), lambda p, x: np_linear(p, "", x)),
    Case("linear_no_bias", lambda: nn.Linear(D, 8, bias=False), _self, dict(x=x_in),
         lambda p, x: x @ p["weight"]),
    Case("layer_norm", lambda: nn.LayerNorm(D), _self, dict(x=x_in * 3 + 1),
         lambda p, x: np_layer_norm(p, "", x)),
    Case("rms_norm", lambda: nn.RMSNorm(D, eps=1e-6), _self, dict(x=x_in * 3),
         lambda p, x: x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6) * p["weight"]),
    Case("embedding", lambda: nn.Embedding(10, D), _self,
         dict(ids=np.array([[1, 4, 9], [0, 0, 3]], np.int32)),
         lambda p, ids: np.stack([[p["weight"][i] for i in row] for row in ids]),
         specs={"ids": "i32[batch,seq]"}),
    *[Case(f"ffn_{act}", lambda act=act: nn.FeedForward(D, FF, act), _self, dict(x=x_in),
           lambda p, x, act=act: np_ffn(p, "", x, act))
      for act in ("gelu", "gelu_tanh", "relu", "silu")],
    Case("mha", lambda: nn.MultiHeadAttention(D, H), _self, dict(x=x_in), lambda p, x: np_mha(p, "", x)),
    Case("mha_bool_mask", lambda: nn.MultiHeadAttention(D, H), lambda m: lambda x, mask: m(x, mask=mask),
         dict(x=x_in, mask=bool_key_mask), lambda p, x, mask: np_mha(p, "", x, mask=mask),
         specs={"x": x_spec, "mask": "bool[batch,1,1,seq]"}),
    Case("mha_float_bias", lambda: nn.MultiHeadAttention(D, H), lambda m: lambda x, bias: m(x, mask=bias),
         dict(x=x_in, bias=float_bias), lambda p, x, bias: np_mha(p, "", x, bias=bias),
         specs={"x": x_spec, "bias": "f32[batch,1,seq,seq]"}),
    Case("mha_causal", lambda: nn.MultiHeadAttention(D, H), lambda m: lambda x: m(x, causal=True),
         dict(x=x_in), lambda p, x: np_mha(p, "", x, causal=True)),
    Case("mha_causal_and_padding_bias", lambda: nn.MultiHeadAttention(D, H),
         lambda m: lambda x, am: m(x, mask=F.padding_mask_bias(am), causal=True),
         dict(x=x_in, am=padding(mask_lengths, S)),
         lambda p, x, am: np_mha(p, "", x, mask=as_bool_keys(am), causal=True),
         specs={"x": x_spec, "am": "i32[batch,seq]"}),
    Case("mha_padding_mask", lambda: nn.MultiHeadAttention(D, H),
         lambda m: lambda x, am: m(x, mask=F.padding_mask(am)), dict(x=x_in, am=padding(mask_lengths, S)),
         lambda p, x, am: np_mha(p, "", x, mask=as_bool_keys(am)),
         specs={"x": x_spec, "am": "i32[batch,seq]"}),
    Case("mha_cross", lambda: nn.MultiHeadAttention(D, H), lambda m: lambda x, memory: m(x, memory),
         dict(x=x_tgt, memory=mem), lambda p, x, memory: np_mha(p, "", x, memory), specs=dec_specs),
    Case("mha_cross_causal_static", lambda: nn.MultiHeadAttention(D, H),
         lambda m: lambda x, memory: m(x, memory, causal=True), dict(x=x_tgt[:, :3], memory=mem),
         lambda p, x, memory: np_mha(p, "", x, memory, causal=True),
         specs={"x": f"f32[{B},3,{D}]", "memory": f"f32[{B},{S},{D}]"}),
    Case("encoder_layer", lambda: nn.TransformerEncoderLayer(D, H, FF), _self, dict(x=x_in),
         lambda p, x: np_encoder_layer(p, x)),
    Case("encoder_layer_pre_ln_masked", lambda: nn.TransformerEncoderLayer(D, H, FF, norm_first=True),
         lambda m: lambda x, mask: m(x, mask=mask), dict(x=x_in, mask=bool_key_mask),
         lambda p, x, mask: np_encoder_layer(p, x, norm_first=True, mask=mask),
         specs={"x": x_spec, "mask": "bool[batch,1,1,seq]"}),
    Case("encoder_layer_causal", lambda: nn.TransformerEncoderLayer(D, H, FF, activation="relu"),
         lambda m: lambda x: m(x, causal=True), dict(x=x_in),
         lambda p, x: np_encoder_layer(p, x, causal=True, act="relu")),
    Case("decoder_layer", lambda: nn.TransformerDecoderLayer(D, H, FF), _self, dict(x=x_tgt, memory=mem),
         lambda p, x, memory: np_decoder_layer(p, x, memory), specs=dec_specs),
    Case("decoder_layer_masks", lambda: nn.TransformerDecoderLayer(D, H, FF),
         lambda m: lambda x, memory, am, tm: m(x, memory, self_mask=F.padding_mask(tm),
                                               memory_mask=F.padding_mask_bias(am)),
         dict(x=x_tgt, memory=mem, am=padding(mask_lengths, S), tm=padding([4, 2], T)),
         lambda p, x, memory, am, tm: np_decoder_layer(p, x, memory, self_mask=as_bool_keys(tm),
                                                       memory_mask=as_bool_keys(am)),
         specs={**dec_specs, "am": "i32[batch,src]", "tm": "i32[batch,tgt]"}),
    Case("encoder_stack", lambda: nn.TransformerEncoder(2, D, H, FF), _self, dict(x=x_in),
         lambda p, x: np_encoder_layer(p, np_encoder_layer(p, x, prefix="layers.0."), prefix="layers.1.")),
    Case("encoder_stack_pre_ln", lambda: nn.TransformerEncoder(2, D, H, FF, norm_first=True), _self,
         dict(x=x_in),
         lambda p, x: np_layer_norm(p, "norm", np_encoder_layer(
             p, np_encoder_layer(p, x, norm_first=True, prefix="layers.0."), norm_first=True,
             prefix="layers.1."))),
    Case("decoder_stack", lambda: nn.TransformerDecoder(2, D, H, FF), _self, dict(x=x_tgt, memory=mem),
         lambda p, x, memory: np_decoder_layer(
             p, np_decoder_layer(p, x, memory, prefix="layers.0."), memory, prefix="layers.1."),
         specs=dec_specs),
]


def _as_f64(arrays):
    return {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in arrays.items()}


@pytest.mark.parametrize("case", FORWARD_CASES, ids=[c.name for c in FORWARD_CASES])
def test_forward_matches_numpy(case):
    module = case.make().eval()
    g = gd.trace(case.call(module), params=module, **case.specs)
    assert "dropout" not in g.op_counts()
    p = random_params(module)
    out = run(g, **case.inputs, **p)["out"]
    want = case.ref(_as_f64(p), **_as_f64(case.inputs))
    assert out.dtype == np.float32 and out.shape == want.shape
    np.testing.assert_allclose(out, want, **TOL)


def test_attention_is_written_unfused():
    m = nn.MultiHeadAttention(D, H)
    counts = gd.trace(lambda x: m(x, causal=True), params=m, x=x_spec).op_counts()
    assert "attention" not in counts
    assert counts["matmul"] == 6 and counts["softmax"] == 1 and counts["where"] == 1
    assert counts["iota"] == 2 and counts["less_equal"] == 1


# -- parameters: names, counts, printing, freezing ------------------------------------------------
def test_parameter_names_and_shapes():
    layer = nn.TransformerEncoderLayer(D, H, FF)
    shapes = {k: tuple(p.shape) for k, p in layer.named_parameters()}
    lin = lambda i, o: {"weight": (i, o), "bias": (o,)}  # noqa: E731
    norm = {"weight": (D,), "bias": (D,)}
    want = {}
    for sub, d in [("attn.q", lin(D, D)), ("attn.k", lin(D, D)), ("attn.v", lin(D, D)),
                   ("attn.o", lin(D, D)), ("norm1", norm), ("ffn.fc1", lin(D, FF)),
                   ("ffn.fc2", lin(FF, D)), ("norm2", norm)]:
        want.update({f"{sub}.{k}": v for k, v in d.items()})
    assert shapes == want
    assert list(shapes)[:2] == ["attn.q.weight", "attn.q.bias"]
    assert layer.num_parameters() == 4 * (D * D + D) + 2 * 2 * D + (D * FF + FF) + (FF * D + D)


def test_stack_names_and_counts():
    enc = nn.TransformerEncoder(3, D, H, FF)
    names = list(enc.parameters())
    assert names[0] == "layers.0.attn.q.weight" and names[-1] == "layers.2.norm2.bias"
    assert enc.num_parameters() == 3 * nn.TransformerEncoderLayer(D, H, FF).num_parameters()
    dec = nn.TransformerDecoder(2, D, H, FF, norm_first=True)
    names = set(dec.parameters())
    assert {"layers.1.self_attn.q.weight", "layers.1.cross_attn.o.bias", "layers.0.norm3.weight",
            "norm.weight"} <= names
    assert [n for n, _ in dec.named_modules()][:3] == ["", "layers", "layers.0"]


def test_traced_graph_params_are_the_module_names():
    layer = nn.TransformerEncoderLayer(D, H, FF).eval()
    g = gd.trace(layer, x=x_spec)
    assert set(g.params) == set(layer.parameters())
    assert g.params["attn.q.weight"].type == gd.TensorType((D, D), gd.float32)


def test_shared_parameter_is_listed_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, D)
            self.head = nn.Linear(D, 10, bias=False)
            self.head.weight = self.embed.weight

    m = Tied()
    assert list(m.parameters()) == ["embed.weight"]


def test_plain_list_of_modules_is_an_error():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Linear(2, 2)]

    with pytest.raises(GraphDSLError, match="ModuleList"):
        Bad()


def test_module_list_indexing():
    ml = nn.ModuleList([nn.Linear(2, 3), nn.Linear(3, 4)])
    assert len(ml) == 2 and ml[1].out_features == 4 and [m.in_features for m in ml] == [2, 3]
    assert list(ml.parameters()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    with pytest.raises(GraphDSLError, match="holds Modules"):
        ml.append("not a module")


def test_repr_is_a_tree_with_shapes():
    text = repr(nn.TransformerEncoderLayer(D, H, FF))
    assert text.startswith("TransformerEncoderLayer(norm_first=False)(\n")
    assert "  (attn): MultiHeadAttention(d_model=16, n_heads=4, dropout=0.1)(" in text
    assert ("    (q): Linear(in_features=16, out_features=16, bias=True)  weight=f32[16,16]  "
            "bias=f32[16]") in text
    assert "(norm2): LayerNorm(16, eps=1e-05)  weight=f32[16]  bias=f32[16]" in text


def test_freeze_and_unfreeze():
    enc = nn.TransformerEncoder(2, D, H, FF)
    total = enc.num_parameters()
    enc.freeze("layers.0")
    assert not any(n.startswith("layers.0.") for n in enc.trainable_parameters())
    assert enc.num_parameters(trainable_only=True) == total // 2
    assert "(frozen)" in repr(enc)
    enc.unfreeze("layers.0.norm1")
    assert "layers.0.norm1.weight" in enc.trainable_parameters()
    enc.freeze()
    assert enc.trainable_parameters() == {}
    with pytest.raises(GraphDSLError, match="no parameter under 'layers.7'"):
        enc.freeze("layers.7")
    # "layers.1" must not match "layers.10"-style siblings, only whole path segments
    big = nn.TransformerEncoder(11, 4, 1, 4)
    big.freeze("layers.1")
    assert "layers.10.attn.q.weight" in big.trainable_parameters()


# -- init ------------------------------------------------------------------------------------------
def test_init_is_deterministic_per_seed():
    layer = nn.TransformerEncoderLayer(D, H, FF)
    a, b, c = layer.init(0), layer.init(0), layer.init(1)
    assert set(a) == set(layer.parameters())
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert a[k].dtype == np.float32 and a[k].shape == tuple(layer.parameters()[k].shape)
    assert not np.array_equal(a["attn.q.weight"], c["attn.q.weight"])
    assert not np.array_equal(a["attn.q.weight"], a["attn.k.weight"])


def test_adding_a_module_leaves_other_parameters_unchanged():
    class Small(nn.Module):
        def __init__(self, extra):
            super().__init__()
            if extra:
                self.before = nn.Linear(D, D)
            self.lin = nn.Linear(D, D)

    a, b = Small(False).init(3), Small(True).init(3)
    assert set(b) - set(a) == {"before.weight", "before.bias"}
    np.testing.assert_array_equal(a["lin.weight"], b["lin.weight"])


def test_default_inits():
    p = nn.TransformerEncoderLayer(64, 4, 128).init(0)
    assert np.all(p["norm1.weight"] == 1) and np.all(p["norm1.bias"] == 0)
    assert np.all(p["attn.q.bias"] == 0)
    assert abs(p["ffn.fc1.weight"].std() - 0.02) < 0.002   # BERT's N(0, 0.02)


INIT_CASES = [
    ("zeros", lambda a: np.all(a == 0)),
    ("ones", lambda a: np.all(a == 1)),
    (("constant", 0.25), lambda a: np.all(a == 0.25)),
    (("normal", 1.5), lambda a: abs(a.std() - 1.5) < 0.1),
    (("uniform", 0.3), lambda a: a.min() >= -0.3 and a.max() <= 0.3 and a.max() > 0.25),
    ("xavier_uniform", lambda a: np.abs(a).max() <= math.sqrt(6 / (64 + 32)) and
     np.abs(a).max() > 0.9 * math.sqrt(6 / (64 + 32))),
    (lambda rng, shape: np.full(shape, 7.0), lambda a: np.all(a == 7)),
]


@pytest.mark.parametrize("spec,check", INIT_CASES, ids=[str(c[0])[:20] for c in INIT_CASES])
def test_init_specs(spec, check):
    m = nn.Module()
    m.w = gd.Parameter((64, 32), gd.float64, init=spec)
    arr = m.init(0)["w"]
    assert arr.dtype == np.float64 and arr.shape == (64, 32)
    assert check(arr)


def test_unknown_init_spec_is_an_error():
    m = nn.Module()
    with pytest.raises(GraphDSLError, match="unknown initializer 'gaussian'"):
        m.w = gd.Parameter((2,), init="gaussian")


def test_float64_modules():
    layer = nn.TransformerEncoderLayer(8, 2, 16, dtype=gd.float64)
    assert all(p.dtype == gd.float64 for p in layer.parameters().values())
    assert all(a.dtype == np.float64 for a in layer.init(0).values())


# -- dropout ---------------------------------------------------------------------------------------
def test_eval_mode_has_no_dropout_and_no_seed():
    layer = nn.TransformerEncoderLayer(D, H, FF, dropout=0.1).eval()
    g = gd.trace(layer, x=x_spec)
    assert "dropout" not in g.op_counts() and "seed" not in g.inputs


def test_train_mode_adds_dropout_with_distinct_salts():
    layer = nn.TransformerEncoderLayer(D, H, FF, dropout=0.1).train()
    g = gd.trace(layer, x=x_spec)
    drops = [n for n in g.nodes if n.op == "dropout"]
    assert len(drops) == 3 and "seed" in g.inputs       # probs, attention output, FFN output
    assert len({n.attrs["salt"] for n in drops}) == 3
    x, p = randn(B, S, D), random_params(layer)
    a = run(g, x=x, seed=np.int32(1), **p)["out"]
    b = run(g, x=x, seed=np.int32(1), **p)["out"]
    c = run(g, x=x, seed=np.int32(2), **p)["out"]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    plain = run(gd.trace(layer.eval(), x=x_spec), x=x, **p)["out"]
    assert not np.allclose(a, plain)


def test_trace_training_flag_switches_modes():
    layer = nn.Dropout(0.5)
    assert "dropout" in gd.trace(layer, training=True, x="f32[8]").op_counts()
    assert "dropout" not in gd.trace(layer, training=False, x="f32[8]").op_counts()
    assert "dropout" not in gd.trace(nn.Dropout(0.0), x="f32[8]").op_counts()


def test_dropout_drops_and_rescales():
    g = gd.trace(nn.Dropout(0.25).train(), x="f32[100,100]")
    out = run(g, x=np.ones((100, 100), np.float32), seed=np.int32(5))["out"]
    kept = out != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(out[kept], 1 / 0.75, rtol=1e-6)


def test_bad_dropout_probability():
    with pytest.raises(GraphDSLError, match=r"dropout probability must be in \[0, 1\)"):
        gd.trace(nn.Dropout(1.0), x="f32[4]")


# -- gradients ------------------------------------------------------------------------------------
GRAD_CASES = [
    ("encoder_post_ln", lambda: nn.TransformerEncoderLayer(8, 2, 12, dropout=0.0, dtype=gd.float64),
     lambda m: lambda x, w: (m(x) * w).sum()),
    ("encoder_pre_ln_causal", lambda: nn.TransformerEncoderLayer(8, 2, 12, norm_first=True,
                                                                 activation="gelu_tanh",
                                                                 dtype=gd.float64),
     lambda m: lambda x, w: (m(x, causal=True) * w).sum()),
    ("decoder_masked", lambda: nn.TransformerDecoderLayer(8, 2, 12, activation="silu",
                                                          dtype=gd.float64),
     lambda m: lambda x, w: (m(x, x * 0.5, memory_mask=F.padding_mask_bias(
         padding([3, 2], 3), "float64")) * w).sum()),
]


@pytest.mark.parametrize("make,loss_fn", [pytest.param(*c[1:], id=c[0]) for c in GRAD_CASES])
def test_gradients_match_central_differences(make, loss_fn):
    module = make().eval()
    g = gd.trace(loss_fn(module), params=module, x="f64[2,3,8]", w="f64[2,3,8]")
    params = random_params(module, seed=4)
    feed = dict(x=randn(2, 3, 8, seed=5, dtype=np.float64), w=randn(2, 3, 8, seed=6, dtype=np.float64),
                **params)
    wrt = ["x", *params]
    got = run(grad(g, wrt=wrt), **feed)
    fwd = backends.compile(g, "numpy")
    rng = np.random.default_rng(0)
    eps = 1e-6
    for name in wrt:
        value = feed[name]
        for flat in rng.choice(value.size, size=min(4, value.size), replace=False):
            idx = np.unravel_index(flat, value.shape)
            plus, minus = value.copy(), value.copy()
            plus[idx] += eps
            minus[idx] -= eps
            numeric = (fwd(**{**feed, name: plus})["out"] - fwd(**{**feed, name: minus})["out"]) / (2 * eps)
            analytic = got[f"grad/{name}"][idx]
            assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-6), \
                f"d loss / d {name}{list(idx)}: analytic {analytic} vs central difference {numeric}"


# -- errors point at the user's line ---------------------------------------------------------------
def test_shape_mistake_points_at_user_line():
    layer = nn.TransformerEncoderLayer(D, H, FF)

    def user_model(x):
        return layer(x)  # the line the error must name

    with pytest.raises(ShapeError) as info:
        gd.trace(user_model, params=layer, x="f32[batch,seq,8]")
    err = info.value
    assert err.loc is not None and err.loc.file.endswith("test_nn.py")
    assert err.loc.line == user_model.__code__.co_firstlineno + 1
    assert "last dim is 16, got f32[batch,seq,8]" in str(err)


def test_mask_of_wrong_kind_is_a_type_error():
    m = nn.MultiHeadAttention(D, H)
    with pytest.raises(TypeError_, match="bool \\(True = attend\\) or a float bias") as info:
        gd.trace(lambda x, am: m(x, mask=am), params=m, x=x_spec, am="i32[batch,1,1,seq]")
    assert info.value.loc.file.endswith("test_nn.py")


def test_mask_that_does_not_broadcast():
    m = nn.MultiHeadAttention(D, H)
    with pytest.raises(ShapeError, match="do not broadcast") as info:
        gd.trace(lambda x, mask: m(x, mask=mask), params=m, x=f"f32[2,5,{D}]", mask="bool[2,1,1,7]")
    assert info.value.loc.file.endswith("test_nn.py")


def test_causal_needs_a_known_offset():
    m = nn.MultiHeadAttention(D, H)
    with pytest.raises(ShapeError, match="(?s)causal attention with tgt queries and src keys.*explicit"):
        gd.trace(lambda x, memory: m(x, memory, causal=True), params=m, **dec_specs)


def test_attention_mask_must_be_2d():
    with pytest.raises(ShapeError, match=r"attention_mask is \[batch, seq\] of 0/1, got i32\[2,1,5\]"):
        gd.trace(lambda am: F.padding_mask(am), am="i32[2,1,5]")


def test_heads_must_divide_d_model():
    with pytest.raises(GraphDSLError, match="d_model=10 is not divisible by n_heads=4"):
        nn.MultiHeadAttention(10, 4)


def test_unknown_activation():
    with pytest.raises(GraphDSLError, match="(?s)unknown activation 'swish'.*gelu_tanh"):
        nn.FeedForward(D, FF, "swish")
