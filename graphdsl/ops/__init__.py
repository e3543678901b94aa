"""Every op, declared once. Importing this package fills the registry.

Each module groups ops by kind; the functional API is re-exported here:
``from graphdsl import ops; ops.softmax(x, axis=-1)``.
"""
from .creation import *  # noqa: F401,F403
from .elementwise import *  # noqa: F401,F403
from .linalg import *  # noqa: F401,F403
from .reduce import *  # noqa: F401,F403
from .shape import *  # noqa: F401,F403
from .indexing import *  # noqa: F401,F403
from .getitem import *  # noqa: F401,F403
from .nn import *  # noqa: F401,F403
from .random import *  # noqa: F401,F403
from .attention import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .fused import *  # noqa: F401,F403
