"""OpInfo: one table row per op drives reference, type, gradient and error tests (tests/test_ops.py)
and every backend's comparison with the reference (tests/test_tvm_ops.py, tests/test_onnx_*.py).

A row lists sample inputs (arrays, attrs, and an expected value computed independently of the op's
reference: by a formula, by hand, or by a loop), and error inputs (types, attrs, the error class
and a regex its message must match). Table files live in tests/optable/<group>.py, one per
graphdsl/ops/<group>.py holding the rows of that module's ops (tests/test_lowering_tables.py
checks it), and export ``OPS``; tests/framework.py turns them into test cases.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class Sample:
    inputs: list                      # np.ndarrays (floats in float64 for the gradient check)
    attrs: dict = field(default_factory=dict)
    expected: Any = None              # array, or callable(*inputs) -> array; None: skip value check
    grad: bool = True                 # run the central-difference gradient check on float inputs
    name: str = ""
    atol: float = 1e-6
    rtol: float = 1e-6


@dataclass
class ErrorCase:
    inputs: list                      # input type strings, like "f32[2,3]"
    attrs: dict
    error: type
    match: str                        # regex the message must match
    name: str = ""


@dataclass
class OpInfo:
    op: str                           # registry name
    samples: list[Sample]
    errors: list[ErrorCase] = field(default_factory=list)
    call: Callable | None = None      # how to call it while tracing (default: the registry op)
    grad_atol: float = 1e-5
    grad_rtol: float = 1e-4

    def fn(self):
        """What a test traces for this row: ``call``, else the registry op."""
        if self.call is not None:
            return self.call
        from graphdsl.registry import get
        return get(self.op)


def rng(seed: int = 0) -> np.random.Generator:
    """A seeded generator: every sample input is the same on every run."""
    return np.random.default_rng(seed)


def randn(*shape, seed: int = 0, dtype=np.float64) -> np.ndarray:
    """Standard normals of ``shape`` (float64: the gradient check's central differences need it)."""
    return rng(seed).standard_normal(shape).astype(dtype)


def uniform(*shape, low=0.1, high=2.0, seed: int = 0, dtype=np.float64) -> np.ndarray:
    """Uniforms in [low, high): positive inputs for log, sqrt, rsqrt and pow."""
    return rng(seed).uniform(low, high, shape).astype(dtype)
