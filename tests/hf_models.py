"""Tiny random-weight ``transformers`` models built from config objects (nothing downloaded), shared by
the Hugging Face interop tests. Import it after ``pytest.importorskip("transformers")``."""
import numpy as np
import pytest
import torch
import transformers

V = 61          # vocabulary
ATOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def quiet_and_one_thread():
    transformers.logging.set_verbosity_error()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def bert_hf_config(**kw):
    # A larger initializer_range than BERT's 0.02 makes the logits spread out, so a wrong
    # transpose or a swapped tensor shows up far above the tolerance.
    return transformers.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=48, max_position_embeddings=24, initializer_range=0.2, **kw)


def gpt_hf_config(**kw):
    return transformers.GPT2Config(vocab_size=V, n_positions=24, n_embd=32, n_layer=2, n_head=4,
                                   initializer_range=0.2, bos_token_id=0, eos_token_id=0, **kw)


def tiny(cls, config, seed: int):
    """``cls(config)`` with weights drawn from ``seed``, in eval mode."""
    torch.manual_seed(seed)
    return cls(config).eval()


@pytest.fixture(scope="module")
def hf_bert():
    return tiny(transformers.BertForPreTraining, bert_hf_config(), 0)


@pytest.fixture(scope="module")
def hf_gpt():
    return tiny(transformers.GPT2LMHeadModel, gpt_hf_config(), 1)


def bert_batch():
    """Three sequences with token types and two padded rows."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, (3, 11))
    types = np.zeros_like(ids)
    types[:, 6:] = 1
    mask = np.ones_like(ids)
    mask[1, 8:] = 0
    mask[2, 4:] = 0
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def to_torch(batch):
    return {k: torch.tensor(v) for k, v in batch.items()}
