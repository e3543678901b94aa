"""Optimizers and schedules as data: ``{"class": name, <argument>: value, ...}`` and back.

A checkpoint records how it was trained so that a resume can rebuild the same update (and
refuse a different one). The description is read off the constructor: every argument of
``__init__`` is stored under its own name as an attribute (``Adam(lr, betas, eps, ...)`` keeps
``self.lr``, ``self.betas``, ...), so a subclass that follows that convention is described with
no code of its own; one that does not overrides ``config()``. Values are JSON-ready (tuples
become lists), so ``config()`` equals what a JSON round trip gives back.
"""
from __future__ import annotations

import inspect
from typing import Any, Mapping

from graphdsl.errors import GraphDSLError


def describe(obj: Any) -> dict[str, Any]:
    """``{"class": type name, each __init__ argument: its attribute value}``."""
    cls = type(obj)
    out: dict[str, Any] = {"class": cls.__name__}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if not hasattr(obj, name):
            raise GraphDSLError(f"{cls.__name__} cannot be described as data: __init__ takes {name!r} but "
                                f"there is no attribute self.{name}",
                                hint=f"keep each constructor argument as self.<name>, or give "
                                     f"{cls.__name__} a config() method")
        out[name] = _plain(getattr(obj, name), f"{cls.__name__}.{name}")
    return out


def rebuild(base: type, data: Mapping[str, Any]) -> Any:
    """The object ``describe`` described: the one concrete subclass of ``base`` with that name."""
    if not isinstance(data, Mapping) or "class" not in data:
        raise GraphDSLError(f"not a {base.__name__} description: {data!r}",
                            hint='expected {"class": name, <argument>: value, ...}')
    name = data["class"]
    found = {c for c in _subclasses(base) if c.__name__ == name and not inspect.isabstract(c)}
    if len(found) != 1:
        known = sorted({c.__name__ for c in _subclasses(base) if not inspect.isabstract(c)})
        what = "no" if not found else f"{len(found)} different"
        raise GraphDSLError(f"{what} {base.__name__} classes named {name!r}",
                            hint=f"import the module that defines it, or pass one explicitly; known: {known}")
    cls = found.pop()
    args = {k: v for k, v in data.items() if k != "class"}
    try:
        return cls(**args)
    except TypeError as e:
        raise GraphDSLError(f"cannot rebuild {name} from {args}: {e}",
                            hint=f"the arguments {name} takes changed; pass one explicitly") from None


def _subclasses(base: type) -> list[type]:
    out = []
    for c in base.__subclasses__():
        out += [c, *_subclasses(c)]
    return out


def _plain(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [_plain(v, where) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v, where) for k, v in value.items()}
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:   # NumPy scalars
        return value.item()
    raise GraphDSLError(f"{where} = {value!r} is not plain data (numbers, strings, lists, dicts)",
                        hint="give the class a config() method that returns plain data")
