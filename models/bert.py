"""BERT (Devlin et al., 2018): a post-LN Transformer encoder pretrained with MLM + NSP.

    spec = models.get("bert-tiny")
    model = spec.module()                       # BertForPreTraining
    loss_graph = spec.loss(model)               # outputs loss = mlm_loss + nsp_loss
    fwd = spec.forward(model.eval())            # outputs mlm_logits [B,S,V], nsp_logits [B,2]

Embeddings (word + position + segment, LayerNorm, dropout), an encoder of post-LN layers (GELU),
a pooler (dense + tanh on the [CLS] position) and two heads: the masked-LM head (dense, GELU,
LayerNorm, then a decoder TIED to the word embeddings: ``h @ word.weight^T + bias``) and the
next-sentence head (a Linear on the pooled output). The MLM loss averages over the masked
positions only (labels -100 elsewhere, cross-entropy's ignore_index); L = L_MLM + L_NSP.

Parameter names and their Hugging Face ``BertForPreTraining`` counterparts. Our Linear weights are
``[in, out]``, HF's ``nn.Linear`` weights ``[out, in]``: every ``*.weight`` of a Linear (marked T)
is transposed; embeddings and LayerNorms are not. ``{i}`` is the layer index.

    ours                                       Hugging Face                                          T
    bert.embeddings.word.weight                bert.embeddings.word_embeddings.weight
                                               (and cls.predictions.decoder.weight, tied to it)
    bert.embeddings.position.weight            bert.embeddings.position_embeddings.weight
    bert.embeddings.token_type.weight          bert.embeddings.token_type_embeddings.weight
    bert.embeddings.norm.{weight,bias}         bert.embeddings.LayerNorm.{weight,bias}
    bert.encoder.layers.{i}.attn.q.*           bert.encoder.layer.{i}.attention.self.query.*         T
    bert.encoder.layers.{i}.attn.k.*           bert.encoder.layer.{i}.attention.self.key.*           T
    bert.encoder.layers.{i}.attn.v.*           bert.encoder.layer.{i}.attention.self.value.*         T
    bert.encoder.layers.{i}.attn.o.*           bert.encoder.layer.{i}.attention.output.dense.*       T
    bert.encoder.layers.{i}.norm1.*            bert.encoder.layer.{i}.attention.output.LayerNorm.*
    bert.encoder.layers.{i}.ffn.fc1.*          bert.encoder.layer.{i}.intermediate.dense.*           T
    bert.encoder.layers.{i}.ffn.fc2.*          bert.encoder.layer.{i}.output.dense.*                 T
    bert.encoder.layers.{i}.norm2.*            bert.encoder.layer.{i}.output.LayerNorm.*
    bert.pooler.dense.*                        bert.pooler.dense.*                                   T
    mlm.dense.*                                cls.predictions.transform.dense.*                     T
    mlm.norm.*                                 cls.predictions.transform.LayerNorm.*
    mlm.bias                                   cls.predictions.bias (= cls.predictions.decoder.bias)
    nsp.*                                      cls.seq_relationship.*                                T

(``*`` is ``weight`` and ``bias``; older HF checkpoints name LayerNorm's ``gamma``/``beta``.)
``BertModel`` alone (the ``bert.`` subtree) is the backbone the fine-tuning heads reuse;
``trace_backbone(model)`` traces it alone (last hidden states, e.g. for sentence embeddings).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

import graphdsl as gd
from graphdsl import dtypes as _dt
from graphdsl import nn, ops
from graphdsl.errors import ShapeError
from graphdsl.tracing import Parameter, as_tensor, user_loc

from .data import IGNORE_INDEX, PretrainingData, load_corpus, load_tokenizer
from .registry import ModelSpec, register


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1                 # hidden and attention-probability dropout (HF uses one p)
    layer_norm_eps: float = 1e-12
    dtype: str = "float32"
    seq_len: int = 128                   # length of the batches spec.batch makes (data, not model)


class BertEmbeddings(nn.Module):
    """``norm(word[ids] + position[0..S) + token_type[types])``, then dropout."""

    def __init__(self, c: BertConfig):
        super().__init__()
        dt = _dt.dtype(c.dtype)
        self.max_position = c.max_position
        self.word = nn.Embedding(c.vocab_size, c.hidden_size, dtype=dt)
        self.position = nn.Embedding(c.max_position, c.hidden_size, dtype=dt)
        self.token_type = nn.Embedding(c.type_vocab_size, c.hidden_size, dtype=dt)
        self.norm = nn.LayerNorm(c.hidden_size, c.layer_norm_eps, dtype=dt)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, input_ids, token_type_ids=None):
        input_ids = as_tensor(input_ids)
        seq = input_ids.shape[1]
        if isinstance(seq, int) and seq > self.max_position:
            raise ShapeError(f"BERT takes at most {self.max_position} positions, got input_ids "
                             f"{input_ids.type}", loc=user_loc(), hint="truncate the sequences")
        h = self.word(input_ids) + self.position(ops.arange(seq))
        if token_type_ids is None:
            h = h + self.token_type.weight[0]
        else:
            h = h + self.token_type(token_type_ids)
        return self.drop(self.norm(h))


class BertPooler(nn.Module):
    """``tanh(dense(h[:, 0]))``: the [CLS] position's summary of the sequence."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size, dtype=_dt.dtype(c.dtype))

    def forward(self, hidden):
        return ops.tanh(self.dense(hidden[:, 0]))


class BertModel(nn.Module):
    """The backbone: ``forward(input_ids, token_type_ids, attention_mask) -> (hidden [B,S,H], pooled [B,H])``."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.config = c
        self.embeddings = BertEmbeddings(c)
        self.encoder = nn.TransformerEncoder(c.num_layers, c.hidden_size, c.num_heads, c.intermediate_size,
                                             c.dropout, "gelu", norm_first=False, eps=c.layer_norm_eps,
                                             dtype=_dt.dtype(c.dtype))
        self.pooler = BertPooler(c)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        mask = None
        if attention_mask is not None:
            mask = nn.functional.padding_mask_bias(attention_mask, dtype=_dt.dtype(self.config.dtype))
        hidden = self.encoder(self.embeddings(input_ids, token_type_ids), mask=mask)
        return hidden, self.pooler(hidden)


class BertMLMHead(nn.Module):
    """``norm(gelu(dense(h))) @ word_embeddings^T + bias``: logits over the vocabulary.

    The decoder matrix is not a parameter of this head: ``forward`` takes the word-embedding
    Parameter itself, so the model has one ``[V, H]`` matrix used twice (tied weights).
    """

    def __init__(self, c: BertConfig):
        super().__init__()
        dt = _dt.dtype(c.dtype)
        self.dense = nn.Linear(c.hidden_size, c.hidden_size, dtype=dt)
        self.norm = nn.LayerNorm(c.hidden_size, c.layer_norm_eps, dtype=dt)
        self.bias = Parameter((c.vocab_size,), dt, init="zeros")

    def forward(self, hidden, word_embeddings):
        h = self.norm(ops.gelu(self.dense(hidden), approximate="none"))
        return h @ word_embeddings.transpose() + self.bias


class BertForPreTraining(nn.Module):
    """BERT with the MLM and NSP heads (Hugging Face's ``BertForPreTraining``)."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.config = c
        self.bert = BertModel(c)
        self.mlm = BertMLMHead(c)
        self.nsp = nn.Linear(c.hidden_size, 2, dtype=_dt.dtype(c.dtype))

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        """``{"mlm_logits": [B, S, V], "nsp_logits": [B, 2]}``."""
        hidden, pooled = self.bert(input_ids, token_type_ids, attention_mask)
        return {"mlm_logits": self.mlm(hidden, self.bert.embeddings.word.weight),
                "nsp_logits": self.nsp(pooled)}

    def pretraining_loss(self, input_ids, token_type_ids, attention_mask, mlm_labels, nsp_labels,
                         *, with_logits: bool = False):
        """``{"loss", "mlm_loss", "nsp_loss"}`` (and the logits when ``with_logits``).

        ``mlm_labels`` [B, S] holds the original ids at masked positions, -100 elsewhere;
        ``nsp_labels`` [B] is 0 when sentence B follows A, 1 when it is random.
        """
        out = self(input_ids, token_type_ids, attention_mask)
        mlm = ops.cross_entropy(out["mlm_logits"], mlm_labels, ignore_index=IGNORE_INDEX)
        nsp = ops.cross_entropy(out["nsp_logits"], nsp_labels)
        losses = {"loss": mlm + nsp, "mlm_loss": mlm, "nsp_loss": nsp}
        return {**losses, **out} if with_logits else losses


# -- tracing and data, for the registry -------------------------------------------------------
IDS = "i64[batch,seq]"


def trace_loss(model: BertForPreTraining, *, with_logits: bool = False) -> gd.Graph:
    """The pretraining-loss graph: inputs input_ids, token_type_ids, attention_mask, mlm_labels,
    nsp_labels (and seed when dropout is on); outputs loss, mlm_loss, nsp_loss."""
    def loss(input_ids, token_type_ids, attention_mask, mlm_labels, nsp_labels):
        return model.pretraining_loss(input_ids, token_type_ids, attention_mask, mlm_labels, nsp_labels,
                                      with_logits=with_logits)
    return gd.trace(loss, params=model, name="bert_pretraining", input_ids=IDS, token_type_ids=IDS,
                    attention_mask=IDS, mlm_labels=IDS, nsp_labels="i64[batch]")


def trace_forward(model: BertForPreTraining) -> gd.Graph:
    """The inference graph: (input_ids, token_type_ids, attention_mask) -> mlm_logits, nsp_logits."""
    return gd.trace(model.forward, name="bert_forward", input_ids=IDS, token_type_ids=IDS,
                    attention_mask=IDS)


def trace_backbone(model: BertModel | BertForPreTraining, *, token_types: bool = True) -> gd.Graph:
    """The encoder alone, for embeddings: (input_ids, token_type_ids, attention_mask) ->
    ``hidden`` [batch, seq, hidden] (the last hidden states, transformers' ``last_hidden_state``)
    and ``pooled`` [batch, hidden] (``pooler_output``).

    Traced without dropout (this puts ``model`` in eval mode). The parameters keep the model's
    names: ``embeddings.*`` for a BertModel (what ``hf.load_hf`` gives for a bare checkpoint),
    ``bert.*`` for a BertForPreTraining (whose heads the graph does not use, so feed it only the
    ``bert.*`` params). ``token_types=False`` leaves out the token_type_ids input (segment 0 everywhere).
    """
    backbone = model.bert if isinstance(model, BertForPreTraining) else model

    def bert_backbone(input_ids, attention_mask, token_type_ids=None):
        hidden, pooled = backbone(input_ids, token_type_ids, attention_mask)
        return {"hidden": hidden, "pooled": pooled}
    types = {"token_type_ids": IDS} if token_types else {}
    return gd.trace(bert_backbone, params=model, training=False, name="bert_backbone", input_ids=IDS,
                    **types, attention_mask=IDS)


@functools.lru_cache(maxsize=None)
def pretraining_data(seq_len: int) -> PretrainingData:
    """MLM + NSP batches from the built-in corpus, ``seq_len`` tokens each (cached)."""
    return PretrainingData(load_corpus(), load_tokenizer(), seq_len)


def make_batch(config: BertConfig, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return pretraining_data(min(config.seq_len, config.max_position)).batch(rng, n)


def _register(name: str, config: BertConfig, description: str) -> None:
    register(ModelSpec(name=name, family="bert", description=description, config=config,
                       build=BertForPreTraining, loss=trace_loss, forward=trace_forward,
                       batch=make_batch, attention_blocks=config.num_layers))


_register("bert-tiny", BertConfig(vocab_size=load_tokenizer().vocab_size, hidden_size=64, num_layers=2,
                                  num_heads=2, intermediate_size=256, max_position=64, seq_len=40),
          "BERT, 2 layers x 64, built-in corpus vocabulary; MLM + NSP pretraining in seconds")
_register("bert-mini", BertConfig(vocab_size=load_tokenizer().vocab_size, hidden_size=256, num_layers=4,
                                  num_heads=4, intermediate_size=1024, max_position=128, seq_len=64),
          "BERT, 4 layers x 256, 4 heads (BERT-mini's encoder), built-in corpus vocabulary")
_register("bert-base", BertConfig(),
          "BERT-base: 12 layers x 768, 12 heads, vocab 30522 (bert-base-uncased's shape)")
