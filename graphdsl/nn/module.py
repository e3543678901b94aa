"""Module: named Parameters and submodules, found by attribute assignment (as in PyTorch).

A Module holds no numbers. Its Parameters are typed placeholders; ``trace`` turns them into
``param`` nodes named by their dotted path (``layers.0.attn.q.weight``), and ``init(seed)`` makes
the arrays to feed them. Each parameter draws from its own RNG, seeded by ``(seed, crc32(name))``,
so adding a parameter somewhere never changes the values of the others.
"""
from __future__ import annotations

import zlib
from typing import Iterable, Iterator

import numpy as np

from graphdsl.errors import GraphDSLError, ShapeError
from graphdsl.tracing import Parameter

from . import init as _init


class Module:
    """Base class of every layer: subclasses assign Parameters and Modules in ``__init__``."""

    def __init__(self):
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_params" not in self.__dict__:
            raise GraphDSLError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                f"before assigning {name!r}")
        self._params.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            _init.check_spec(value.init)
            self._params[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif isinstance(value, (list, tuple)) and any(isinstance(v, Module) for v in value):
            raise GraphDSLError(f"{type(self).__name__}.{name} is a plain {type(value).__name__} "
                                f"of modules: their parameters would not be registered",
                                hint=f"wrap it: self.{name} = ModuleList([...])")
        object.__setattr__(self, name, value)

    # -- what the module holds ----------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        """This module (named ``prefix``, "" for the root) and every submodule, depth first."""
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, Parameter)``; a Parameter shared by two modules is listed once."""
        seen: set[Parameter] = set()   # a Parameter hashes by identity
        for mod_name, m in self.named_modules(prefix):
            for name, p in m._params.items():
                if p not in seen:
                    seen.add(p)
                    yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self) -> dict[str, Parameter]:
        return dict(self.named_parameters())

    def trainable_parameters(self) -> dict[str, Parameter]:
        return {k: p for k, p in self.named_parameters() if p.trainable}

    def num_parameters(self, trainable_only: bool = False) -> int:
        """The number of scalars in all (or only the trainable) parameters."""
        total = 0
        for name, p in self.named_parameters():
            if not trainable_only or p.trainable:
                total += int(np.prod(_static_shape(name, p), dtype=np.int64))
        return total

    # -- modes and flags ------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Set the training flag here and below (Dropout is active only while training)."""
        for _, m in self.named_modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def freeze(self, *prefixes: str) -> "Module":
        """Mark parameters under the given dotted prefixes (all when none given) as not trainable."""
        self._set_trainable(prefixes, False)
        return self

    def unfreeze(self, *prefixes: str) -> "Module":
        self._set_trainable(prefixes, True)
        return self

    def _set_trainable(self, prefixes: Iterable[str], flag: bool) -> None:
        prefixes = tuple(prefixes)
        params = self.parameters()
        for pre in prefixes:
            if not any(_under(name, pre) for name in params):
                tops = sorted({n.split(".")[0] for n in params})
                raise GraphDSLError(f"no parameter under {pre!r}", hint=f"parameters start with: {tops}")
        for name, p in params.items():
            if not prefixes or any(_under(name, pre) for pre in prefixes):
                p.trainable = flag

    # -- values -----------------------------------------------------------------------------
    def init(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Fresh arrays for every parameter, by name; the same seed gives the same arrays."""
        out = {}
        for name, p in self.named_parameters():
            rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
            out[name] = _init.initialize(p.init, _static_shape(name, p), p.dtype.np, rng)
        return out

    # -- calling ----------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise GraphDSLError(f"{type(self).__name__} defines no forward()",
                            hint="write forward(self, x) in the subclass")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- printing ---------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The constructor arguments worth showing, e.g. ``in_features=16, out_features=32``."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        head = f"{type(self).__name__}({extra})"
        params = "  ".join(f"{k}={_param_str(p)}" for k, p in self._params.items())
        if not self._modules:
            return f"{head}  {params}" if params else head
        lines = [f"{head}(" if extra else f"{type(self).__name__}("]
        if params:
            lines.append(f"  {params}")
        for name, m in self._modules.items():
            body = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        lines.append(")")
        return "\n".join(lines)


class ModuleList(Module):
    """A list of modules whose parameters are named by position: ``layers.0.attn.q.weight``."""

    def __init__(self, modules: Iterable[Module] = ()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> "ModuleList":
        if not isinstance(module, Module):
            raise GraphDSLError(f"ModuleList holds Modules, got {type(module).__name__}")
        self._modules[str(len(self._modules))] = module
        return self

    def extend(self, modules: Iterable[Module]) -> "ModuleList":
        for m in modules:
            self.append(m)
        return self

    def __getitem__(self, i):
        items = list(self._modules.values())
        return ModuleList(items[i]) if isinstance(i, slice) else items[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules.values()))


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix.rstrip(".") + ".")


def _static_shape(name: str, p: Parameter) -> tuple[int, ...]:
    if not p.shape.is_static:
        raise ShapeError(f"parameter {name!r} has symbolic shape {p.shape}",
                         hint="parameter shapes must be plain ints")
    return tuple(p.shape)


def _param_str(p: Parameter) -> str:
    return str(p.type) + ("" if p.trainable else " (frozen)")
