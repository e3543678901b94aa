"""Hugging Face interop: load ``transformers`` BERT and GPT-2 weights into our models, and back.

    model, params = load_hf(hf_model)                # BertForPreTraining -> ours; GPT2LMHeadModel -> GPT
    params = params_from_hf("ckpt/")                 # a save_pretrained directory (config.json + safetensors)
    params = params_from_hf(state_dict, config)      # a state dict (torch tensors or arrays) + a config
    save_hf_safetensors(params, config, "model.safetensors")   # our weights under Hugging Face's names

The name tables are those in the docstrings of models/bert.py and models/gpt.py. Each Hugging Face
tensor has one rule: ``copy``, ``T`` (an ``nn.Linear`` weight, ``[out, in]``, transposed to our
``[in, out]``), ``qkv`` (GPT-2's fused ``c_attn``, ``[D, 3D]``, split into our q, k, v) or ``tied``
(a copy of another tensor: BERT's MLM decoder and GPT-2's ``lm_head``; optional, and it must equal
its source). Buffers that are not weights (``position_ids``, GPT-2's causal ``attn.bias``) are
skipped; old names (LayerNorm ``gamma``/``beta``, GPT-2 without the ``transformer.`` prefix, a bare
BertModel without ``bert.``) are understood. Whatever does not fit is ONE error that lists every
missing, unexpected and mis-shaped tensor.

torch, transformers and safetensors (the ``interop`` extra) are imported inside the functions.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from graphdsl.errors import GraphDSLError

from .bert import BertConfig, BertForPreTraining
from .gpt import GPT, GPTConfig


@dataclass(frozen=True)
class Rule:
    hf: str                      # Hugging Face name, "{i}" for the layer index
    ours: tuple[str, ...]        # our name(s); "qkv" has three, "tied" names the source (ours)
    kind: str = "copy"           # "copy" | "T" | "qkv" | "tied"


def _linear(hf: str, ours: str) -> list[Rule]:
    return [Rule(f"{hf}.weight", (f"{ours}.weight",), "T"), Rule(f"{hf}.bias", (f"{ours}.bias",))]


def _norm(hf: str, ours: str) -> list[Rule]:
    return [Rule(f"{hf}.weight", (f"{ours}.weight",)), Rule(f"{hf}.bias", (f"{ours}.bias",))]


def _bert_rules() -> tuple[list[Rule], list[Rule]]:
    """(per-model rules, per-layer rules with {i})."""
    e, L = "bert.embeddings", "bert.encoder.layer.{i}"
    top = [Rule(f"{e}.word_embeddings.weight", ("bert.embeddings.word.weight",)),
           Rule(f"{e}.position_embeddings.weight", ("bert.embeddings.position.weight",)),
           Rule(f"{e}.token_type_embeddings.weight", ("bert.embeddings.token_type.weight",)),
           *_norm(f"{e}.LayerNorm", "bert.embeddings.norm"),
           *_linear("bert.pooler.dense", "bert.pooler.dense"),
           *_linear("cls.predictions.transform.dense", "mlm.dense"),
           *_norm("cls.predictions.transform.LayerNorm", "mlm.norm"),
           Rule("cls.predictions.bias", ("mlm.bias",)),
           Rule("cls.predictions.decoder.weight", ("bert.embeddings.word.weight",), "tied"),
           Rule("cls.predictions.decoder.bias", ("mlm.bias",), "tied"),
           *_linear("cls.seq_relationship", "nsp")]
    o = "bert.encoder.layers.{i}"
    layer = [*_linear(f"{L}.attention.self.query", f"{o}.attn.q"),
             *_linear(f"{L}.attention.self.key", f"{o}.attn.k"),
             *_linear(f"{L}.attention.self.value", f"{o}.attn.v"),
             *_linear(f"{L}.attention.output.dense", f"{o}.attn.o"),
             *_norm(f"{L}.attention.output.LayerNorm", f"{o}.norm1"),
             *_linear(f"{L}.intermediate.dense", f"{o}.ffn.fc1"),
             *_linear(f"{L}.output.dense", f"{o}.ffn.fc2"),
             *_norm(f"{L}.output.LayerNorm", f"{o}.norm2")]
    return top, layer


def _gpt_rules() -> tuple[list[Rule], list[Rule]]:
    t, L, o = "transformer", "transformer.h.{i}", "h.{i}"
    top = [Rule(f"{t}.wte.weight", ("wte.weight",)), Rule(f"{t}.wpe.weight", ("wpe.weight",)),
           *_norm(f"{t}.ln_f", "ln_f"), Rule("lm_head.weight", ("wte.weight",), "tied")]
    # GPT-2's Conv1D stores [in, out] like our Linear: no transposes.
    layer = [*_norm(f"{L}.ln_1", f"{o}.norm1"),
             Rule(f"{L}.attn.c_attn.weight", tuple(f"{o}.attn.{x}.weight" for x in "qkv"), "qkv"),
             Rule(f"{L}.attn.c_attn.bias", tuple(f"{o}.attn.{x}.bias" for x in "qkv"), "qkv"),
             *_norm(f"{L}.attn.c_proj", f"{o}.attn.o"),
             *_norm(f"{L}.ln_2", f"{o}.norm2"),
             *_norm(f"{L}.mlp.c_fc", f"{o}.ffn.fc1"),
             *_norm(f"{L}.mlp.c_proj", f"{o}.ffn.fc2")]
    return top, layer


FAMILIES = {"bert": (BertConfig, BertForPreTraining, _bert_rules),
            "gpt2": (GPTConfig, GPT, _gpt_rules)}
_BUFFERS = re.compile(r"(^|\.)position_ids$|\.attn\.(masked_)?bias$")


def rules_for(config: BertConfig | GPTConfig, *, backbone_only: bool = False) -> list[Rule]:
    """Every rule of a model with ``config``'s layer count; ``backbone_only`` keeps BERT's ``bert.*``."""
    family = family_of_config(config)
    top, layer = FAMILIES[family][2]()
    n = config.num_layers if family == "bert" else config.n_layer
    rules = top + [Rule(r.hf.format(i=i), tuple(x.format(i=i) for x in r.ours), r.kind)
                   for i in range(n) for r in layer]
    if backbone_only and family == "bert":
        rules = [r for r in rules if r.hf.startswith("bert.")]
    return rules


def family_of_config(config) -> str:
    if isinstance(config, BertConfig):
        return "bert"
    if isinstance(config, GPTConfig):
        return "gpt2"
    raise GraphDSLError(f"no Hugging Face mapping for {type(config).__name__}",
                        hint="BERT (BertConfig) and GPT-2 (GPTConfig) are supported")


# -- configs ---------------------------------------------------------------------------------------
_GPT_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}


def config_from_hf(hf_config, *, dtype: str = "float32") -> BertConfig | GPTConfig:
    """Our config for a ``transformers`` BertConfig or GPT2Config (anything else is an error)."""
    c, kind = hf_config, getattr(hf_config, "model_type", None)
    if kind == "bert":
        _require(c, "hidden_act", ("gelu",), "our BERT uses the exact (erf) GELU")
        _require(c, "position_embedding_type", ("absolute",), "our BERT has learned absolute positions")
        return BertConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_layers=c.num_hidden_layers,
                          num_heads=c.num_attention_heads, intermediate_size=c.intermediate_size,
                          max_position=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
                          dropout=c.hidden_dropout_prob, layer_norm_eps=c.layer_norm_eps, dtype=dtype,
                          seq_len=min(128, c.max_position_embeddings))
    if kind == "gpt2":
        _require(c, "activation_function", tuple(_GPT_ACTIVATIONS), "the GPT MLP activations we have")
        _require(c, "scale_attn_weights", (True,), "our attention always scales by 1/sqrt(head_dim)")
        _require(c, "scale_attn_by_inverse_layer_idx", (False,), "our attention has no per-layer scale")
        _require(c, "add_cross_attention", (False,), "our GPT is decoder-only")
        return GPTConfig(vocab_size=c.vocab_size, n_positions=c.n_positions, n_embd=c.n_embd,
                         n_layer=c.n_layer, n_head=c.n_head, dropout=c.resid_pdrop,
                         layer_norm_eps=c.layer_norm_epsilon, activation=_GPT_ACTIVATIONS[c.activation_function],
                         n_inner=c.n_inner, seq_len=min(64, c.n_positions), dtype=dtype)
    raise GraphDSLError(f"no Hugging Face mapping for model_type {kind!r}",
                        hint="BERT (BertForPreTraining) and GPT-2 (GPT2LMHeadModel) are supported")


def _require(c, attr: str, allowed: tuple, why: str) -> None:
    if hasattr(c, attr) and getattr(c, attr) not in allowed:
        raise GraphDSLError(f"{type(c).__name__}.{attr}={getattr(c, attr)!r} is not supported",
                            hint=f"{why}; supported: {list(allowed)}")


def _our_config(config):
    if config is None:
        raise GraphDSLError("these weights come without a config",
                            hint="pass config= (a transformers config or ours), or a save_pretrained directory")
    return config if isinstance(config, (BertConfig, GPTConfig)) else config_from_hf(config)


# -- reading weights -------------------------------------------------------------------------------
def is_hf_state(state: Mapping) -> bool:
    """Whether a state dict uses Hugging Face's BERT / GPT-2 names rather than ours."""
    return any(k.startswith(("cls.", "transformer.", "lm_head.")) or "word_embeddings." in k or ".c_attn." in k
               for k in state)


def read_state(source: Any) -> tuple[dict[str, np.ndarray], Any]:
    """``(state dict of NumPy arrays, its transformers config or None)`` from a model object, a
    state dict, a ``.safetensors`` file or a ``save_pretrained`` directory."""
    config = None
    if hasattr(source, "state_dict") and hasattr(source, "config"):
        config, source = source.config, source.state_dict()
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            from transformers import AutoConfig
            config = AutoConfig.from_pretrained(str(path))          # local: config.json
            path = path / "model.safetensors"
        if not path.exists() or path.suffix != ".safetensors":
            raise GraphDSLError(f"no safetensors weights at {str(path)!r}",
                                hint="pass a .safetensors file or a save_pretrained directory")
        from safetensors.numpy import load_file
        source = load_file(str(path))
    if not isinstance(source, Mapping):
        raise GraphDSLError(f"cannot read Hugging Face weights from a {type(source).__name__}",
                            hint="pass a transformers model, a state dict, a .safetensors file or a directory")
    return {k: to_numpy(v) for k, v in source.items()}, config


def to_numpy(v) -> np.ndarray:
    if type(v).__module__.startswith("torch"):
        v = v.detach().cpu()
        return (v.float() if str(v.dtype) == "torch.bfloat16" else v).numpy()
    return np.asarray(v)


def _normalize_names(state: dict[str, np.ndarray], family: str) -> dict[str, np.ndarray]:
    """Old and bare-model names to BertForPreTraining / GPT2LMHeadModel names."""
    out = {}
    bare = (family == "gpt2" and "wte.weight" in state) or \
        (family == "bert" and "embeddings.word_embeddings.weight" in state)
    for k, v in state.items():
        k = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", k))
        if bare and not k.startswith(("cls.", "lm_head.")):
            k = ("transformer." if family == "gpt2" else "bert.") + k
        out[k] = v
    return out


def params_from_hf(source: Any, config=None, *, backbone_only: bool = False) -> dict[str, np.ndarray]:
    """Our parameters (by our names) from Hugging Face weights (see ``read_state``).

    ``config``: ours or a transformers config; taken from the model object or directory when not
    given. ``backbone_only`` reads only BERT's ``bert.*`` tensors (e.g. from a BertModel) and
    ignores its heads. Raises one GraphDSLError listing every missing, unexpected and mis-shaped tensor.
    """
    state, hf_config = read_state(source)
    config = _our_config(config if config is not None else hf_config)
    family = family_of_config(config)
    state = _normalize_names({k: v for k, v in state.items() if not _BUFFERS.search(k)}, family)
    rules = rules_for(config, backbone_only=backbone_only)
    shapes = {k: tuple(p.shape) for k, p in FAMILIES[family][1](config).parameters().items()}
    _check(state, rules, shapes, config, family, backbone_only)
    dtype = np.dtype(config.dtype)
    params: dict[str, np.ndarray] = {}
    for r in rules:
        a = state.get(r.hf)
        if r.kind == "copy":
            params[r.ours[0]] = a
        elif r.kind == "T":
            params[r.ours[0]] = a.T
        elif r.kind == "qkv":
            for part, name in zip(np.split(a, 3, axis=-1), r.ours):
                params[name] = part
    return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in params.items()}


def _hf_shape(r: Rule, shapes: Mapping[str, tuple]) -> tuple:
    s = shapes[r.ours[0]]
    if r.kind == "T":
        return s[::-1]
    if r.kind == "qkv":
        return (*s[:-1], 3 * s[-1])
    return s


def _check(state, rules, shapes, config, family, backbone_only) -> None:
    known = {r.hf for r in rules}
    missing = [r.hf for r in rules if r.hf not in state and r.kind != "tied"]
    ignored = ("cls.",) if backbone_only and family == "bert" else ()
    unexpected = [k for k in state if k not in known and not (ignored and k.startswith(ignored))]
    bad = [f"{r.hf}: got {tuple(state[r.hf].shape)}, expected {_hf_shape(r, shapes)}"
           for r in rules if r.hf in state and tuple(state[r.hf].shape) != _hf_shape(r, shapes)]
    untied = []
    for r in (r for r in rules if r.kind == "tied" and r.hf in state):   # a tied copy must equal its source
        src = next(x.hf for x in rules if x.ours == r.ours and x.kind != "tied")
        a, b = state[r.hf], state.get(src)
        if b is not None and a.shape == b.shape and not np.array_equal(a, b):
            untied.append(f"{r.hf} differs from {src}, which it is tied to in our model")
    if missing or unexpected or bad or untied:
        head = (f"Hugging Face {family} weights do not fit {config}: {len(missing)} missing, "
                f"{len(unexpected)} unexpected, {len(bad)} mis-shaped")
        head += f", {len(untied)} untied" if untied else ""
        lines = [head, *(f"  missing:    {k}" for k in missing), *(f"  unexpected: {k}" for k in unexpected),
                 *(f"  mis-shaped: {k}" for k in bad), *(f"  untied:     {k}" for k in untied)]
        raise GraphDSLError("\n".join(lines),
                            hint="build our config from the checkpoint's own (config_from_hf(hf_model.config))")


def load_hf(source: Any, config=None, *, dtype: str = "float32"):
    """``(module, params)``: our BertForPreTraining or GPT built from the Hugging Face config, and
    its parameters from the Hugging Face weights."""
    state, hf_config = read_state(source)
    config = config if config is not None else hf_config
    if config is not None and not isinstance(config, (BertConfig, GPTConfig)):
        config = config_from_hf(config, dtype=dtype)
    config = _our_config(config)
    module = FAMILIES[family_of_config(config)][1](config)
    return module, params_from_hf(state, config)


# -- writing weights -------------------------------------------------------------------------------
def hf_state_dict(params: Mapping[str, np.ndarray], config: BertConfig | GPTConfig, *,
                  tied: bool = True) -> dict[str, np.ndarray]:
    """Our parameters under Hugging Face's names (the inverse of ``params_from_hf``); ``tied``
    includes the tied copies (``cls.predictions.decoder.*``, ``lm_head.weight``) as
    ``model.state_dict()`` has them."""
    out = {}
    for r in rules_for(config):
        if r.kind == "tied" and not tied:
            continue
        parts = [np.asarray(params[name]) for name in r.ours]
        a = parts[0].T if r.kind == "T" else np.concatenate(parts, axis=-1) if r.kind == "qkv" else parts[0]
        out[r.hf] = np.ascontiguousarray(a)
    return out


def save_hf_safetensors(params: Mapping[str, np.ndarray], config: BertConfig | GPTConfig,
                        path: str | Path, *, tied: bool = True) -> Path:
    """Write ``hf_state_dict(params, config)`` to a ``.safetensors`` file; returns its path."""
    from safetensors.numpy import save_file
    path = Path(path)
    save_file(hf_state_dict(params, config, tied=tied), str(path), metadata={"format": "pt"})
    return path
