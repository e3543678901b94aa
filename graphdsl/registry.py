"""The op registry: each op is declared once, with everything every layer needs to know about it.

``defop`` records an op's attributes (with defaults), its type rule, its NumPy reference, and its
gradient (a VJP rule that emits graph nodes) or a decomposition into other ops. Tracing, the
verifier, autodiff, the NumPy backend and the other backends' lowering tables all read this one
declaration, so an op can never be known to one layer and missing from another unnoticed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .errors import AttributeError_, UnknownOpError


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
        from .tracing import apply_op
        return apply_op(self, inputs, attrs)

    def __repr__(self):
        return f"<op {self.name}>"


_REGISTRY: dict[str, OpDef] = {}


def defop(name: str, *, attrs: Mapping[str, Any] | tuple = (), infer: Callable,
          ref: Callable | None = None, vjp: Callable | None = None,
          decompose: Callable | None = None, normalize: Callable | None = None,
          arity: int | tuple[int, int | None] = 1, differentiable: bool = True,
          doc: str = "", tags=()) -> OpDef:
    """Declare an op once. ``attrs`` maps attribute names to defaults (``REQUIRED`` for none)."""
    if name in _REGISTRY:
        raise ValueError(f"op {name!r} is declared twice")
    if ref is None and decompose is None:
        raise ValueError(f"op {name!r} needs a reference implementation or a decomposition")
    if ref is not None and differentiable and vjp is None and decompose is None:
        raise ValueError(f"differentiable op {name!r} needs a vjp rule or a decomposition")
    if isinstance(attrs, tuple):
        attrs = {a: REQUIRED for a in attrs}
    if isinstance(arity, int):
        arity = (arity, arity)
    op = OpDef(name=name, attrs=dict(attrs), infer=infer, ref=ref, vjp=vjp, decompose=decompose,
               normalize=normalize, arity=arity, differentiable=differentiable, doc=doc,
               tags=frozenset(tags))
    _REGISTRY[name] = op
    return op


def get(name: str) -> OpDef:
    _load_ops()
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see graphdsl.registry.all_ops()"
        raise UnknownOpError(f"unknown op {name!r}", hint=hint) from None


def all_ops() -> dict[str, OpDef]:
    _load_ops()
    return dict(_REGISTRY)


def _load_ops() -> None:
    from . import ops  # noqa: F401  (declares every op on import)
