"""The one way every command names a model: the MODEL argument.

MODEL is any of
  - a zoo name (``graphdsl models``): bert-tiny, gpt-tiny, ...; its weights are ``init(seed)``;
  - a graph ``.json`` (``graph.save(path)``), with ``--weights params.npz|.safetensors``;
  - an ``.onnx`` file: its initializers become the parameters and their values;
  - ``path/to/file.py:function`` or ``package.module:function``: the function is called with no
    arguments and returns a Graph or a ``(graph, params)`` pair (params: name -> array).

A user graph is used as it is for every command; training needs a scalar output named ``loss``.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from graphdsl.errors import GraphDSLError, SourceLoc
from graphdsl.graph import Graph

MODEL_HELP = ("a zoo name (graphdsl models), a graph .json (with --weights), an .onnx file, "
              "or file.py:function / package.module:function returning a Graph or (graph, params)")


@dataclass
class Model:
    """A resolved MODEL argument."""

    ref: str                                  # what the user wrote
    kind: str                                 # "zoo" | "json" | "onnx" | "python"
    graph: Graph                              # forward graph (zoo: eval mode) or the user's graph
    params: dict[str, np.ndarray] | None      # parameter values, when known
    spec: Any = None                          # the zoo's ModelSpec
    module: Any = None                        # the zoo's nn.Module
    _loss: Graph | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name if self.spec is not None else self.graph.name

    def loss_graph(self) -> Graph:
        """The graph to train: the zoo's traced loss (training mode), or the user's graph when it
        has a scalar ``loss`` output."""
        if self.spec is not None:
            if self._loss is None:
                self._loss = self.spec.loss(self.module.train())
                self.module.eval()
            return self._loss
        out = self.graph.outputs.get("loss")
        if out is None or out.type.rank != 0:
            have = ", ".join(f"{k}: {n.type}" for k, n in self.graph.outputs.items())
            raise GraphDSLError(f"{self.ref}: training needs a scalar output named 'loss'; the graph "
                                f"has outputs ({have})",
                                hint="return {'loss': ..., ...} from the traced function")
        return self.graph

    def require_params(self, what: str) -> dict[str, np.ndarray]:
        if self.params is None:
            if not self.graph.params:
                return {}
            raise GraphDSLError(f"{self.ref}: {what} needs the values of its {len(self.graph.params)} "
                                f"parameters", hint="pass --weights params.npz (or return (graph, params) "
                                                    "from the function)")
        return self.params


def is_zoo_name(ref: str) -> bool:
    return not (ref.endswith((".json", ".onnx")) or ":" in ref or "/" in ref or ref.endswith(".py"))


def load(ref: str, *, weights: str | None = None, dims: Mapping[str, int] | None = None,
         seed: int = 0) -> Model:
    """Resolve MODEL; ``weights`` (a file) overrides or supplies the parameter values."""
    if ref.endswith(".json"):
        model = Model(ref, "json", Graph.load(_existing(ref)), None)
    elif ref.endswith(".onnx"):
        from graphdsl.onnx import import_onnx
        graph, params = import_onnx(str(_existing(ref)), dims=dims)
        model = Model(ref, "onnx", graph, params)
    elif ":" in ref:
        model = _from_function(ref)
    elif ref.endswith(".py") or "/" in ref:
        raise GraphDSLError(f"MODEL {ref!r}: name the function that builds the graph",
                            hint=f"write {ref.split(':')[0]}:function (the function returns a Graph or "
                                 "(graph, params))")
    else:
        model = _from_zoo(ref, seed)
    if weights is not None:
        from graphdsl.weights import check_params, read_arrays
        model.params = check_params(model.graph, read_arrays(weights, "weights"), f"the weights in {weights}")
    elif model.params is not None and model.kind != "zoo":
        from graphdsl.weights import check_params
        model.params = check_params(model.graph, model.params, f"the parameters {ref} returned")
    return model


def _existing(ref: str) -> Path:
    path = Path(ref)
    if not path.exists():
        raise GraphDSLError(f"MODEL file {ref!r} does not exist", hint=f"MODEL is {MODEL_HELP}")
    if not path.is_file():
        raise GraphDSLError(f"MODEL {ref!r} is a directory, not a file", hint=f"MODEL is {MODEL_HELP}")
    return path


def _from_zoo(name: str, seed: int) -> Model:
    import models
    try:
        spec = models.get(name)
    except GraphDSLError as e:
        raise GraphDSLError(f"unknown model {name!r}: not in the zoo, and not a .json, .onnx or "
                            f"file.py:function", hint=f"{e.hint} (`graphdsl models` lists the zoo)") from None
    module = spec.module()
    graph = spec.forward(module.eval())
    return Model(name, "zoo", graph, module.init(seed=seed), spec=spec, module=module)


def _from_function(ref: str) -> Model:
    where, _, func_name = ref.rpartition(":")
    if not where or not func_name.isidentifier():
        raise GraphDSLError(f"MODEL {ref!r}: write file.py:function or package.module:function")
    if where.endswith(".py"):
        path = _existing(where).resolve()
        name = f"_graphdsl_user_{abs(hash(str(path)))}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.parent))     # the file may import its neighbours
        try:
            _call_user(lambda: spec.loader.exec_module(module), ref, f"importing {where}")
        finally:
            sys.path.remove(str(path.parent))
    else:
        module = _call_user(lambda: importlib.import_module(where), ref, f"importing {where}")
    fn = getattr(module, func_name, None)
    if not callable(fn):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise GraphDSLError(f"MODEL {ref!r}: {where} has no function {func_name!r}",
                            hint=f"functions defined there: {', '.join(found) or 'none'}")
    result = _call_user(fn, ref, f"calling {func_name}()")
    if isinstance(result, Graph):
        return Model(ref, "python", result, None)
    if (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], Graph)
            and isinstance(result[1], Mapping)):
        return Model(ref, "python", result[0], dict(result[1]))
    raise GraphDSLError(f"MODEL {ref!r}: {func_name}() returned {type(result).__name__}, not a Graph or "
                        f"a (graph, params) pair",
                        hint="return graphdsl.trace(fn, ...) (and the params dict, e.g. module.init(0))")


def _call_user(fn, ref: str, doing: str):
    """Run user code; its GraphDSLErrors pass as they are, other errors name the user's line."""
    try:
        return fn()
    except GraphDSLError:
        raise
    except Exception as e:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if _is_user_file(f.filename)]
        err = GraphDSLError(f"MODEL {ref!r}: {doing} raised {type(e).__name__}: {e}")
        if frames:
            f = frames[-1]
            err = err.with_loc(SourceLoc(f.filename, f.lineno, (f.line or "").strip()))
        raise err from None


_OURS = tuple(str(Path(__file__).resolve().parents[2] / pkg) for pkg in ("graphdsl", "passes", "backends", "models"))


def _is_user_file(filename: str) -> bool:
    return not filename.startswith("<") and not str(Path(filename).resolve()).startswith(_OURS)
