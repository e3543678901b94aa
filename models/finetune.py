"""Fine-tuning: start from pretrained weights, add a task head, train some or all of it, keep the best.

    pre = load_pretrained("ckpt/")                        # a Trainer checkpoint, a .npz/.safetensors
                                                          # file, a params dict, or Hugging Face weights
    task = topic_task().subset(800)                       # sentence -> which kind of story (9 classes)
    model = SequenceModel(models.get("bert-tiny").config, "classification", task.num_labels)
    params = init_params(model, pre)                      # backbone from `pre`, head freshly initialized
    opt = AdamW(lr=1e-3, lr_scale=layerwise_lr_scale(model, 0.8))
    trainer = finetune(model, task, params, opt, epochs=3, batch_size=16, train="top:1")
    trainer.best                                          # {"step", "metric": "eval_accuracy", "value"}

Heads (``SequenceModel``, a BERT backbone with a Linear on the pooled [CLS] output) and losses:

    classification  logits [B, K]     cross-entropy with ``labels``; metric accuracy
    regression      prediction [B]    mean squared error with ``targets``; metric: the loss
    ranking         score [B]         margin ranking over pairs (``pos_*``, ``neg_*`` inputs, target 1):
                                      mean(max(0, margin - (s+ - s-))); metric pair_accuracy
    generation      a GPT (models/gpt.py), teacher forcing: NLL of the target tokens only (the
                                      prompt's labels are -100); metric: the loss

Which parameters train (``trainable(model, mode)``): "all", "head" (the task head only), "top:K"
(head, pooler and the top K layers), "prompt" (the soft prompt only) and "prompt+head".
Layer-wise learning-rate decay gives layer ``l`` the factor ``decay ** (L - l)``: embeddings are
layer 0, encoder layer i is layer i + 1, the pooler, head and prompt are layer L (factor 1).

Prompt tuning (``prompt_length=P``): P learned vectors are put before the token embeddings (so the
sequence is ``seq + P`` long, positions 0..P+S-1), the attention mask gets P ones in front, and the
pooler reads the [CLS] token, now at position P.

Built-in tasks from the story corpus (``Task``: shuffled arrays per split; ``subset(n)``): topic_task,
order_task (is a sentence pair in order?), overlap_task (regression: word overlap of a pair),
next_sentence_ranking_task and continuation_task (generation: the next sentence of a prompt).
"""
from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

import graphdsl as gd
from graphdsl import dtypes as _dt
from graphdsl import nn, ops
from graphdsl.errors import GraphDSLError
from graphdsl.graph import Graph
from graphdsl.optim import Optimizer
from graphdsl.tracing import Parameter, as_tensor

from .bert import BertConfig, BertModel
from .data import IGNORE_INDEX, load_corpus, load_tokenizer, pad_sequences
from .gpt import GPT
from .gpt import loss_graph as gpt_loss_graph

KINDS = ("classification", "regression", "ranking", "generation")
METRICS = {"classification": ("eval_accuracy", "max"), "regression": ("eval_loss", "min"),
           "ranking": ("eval_pair_accuracy", "max"), "generation": ("eval_loss", "min")}
IDS = "i64[batch,seq]"


# -- tasks ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """A supervised task: ``train`` and ``valid`` map input names to arrays whose axis 0 is the example."""

    name: str
    kind: str
    num_labels: int
    train: Mapping[str, np.ndarray]
    valid: Mapping[str, np.ndarray]

    def size(self, split: str = "train") -> int:
        return len(next(iter(self._split(split).values())))

    def batch(self, rng: np.random.Generator, n: int, split: str = "train") -> dict[str, np.ndarray]:
        """``n`` examples drawn without replacement from ``split``."""
        rows = rng.choice(self.size(split), size=min(n, self.size(split)), replace=False)
        return {k: v[rows] for k, v in self._split(split).items()}

    def batches(self, split: str, batch_size: int) -> list[dict[str, np.ndarray]]:
        """Every example of ``split`` in order, in batches of ``batch_size`` (the last may be smaller)."""
        data, n = self._split(split), self.size(split)
        return [{k: v[i:i + batch_size] for k, v in data.items()} for i in range(0, n, batch_size)]

    def epoch(self, batch_size: int, seed: int = 0) -> Callable[[int], dict[str, np.ndarray]]:
        """``fn(step) -> batch``: shuffled epochs of the train split (a new order each epoch)."""
        per_epoch = self.steps_per_epoch(batch_size)

        def batch(step: int) -> dict[str, np.ndarray]:
            order = np.random.default_rng([seed, step // per_epoch]).permutation(self.size())
            rows = order[(step % per_epoch) * batch_size:][:batch_size]
            return {k: v[rows] for k, v in self.train.items()}
        return batch

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, self.size() // batch_size)

    def subset(self, n_train: int | None = None, n_valid: int | None = None) -> "Task":
        """The first ``n_train`` / ``n_valid`` examples of each split (a random subset: the rows
        of a split are in random order)."""
        return Task(self.name, self.kind, self.num_labels, {k: v[:n_train] for k, v in self.train.items()},
                    {k: v[:n_valid] for k, v in self.valid.items()})

    def _split(self, split: str) -> Mapping[str, np.ndarray]:
        if split not in ("train", "valid"):
            raise GraphDSLError(f"task {self.name!r} has splits 'train' and 'valid', not {split!r}")
        return self.train if split == "train" else self.valid


@functools.lru_cache(maxsize=None)
def document_kinds() -> tuple[str, ...]:
    """The kind of each corpus document (``fable``, ``market``, ...), by replaying the generator
    that wrote stories.txt (models/data/compose.py) with its seed."""
    from .data import compose
    r = random.Random(compose.SEED)
    makers = [m for m, w in compose.KINDS for _ in range(w)]
    kinds, docs = [], []
    for _ in range(compose.N_DOCUMENTS):
        maker = r.choice(makers)
        docs.append(tuple(maker(r)))
        kinds.append(maker.__name__)
    if tuple(docs) != load_corpus().documents:
        raise GraphDSLError("stories.txt no longer matches models/data/compose.py",
                            hint="python -m models.data.compose rewrites it")
    return tuple(kinds)




def _bert_inputs(pairs: list[tuple[str, str | None]], prefix: str = "") -> dict[str, np.ndarray]:
    """``[CLS] a [SEP]`` (or ``[CLS] a [SEP] b [SEP]``) encoded and padded to the longest."""
    tok = load_tokenizer()
    seqs, types = [], []
    for a, b in pairs:
        ids, tt = tok.encode_pair(a, b) if b is not None else (tok.encode(a, add_special=True), None)
        seqs.append(ids)
        types.append(tt if tt is not None else [0] * len(ids))
    ids, mask = pad_sequences(seqs, pad_id=tok.pad_id)
    token_types, _ = pad_sequences(types)
    return {f"{prefix}input_ids": ids, f"{prefix}token_type_ids": token_types, f"{prefix}attention_mask": mask}


def _make_task(name, kind, num_labels, arrays, valid_fraction, seed) -> Task:
    """A random ``valid_fraction`` of the examples for valid, the rest for train, both shuffled."""
    if not 0.0 < valid_fraction < 1.0:
        raise GraphDSLError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    n = len(next(iter(arrays.values())))
    order = np.random.default_rng(seed).permutation(n)
    n_valid = max(1, int(round(valid_fraction * n)))
    return Task(name, kind, num_labels, {k: v[order[n_valid:]] for k, v in arrays.items()},
                {k: v[order[:n_valid]] for k, v in arrays.items()})


def topic_task(valid_fraction: float = 0.2, seed: int = 0) -> Task:
    """Classification: which kind of story (9 kinds) a sentence comes from. Each distinct sentence
    is one example (those found in two kinds are left out)."""
    kinds = document_kinds()
    names = sorted(set(kinds))
    label_of: dict[str, set] = {}
    for doc, kind in zip(load_corpus().documents, kinds):
        for s in doc:
            label_of.setdefault(s, set()).add(names.index(kind))
    sentences = sorted(s for s, k in label_of.items() if len(k) == 1)
    arrays = {**_bert_inputs([(s, None) for s in sentences]),
              "labels": np.array([next(iter(label_of[s])) for s in sentences], np.int64)}
    return _make_task("topic", "classification", len(names), arrays, valid_fraction, seed)


def _neighbours() -> list[tuple[int, str, str]]:
    """``(document index, sentence, next sentence)`` for every consecutive pair of the corpus."""
    return [(d, doc[i], doc[i + 1]) for d, doc in enumerate(load_corpus().documents) for i in range(len(doc) - 1)]


def order_task(valid_fraction: float = 0.2, seed: int = 0) -> Task:
    """Classification: label 1 when the pair is two consecutive sentences in order, 0 when swapped."""
    rng = np.random.default_rng(seed)
    pairs, labels = [], []
    for _, a, b in _neighbours():
        keep = int(rng.random() < 0.5)
        pairs.append((a, b) if keep else (b, a))
        labels.append(keep)
    arrays = {**_bert_inputs(pairs), "labels": np.array(labels, np.int64)}
    return _make_task("order", "classification", 2, arrays, valid_fraction, seed)


def word_overlap(a: str, b: str) -> float:
    """Jaccard overlap of the two sentences' lower-cased word sets: |A & B| / |A | B|."""
    wa, wb = (set(re.findall(r"\w+", s.lower())) for s in (a, b))
    return len(wa & wb) / max(len(wa | wb), 1)


def overlap_task(n: int = 2000, valid_fraction: float = 0.2, seed: int = 0) -> Task:
    """Regression: the word overlap of a sentence pair (half neighbours, half random sentences)."""
    rng = np.random.default_rng(seed)
    neighbours, sentences = _neighbours(), load_corpus().sentences
    pairs = []
    for _ in range(n):
        if rng.random() < 0.5:
            _, a, b = neighbours[rng.integers(len(neighbours))]
        else:
            a, b = (sentences[i] for i in rng.integers(len(sentences), size=2))
        pairs.append((a, b))
    arrays = {**_bert_inputs(pairs), "targets": np.array([word_overlap(a, b) for a, b in pairs], np.float32)}
    return _make_task("overlap", "regression", 1, arrays, valid_fraction, seed)


def next_sentence_ranking_task(valid_fraction: float = 0.2, seed: int = 0) -> Task:
    """Ranking: ``[CLS] a [SEP] next(a) [SEP]`` should score above ``a`` with a sentence of another story."""
    rng = np.random.default_rng(seed)
    docs = load_corpus().documents
    pos, neg = [], []
    for d, a, b in _neighbours():
        other = int(rng.integers(len(docs) - 1))
        other += other >= d
        pos.append((a, b))
        neg.append((a, docs[other][rng.integers(len(docs[other]))]))
    arrays = {**_bert_inputs(pos, "pos_"), **_bert_inputs(neg, "neg_")}
    return _make_task("next_sentence_ranking", "ranking", 1, arrays, valid_fraction, seed)


def continuation_task(valid_fraction: float = 0.2, seed: int = 0) -> Task:
    """Generation (GPT): ``[BOS] a b [EOS]``; the loss covers ``b [EOS]`` only (labels -100 on the prompt)."""
    tok = load_tokenizer()
    rows = []
    for _, a, b in _neighbours():
        prompt, target = [tok.bos_id, *tok.encode(a)], [*tok.encode(b), tok.eos_id]
        rows.append((prompt, target))
    ids, _ = pad_sequences([p + t for p, t in rows], pad_id=tok.pad_id)
    labels = np.full_like(ids, IGNORE_INDEX)
    for i, (p, t) in enumerate(rows):
        labels[i, len(p):len(p) + len(t)] = t
    return _make_task("continuation", "generation", tok.vocab_size, {"ids": ids, "labels": labels},
                      valid_fraction, seed)


# -- the model -----------------------------------------------------------------------------------
class SequenceModel(nn.Module):
    """A BERT backbone (``bert.*``, named as in BertForPreTraining) and a Linear ``head`` on the
    pooled output; ``prompt`` ``[P, H]`` when ``prompt_length`` > 0.

    forward(input_ids, token_type_ids, attention_mask) -> logits [B, K] (classification) or a
    score [B] (regression, ranking).
    """

    def __init__(self, config: BertConfig, kind: str = "classification", num_labels: int = 2, *,
                 prompt_length: int = 0, margin: float = 1.0):
        super().__init__()
        if kind not in KINDS[:3]:
            raise GraphDSLError(f"SequenceModel: unknown kind {kind!r}",
                                hint=f"one of {KINDS[:3]}; for generation fine-tune a models.gpt.GPT")
        self.config, self.kind, self.margin = config, kind, float(margin)
        self.prompt_length = int(prompt_length)
        if self.prompt_length < 0:
            raise GraphDSLError(f"prompt_length must be >= 0, got {prompt_length}")
        dt = _dt.dtype(config.dtype)
        self.bert = BertModel(config)
        self.prompt = (Parameter((self.prompt_length, config.hidden_size), dt, init=("normal", 0.02))
                       if self.prompt_length else None)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, num_labels if kind == "classification" else 1, dtype=dt)

    def pooled(self, input_ids, token_type_ids, attention_mask):
        """The pooled [CLS] output ``[B, H]``, after the soft prompt when there is one."""
        if self.prompt is None:
            return self.bert(input_ids, token_type_ids, attention_mask)[1]
        ids = as_tensor(input_ids)
        batch, P, H = ids.shape[0], self.prompt_length, self.config.hidden_size
        emb = self.bert.embeddings
        prompt = ops.broadcast_to(as_tensor(self.prompt), shape=(batch, P, H))
        x = ops.concat([prompt, emb.word(ids)], axis=1)                          # [B, seq+P, H]
        types = ops.concat([ops.zeros((batch, P), _dt.int64), token_type_ids], axis=1)
        x = emb.drop(emb.norm(x + emb.position(ops.arange(x.shape[1])) + emb.token_type(types)))
        mask = ops.concat([ops.ones((batch, P), _dt.int64), attention_mask], axis=1)
        hidden = self.bert.encoder(x, mask=nn.functional.padding_mask_bias(mask, _dt.dtype(self.config.dtype)))
        return self.bert.pooler(hidden[:, P:])

    def head_output(self, pooled):
        """Logits ``[B, K]`` (classification) or one score per example ``[B]``."""
        out = self.head(self.drop(pooled))
        return out if self.kind == "classification" else out[:, 0]

    def forward(self, input_ids, token_type_ids, attention_mask):
        return self.head_output(self.pooled(input_ids, token_type_ids, attention_mask))

    def loss(self, with_outputs: bool = False, **inputs) -> dict:
        """``{"loss", <metric>}`` for this head's inputs (see ``input_specs``); ``with_outputs``
        adds the logits or scores and the pooled outputs (to check the head independently)."""
        dt = _dt.dtype(self.config.dtype)
        if self.kind == "ranking":
            p_pos = self.pooled(*(inputs[f"pos_{k}"] for k in _BERT_INPUTS))
            p_neg = self.pooled(*(inputs[f"neg_{k}"] for k in _BERT_INPUTS))
            s_pos, s_neg = self.head_output(p_pos), self.head_output(p_neg)
            loss = ops.margin_ranking(s_pos, s_neg, ops.ones_like(s_pos), margin=self.margin)
            out = {"loss": loss, "pair_accuracy": (s_pos > s_neg).astype(dt).mean()}
            extra = {"pos_score": s_pos, "neg_score": s_neg, "pos_pooled": p_pos, "neg_pooled": p_neg}
        else:
            pooled = self.pooled(*(inputs[k] for k in _BERT_INPUTS))
            y = self.head_output(pooled)
            if self.kind == "classification":
                labels = inputs["labels"]
                out = {"loss": ops.cross_entropy(y, labels),
                       "accuracy": (y.argmax(axis=-1) == labels).astype(dt).mean()}
                extra = {"logits": y, "pooled": pooled}
            else:
                out = {"loss": ops.mse(y, inputs["targets"])}
                extra = {"prediction": y, "pooled": pooled}
        return {**out, **extra} if with_outputs else out

    def input_specs(self) -> dict[str, str]:
        """The loss graph's inputs and their types."""
        if self.kind == "ranking":
            return {f"{side}_{k}": IDS for side in ("pos", "neg") for k in _BERT_INPUTS}
        target = {"classification": ("labels", "i64[batch]"),
                  "regression": ("targets", f"{_dt.dtype(self.config.dtype).short}[batch]")}[self.kind]
        return {**{k: IDS for k in _BERT_INPUTS}, target[0]: target[1]}


_BERT_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def loss_graph(model: SequenceModel | GPT, *, with_outputs: bool = False) -> Graph:
    """The model's fine-tuning loss, traced in the module's current mode (train or eval).

    A GPT gives models/gpt.py's teacher-forcing graph (inputs ids, labels; outputs loss, token_acc).
    """
    if isinstance(model, GPT):
        return gpt_loss_graph(model)
    if not isinstance(model, SequenceModel):
        raise GraphDSLError(f"fine-tuning takes a SequenceModel or a GPT, got {type(model).__name__}")

    def finetune_loss(**inputs):
        return model.loss(with_outputs, **inputs)
    return gd.trace(finetune_loss, params=model, name=f"finetune_{model.kind}", **model.input_specs())


def kind_of(model: SequenceModel | GPT) -> str:
    return "generation" if isinstance(model, GPT) else model.kind


# -- pretrained weights --------------------------------------------------------------------------
def load_pretrained(source: Any, config=None) -> dict[str, np.ndarray]:
    """Parameters by our names from: a dict of arrays (ours, or Hugging Face names), a Trainer
    checkpoint directory, a ``.npz`` or ``.safetensors`` file (ours or Hugging Face's), a
    ``save_pretrained`` directory or a ``transformers`` model (BertForPreTraining or BertModel,
    GPT2LMHeadModel; converted by models/hf.py, with ``config`` when the source has none)."""
    from . import hf
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir() and (path / "config.json").exists():
            return hf.params_from_hf(path, config, backbone_only=True)
        if path.is_dir():
            from .checkpoint import read_params
            return read_params(path)
        if path.suffix == ".npz":
            with np.load(path) as f:
                return {k: f[k] for k in f.files}
        if path.suffix != ".safetensors":
            raise GraphDSLError(f"cannot read weights from {str(path)!r}", hint="use .npz or .safetensors")
        from safetensors.numpy import load_file
        source = load_file(str(path))
    if isinstance(source, Mapping) and not hf.is_hf_state(source):
        return {k: hf.to_numpy(v) for k, v in source.items()}
    return hf.params_from_hf(source, config, backbone_only=True)


def init_params(model: SequenceModel | GPT, pretrained: Mapping[str, np.ndarray] | None = None, *,
                seed: int = 0) -> dict[str, np.ndarray]:
    """``model.init(seed)`` with the backbone replaced by ``pretrained`` (what ``load_pretrained``
    returns). A SequenceModel takes every ``bert.*`` tensor, a GPT every tensor; pretrained heads
    (``mlm.*``, ``nsp.*``) are ignored. Missing or mis-shaped backbone tensors are one error."""
    params = model.init(seed)
    if pretrained is None:
        return params
    wanted = [k for k in params if isinstance(model, GPT) or k.startswith("bert.")]
    missing = [k for k in wanted if k not in pretrained]
    shapes = [f"{k}: {tuple(np.shape(pretrained[k]))} != {params[k].shape}" for k in wanted
              if k in pretrained and np.shape(pretrained[k]) != params[k].shape]
    if missing or shapes:
        raise GraphDSLError("the pretrained weights do not fit this model: "
                            + "; ".join(p for p in (f"missing {missing}" if missing else "",
                                                    f"mis-shaped {shapes}" if shapes else "") if p),
                            hint="build the model from the config the weights were trained with")
    for k in wanted:
        params[k] = np.asarray(pretrained[k], dtype=params[k].dtype).copy()
    return params


# -- what trains, and how fast -------------------------------------------------------------------
def _block_index(model: SequenceModel | GPT, name: str) -> int | None:
    """The index of the Transformer layer a parameter belongs to, or None."""
    pattern = r"h\.(\d+)\." if isinstance(model, GPT) else r"bert\.encoder\.layers\.(\d+)\."
    m = re.match(pattern, name)
    return int(m.group(1)) if m else None


def _num_layers(model: SequenceModel | GPT) -> int:
    return model.config.n_layer if isinstance(model, GPT) else model.config.num_layers


def layer_of(model: SequenceModel | GPT, name: str) -> int:
    """The depth of a parameter: 0 for embeddings, i + 1 for layer i, L for the rest (pooler, head, prompt)."""
    block = _block_index(model, name)
    if block is not None:
        return block + 1
    embedding = name.startswith(("wte.", "wpe.") if isinstance(model, GPT) else "bert.embeddings.")
    return 0 if embedding else _num_layers(model)


def layerwise_lr_scale(model: SequenceModel | GPT, decay: float) -> dict[str, float]:
    """``lr_scale`` for an optimizer: parameter name -> ``decay ** (L - layer_of(name))``."""
    if not 0.0 < decay <= 1.0:
        raise GraphDSLError(f"layer-wise lr decay must be in (0, 1], got {decay}")
    n = _num_layers(model)
    return {name: float(decay) ** (n - layer_of(model, name)) for name in model.parameters()}


def trainable(model: SequenceModel | GPT, mode: str = "all") -> list[str]:
    """Names of the parameters that train in ``mode``: "all", "head", "prompt", "prompt+head", or
    "top:K" (the top K layers and everything above them: pooler, head, prompt; never the embeddings)."""
    names = list(model.parameters())
    if mode == "all":
        return names
    if mode in ("prompt", "prompt+head") and getattr(model, "prompt", None) is None:
        raise GraphDSLError(f"train={mode!r} needs a model with a soft prompt",
                            hint="build it with SequenceModel(..., prompt_length=P)")
    if mode in ("head", "prompt+head") and not isinstance(model, SequenceModel):
        raise GraphDSLError(f"train={mode!r}: this model has no separate head (GPT's is tied)",
                            hint="use 'top:K' or 'all'")
    if mode in ("head", "prompt", "prompt+head"):
        parts = mode.split("+")
        return [k for k in names
                if (k == "prompt" and "prompt" in parts) or (k.startswith("head.") and "head" in parts)]
    m = re.fullmatch(r"top:(\d+)", mode)
    if m is None:
        raise GraphDSLError(f"unknown train mode {mode!r}", hint="'all', 'head', 'top:K', 'prompt' or 'prompt+head'")
    n = _num_layers(model)
    first = n - int(m.group(1))                       # layers first .. n-1 train

    def keep(name: str) -> bool:
        block = _block_index(model, name)
        return block >= first if block is not None else layer_of(model, name) == n
    return [name for name in names if keep(name)]


# -- the loop ------------------------------------------------------------------------------------
def evaluator(graph: Graph, batches: Iterable[Mapping[str, np.ndarray]], target: str = "numpy"):
    """An ``eval_fn`` for the Trainer: every scalar output of ``graph`` averaged over the examples of
    ``batches`` (weighted by batch size), named ``eval_<output>``."""
    import backends
    exe = backends.compile(graph, target)
    batches = list(batches)
    scalars = [k for k, node in graph.outputs.items() if node.type.rank == 0]

    def evaluate(trainer) -> dict[str, float]:
        params = {k: trainer.params[k] for k in graph.params}
        sums, total = dict.fromkeys(scalars, 0.0), 0
        for b in batches:
            n = len(next(iter(b.values())))
            out = exe({**b, **params})
            for k in scalars:
                sums[k] += float(out[k]) * n
            total += n
        return {f"eval_{k}": v / max(total, 1) for k, v in sums.items()}
    return evaluate


def finetune(model: SequenceModel | GPT, task: Task, params: Mapping[str, np.ndarray], optimizer: Optimizer,
             *, epochs: int = 3, batch_size: int = 16, train: str | Iterable[str] = "all", seed: int = 0,
             target: str = "numpy", clip_norm: float | None = 1.0, best_path: str | Path | None = None,
             restore_best: bool = True, progress: bool = False, log_path: str | Path | None = None):
    """Train ``model`` on ``task`` for ``epochs``, evaluating on the valid split after each epoch.

    ``train`` is a ``trainable`` mode or a list of parameter names (the others stay bit-identical).
    The best epoch by the task's metric (accuracy, pair accuracy, or the loss) is kept in
    ``trainer.best`` / ``best_params`` (and at ``best_path``); with ``restore_best`` the returned
    Trainer holds those parameters. Returns the ``models.trainer.Trainer``.
    """
    from .trainer import Trainer
    kind = kind_of(model)
    if task.kind != kind:
        raise GraphDSLError(f"task {task.name!r} is {task.kind}, the model is {kind}")
    wrt = trainable(model, train) if isinstance(train, str) else list(train)
    train_graph = loss_graph(model.train())
    eval_graph = loss_graph(model.eval())
    model.train()
    trainer = Trainer(train_graph, params, optimizer, target=target, clip_norm=clip_norm, wrt=wrt,
                      seed=seed, progress=progress, log_path=log_path)
    per_epoch = task.steps_per_epoch(batch_size)
    metric, mode = METRICS[kind]
    trainer.fit(task.epoch(batch_size, seed), steps=epochs * per_epoch,
                eval_fn=evaluator(eval_graph, task.batches("valid", 64), target), eval_every=per_epoch,
                metric=metric, mode=mode, best_path=best_path, desc=f"finetune {task.name}")
    if restore_best:
        trainer.restore_best()
    return trainer
