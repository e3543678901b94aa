"""A random-program differential fuzzer: random valid graphs, every target against numpy.

    from backends import fuzz
    report = fuzz.fuzz(seconds=60, targets=["numpy", "llvm", "onnxruntime"], passes=True, seed=0)
    report.disagreements, report.findings         # each finding: minimized, saved as a reproducer

generate.py and families.py build graphs through the public tracing API from a declared list of
op families; run.py compiles and compares (tolerance.py: one table, one formula); minimize.py
shrinks a failing graph by delta debugging over outputs and nodes; reproducer.py saves and
replays a finding as one JSON file; session.py is the loop. ``graphdsl fuzz`` is the command.

Layering: this package is part of ``backends`` and imports graphdsl, passes and backends only.
"""
from __future__ import annotations

from .generate import generate_batch
from .minimize import minimize
from .reproducer import Reproducer, load, save
from .run import Finding, check, gradient_graph
from .session import Report, fuzz
from .tolerance import TABLE, Tolerance, tolerance_for

__all__ = ["Finding", "Report", "Reproducer", "TABLE", "Tolerance", "check", "fuzz", "generate_batch",
           "gradient_graph", "load", "minimize", "save", "tolerance_for"]
