"""Hugging Face interop: load ``transformers`` BERT and GPT-2 weights into our models, and back.

    model, params = load_hf(hf_model)                # BertForPreTraining -> ours; GPT2LMHeadModel -> GPT
    model, params = load_hf("ckpt/")                 # a bare BertModel checkpoint -> our bert.BertModel
    model, params = load_hf(src, backbone=True)      # just the encoder of a BertForPreTraining
    params = params_from_hf("ckpt/")                 # a save_pretrained directory (config.json + safetensors)
    params = params_from_hf(state_dict, config)      # a state dict (torch tensors or arrays) + a config
    save_pretrained(model, params, "out/")           # config.json + model.safetensors for from_pretrained
    save_hf_safetensors(params, config, "model.safetensors")   # our weights under Hugging Face's names

The name tables are those in the docstrings of models/bert.py and models/gpt.py. Each Hugging Face
tensor has one rule: ``copy``, ``T`` (an ``nn.Linear`` weight, ``[out, in]``, transposed to our
``[in, out]``), ``qkv`` (GPT-2's fused ``c_attn``, ``[D, 3D]``, split into our q, k, v) or ``tied``
(a copy of another tensor: BERT's MLM decoder and GPT-2's ``lm_head``; optional, and it must equal
its source). Buffers that are not weights (``position_ids``, GPT-2's causal ``attn.bias``) are
skipped; old names (LayerNorm ``gamma``/``beta``, GPT-2 without the ``transformer.`` prefix, a bare
BertModel without ``bert.``) are understood. Whatever does not fit is ONE error that lists every
missing, unexpected and mis-shaped tensor.

A bare backbone (a transformers ``BertModel``, as sentence-transformers checkpoints are) loads
into our ``models.bert.BertModel``, whose parameter names lack the ``bert.`` prefix; a GPT2Model
loads into our GPT, whose only head is tied to ``wte`` and adds no parameter. ``save_pretrained``
writes what ``from_pretrained`` reads (the config.json part is models/hf_save.py).

torch, transformers and safetensors (the ``interop`` extra) are imported inside the functions.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from graphdsl.errors import GraphDSLError
from graphdsl.files import atomic_write as write_atomic

from .bert import BertConfig, BertForPreTraining, BertModel
from .gpt import GPT, GPTConfig
from .hf_save import config_to_hf, prepare_directory


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


def rules_for(config: BertConfig | GPTConfig, *, backbone_only: bool = False, bare: bool = False) -> list[Rule]:
    """Every rule of a model with ``config``'s layer count; ``backbone_only`` keeps BERT's ``bert.*``,
    ``bare`` also drops that prefix on both sides (transformers' BertModel and our bert.BertModel)."""
    family = family_of_config(config)
    top, layer = FAMILIES[family][2]()
    n = config.num_layers if family == "bert" else config.n_layer
    rules = top + [Rule(r.hf.format(i=i), tuple(x.format(i=i) for x in r.ours), r.kind)
                   for i in range(n) for r in layer]
    if (backbone_only or bare) and family == "bert":
        rules = [r for r in rules if r.hf.startswith("bert.")]
    if bare and family == "bert":
        rules = [Rule(r.hf.removeprefix("bert."), tuple(x.removeprefix("bert.") for x in r.ours), r.kind)
                 for r in rules]
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


def _normalize_names(state: dict[str, np.ndarray], family: str) -> tuple[dict[str, np.ndarray], str]:
    """Old and bare-model names to BertForPreTraining / GPT2LMHeadModel names, and the prefix
    added to a bare model's names ("" when none was)."""
    out = {}
    bare = (family == "gpt2" and "wte.weight" in state) or \
        (family == "bert" and "embeddings.word_embeddings.weight" in state)
    prefix = ("transformer." if family == "gpt2" else "bert.") if bare else ""
    for k, v in state.items():
        k = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", k))
        if bare and not k.startswith(("cls.", "lm_head.")):
            k = prefix + k
        out[k] = v
    return out, prefix


def is_backbone_state(state: Mapping, family: str) -> bool:
    """Whether BERT weights hold the encoder alone (every tensor under ``bert.``, or a bare
    BertModel's names): no pretraining or task head. Always False for GPT-2, whose head is tied."""
    if family != "bert":
        return False
    names, _ = _normalize_names({k: None for k in state if not _BUFFERS.search(k)}, family)
    return bool(names) and all(k.startswith("bert.") for k in names)


def params_from_hf(source: Any, config=None, *, backbone_only: bool = False) -> dict[str, np.ndarray]:
    """Our parameters (by our names) from Hugging Face weights (see ``read_state``).

    ``config``: ours or a transformers config; taken from the model object or directory when not
    given. ``backbone_only`` reads only BERT's ``bert.*`` tensors (e.g. from a BertModel) and
    ignores its heads (``cls.*``, ``classifier.*``, ...); the names keep the ``bert.`` prefix.
    Raises one GraphDSLError listing every missing, unexpected and mis-shaped tensor.
    """
    state, hf_config = read_state(source)
    config = _our_config(config if config is not None else hf_config)
    family = family_of_config(config)
    state, added = _normalize_names({k: v for k, v in state.items() if not _BUFFERS.search(k)}, family)
    rules = rules_for(config, backbone_only=backbone_only)
    shapes = {k: tuple(p.shape) for k, p in FAMILIES[family][1](config).parameters().items()}
    _check(state, rules, shapes, config, family, backbone_only, added)
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


def _check(state, rules, shapes, config, family, backbone_only, added="") -> None:
    """One error for every tensor that does not fit; names are shown as the checkpoint spells
    them (without the ``added`` prefix ``_normalize_names`` gave a bare model's names)."""
    def shown(k: str) -> str:
        return k.removeprefix(added) if added else k
    known = {r.hf for r in rules}
    missing = [shown(r.hf) for r in rules if r.hf not in state and r.kind != "tied"]
    heads_ignored = backbone_only and family == "bert"                    # everything outside bert.*
    unexpected = [shown(k) for k in state if k not in known and not (heads_ignored and not k.startswith("bert."))]
    bad = [f"{shown(r.hf)}: got {tuple(state[r.hf].shape)}, expected {_hf_shape(r, shapes)}"
           for r in rules if r.hf in state and tuple(state[r.hf].shape) != _hf_shape(r, shapes)]
    untied = []
    for r in (r for r in rules if r.kind == "tied" and r.hf in state):   # a tied copy must equal its source
        src = next(x.hf for x in rules if x.ours == r.ours and x.kind != "tied")
        a, b = state[r.hf], state.get(src)
        if b is not None and a.shape == b.shape and not np.array_equal(a, b):
            untied.append(f"{shown(r.hf)} differs from {shown(src)}, which it is tied to in our model")
    if missing or unexpected or bad or untied:
        head = (f"Hugging Face {family} weights do not fit {config}: {len(missing)} missing, "
                f"{len(unexpected)} unexpected, {len(bad)} mis-shaped")
        head += f", {len(untied)} untied" if untied else ""
        lines = [head, *(f"  missing:    {k}" for k in missing), *(f"  unexpected: {k}" for k in unexpected),
                 *(f"  mis-shaped: {k}" for k in bad), *(f"  untied:     {k}" for k in untied)]
        hint = "build our config from the checkpoint's own (config_from_hf(hf_model.config))"
        if family == "bert" and not backbone_only and missing and all(k.startswith("cls.") for k in missing):
            hint = "it has no pretraining heads: load its encoder alone with load_hf(source, backbone=True)"
        raise GraphDSLError("\n".join(lines), hint=hint)


def load_hf(source: Any, config=None, *, dtype: str = "float32", backbone: bool | None = None):
    """``(module, params)``: our model built from the Hugging Face config, and its parameters
    from the Hugging Face weights (``source`` as for ``read_state``, ``config`` as for
    ``params_from_hf``). ``set(params) == set(module.init(0))``.

    BERT: a checkpoint with its heads (BertForPreTraining) gives our BertForPreTraining; one
    without any head (a bare transformers BertModel, e.g. a sentence-transformers model) gives
    our ``models.bert.BertModel``, names without ``bert.`` (``embeddings.word.weight``).
    ``backbone=True`` returns that BertModel from any BERT checkpoint (its heads are ignored),
    ``backbone=False`` insists on the full model (a bare checkpoint is then an error); None
    decides from the tensors. GPT-2: always our GPT, from GPT2LMHeadModel and GPT2Model alike:
    GPT2Model has no lm_head, but GPT2LMHeadModel's is tied to ``wte``, so our GPT with its tied
    head is the same backbone plus ``h @ wte^T``, with the same parameters; ``backbone`` changes
    nothing there.
    """
    state, hf_config = read_state(source)
    config = config if config is not None else hf_config
    if config is not None and not isinstance(config, (BertConfig, GPTConfig)):
        config = config_from_hf(config, dtype=dtype)
    config = _our_config(config)
    family = family_of_config(config)
    if backbone is None:
        backbone = is_backbone_state(state, family)
    if family == "bert" and backbone:
        params = params_from_hf(state, config, backbone_only=True)
        return BertModel(config), {k.removeprefix("bert."): v for k, v in params.items()}
    return FAMILIES[family][1](config), params_from_hf(state, config)


# -- writing weights -------------------------------------------------------------------------------
def hf_state_dict(params: Mapping[str, np.ndarray], config: BertConfig | GPTConfig, *,
                  tied: bool = True) -> dict[str, np.ndarray]:
    """Our parameters under Hugging Face's names (the inverse of ``params_from_hf``); ``tied``
    includes the tied copies (``cls.predictions.decoder.*``, ``lm_head.weight``) as
    ``model.state_dict()`` has them. The params of our bare ``bert.BertModel`` (no ``bert.``
    prefix) give a transformers BertModel's names (no prefix either)."""
    out = {}
    for r in rules_for(config, bare=_is_bare_bert_params(params, config)):
        if r.kind == "tied" and not tied:
            continue
        parts = [np.asarray(params[name]) for name in r.ours]
        a = parts[0].T if r.kind == "T" else np.concatenate(parts, axis=-1) if r.kind == "qkv" else parts[0]
        out[r.hf] = np.ascontiguousarray(a)
    return out


def _is_bare_bert_params(params: Mapping, config) -> bool:
    return isinstance(config, BertConfig) and "embeddings.word.weight" in params


def save_hf_safetensors(params: Mapping[str, np.ndarray], config: BertConfig | GPTConfig,
                        path: str | Path, *, tied: bool = True) -> Path:
    """Write ``hf_state_dict(params, config)`` to a ``.safetensors`` file; returns its path."""
    from safetensors.numpy import save_file
    path = Path(path)
    save_file(hf_state_dict(params, config, tied=tied), str(path), metadata={"format": "pt"})
    return path


# -- save_pretrained -------------------------------------------------------------------------------
_ARCHITECTURES = ((BertForPreTraining, "BertForPreTraining"), (BertModel, "BertModel"), (GPT, "GPT2LMHeadModel"))


def save_pretrained(model_or_config: Any, params: Mapping[str, np.ndarray], directory: str | Path) -> Path:
    """Write ``directory/config.json`` and ``directory/model.safetensors`` as transformers'
    ``save_pretrained`` does, so ``from_pretrained(directory)`` loads our weights; returns the directory.

    ``model_or_config``: our BertForPreTraining (-> transformers BertForPreTraining), our
    bert.BertModel (-> BertModel) or GPT (-> GPT2LMHeadModel), or their config (a BertConfig
    with BertModel's names in ``params`` means BertModel). ``params`` must be exactly that
    module's (``module.init(0)``'s names and shapes); they are written in ``config.dtype``,
    without the tied copies, as transformers writes them. The directory is created when
    missing; each file goes to a temporary sibling first and is renamed into place; other
    files there are left alone. ``load_hf(directory)`` gives back the same module and params.
    """
    module = _module_to_save(model_or_config, params)
    config, architecture = module.config, next(name for cls, name in _ARCHITECTURES if isinstance(module, cls))
    _check_ours(module, params)
    dtype = np.dtype(config.dtype)
    state = hf_state_dict({k: np.asarray(v, dtype=dtype) for k, v in params.items()}, config, tied=False)
    text = json.dumps(config_to_hf(config, architecture), indent=2, sort_keys=True) + "\n"
    from safetensors.numpy import save_file
    directory = prepare_directory(directory)
    write_atomic(directory / "model.safetensors", lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    write_atomic(directory / "config.json", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return directory


def _module_to_save(model_or_config: Any, params: Mapping):
    if isinstance(model_or_config, tuple(cls for cls, _ in _ARCHITECTURES)):
        return model_or_config
    if isinstance(model_or_config, BertConfig):
        bare = _is_bare_bert_params(params, model_or_config)
        return (BertModel if bare else BertForPreTraining)(model_or_config)
    if isinstance(model_or_config, GPTConfig):
        return GPT(model_or_config)
    raise GraphDSLError(f"save_pretrained has no transformers class for a {type(model_or_config).__name__}",
                        hint="pass our BertForPreTraining, bert.BertModel or GPT (or a BertConfig / GPTConfig); "
                             "for a fine-tuned model, save its backbone: model.bert with its bert.* params, "
                             "the prefix removed")


def _check_ours(module, params: Mapping) -> None:
    """One error for every parameter of ``module`` that ``params`` lacks, has extra or mis-shaped."""
    shapes = {k: tuple(p.shape) for k, p in module.parameters().items()}
    missing = [k for k in shapes if k not in params]
    unexpected = [k for k in params if k not in shapes]
    bad = [f"{k}: got {tuple(np.shape(v))}, expected {shapes[k]}"
           for k, v in params.items() if k in shapes and tuple(np.shape(v)) != shapes[k]]
    if missing or unexpected or bad:
        lines = [f"params do not fit our {type(module).__name__}: {len(missing)} missing, "
                 f"{len(unexpected)} unexpected, {len(bad)} mis-shaped",
                 *(f"  missing:    {k}" for k in missing), *(f"  unexpected: {k}" for k in unexpected),
                 *(f"  mis-shaped: {k}" for k in bad)]
        raise GraphDSLError("\n".join(lines), hint=f"pass the params of this {type(module).__name__} "
                            "(module.init(0) has its names), or the module they belong to")
