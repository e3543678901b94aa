"""Neural-network modules written in the DSL: layers, attention, Transformer blocks.

    from graphdsl import nn
    layer = nn.TransformerEncoderLayer(d_model=64, n_heads=4, d_ff=256)
    g = graphdsl.trace(layer, x="f32[batch,seq,64]")
    params = layer.init(seed=0)
"""
from . import functional, init  # noqa: F401
from .attention import MultiHeadAttention
from .layers import Dropout, Embedding, FeedForward, LayerNorm, Linear, RMSNorm
from .module import Module, ModuleList, Parameter
from .transformer import (TransformerDecoder, TransformerDecoderLayer, TransformerEncoder,
                          TransformerEncoderLayer)

__all__ = ["Dropout", "Embedding", "FeedForward", "LayerNorm", "Linear", "Module", "ModuleList",
           "MultiHeadAttention", "Parameter", "RMSNorm", "TransformerDecoder",
           "TransformerDecoderLayer", "TransformerEncoder", "TransformerEncoderLayer", "functional",
           "init"]
