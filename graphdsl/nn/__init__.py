"""Neural-network modules written in the DSL."""
from .module import Module, Parameter  # noqa: F401
