"""The model zoo, written in the DSL only (BERT, GPT, encoder-decoder, contrastive, fine-tuning heads).

Layering: this package imports ``graphdsl`` (and ``backends`` for its trainer).
"""
