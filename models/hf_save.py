"""What ``save_pretrained`` writes besides the tensors: a transformers ``config.json`` for our
configs, and the directory it writes into
(files are written atomically by ``graphdsl.files.atomic_write``).

``models.hf.save_pretrained`` uses both; this module knows nothing of tensor names (those are
models/hf.py's tables), so models/hf.py imports it and not the other way round.

    config_to_hf(BertConfig(...), "BertForPreTraining")   # -> the dict config.json holds

The config dict is what ``transformers.AutoConfig.from_pretrained`` reads back: ``model_type``,
``architectures`` and every size, eps, dropout and activation our model fixes, spelled as
transformers' BertConfig / GPT2Config spell them. Fields we have no value for (tokenizer ids
beyond the vocabulary, classifier settings) are left to transformers' defaults.
"""
from __future__ import annotations

from pathlib import Path

from graphdsl.errors import GraphDSLError

from .bert import BertConfig
from .gpt import GPTConfig

# our GPTConfig.activation -> GPT2Config.activation_function (the inverse of models/hf.py's table)
HF_GPT_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}
GPT2_EOS = 50256          # GPT-2's <|endoftext|>, GPT2Config's default bos/eos id


def config_to_hf(config: BertConfig | GPTConfig, architecture: str) -> dict:
    """The ``config.json`` dict of a transformers model of class ``architecture`` with our sizes."""
    c = config
    if isinstance(c, BertConfig):
        return {"architectures": [architecture], "model_type": "bert",
                "vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "num_hidden_layers": c.num_layers,
                "num_attention_heads": c.num_heads, "intermediate_size": c.intermediate_size,
                "hidden_act": "gelu", "position_embedding_type": "absolute",
                "max_position_embeddings": c.max_position, "type_vocab_size": c.type_vocab_size,
                "hidden_dropout_prob": c.dropout, "attention_probs_dropout_prob": c.dropout,
                "layer_norm_eps": c.layer_norm_eps, "initializer_range": 0.02, "pad_token_id": 0,
                "is_decoder": False, "add_cross_attention": False, "tie_word_embeddings": True,
                **_dtype_fields(c.dtype)}
    if isinstance(c, GPTConfig):
        if c.activation not in HF_GPT_ACTIVATIONS:
            raise GraphDSLError(f"GPT-2 has no activation_function for our activation {c.activation!r}",
                                hint=f"transformers can load GPTConfig.activation in {list(HF_GPT_ACTIVATIONS)}")
        eos = GPT2_EOS if c.vocab_size > GPT2_EOS else None      # no id we could name in a smaller vocabulary
        return {"architectures": [architecture], "model_type": "gpt2",
                "vocab_size": c.vocab_size, "n_positions": c.n_positions, "n_embd": c.n_embd,
                "n_layer": c.n_layer, "n_head": c.n_head, "n_inner": c.n_inner,
                "activation_function": HF_GPT_ACTIVATIONS[c.activation],
                "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
                "layer_norm_epsilon": c.layer_norm_eps, "initializer_range": 0.02,
                "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
                "reorder_and_upcast_attn": False, "add_cross_attention": False, "tie_word_embeddings": True,
                "bos_token_id": eos, "eos_token_id": eos, **_dtype_fields(c.dtype)}
    raise GraphDSLError(f"no Hugging Face config for {type(c).__name__}",
                        hint="BERT (BertConfig) and GPT-2 (GPTConfig) are supported")


def _dtype_fields(dtype: str) -> dict:
    # transformers >= 4.56 reads "dtype", older versions "torch_dtype"; both name the same thing.
    name = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16", "float64": "float64"}.get(dtype)
    return {"dtype": name, "torch_dtype": name} if name else {}


def prepare_directory(directory: str | Path) -> Path:
    """``directory``, created (with its parents) when missing; an existing file there is an error."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise GraphDSLError(f"{str(directory)!r} is a file, not a directory",
                            hint="save_pretrained writes config.json and model.safetensors into a directory")
    directory.mkdir(parents=True, exist_ok=True)
    return directory
