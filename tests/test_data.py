"""The built-in corpus, its tokenizer, and BERT's data preparation (NSP pairs, 80/10/10 masking)."""
import collections

import numpy as np
import pytest

from graphdsl.errors import GraphDSLError
from models.data import (IGNORE_INDEX, Corpus, PretrainingData, Tokenizer, load_corpus, load_tokenizer,
                         mask_tokens, nsp_pairs, pad_sequences, split_words, truncate_pair)
from models.data import compose, corpus as corpus_mod


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


# -- corpus -------------------------------------------------------------------------------------
def test_shipped_corpus_is_what_the_generator_makes_and_is_small():
    path = corpus_mod.CORPORA["stories"]
    assert path.read_text(encoding="utf-8") == compose.compose_corpus()
    assert 100_000 < path.stat().st_size < 300_000
    notice = (path.parent / "NOTICE.txt").read_text(encoding="utf-8")
    assert "CC0" in notice and "compose.py" in notice


def test_corpus_documents_and_split(corpus):
    assert len(corpus.documents) == compose.N_DOCUMENTS
    assert len(corpus.sentences) > 4000
    assert all(len(doc) >= 3 for doc in corpus.documents)
    assert corpus.text == compose.compose_corpus()
    train, valid = corpus.split(0.1, seed=0)
    assert len(valid) == round(0.1 * len(corpus)) and len(train) + len(valid) == len(corpus)
    assert collections.Counter(train.documents + valid.documents) == collections.Counter(corpus.documents)
    again, _ = corpus.split(0.1, seed=0)
    assert again.documents == train.documents
    with pytest.raises(GraphDSLError, match="valid_fraction"):
        corpus.split(1.5)
    with pytest.raises(GraphDSLError, match="unknown corpus 'nope'"):
        load_corpus("nope")


# -- tokenizer ----------------------------------------------------------------------------------
SPECIAL_IDS = [("[PAD]", 0, "pad_id"), ("[UNK]", 1, "unk_id"), ("[CLS]", 2, "cls_id"), ("[SEP]", 3, "sep_id"),
               ("[MASK]", 4, "mask_id"), ("[BOS]", 5, "bos_id"), ("[EOS]", 6, "eos_id")]


@pytest.mark.parametrize("token, id_, attr", SPECIAL_IDS)
def test_special_token_ids(tok, token, id_, attr):
    assert tok.vocab[id_] == token and getattr(tok, attr) == id_ and tok.token_to_id[token] == id_


def test_sentinels_follow_the_specials(tok):
    assert tok.sentinel_ids == tuple(range(7, 7 + tok.n_sentinels))
    assert [tok.vocab[i] for i in tok.sentinel_ids[:2]] == ["<extra_id_0>", "<extra_id_1>"]
    assert tok.sentinel_id(3) == 10
    assert tok.is_special([0, 6, 22, 23]).tolist() == [True, True, True, False]
    with pytest.raises(GraphDSLError, match="sentinel 99"):
        tok.sentinel_id(99)


def test_round_trip_on_every_corpus_sentence(corpus, tok):
    assert all(tok.decode(tok.encode(s)) == s for s in corpus.sentences)
    assert all(tok.unk_id not in tok.encode(s) for s in corpus.sentences)


@pytest.mark.parametrize("text, tokens", [
    ("Anna is a baker.", ["Anna", "is", "a", "baker", "."]),
    ("at six o'clock, she runs!", ["at", "six", "o'clock", ",", "she", "runs", "!"]),
    ("The [MASK] is blue.", ["The", "[MASK]", "is", "blue", "."]),
    ("<extra_id_0> two <extra_id_1>", ["<extra_id_0>", "two", "<extra_id_1>"]),
])
def test_split_words(text, tokens):
    assert split_words(text) == tokens


def test_encode_decode_details(tok):
    ids = tok.encode("The zebra is blue.")
    assert ids[1] == tok.unk_id and tok.decode(ids) == "The [UNK] is blue."
    assert tok.encode("The [MASK] is blue.")[1] == tok.mask_id
    wrapped = tok.encode("Grass is green.", add_special=True)
    assert wrapped[0] == tok.cls_id and wrapped[-1] == tok.sep_id
    assert tok.decode(wrapped) == "[CLS] Grass is green. [SEP]"
    assert tok.decode(wrapped + [tok.pad_id], skip_special=True) == "Grass is green."
    ids, types = tok.encode_pair("Grass is green.", "Fish live in water.")
    assert tok.decode(ids) == "[CLS] Grass is green. [SEP] Fish live in water. [SEP]"
    assert types == [0] * 6 + [1] * 6
    with pytest.raises(GraphDSLError, match="out of range"):
        tok.decode([tok.vocab_size])


def test_vocabulary_is_deterministic_and_ordered_by_count(corpus, tok):
    again = Tokenizer.from_corpus(corpus)
    assert again.vocab == tok.vocab
    counts = collections.Counter(t for s in corpus.sentences for t in split_words(s))
    words = tok.vocab[tok.n_special:]
    assert len(words) == len(counts)
    keys = [(-counts[w], w) for w in words]
    assert keys == sorted(keys)


def test_tokenizer_save_load_and_max_size(tmp_path, corpus, tok):
    tok.save(tmp_path / "vocab.txt")
    assert Tokenizer.load(tmp_path / "vocab.txt").vocab == tok.vocab
    small = Tokenizer.from_corpus(corpus, max_size=100)
    assert small.vocab == tok.vocab[:100]
    with pytest.raises(GraphDSLError, match="must start with the special tokens"):
        Tokenizer(["hello", "[PAD]"])
    with pytest.raises(GraphDSLError, match="leaves no room"):
        Tokenizer.from_corpus(corpus, max_size=5)


# -- padding, truncation ------------------------------------------------------------------------
def test_pad_sequences():
    ids, mask = pad_sequences([[5, 6, 7], [8]], length=5, pad_id=0)
    np.testing.assert_array_equal(ids, [[5, 6, 7, 0, 0], [8, 0, 0, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    assert pad_sequences([[1, 2], [3]])[0].shape == (2, 2)
    with pytest.raises(GraphDSLError, match="does not fit length 2"):
        pad_sequences([[1, 2, 3]], length=2)


@pytest.mark.parametrize("a, b, n, want", [
    (5, 3, 8, (5, 3)), (5, 3, 6, (3, 3)), (5, 3, 5, (3, 2)), (2, 9, 6, (2, 4)),
])
def test_truncate_pair_drops_from_the_longer(a, b, n, want):
    ta, tb = truncate_pair(list(range(a)), list(range(100, 100 + b)), n)
    assert (len(ta), len(tb)) == want
    assert ta == list(range(want[0])) and tb == list(range(100, 100 + want[1]))


# -- NSP pairs ----------------------------------------------------------------------------------
def test_nsp_pairs_half_true_half_random():
    docs = tuple(tuple(f"{d} {i}." for i in range(2 + d % 4)) for d in range(30))  # "document line."
    pairs = nsp_pairs(Corpus("toy", docs), np.random.default_rng(0), 4000)
    labels = np.array([p[2] for p in pairs])
    assert abs(labels.mean() - 0.5) < 0.03
    for a, b, label in pairs:
        (da, ia), (db, ib) = (map(int, x.rstrip(".").split()) for x in (a, b))
        if label == 0:
            assert (db, ib) == (da, ia + 1)   # the next sentence of the same document
        else:
            assert db != da                   # a sentence of another document


def test_nsp_pairs_need_two_documents():
    with pytest.raises(GraphDSLError, match="at least two documents"):
        nsp_pairs(Corpus("one", (("a.", "b."),)), np.random.default_rng(0), 1)


# -- masking ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def masked_sample(corpus, tok):
    """Real padded pairs (specials and padding included) and one masking of them."""
    data = PretrainingData(corpus, tok, seq_len=40)
    rng = np.random.default_rng(1)
    seqs = []
    for a, b, _ in nsp_pairs(corpus, rng, 6000):
        seqs.append(tok.encode_pair(*truncate_pair(data._ids[a], data._ids[b], 37))[0])
    ids, _ = pad_sequences(seqs, 40, tok.pad_id)
    inputs, labels = mask_tokens(ids, tok, np.random.default_rng(2))
    return ids, inputs, labels


def test_masking_chooses_15_percent_of_ordinary_tokens_per_row(tok, masked_sample):
    ids, inputs, labels = masked_sample
    chosen = labels != IGNORE_INDEX
    n_ordinary = (ids >= tok.n_special).sum(axis=1)
    np.testing.assert_array_equal(chosen.sum(axis=1), np.maximum(1, np.rint(0.15 * n_ordinary)))
    special = ids < tok.n_special
    assert not (chosen & special).any()                      # specials and padding never chosen
    np.testing.assert_array_equal(inputs[special], ids[special])
    np.testing.assert_array_equal(labels[chosen], ids[chosen])
    np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])


def test_masking_80_10_10(tok, masked_sample):
    ids, inputs, labels = masked_sample
    chosen = labels != IGNORE_INDEX
    n = chosen.sum()
    assert n > 15_000
    to_mask = (inputs[chosen] == tok.mask_id).mean()
    unchanged = (inputs[chosen] == ids[chosen]).mean()
    replaced = inputs[chosen][(inputs[chosen] != tok.mask_id) & (inputs[chosen] != ids[chosen])]
    assert abs(to_mask - 0.8) < 0.01, to_mask
    assert abs(unchanged - 0.1) < 0.01, unchanged
    assert abs(len(replaced) / n - 0.1) < 0.01
    assert replaced.min() >= tok.n_special and replaced.max() < tok.vocab_size  # random ordinary tokens
    assert len(np.unique(replaced)) > 200                                         # spread over the vocab


def test_masking_is_deterministic_and_checks_its_input(tok, masked_sample):
    ids = masked_sample[0][:50]
    a = mask_tokens(ids, tok, np.random.default_rng(7))
    b = mask_tokens(ids, tok, np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(GraphDSLError, match="ids \\[batch, seq\\]"):
        mask_tokens(ids[0], tok, np.random.default_rng(0))


# -- BERT batches -------------------------------------------------------------------------------
def test_pretraining_batch_layout(corpus, tok):
    batch = PretrainingData(corpus, tok, seq_len=40).batch(np.random.default_rng(3), 64)
    assert {k: v.shape for k, v in batch.items()} == {
        "input_ids": (64, 40), "token_type_ids": (64, 40), "attention_mask": (64, 40),
        "mlm_labels": (64, 40), "nsp_labels": (64,)}
    assert all(v.dtype == np.int64 for v in batch.values())
    ids, types, mask, labels = (batch[k] for k in ("input_ids", "token_type_ids", "attention_mask", "mlm_labels"))
    original = np.where(labels != IGNORE_INDEX, labels, ids)
    for row in range(64):
        n = mask[row].sum()
        assert mask[row, :n].all() and not mask[row, n:].any()
        seps = np.flatnonzero(original[row] == tok.sep_id)
        assert original[row, 0] == tok.cls_id and len(seps) == 2 and seps[1] == n - 1
        np.testing.assert_array_equal(types[row, :n], (np.arange(n) > seps[0]).astype(int))
        assert (ids[row, n:] == tok.pad_id).all() and (labels[row, n:] == IGNORE_INDEX).all()
    assert set(batch["nsp_labels"].tolist()) == {0, 1}
