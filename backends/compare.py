"""Run one graph on several targets and compare every output with the reference target's.

    report = backends.compare(graph, targets=["numpy", "llvm"], inputs={...})
    report["ok"]                                   # every target agrees within its tolerance
    report["targets"]["llvm"]["outputs"]["loss"]   # {"max_abs", "max_rel", "ok"}
    report["targets"]["llvm"]["latency_ms"]        # median of ``repeat`` calls after a warm-up

An output agrees when ``|got - want| <= atol + rtol * |want|`` everywhere (NumPy's allclose);
integer and bool outputs must be equal. ``max_rel`` is the largest absolute error divided by the
largest magnitude of the reference output. A target that fails to compile or run is reported
with its error and makes ``ok`` false.
"""
from __future__ import annotations

import statistics
import time
from typing import Mapping, Sequence

import numpy as np

from graphdsl.errors import GraphDSLError
from graphdsl.graph import Graph

from .targets import compile as compile_graph

# (atol, rtol) each target is held to against the reference, unless the caller says otherwise.
TOLERANCES = {"numpy": (0.0, 0.0), "llvm": (1e-4, 1e-3), "cuda": (1e-4, 1e-3), "onnxruntime": (1e-4, 1e-3)}


def compare(graph: Graph, targets: Sequence[str] = ("numpy", "llvm"), inputs: Mapping | None = None, *,
            reference: str = "numpy", tolerances: Mapping[str, tuple[float, float]] | None = None,
            repeat: int = 5, options: Mapping[str, Mapping] | None = None) -> dict:
    """Compile ``graph`` for ``reference`` and each of ``targets``, run all on ``inputs``, compare."""
    if inputs is None:
        raise GraphDSLError("compare() needs inputs: a dict of arrays for every input and parameter",
                            hint=f"the graph takes {list(graph.inputs) + list(graph.params)}")
    tolerances = {**TOLERANCES, **(tolerances or {})}
    options = options or {}
    order = [reference] + [t for t in targets if t != reference]
    runs: dict[str, dict] = {}
    for target in order:
        runs[target] = _run(compile_graph, graph, target, inputs, repeat, options.get(target, {}))
    want = runs[reference].get("outputs")
    if want is None:
        raise GraphDSLError(f"the reference target {reference!r} failed: {runs[reference]['error']}")
    report = {"graph": graph.name, "reference": reference, "targets": {}}
    for target in order:
        run = runs[target]
        entry = {k: v for k, v in run.items() if k != "outputs"}
        if "outputs" in run:
            atol, rtol = tolerances.get(target, (1e-4, 1e-3))
            per_output = {k: _agreement(run["outputs"][k], want[k], atol, rtol) for k in want}
            entry.update(atol=atol, rtol=rtol, outputs=per_output,
                         ok=all(o["ok"] for o in per_output.values()))
        else:
            entry["ok"] = False
        report["targets"][target] = entry
    report["ok"] = all(e["ok"] for e in report["targets"].values())
    return report


def _run(compile_graph, graph, target, inputs, repeat, options) -> dict:
    try:
        t0 = time.perf_counter()
        exe = compile_graph(graph, target, **options)
        compile_s = time.perf_counter() - t0
        outputs = exe(inputs)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            exe(inputs)
            times.append(time.perf_counter() - t0)
    except GraphDSLError as e:
        return {"error": str(e)}
    return {"compile_s": round(compile_s, 3), "latency_ms": round(1e3 * statistics.median(times), 3) if times else None,
            "outputs": outputs}


def _agreement(got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> dict:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape or got.dtype != want.dtype:
        return {"ok": False, "error": f"got {got.dtype}{list(got.shape)}, want {want.dtype}{list(want.shape)}"}
    if want.dtype.kind not in "fc":
        bad = int(np.sum(got != want))
        return {"max_abs": float(np.max(np.abs(got.astype(np.int64) - want.astype(np.int64)), initial=0)),
                "max_rel": 0.0 if bad == 0 else "inf", "ok": bad == 0}
    g, w = got.astype(np.float64), want.astype(np.float64)
    equal = (g == w) | (np.isnan(g) & np.isnan(w))           # equal infinities and NaNs agree
    diff = np.where(equal, 0.0, np.abs(g - w))                # inf or NaN where only one side is
    ok = bool(np.all(diff <= atol + rtol * np.abs(np.where(equal, 0.0, w))))
    scale = float(np.max(np.abs(w[np.isfinite(w)]), initial=0.0))
    max_abs = float(np.max(np.nan_to_num(diff, nan=np.inf), initial=0.0))
    return {"max_abs": _json_number(max_abs), "max_rel": _json_number(max_abs / scale if scale > 0 else max_abs),
            "ok": ok}


def _json_number(x: float):
    """Finite floats as they are; inf as the string "inf" (strict JSON has no infinities)."""
    return x if np.isfinite(x) else "inf"
