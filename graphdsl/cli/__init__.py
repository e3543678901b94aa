"""The command line: the only code allowed to import every package (graphdsl, passes, backends, models)."""
from .main import main  # noqa: F401
