"""The GraphDSLError family: every error a user can see names the op, the types and their source line.

Errors are for users, so each carries the pieces a reader needs to fix the call site:
the op, the input types, the user's ``file:line`` and source text, and a hint.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceLoc:
    """Where in the user's code a node was created."""

    file: str
    line: int
    code: str = ""
    inner: "SourceLoc | None" = None   # the library module line (graphdsl/nn) the call went through

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}"
        return f"{text}   {self.code}" if self.code else text

    @property
    def short(self) -> str:
        """``file:line``, then the nn module line in parentheses when there is one."""
        text = f"{self.file}:{self.line}"
        if self.inner is not None:
            text += f" ({self.inner.file.removeprefix('graphdsl/')}:{self.inner.line})"
        return text


class GraphDSLError(Exception):
    """Base of all errors the library raises on purpose."""

    kind = "GraphDSLError"

    def __init__(self, message: str, *, op: str | None = None, loc: SourceLoc | None = None,
                 hint: str | None = None):
        self.message = message
        self.op = op
        self.loc = loc
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        head = f"{self.op}: {self.message}" if self.op else self.message
        lines = [head]
        if self.loc is not None:
            lines.append(f"  at {self.loc}")
            if self.loc.inner is not None:
                lines.append(f"  in {self.loc.inner}")
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def with_loc(self, loc: SourceLoc | None) -> "GraphDSLError":
        """Return the same error located at ``loc`` (kept if it already had one)."""
        if self.loc is not None or loc is None:
            return self
        self.loc = loc
        self.args = (self._render(),)
        return self


class ShapeError(GraphDSLError):
    """Shapes that do not fit the op (inner dims, broadcasting, reshape sizes)."""


class TypeError_(GraphDSLError):
    """Dtypes that do not fit the op (mixed dtypes, float op on ints)."""


class AttributeError_(GraphDSLError):
    """A missing, unknown or ill-typed op attribute."""


class UnknownOpError(GraphDSLError):
    """An op name that is not in the registry (for example in a loaded JSON graph)."""


class GraphError(GraphDSLError):
    """A malformed graph: failed verification, bad JSON, unknown names."""


class InputError(GraphDSLError):
    """Wrong input names, shapes or dtypes given to a compiled executable."""


class LoweringError(GraphDSLError):
    """An op a backend cannot lower and cannot decompose."""


class TargetError(GraphDSLError):
    """An unknown or unavailable compilation target."""


def check(cond: bool, make_error) -> None:
    """Raise ``make_error()`` when ``cond`` is false; the message is only built on failure."""
    if not cond:
        raise make_error()
