"""What every command shares: errors as one paragraph, target checks, progress, JSON, inputs.

Exit codes: 0 success; 1 a failure (one paragraph: the error, where, a hint); 2 a usage error
(click's). No Python traceback unless ``graphdsl --debug`` (or GRAPHDSL_DEBUG=1).
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Iterable, Mapping

import click
import numpy as np

from graphdsl.errors import GraphDSLError
from graphdsl.progress import phase, progress_enabled  # noqa: F401  (the commands import them from here)

from . import model_ref

RUN_TARGETS = ("numpy", "llvm", "cuda", "onnxruntime")
TVM_TARGETS = ("llvm", "cuda")


class Failed(click.ClickException):
    """A command that could not do its work: exit 1, the message as one paragraph."""

    exit_code = 1

    def format_message(self) -> str:
        return self.message


def _guarded(invoke, ctx: click.Context):
    """Run ``invoke(ctx)``; library errors become one paragraph (exit 1) unless --debug."""
    debug = ctx.find_root().params.get("debug") or os.environ.get("GRAPHDSL_DEBUG") == "1"
    try:
        return invoke(ctx)
    except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit, KeyboardInterrupt):
        raise
    except GraphDSLError as e:
        if debug:
            raise
        raise Failed(str(e)) from None
    except Exception as e:
        if debug:
            raise
        raise Failed(f"internal error: {type(e).__name__}: {e}\n  hint: this is a bug in graphdsl; "
                     f"`graphdsl --debug {' '.join(sys.argv[1:])}` shows the traceback") from None


class Command(click.Command):
    """Every graphdsl subcommand: errors as one paragraph, also when invoked on its own (tests)."""

    def invoke(self, ctx: click.Context):
        return _guarded(super().invoke, ctx)


class Group(click.Group):
    """The ``graphdsl`` group; its subcommands are ``Command``s."""

    command_class = Command

    def invoke(self, ctx: click.Context):
        return _guarded(super().invoke, ctx)


# -- options shared by the commands that take a MODEL ------------------------------------------------
def model_options(fn):
    """MODEL plus --weights, --dim and --seed."""
    for decorator in reversed([
        click.argument("model", metavar="MODEL"),
        click.option("--weights", type=click.Path(dir_okay=False), default=None,
                     help="Parameter values (.npz or .safetensors) for a graph .json or to replace a model's own."),
        click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE",
                     help="Size of a symbolic dim for generated inputs, or a fixed ONNX axis (repeatable)."),
        click.option("--seed", default=0, show_default=True, type=int,
                     help="Seed of a zoo model's parameters, of generated inputs and of dropout."),
    ]):
        fn = decorator(fn)
    return fn


def load_model(model: str, weights: str | None = None, dims: Iterable[str] = (), seed: int = 0,
               desc: str = "loading") -> model_ref.Model:
    with phase(f"{desc} {model}"):
        return model_ref.load(model, weights=weights, dims=parse_dims(dims), seed=seed)


def parse_dims(dims: Iterable[str]) -> dict[str, int]:
    out = {}
    for item in dims:
        name, sep, size = item.partition("=")
        if not sep or not name.strip() or not size.strip().isdigit() or int(size) < 1:
            raise click.BadParameter(f"{item!r}: write NAME=SIZE with a size >= 1, e.g. batch=2",
                                     param_hint="--dim")
        out[name.strip()] = int(size)
    return out


def parse_targets(text: str, *, allowed: Iterable[str] = RUN_TARGETS, runs: bool = True,
                  param_hint: str = "--targets") -> list[str]:
    """Comma-separated target names, checked before anything compiles."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise click.BadParameter("give at least one target, e.g. numpy,llvm", param_hint=param_hint)
    allowed = tuple(allowed)
    bad = [t for t in names if t not in allowed]
    if bad:
        raise click.BadParameter(f"unknown target {bad[0]!r}; choose from {', '.join(allowed)}",
                                 param_hint=param_hint)
    if runs and "cuda" in names:
        require_gpu("cuda")
    return list(dict.fromkeys(names))


def require_gpu(target: str) -> None:
    """Refuse, before compiling, a command that must run kernels on a GPU this machine lacks."""
    from backends.tvm.cuda import gpu_available
    if not gpu_available():
        raise Failed(f"target {target!r} runs kernels on an NVIDIA GPU, and this machine has none "
                     f"(TVM sees no CUDA device 0)\n  hint: `graphdsl compile MODEL --target cuda -o DIR` "
                     f"still builds CUDA source and PTX here; run on llvm or numpy instead")


def emit_json(doc) -> None:
    click.echo(json.dumps(_plain(doc), indent=1))


def _plain(value):
    """JSON-ready: NumPy scalars and arrays to Python numbers and lists, non-finite floats to strings."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return repr(value)
    return value


def compile_graph(graph, target: str, **options):
    """``backends.compile`` under a spinner; returns (executable, seconds, cache event)."""
    import backends
    what = {"numpy": "preparing the numpy reference", "onnxruntime": "exporting to ONNX Runtime"}.get(
        target, f"compiling {len(graph.nodes)} nodes for {target} through TVM")
    start = time.perf_counter()
    with phase(what):
        exe = backends.compile(graph, target, **options)
    event = None
    if target in TVM_TARGETS:
        from backends.tvm import cache
        event = cache.LAST["event"]
    return exe, time.perf_counter() - start, event


# -- inputs ----------------------------------------------------------------------------------------
def random_inputs(graph, sizes: Mapping[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for ``graph``: normal floats, ints in {0, 1} (valid ids, masks and labels for
    any vocabulary), bools; each unbound symbolic dim is ``sizes.get(name, 2)``."""
    rng = np.random.default_rng(seed)
    feed = {}
    for name, node in graph.inputs.items():
        shape = tuple(d if isinstance(d, int) else d.evaluate({s: sizes.get(s, 2) for s in d.symbols})
                      for d in node.type.shape)
        dt = node.type.dtype
        if name == "seed" and node.type.rank == 0:
            feed[name] = np.asarray(seed, dt.np)
        elif dt.is_float:
            feed[name] = rng.standard_normal(shape).astype(dt.np)
        else:
            feed[name] = rng.integers(0, 2, shape).astype(dt.np)
    return feed


def read_inputs(path: str, graph, seed: int = 0) -> dict[str, np.ndarray]:
    """The graph's inputs from an .npz/.safetensors file, every one present but the dropout
    ``seed`` (a scalar int input named seed), which defaults to ``seed``."""
    from graphdsl.weights import read_arrays
    arrays = read_arrays(path, "inputs")
    node = graph.inputs.get("seed")
    if node is not None and "seed" not in arrays and node.type.rank == 0 and node.type.dtype.is_int:
        arrays["seed"] = np.asarray(seed, node.type.dtype.np)
    missing = [k for k in graph.inputs if k not in arrays]
    if missing:
        want = ", ".join(f"{k}: {graph.inputs[k].type}" for k in missing)
        raise GraphDSLError(f"inputs file {path!r} lacks {want}", hint=f"it holds {sorted(arrays)}")
    return {k: arrays[k] for k in graph.inputs}
