"""Every import handler module, imported once: after ``from .handlers import IMPORT`` the table
holds every ONNX op type the importer knows.

The importer imports this module, and the handler modules import only table.py and values.py,
so there is no cycle between the importer, the table and the handlers.
"""
from . import ops_attention, ops_einsum, ops_math, ops_shape  # noqa: F401  (each registers its handlers)
from .table import IMPORT

__all__ = ["IMPORT"]
