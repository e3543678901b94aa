"""Named arrays on disk (.npz or .safetensors): parameter values, inputs, bundled weights.

Reading checks the file before any array reaches a kernel: it exists and is a file, it parses,
it holds no pickled objects, and every array has a dtype graphdsl knows; a bad file is one
GraphDSLError that names it. Writing goes to a temporary sibling that is renamed into place, so
a crash never leaves half a file where a good one was. ``check_params`` compares values with a
graph's parameters and lists every missing, unexpected and mis-typed one in a single error.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from . import dtypes as _dt
from .errors import GraphDSLError
from .files import atomic_write

SUFFIXES = (".npz", ".safetensors")


def read_arrays(path, what: str = "arrays") -> dict[str, np.ndarray]:
    """The named arrays of an .npz or .safetensors file; ``what`` names them in errors."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise GraphDSLError(f"{what} file {str(path)!r}: expected a .npz or .safetensors file",
                            hint="save arrays with numpy.savez(path, name=array, ...)")
    if not path.is_file():
        raise GraphDSLError(f"{what} file {str(path)!r} does not exist" if not path.exists()
                            else f"{what} file {str(path)!r} is not a file")
    if path.suffix == ".npz" and not zipfile.is_zipfile(path):
        raise GraphDSLError(f"{what} file {str(path)!r} is not an .npz file (not a zip archive)",
                            hint="the file is damaged, or not what its name says; write one with numpy.savez")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        else:
            from safetensors.numpy import load_file
            arrays = dict(load_file(str(path)))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise GraphDSLError(f"{what} file {str(path)!r} cannot be read: {type(e).__name__}: {e}"[:400],
                            hint="the file is damaged or not in the format its suffix says") from None
    except Exception as e:  # safetensors raises its own error types
        raise GraphDSLError(f"{what} file {str(path)!r} cannot be read: {e}"[:400]) from None
    for name, arr in arrays.items():
        if arr.dtype not in _KNOWN:
            raise GraphDSLError(f"{what} file {str(path)!r}: array {name!r} has dtype {arr.dtype}, "
                                f"which graphdsl does not support",
                                hint="supported: " + ", ".join(d.name for d in _dt.ALL))
    return arrays


_KNOWN = {d.np for d in _dt.ALL}


def write_arrays(path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` to ``path`` (.npz or .safetensors) atomically; returns the path."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise GraphDSLError(f"cannot write {str(path)!r}: use a .npz or .safetensors file name")
    arrays = {k: np.asarray(v, order="C") for k, v in arrays.items()}

    def write(tmp: str) -> None:
        if path.suffix == ".npz":
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            return
        try:
            from safetensors.numpy import save_file
        except ImportError:
            raise GraphDSLError("writing .safetensors needs the safetensors package",
                                hint="pip install safetensors, or write a .npz") from None
        save_file(arrays, tmp)
    atomic_write(path, write)
    return path


def check_params(graph, values: Mapping[str, np.ndarray], source: str = "the weights") -> dict[str, np.ndarray]:
    """``values`` restricted to ``graph``'s parameters, after checking names, shapes and dtypes.

    Symbolic dims in a parameter's type match any size. Raises one error listing every problem.
    """
    missing = [k for k in graph.params if k not in values]
    unexpected = sorted(k for k in values if k not in graph.params)
    wrong = []
    for k, node in graph.params.items():
        if k not in values:
            continue
        arr = np.asarray(values[k])
        t = node.type
        dims_ok = arr.ndim == t.rank and all(not isinstance(d, int) or d == s for d, s in zip(t.shape, arr.shape))
        if not dims_ok or arr.dtype != t.dtype.np:
            wrong.append(f"{k} ({t}, got {arr.dtype}{list(arr.shape)})")
    if missing or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if wrong:
            parts.append(f"mis-typed {len(wrong)}: {'; '.join(wrong[:5])}{' ...' if len(wrong) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {', '.join(unexpected[:5])}")
        raise GraphDSLError(f"{source} do not fit graph {graph.name!r}: " + "; ".join(parts),
                            hint=f"the graph has {len(graph.params)} parameters; "
                                 "save values named like graph.params")
    return {k: np.asarray(values[k]) for k in graph.params}
