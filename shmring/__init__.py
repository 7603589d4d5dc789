"""shmring: numpy data between processes through shared memory.

Public names are re-exported here explicitly; everything in a module whose
name starts with an underscore is private.
"""

from __future__ import annotations

from ._endpoints import Endpoint
from .array import Array
from .errors import LayoutError, RoleError, ShmringError
from .ring import Ring

__all__ = ["Array", "Endpoint", "LayoutError", "Ring", "RoleError", "ShmringError", "__version__"]
__version__ = "0.1.0"
