"""`graphdsl generate`: text in, text out, greedy or beam search over the compiled decode step.

Models: a zoo GPT (``gpt-*``) or encoder-decoder (``bart-*``), with weights from a training
checkpoint (``--checkpoint DIR``, as `graphdsl train --save DIR` writes) or ``init(seed)``; a
Hugging Face GPT-2 directory (``--hf DIR``: config.json + weights, its tokenizer when present);
or a user graph taking token ids ``[batch, seq]`` and returning ``logits`` (or ``log_probs``)
``[batch, seq, vocab]``, re-run on the whole sequence for each new token (no KV cache).
Text goes through the built-in word tokenizer, or a Hugging Face tokenizer directory
(``--tokenizer DIR``, needs ``transformers``).
"""
from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from graphdsl.errors import GraphDSLError

from .common import Command, emit_json, load_model, parse_targets, phase


class TextCodec:
    """encode/decode, the ids a prompt starts with, EOS, and how many ids are real tokens."""

    def __init__(self, encode, decode, start: list[int], eos: int | None, size: int):
        self.encode, self.decode, self.start, self.eos, self.size = encode, decode, start, eos, size


def builtin_codec(bos: bool = True) -> TextCodec:
    from models.data.tokenizer import load_tokenizer
    tok = load_tokenizer()
    return TextCodec(tok.encode, lambda ids: tok.decode(ids, skip_special=True),
                     [tok.bos_id] if bos else [], tok.eos_id, tok.vocab_size)


def hf_codec(directory: str) -> TextCodec:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise GraphDSLError(f"reading the tokenizer in {directory} needs the transformers package",
                            hint="pip install 'graphdsl[interop]', or generate with the built-in tokenizer") from None
    hint = "the directory needs tokenizer.json (or vocab.json + merges.txt); pass another with --tokenizer DIR"
    files = {p.name for p in Path(directory).iterdir()} if Path(directory).is_dir() else set()
    if not ({"tokenizer.json", "tokenizer.model", "vocab.txt"} & files or {"vocab.json", "merges.txt"} <= files):
        raise GraphDSLError(f"no Hugging Face tokenizer could be read from {directory}: it has no tokenizer files",
                            hint=hint)
    try:
        tok = AutoTokenizer.from_pretrained(directory)
    except Exception as e:
        raise GraphDSLError(f"no Hugging Face tokenizer could be read from {directory}: {str(e)[:200]}",
                            hint=hint) from None
    start = [tok.bos_token_id] if tok.bos_token_id is not None else []
    return TextCodec(lambda text: tok.encode(text, add_special_tokens=False),
                     lambda ids: tok.decode([int(i) for i in ids], skip_special_tokens=True),
                     start, tok.eos_token_id, len(tok))


def _limit_vocab(step, size: int):
    """The step with ids beyond the tokenizer's vocabulary ruled out (spare rows of the embedding)."""
    def limited(ids, cache):
        log_probs, cache = step(ids, cache)
        if log_probs.shape[-1] > size:
            log_probs = log_probs.copy()
            log_probs[..., size:] = -np.inf
        return log_probs, cache
    return limited


def rerun_step(exe, graph, params):
    """A step over a user graph without a cache: the whole sequence each time, its last row."""
    ids_name = next((k for k, n in graph.inputs.items() if n.type.dtype.is_int and n.type.rank == 2), None)
    out_name = next((k for k in ("log_probs", "logits") if k in graph.outputs
                     and graph.outputs[k].type.rank == 3), None)
    if ids_name is None or out_name is None or len(graph.inputs) != 1:
        have = ", ".join(f"{k}: {n.type}" for k, n in graph.inputs.items())
        outs = ", ".join(f"{k}: {n.type}" for k, n in graph.outputs.items())
        raise GraphDSLError(f"generate needs a graph with one input of token ids [batch, seq] and an output "
                            f"'logits' or 'log_probs' [batch, seq, vocab]; this one takes ({have}) and "
                            f"returns ({outs})")

    def step(ids, cache):
        seq = ids if cache is None else np.concatenate([cache["seq"], ids], axis=1)
        out = np.asarray(exe(**{ids_name: seq.astype(graph.inputs[ids_name].type.dtype.np)}, **params)[out_name],
                         np.float64)[:, -1]
        if out_name == "logits":
            out = out - out.max(-1, keepdims=True)
            out = out - np.log(np.exp(out).sum(-1, keepdims=True))
        return out, {"seq": seq}
    return step


@click.command("generate", cls=Command)
@click.argument("model", metavar="[MODEL]", required=False)
@click.option("--prompt", required=True, help="The text to continue (gpt) or to transform (bart).")
@click.option("--checkpoint", type=click.Path(file_okay=False), help="Weights from a training checkpoint directory.")
@click.option("--hf", "hf_dir", type=click.Path(file_okay=False),
              help="A Hugging Face GPT-2 directory (config.json + weights); MODEL is then not needed.")
@click.option("--tokenizer", "tokenizer_dir", type=click.Path(file_okay=False),
              help="A Hugging Face tokenizer directory (default: the built-in one, or --hf's).")
@click.option("--weights", type=click.Path(dir_okay=False), help="Parameter values for a user graph.")
@click.option("--beam", type=click.IntRange(min=1), default=1, show_default=True, help="Beam width (1: greedy).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--target", default="numpy", show_default=True, help="numpy, llvm or cuda.")
@click.option("-O", "--opt-level", type=click.IntRange(0, 2), default=2, show_default=True,
              help="Graph passes on the decode graphs (2: fused attention).")
@click.option("--seed", default=0, show_default=True, help="Seed of the parameters when no weights are given.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def generate_command(model, prompt, checkpoint, hf_dir, tokenizer_dir, weights, beam, max_new_tokens, target,
                     opt_level, seed, as_json):
    """Generate text from a prompt with greedy or beam search.

    \b
    Examples:
      graphdsl train gpt-tiny --steps 300 --save ckpt/ && graphdsl generate gpt-tiny --checkpoint ckpt/ --prompt "Anna"
      graphdsl generate --hf path/to/gpt2 --prompt "Hello" --beam 4 --target llvm
      graphdsl generate my_lm.py:build --prompt "the cat" --max-new-tokens 5
    """
    from models import decoding
    target = parse_targets(target, allowed=("numpy", "llvm", "cuda"), param_hint="--target")[0]
    if (model is None) == (hf_dir is None):
        raise click.UsageError("name a MODEL or a Hugging Face directory with --hf (one of the two)")
    if checkpoint and (hf_dir or weights):
        raise click.UsageError("--checkpoint gives the weights: use it without --hf or --weights")
    with phase("loading the model and compiling its decode step"):
        step, codec, name, family, make_step_args = _build(model, hf_dir, checkpoint, tokenizer_dir, weights,
                                                           target, opt_level, seed, prompt)
    step = _limit_vocab(step, codec.size)
    prompt_ids = np.asarray([codec.start + list(make_step_args)], np.int64)
    start = time.perf_counter()
    with phase(f"generating {max_new_tokens} tokens"):
        if beam == 1:
            seqs = decoding.greedy(step, prompt_ids, max_new_tokens, eos_id=codec.eos)
            scores = None
        else:
            result = decoding.beam_search(step, prompt_ids, beam, max_new_tokens, eos_id=codec.eos)
            seqs, scores = result.sequences[0], result.scores[0]
    seconds = time.perf_counter() - start
    skip = prompt_ids.shape[1]
    texts = [codec.decode(_strip(s[skip:], codec.eos)) for s in seqs]
    new = [len(_strip(s[skip:], codec.eos)) for s in seqs]
    if as_json:
        emit_json({"model": name, "family": family, "target": target, "prompt": prompt,
                   "completions": texts, "ids": [s.tolist() for s in seqs],
                   "scores": None if scores is None else [float(x) for x in scores],
                   "new_tokens": new, "seconds": seconds, "tokens_per_s": sum(new) / seconds if seconds else None})
        return
    for i, text in enumerate(texts):
        label = "" if beam == 1 else f"[{i}] ({scores[i]:.3f}) "
        click.echo(f"{label}{prompt} -> {text}" if family == "bart" else f"{label}{prompt}{' ' if text else ''}{text}")


def _strip(ids, eos) -> list[int]:
    ids = [int(i) for i in ids]
    return ids[:ids.index(eos)] if eos is not None and eos in ids else ids


def _read_checkpoint_params(directory: str) -> dict:
    from models.checkpoint import read_params
    return read_params(directory)


def _build(model, hf_dir, checkpoint, tokenizer_dir, weights, target, opt_level, seed, prompt):
    """(step, codec, name, family, the prompt's ids)."""
    from graphdsl.weights import check_params
    from models import gpt, seq2seq
    if hf_dir:
        from models.hf import load_hf
        net, params = load_hf(hf_dir)
        if not isinstance(net, gpt.GPT):
            raise GraphDSLError(f"{hf_dir} holds a {type(net).__name__}; generate needs a GPT-2 (causal LM)")
        codec = hf_codec(tokenizer_dir or hf_dir)
        step = gpt.gpt_step(net.eval(), params, target, opt_level=opt_level)
        return step, codec, hf_dir, "gpt", codec.encode(prompt)
    codec = hf_codec(tokenizer_dir) if tokenizer_dir else None
    m = load_model(model, weights, seed=seed, desc="loading")
    if m.spec is None:
        import backends
        import passes
        graph = passes.optimize(m.graph, opt_level) if opt_level else m.graph
        codec = codec or builtin_codec(bos=True)
        exe = backends.compile(graph, target)
        return rerun_step(exe, graph, m.require_params("generate")), codec, model, "user", codec.encode(prompt)
    net = m.module.eval()
    params = m.params
    if checkpoint:
        graph_params = {k: n for k, n in m.graph.params.items()}
        values = _read_checkpoint_params(checkpoint)
        params = check_params(m.graph, {k: v for k, v in values.items() if k in graph_params},
                              f"the parameters in {checkpoint}")
        params = {**m.params, **params}
    if m.spec.family == "gpt":
        codec = codec or builtin_codec(bos=True)
        return gpt.gpt_step(net, params, target, opt_level=opt_level), codec, model, "gpt", codec.encode(prompt)
    if m.spec.family == "bart":
        codec = codec or builtin_codec(bos=True)
        src = np.asarray([codec.encode(prompt)], np.int64)
        if src.size == 0:
            raise GraphDSLError("the prompt has no tokens")
        step = seq2seq.seq2seq_step(net, params, src, np.ones_like(src), target, opt_level=opt_level)
        return step, codec, model, "bart", []
    raise GraphDSLError(f"{model} is a {m.spec.family} model, which does not generate text",
                        hint="generate with a gpt-* or bart-* model, --hf DIR (GPT-2), or a user graph returning logits")
