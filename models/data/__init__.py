"""Built-in data for the zoo: a small English corpus, its word-level tokenizer, pretraining data.

    from models.data import load_corpus, load_tokenizer, PretrainingData
    corpus = load_corpus()                     # documents of sentences (stories.txt, CC0)
    tok = load_tokenizer()                     # Tokenizer.from_corpus(corpus), cached
    tok.encode("Anna is a baker.")             # [ids]; tok.decode(ids) gives the text back
    batch = PretrainingData(corpus, tok).batch(np.random.default_rng(0), 16)   # MLM + NSP
"""
from .corpus import Corpus, load_corpus, parse_documents
from .pretraining import IGNORE_INDEX, PretrainingData, mask_tokens, nsp_pairs, pad_sequences, truncate_pair
from .tokenizer import (BASE_SPECIALS, BOS, CLS, EOS, MASK, N_SENTINELS, PAD, SEP, UNK, Tokenizer,
                        load_tokenizer, sentinel, split_words)

__all__ = ["BASE_SPECIALS", "BOS", "CLS", "Corpus", "EOS", "IGNORE_INDEX", "MASK", "N_SENTINELS", "PAD",
           "PretrainingData", "SEP", "Tokenizer", "UNK", "load_corpus", "load_tokenizer", "mask_tokens",
           "nsp_pairs", "pad_sequences", "parse_documents", "sentinel", "split_words", "truncate_pair"]
