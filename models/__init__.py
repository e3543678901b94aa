"""The model zoo, written in the DSL only (BERT, GPT, encoder-decoder, contrastive, fine-tuning heads).

``models.get(name)`` returns a ModelSpec (see models/registry.py); ``models.names()`` lists them.
Layering: this package imports ``graphdsl`` (and ``backends`` for its trainer).
"""
from .registry import ModelSpec, get, names, register  # noqa: F401
