"""Backends: ``compile(graph, target) -> Executable``; call it with named arrays, get named arrays.

targets.py holds the table of targets (``compile``, ``load``), compare.py runs one graph on
several and checks them against the reference, base.py the executable interface every target
implements.
"""
from __future__ import annotations

from .base import Executable, bind_inputs
from .compare import compare
from .targets import TARGETS, compile, load

__all__ = ["compile", "compare", "load", "Executable", "TARGETS", "bind_inputs"]
