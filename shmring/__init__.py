"""shmring: numpy data between processes through shared memory.

Public names are re-exported here explicitly; everything in a module whose
name starts with an underscore is private.
"""

from __future__ import annotations

from ._endpoints import Endpoint
from ._stats import Statistics
from .array import Array
from .errors import ClosedError, LayoutError, RoleError, ShmringError
from .queue import Queue
from .ring import Ring

__all__ = [
    "Array",
    "ClosedError",
    "Endpoint",
    "LayoutError",
    "Queue",
    "Ring",
    "RoleError",
    "ShmringError",
    "Statistics",
    "__version__",
]
__version__ = "0.1.0"
