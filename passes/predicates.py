"""Node tests the passes' patterns share (their ``where=``): element types, axes, permutations.

They live apart from the pass files so that each pass can start with its rules: a pattern at the
top of a module can only name tests defined before it.
"""
from __future__ import annotations

from typing import Callable

from graphdsl.graph import Node


def is_float(node: Node) -> bool:
    return node.type.dtype.is_float


def is_bool(node: Node) -> bool:
    return node.type.dtype.is_bool


def float_with_axes(node: Node) -> bool:
    """A float tensor of rank 1 or more (something a normalization can run over)."""
    return node.type.dtype.is_float and node.type.rank >= 1


def reduces_last_axis(node: Node) -> bool:
    """A reduction over the last axis only, with the dims kept (``x.max(-1, keepdims=True)``)."""
    return node.attrs["keepdims"] and node.attrs["axis"] == (node.type.rank - 1,)


def on_last_axis(node: Node) -> bool:
    """An op whose ``axis`` attribute is the last axis (a softmax over the keys)."""
    return node.attrs["axis"] == node.type.rank - 1


def float_cast(node: Node) -> bool:
    """A cast from one float type to another (f16 scores upcast to f32 for the softmax)."""
    return node.type.dtype.is_float and node.inputs[0].type.dtype.is_float


def typed_as_input(i: int) -> Callable[[Node], bool]:
    """The node has the type of its input ``i`` (a ``where`` that passes that input through)."""
    return lambda node: node.type == node.inputs[i].type


def swaps_last_two(node: Node) -> bool:
    """A transpose that swaps the last two axes and keeps the others (``x.mT``)."""
    r = node.type.rank
    return r >= 2 and node.attrs["perm"] == tuple(range(r - 2)) + (r - 1, r - 2)


def identity_perm(node: Node) -> bool:
    """A transpose that moves no axis."""
    return node.attrs["perm"] == tuple(range(node.type.rank))


__all__ = ["is_float", "is_bool", "float_with_axes", "reduces_last_axis", "on_last_axis", "float_cast",
           "typed_as_input", "swaps_last_two", "identity_perm"]
