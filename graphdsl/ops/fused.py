"""Fused ops the graph passes produce: bias-add + activation, residual-add + LayerNorm.

Users do not need to call them: ``passes`` rewrites ``act(x + b)`` and ``layer_norm(x + r, w, b)``
into them. Each one is defined by the ops it fuses -- its reference, gradient and decomposition
call those ops' own declarations -- so a fused graph computes exactly the numbers of the graph it
came from, and a backend without a lowering for a fused op uses the decomposition.
"""
from __future__ import annotations

from graphdsl.errors import ShapeError, TypeError_
from graphdsl.registry import REQUIRED, defop, get

from .common import require_float, same_dtype, sum_to, types_str

# activation name -> (op, attrs); the names of graphdsl.nn.functional.ACTIVATIONS, plus sigmoid
ACTIVATIONS = {
    "gelu": ("gelu", {"approximate": "none"}),
    "gelu_tanh": ("gelu", {"approximate": "tanh"}),
    "relu": ("relu", {}),
    "silu": ("silu", {}),
    "tanh": ("tanh", {}),
    "sigmoid": ("sigmoid", {}),
}


def _activation(name: str):
    if name not in ACTIVATIONS:
        raise TypeError_(f"unknown activation {name!r}", hint=f"use one of {', '.join(ACTIVATIONS)}")
    op, attrs = ACTIVATIONS[name]
    return get(op), attrs


# -- bias_activation -------------------------------------------------------------------------------
def _bias_act_infer(x, bias, activation):
    _activation(activation)
    require_float("bias_activation", x)
    same_dtype("bias_activation", x, bias)
    if x.rank == 0 or tuple(bias.shape) != (x.shape[-1],):
        raise ShapeError(f"bias must be [last dim of x], got {types_str(x, bias)}",
                         hint=f"bias has shape [{x.shape[-1] if x.rank else '?'}]")
    return x


def _bias_act_ref(x, bias, activation):
    op, attrs = _activation(activation)
    return op.ref((x + bias).astype(x.dtype, copy=False), **attrs)


def _bias_act_vjp(g, out, x, bias, activation):
    op, attrs = _activation(activation)
    pre = x + bias
    (gpre,) = op.vjp(g, out, pre, **attrs)
    return [gpre, sum_to(gpre, bias.shape)]


def _bias_act_decompose(x, bias, activation):
    op, attrs = _activation(activation)
    return op(x + bias, **attrs)


bias_activation = defop(
    "bias_activation", attrs={"activation": REQUIRED}, arity=2, infer=_bias_act_infer,
    ref=_bias_act_ref, vjp=_bias_act_vjp, decompose=_bias_act_decompose,
    types="x and bias one float dtype → same dtype",
    doc="activation(x + bias) for a bias over the last axis (gelu, gelu_tanh, relu, silu, tanh, sigmoid)",
    tags=("fused",))


# -- add_layer_norm --------------------------------------------------------------------------------
def _add_ln_infer(x, residual, weight, bias, eps):
    if x != residual:
        raise ShapeError(f"x and residual must have the same type, got {types_str(x, residual)}")
    return get("layer_norm").infer(x, weight, bias, eps=eps)


def _add_ln_ref(x, residual, weight, bias, eps):
    return get("layer_norm").ref((x + residual).astype(x.dtype, copy=False), weight, bias, eps=eps)


def _add_ln_vjp(g, out, x, residual, weight, bias, eps):
    gs, gw, gb = get("layer_norm").vjp(g, out, x + residual, weight, bias, eps=eps)
    return [gs, gs, gw, gb]


def _add_ln_decompose(x, residual, weight, bias, eps):
    return get("layer_norm")(x + residual, weight, bias, eps=eps)


add_layer_norm = defop(
    "add_layer_norm", attrs={"eps": 1e-5}, arity=4,
    normalize=lambda x, r, w, b, eps: get("layer_norm").normalize(x, w, b, eps=eps),
    infer=_add_ln_infer, ref=_add_ln_ref, vjp=_add_ln_vjp, decompose=_add_ln_decompose,
    types="x, residual, weight, bias one float dtype → same dtype",
    doc="layer_norm(x + residual, weight, bias): a residual add and the LayerNorm after it",
    tags=("fused",))

__all__ = ["bias_activation", "add_layer_norm"]
