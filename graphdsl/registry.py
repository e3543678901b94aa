"""The op registry: each op is declared once, with everything every layer needs to know about it.

``defop`` records an op's attributes (with defaults), its type rule, its NumPy reference, and its
gradient (a VJP rule that emits graph nodes) or a decomposition into other ops. Tracing, the
verifier, autodiff, the NumPy backend and the other backends' lowering tables all read this one
declaration, so an op can never be known to one layer and missing from another unnoticed.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .errors import AttributeError_, TypeError_, UnknownOpError


class _Required:
    def __repr__(self):
        return "<required>"


REQUIRED = _Required()


@dataclass(eq=False)
class OpDef:
    """One op. Call it on tensors while tracing to add a node: ``ops.softmax(x, axis=-1)``.

    infer(*types, **attrs) -> TensorType      raises ShapeError/TypeError_ with a hint
    ref(*arrays, **attrs) -> np.ndarray       the semantics every backend is checked against
    vjp(g, out, *inputs, **attrs) -> list     one cotangent Tensor (or None) per input, as graph code
    decompose(*inputs, **attrs) -> Tensor     the op written with other ops, for backends without it
    normalize(*types, **attrs) -> attrs       canonical attrs (negative axes made positive, ...)
    inputs: ("q", "k", "v", "bias?", "seed?")  input names; a trailing ``?`` marks an optional one
    present(attrs) -> {name: bool}             which optional inputs a node with these attrs has
    types: "x float; indices int32 or int64"   the dtypes the type rule takes, where docs/ops.md
                                               cannot read them off the rule by probing it
    module: "graphdsl.ops.nn"                  the module that declared the op (its group)
    """

    name: str
    attrs: Mapping[str, Any]
    infer: Callable
    ref: Callable | None = None
    vjp: Callable | None = None
    decompose: Callable | None = None
    normalize: Callable | None = None
    arity: tuple[int, int | None] = (1, 1)   # (min, max); max None = variadic
    differentiable: bool = True               # False: outputs carry no gradient (compare, argmax, ...)
    doc: str = ""
    tags: frozenset = field(default_factory=frozenset)
    inputs: tuple[str, ...] = ()
    present: Callable | None = None
    types: str = ""
    module: str = ""

    @property
    def required_inputs(self) -> tuple[str, ...]:
        return tuple(n for n in self.inputs if not n.endswith("?"))

    @property
    def optional_inputs(self) -> tuple[str, ...]:
        return tuple(n[:-1] for n in self.inputs if n.endswith("?"))

    def input_names(self, attrs: Mapping[str, Any]) -> list[str]:
        """The names of the inputs a node with (normalized) ``attrs`` has, in order."""
        if not self.inputs:
            raise UnknownOpError(f"op {self.name!r} does not name its inputs")
        has = self.present(attrs) if self.present is not None else {}
        return [n.rstrip("?") for n in self.inputs if not n.endswith("?") or has.get(n[:-1], False)]

    def bind_inputs(self, node, values) -> dict[str, Any]:
        """name -> value for the inputs ``node`` has (``values`` in the node's input order)."""
        names = self.input_names(node.attrs)
        values = list(values)
        if len(names) != len(values):
            raise AttributeError_(f"a node with attributes {dict(node.attrs)} has inputs {names}, "
                                  f"got {len(values)} values", op=self.name)
        return dict(zip(names, values))

    @property
    def is_primitive(self) -> bool:
        """A primitive stays in the graph; a non-primitive is expanded by its decomposition at trace time."""
        return self.ref is not None

    def bind_attrs(self, given: Mapping[str, Any]) -> dict:
        unknown = set(given) - set(self.attrs)
        if unknown:
            known = ", ".join(self.attrs) or "none"
            raise AttributeError_(f"unknown attribute(s) {sorted(unknown)}", op=self.name,
                                  hint=f"{self.name} takes attributes: {known}")
        out = {}
        for key, default in self.attrs.items():
            if key in given:
                out[key] = given[key]
            elif default is REQUIRED:
                raise AttributeError_(f"missing required attribute {key!r}", op=self.name)
            else:
                out[key] = default
        return out

    def __call__(self, *inputs, **attrs):
        if _TRACER is None:
            raise UnknownOpError("ops are called while tracing; import graphdsl first")
        return _TRACER(self, inputs, attrs)

    def __repr__(self):
        return f"<op {self.name}>"


_REGISTRY: dict[str, OpDef] = {}
_TRACER: Callable | None = None   # tracing.apply_op, bound by graphdsl.tracing when it loads


def bind_tracer(apply_op: Callable) -> None:
    """Called once by graphdsl.tracing: the function recording an op call as a node."""
    global _TRACER
    _TRACER = apply_op


def defop(name: str, *, attrs: Mapping[str, Any] | tuple = (), infer: Callable,
          ref: Callable | None = None, vjp: Callable | None = None,
          decompose: Callable | None = None, normalize: Callable | None = None,
          arity: int | tuple[int, int | None] = 1, differentiable: bool = True,
          doc: str = "", tags=(), inputs: tuple[str, ...] = (),
          present: Callable | None = None, takes_storage: bool = False, types: str = "") -> OpDef:
    """Declare an op once. ``attrs`` maps attribute names to defaults (``REQUIRED`` for none).

    ``doc`` says what the op computes, in a line; ``types`` summarizes its type rule's dtypes, only
    for an op whose rule docs/ops.md cannot probe (graphdsl/cli/ops_cmd.py says which those are).

    Only an op declared ``takes_storage`` (cast) takes or gives a storage dtype (float8, int4, ...:
    graphdsl.dtypes): the type rule of every other op refuses them, here, once for all ops."""
    if name in _REGISTRY:
        raise ValueError(f"op {name!r} is declared twice")
    if ref is None and decompose is None:
        raise ValueError(f"op {name!r} needs a reference implementation or a decomposition")
    if ref is not None and differentiable and vjp is None and decompose is None:
        raise ValueError(f"differentiable op {name!r} needs a vjp rule or a decomposition")
    if any(n.endswith("?") for n in inputs) and present is None:
        raise ValueError(f"op {name!r} has optional inputs; say which a node has with present=")
    if isinstance(attrs, tuple):
        attrs = {a: REQUIRED for a in attrs}
    if isinstance(arity, int):
        arity = (arity, arity)
    if not takes_storage:
        infer = _refusing_storage(name, infer)
    op = OpDef(name=name, attrs=dict(attrs), infer=infer, ref=ref, vjp=vjp, decompose=decompose,
               normalize=normalize, arity=arity, differentiable=differentiable, doc=doc,
               tags=frozenset(tags), inputs=tuple(inputs), present=present, types=types,
               module=sys._getframe(1).f_globals.get("__name__", ""))
    _REGISTRY[name] = op
    return op


def _refusing_storage(name: str, infer: Callable) -> Callable:
    """``infer``, raising TypeError_ for a storage dtype among the inputs or as the result."""
    def checked(*types, **attrs):
        bad = next((t for t in types if getattr(t, "dtype", None) is not None and t.dtype.storage), None)
        out = infer(*types, **attrs) if bad is None else None
        if bad is None and out.dtype.storage:
            bad = out
        if bad is not None:
            shown = ", ".join(str(t) for t in types)
            raise TypeError_(f"does not take {bad.dtype.name} ({shown}{' -> ' + str(out) if out is not None else ''}): "
                             f"{bad.dtype.name} is a storage type, which only cast converts", op=name,
                             hint="cast it first: x.astype('float32') (and back with .astype(...) to store it)")
        return out
    checked.__wrapped__ = infer
    return checked


def get(name: str) -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see graphdsl.registry.all_ops()"
        raise UnknownOpError(f"unknown op {name!r}", hint=hint) from None


def all_ops() -> dict[str, OpDef]:
    """Every declared op (``import graphdsl`` declares them all: the package imports graphdsl.ops)."""
    return dict(_REGISTRY)
