"""Tracing: ordinary Python over proxy Tensors records a Graph.

``trace(fn, x="f32[batch,seq]")`` calls ``fn`` with proxies; every op call on them adds a node
(with the user's source line) to the active Builder. There is no eager mode: ops exist to be
recorded, compiled and compared.

This module sits above the Graph IR and the registry and below the ops: it binds ``apply_op`` into
the registry (``registry.bind_tracer``), and the indexing helpers of ``graphdsl.ops.getitem`` bind
themselves here (``bind_indexing``), so no op module is imported from here. Inlining a graph into
the one being traced is a walk of the Interpreter (``graphdsl.interpreter.inline``).
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Any, Callable, Mapping

import numpy as np

from . import dtypes as _dt
from . import registry as _registry
from .errors import GraphDSLError, GraphError, ShapeError, SourceLoc, TypeError_
from .graph import Graph, Node
from .types import Shape, TensorType

_PKG_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_USER_DIRS = (os.path.join(_PKG_DIR, "cli") + os.sep,)  # code in the package that is a user of it
_NN_DIR = os.path.join(_PKG_DIR, "nn") + os.sep
_state = threading.local()


def user_loc() -> SourceLoc | None:
    """The innermost stack frame outside the graphdsl package: the line the user wrote.

    When the call went through an ``nn`` module, the module's own line rides along as ``inner``,
    so the printed IR can say which expression of the layer made the node. While autodiff emits a
    node's gradient, the forward node's location is used instead.
    """
    stack = getattr(_state, "stack", None)
    if stack and stack[-1].loc_override is not None:
        return stack[-1].loc_override
    frame = sys._getframe(1)
    inner = None
    while frame is not None and _is_library(frame.f_code.co_filename):
        if inner is None and frame.f_code.co_filename.startswith(_NN_DIR):
            inner = _loc_of(frame)
        frame = frame.f_back
    if frame is None:
        return inner
    return _loc_of(frame, inner)


def _loc_of(frame, inner: SourceLoc | None = None) -> SourceLoc:
    return SourceLoc(_short_path(frame.f_code.co_filename), frame.f_lineno, _source_line(frame), inner)


def _is_library(path: str) -> bool:
    return path.startswith(_PKG_DIR) and not path.startswith(_USER_DIRS)


def _source_line(frame) -> str:
    import linecache
    return linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()


def _short_path(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


class Parameter:
    """A named trainable tensor of a Module. Its value lives outside the graph (see Module.init)."""

    def __init__(self, shape, dtype=_dt.float32, init: Any = "normal", *, trainable: bool = True):
        self.type = TensorType(shape, dtype)
        self.init = init
        self.trainable = trainable

    @property
    def shape(self) -> Shape:
        return self.type.shape

    @property
    def dtype(self):
        return self.type.dtype

    def __repr__(self):
        return f"Parameter({self.type}, init={self.init!r})"


class Builder:
    """Collects the sources of the graph being traced and hands out node names."""

    def __init__(self):
        self.sources: list[Node] = []
        self.input_nodes: dict[str, Node] = {}
        self.param_nodes: dict[str, Node] = {}
        self.param_names: dict[Parameter, str] = {}   # a Parameter hashes by identity
        self._consts: dict[tuple, Node] = {}
        self._salt = 0
        self.training = True
        self.loc_override: SourceLoc | None = None

    # -- sources ------------------------------------------------------------------------
    def input(self, name: str, type: TensorType) -> "Tensor":
        if name in self.input_nodes or name in self.param_nodes:
            raise GraphError(f"duplicate input name {name!r}")
        node = Node("input", (), {"name": name}, type)
        self.input_nodes[name] = node
        self.sources.append(node)
        return Tensor(node)

    def param(self, name: str, type: TensorType) -> "Tensor":
        node = self.param_nodes.get(name)
        if node is None:
            if name in self.input_nodes:
                raise GraphError(f"parameter {name!r} has the same name as an input")
            node = Node("param", (), {"name": name}, type)
            self.param_nodes[name] = node
            self.sources.append(node)
        elif node.type != type:
            raise TypeError_(f"parameter {name!r} used as {type} and as {node.type}")
        return Tensor(node)

    def register_params(self, named: Mapping[str, Parameter]) -> None:
        for name, p in named.items():
            self.param_names[p] = name

    def param_of(self, p: Parameter) -> "Tensor":
        name = self.param_names.get(p)
        if name is None:
            name = f"param{len(self.param_names)}"
            self.param_names[p] = name
        return self.param(name, p.type)

    def constant(self, value, dtype=None) -> "Tensor":
        weak = not isinstance(value, np.ndarray)  # a Python number or list: f32 by default
        arr = np.asarray(value, dtype=_dt.dtype(dtype).np if dtype is not None else None)
        if arr.dtype == np.float64 and dtype is None and weak:
            arr = arr.astype(np.float32)
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if arr.size <= 16 else None
        if key is not None and key in self._consts:
            return Tensor(self._consts[key])
        node = Node("constant", (), {"value": arr}, TensorType(arr.shape, _dt.dtype(arr.dtype)))
        if key is not None:
            self._consts[key] = node
        return Tensor(node)

    def seed(self) -> "Tensor":
        """The graph's random seed input (created on first use: graphs without dropout have none)."""
        if "seed" not in self.input_nodes:
            return self.input("seed", TensorType((), _dt.int32))
        return Tensor(self.input_nodes["seed"])

    def next_salt(self) -> int:
        """A distinct stream id for each random op, so two dropout layers draw different masks."""
        self._salt += 1
        return self._salt


def current_builder() -> Builder:
    stack = getattr(_state, "stack", None)
    if not stack:
        raise GraphDSLError("graph ops run only while tracing",
                            hint="build graphs with graphdsl.trace(fn, x='f32[batch,16]')")
    return stack[-1]


class _Tracing:
    def __init__(self, builder: Builder):
        self.builder = builder

    def __enter__(self):
        if not hasattr(_state, "stack"):
            _state.stack = []
        _state.stack.append(self.builder)
        return self.builder

    def __exit__(self, *exc):
        _state.stack.pop()


def tracing(builder: Builder | None = None) -> _Tracing:
    """Context manager that makes ``builder`` the target of op calls."""
    return _Tracing(builder or Builder())


def is_tracing() -> bool:
    return bool(getattr(_state, "stack", None))


# -- applying ops ----------------------------------------------------------------------------
def as_tensor(x, like: "Tensor | None" = None) -> "Tensor":
    """Tensors pass through; Parameters become param nodes; Python scalars and arrays constants.

    A Python scalar takes the dtype of the tensor it meets (``x * 0.5`` stays f16 for f16 ``x``).
    """
    if isinstance(x, Tensor):
        return x
    b = current_builder()
    if isinstance(x, Parameter):
        return b.param_of(x)
    if isinstance(x, (bool, int, float, np.number, np.bool_)) and not isinstance(x, np.ndarray):
        if like is not None:
            dt = like.dtype
            if isinstance(x, float) and not dt.is_float and not isinstance(x, bool):
                if float(x).is_integer() and dt.is_int:
                    return b.constant(int(x), dt)
                raise TypeError_(f"a float constant {x!r} meets an {dt.name} tensor",
                                 hint="cast the tensor first: x.astype('float32')")
            if isinstance(x, bool) and not dt.is_bool:
                return b.constant(int(x), dt)
            return b.constant(x, dt)
        return b.constant(x)
    if isinstance(x, np.ndarray):
        return b.constant(x)
    if isinstance(x, (list, tuple)):
        return b.constant(np.asarray(x), like.dtype if like is not None else None)
    raise TypeError_(f"cannot use {type(x).__name__} {x!r} as a tensor")


def apply_op(op, inputs, attrs) -> "Tensor":
    """Record one op call: convert operands, check arity and attrs, infer the type, add the node."""
    loc = user_loc()
    try:
        while inputs and inputs[-1] is None:
            inputs = inputs[:-1]
        if op.arity[1] is None and len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])  # variadic ops also take one list: concat([a, b], axis=1)
        like = next((x for x in inputs if isinstance(x, Tensor) and not x.dtype.is_bool),
                    next((x for x in inputs if isinstance(x, Tensor)), None))
        tensors = [as_tensor(x, like) for x in inputs]
        lo, hi = op.arity
        if len(tensors) < lo or (hi is not None and len(tensors) > hi):
            want = f"{lo}" if lo == hi else f"{lo} to {hi if hi is not None else 'any number of'}"
            raise GraphDSLError(f"takes {want} inputs, got {len(tensors)}")
        bound = op.bind_attrs(attrs)
        types = [t.type for t in tensors]
        if op.normalize is not None:
            bound = op.normalize(*types, **bound)
        if not op.is_primitive:
            return op.decompose(*tensors, **bound)
        out_type = op.infer(*types, **bound)
    except GraphDSLError as e:
        if e.op is None:
            e.op = op.name
        if e.loc is None:
            e.loc = loc
        e.args = (e._render(),)
        raise e.with_traceback(None) from None
    return Tensor(Node(op.name, [t.node for t in tensors], bound, out_type, loc))


def _op(name: str):
    return _registry.get(name)


_INDEXING: dict[str, Callable] = {}   # "getitem", "flatten": bound by graphdsl.ops.getitem


def bind_indexing(*, getitem: Callable, flatten: Callable) -> None:
    """Called once by graphdsl.ops.getitem: the Python-level helpers behind ``x[...]`` and
    ``x.flatten()`` (they emit slice/take/reshape nodes, so they live with the ops)."""
    _INDEXING.update(getitem=getitem, flatten=flatten)


# -- the proxy -------------------------------------------------------------------------------
class Tensor:
    """A value in the graph being traced. Python operators and methods record ops."""

    __slots__ = ("node",)
    __array_priority__ = 1000  # numpy scalars on the left defer to our operators

    def __init__(self, node: Node):
        self.node = node

    # -- type info ----------------------------------------------------------------------
    @property
    def type(self) -> TensorType:
        return self.node.type

    @property
    def shape(self) -> Shape:
        return self.node.type.shape

    @property
    def dtype(self):
        return self.node.type.dtype

    @property
    def ndim(self) -> int:
        return len(self.node.type.shape)

    def __repr__(self):
        return f"Tensor({self.node.op}: {self.type})"

    def __bool__(self):
        raise GraphDSLError("a traced Tensor has no truth value",
                            hint="use graph ops (where, maximum) instead of Python if/and/or on tensors")

    def __len__(self):
        d = self.shape[0] if self.shape else None
        if not isinstance(d, int):
            raise ShapeError(f"len() of a tensor with leading dim {d}")
        return d

    def __iter__(self):
        raise GraphDSLError("cannot iterate over a traced Tensor", hint="use split() or slicing")

    __hash__ = object.__hash__

    # -- arithmetic ---------------------------------------------------------------------
    def __add__(self, o): return _op("add")(self, o)
    def __radd__(self, o): return _op("add")(as_tensor(o, self), self)
    def __sub__(self, o): return _op("sub")(self, o)
    def __rsub__(self, o): return _op("sub")(as_tensor(o, self), self)
    def __mul__(self, o): return _op("mul")(self, o)
    def __rmul__(self, o): return _op("mul")(as_tensor(o, self), self)
    def __truediv__(self, o): return _op("div")(self, o)
    def __rtruediv__(self, o): return _op("div")(as_tensor(o, self), self)
    def __pow__(self, o): return _op("pow")(self, o)
    def __rpow__(self, o): return _op("pow")(as_tensor(o, self), self)
    def __neg__(self): return _op("neg")(self)
    def __matmul__(self, o): return _op("matmul")(self, o)
    def __rmatmul__(self, o): return _op("matmul")(as_tensor(o, self), self)

    def __lt__(self, o): return _op("less")(self, o)
    def __le__(self, o): return _op("less_equal")(self, o)
    def __gt__(self, o): return _op("greater")(self, o)
    def __ge__(self, o): return _op("greater_equal")(self, o)
    def __eq__(self, o): return _op("equal")(self, o)  # type: ignore[override]
    def __ne__(self, o): return _op("not_equal")(self, o)  # type: ignore[override]
    def __and__(self, o): return _op("logical_and")(self, o)
    def __or__(self, o): return _op("logical_or")(self, o)
    def __invert__(self): return _op("logical_not")(self)

    # -- methods ------------------------------------------------------------------------
    def exp(self): return _op("exp")(self)
    def log(self): return _op("log")(self)
    def sqrt(self): return _op("sqrt")(self)
    def rsqrt(self): return _op("rsqrt")(self)
    def tanh(self): return _op("tanh")(self)
    def sigmoid(self): return _op("sigmoid")(self)
    def relu(self): return _op("relu")(self)
    def abs(self): return _op("abs")(self)

    def astype(self, dtype):
        return _op("cast")(self, dtype=_dt.dtype(dtype))

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, Shape)):
            shape = tuple(shape[0])
        return _op("reshape")(self, shape=tuple(shape))

    def flatten(self, start: int = 0, end: int = -1):
        return _INDEXING["flatten"](self, start, end)

    def transpose(self, *axes):
        """``x.transpose(-1, -2)`` swaps two axes; ``x.transpose((0, 2, 1, 3))`` permutes."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            return self.permute(*axes[0])
        if len(axes) == 2:
            perm = list(range(self.ndim))
            a, b = (self._swap_axis(ax, axes) for ax in axes)
            perm[a], perm[b] = perm[b], perm[a]
            return _op("transpose")(self, perm=tuple(perm))
        if not axes:
            return _op("transpose")(self, perm=tuple(reversed(range(self.ndim))))
        return self.permute(*axes)

    def _swap_axis(self, axis, axes) -> int:
        """One axis of ``x.transpose(a, b)``, checked here: the perm built from it must not wrap."""
        if not -self.ndim <= int(axis) < self.ndim:
            raise ShapeError(f"axis {axis} of transpose{tuple(axes)} is out of range for {self.type} "
                             f"(rank {self.ndim})", op="transpose", loc=user_loc(),
                             hint=f"axes of a rank-{self.ndim} tensor are {-self.ndim} to {self.ndim - 1}"
                             if self.ndim else "a rank-0 tensor has no axes to swap")
        return int(axis) % self.ndim

    def permute(self, *perm):
        if len(perm) == 1 and isinstance(perm[0], (tuple, list)):
            perm = tuple(perm[0])
        return _op("transpose")(self, perm=tuple(perm))

    @property
    def mT(self):
        """Swap the last two axes (matrix transpose)."""
        return self.transpose(-1, -2)

    def expand(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, Shape)):
            shape = tuple(shape[0])
        return _op("broadcast_to")(self, shape=tuple(shape))

    broadcast_to = expand

    def unsqueeze(self, axis: int): return _op("unsqueeze")(self, axis=axis)
    def squeeze(self, axis: int): return _op("squeeze")(self, axis=axis)

    def sum(self, axis=None, keepdims=False): return _op("sum")(self, axis=axis, keepdims=keepdims)
    def mean(self, axis=None, keepdims=False): return _op("mean")(self, axis=axis, keepdims=keepdims)
    def max(self, axis=None, keepdims=False): return _op("max")(self, axis=axis, keepdims=keepdims)
    def min(self, axis=None, keepdims=False): return _op("min")(self, axis=axis, keepdims=keepdims)
    def argmax(self, axis=-1, keepdims=False): return _op("argmax")(self, axis=axis, keepdims=keepdims)

    def softmax(self, axis=-1): return _op("softmax")(self, axis=axis)
    def log_softmax(self, axis=-1): return _op("log_softmax")(self, axis=axis)

    def masked_fill(self, mask, value):
        """Where ``mask`` is true, ``value``; elsewhere ``self`` (PyTorch's spelling of where)."""
        return _op("where")(mask, as_tensor(value, self), self)

    def __getitem__(self, index):
        return _INDEXING["getitem"](self, index)


_OPERATORS = {"__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
              "__rtruediv__", "__pow__", "__rpow__", "__neg__", "__matmul__", "__rmatmul__", "__lt__",
              "__le__", "__gt__", "__ge__", "__and__", "__or__", "__invert__", "__getitem__"}


# -- entry points ----------------------------------------------------------------------------
def _as_type(spec) -> TensorType:
    if isinstance(spec, TensorType):
        return spec
    if isinstance(spec, str):
        return TensorType.parse(spec)
    if isinstance(spec, np.ndarray):
        return TensorType(spec.shape, _dt.dtype(spec.dtype))
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], (tuple, list, Shape)):
        return TensorType(spec[0], spec[1])
    raise TypeError_(f"cannot read an input type from {spec!r}",
                     hint="give a TensorType, a string like 'f32[batch,16]' or (shape, dtype)")


def _input_type(name: str, spec) -> TensorType:
    """The type of input ``name``; a bad spec is an error at the line that called trace()."""
    try:
        return _as_type(spec)
    except GraphDSLError as e:
        e.message = f"input {name!r}: {e.message}"
        e.loc = e.loc or user_loc()
        e.args = (e._render(),)
        raise e.with_traceback(None) from None


def _outputs_of(result) -> dict[str, Tensor]:
    if isinstance(result, Tensor):
        return {"out": result}
    if isinstance(result, Mapping):
        outs = dict(result)
    elif isinstance(result, (tuple, list)):
        outs = {f"out{i}": r for i, r in enumerate(result)}
    else:
        raise GraphError(f"a traced function must return a Tensor, a tuple or a dict of them, "
                         f"got {type(result).__name__}")
    for k, v in outs.items():
        if not isinstance(v, Tensor):
            outs[k] = as_tensor(v)
    return outs


def trace(fn: Callable, *, name: str | None = None, params=None, training: bool | None = None,
          **specs) -> Graph:
    """Record ``fn(**inputs)`` as a Graph. ``specs`` give each input's type: ``x="f32[batch,16]"``.

    ``params`` names the Module (or a ``{name: Parameter}`` dict) whose parameters the function uses;
    when ``fn`` is a Module or a method of one, that Module is used.
    """
    owner = params
    if owner is None:
        owner = fn if _is_module(fn) else getattr(fn, "__self__", None)
    b = Builder()
    if _is_module(owner):
        b.register_params(dict(owner.named_parameters()))
        if training is not None:
            owner.train(training)
    elif isinstance(owner, Mapping):
        b.register_params(owner)
    with tracing(b):
        inputs = {k: b.input(k, _input_type(k, v)) for k, v in specs.items()}
        outs = _outputs_of(fn(**inputs))
    gname = name or getattr(fn, "__name__", None) or type(fn).__name__.lower()
    return Graph({k: v.node for k, v in outs.items()}, name=gname, sources=b.sources)


def _is_module(obj) -> bool:
    """An ``nn.Module``, known by its interface (nn sits above tracing, so it is not imported here)."""
    return callable(getattr(obj, "named_parameters", None)) and callable(getattr(obj, "train", None))


def _delegate(name: str):
    def method(self, *args, **kwargs):
        return getattr(as_tensor(self), name)(*args, **kwargs)
    method.__name__ = name
    return method


# A Parameter used in an expression behaves as its param node: ``w.T``, ``w * 2``, ``w.sum()``.
for _name in [n for n, v in vars(Tensor).items()
              if callable(v) and (not n.startswith("__") or n in _OPERATORS)]:
    setattr(Parameter, _name, _delegate(_name))
Parameter.mT = property(lambda self: as_tensor(self).mT)
Parameter.__array_priority__ = 1000

_registry.bind_tracer(apply_op)   # op calls record nodes from now on
