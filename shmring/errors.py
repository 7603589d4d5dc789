"""shmring's own exceptions.

Standard conditions use the standard exceptions (``queue.Full``,
``queue.Empty``, ``EOFError``, ``BrokenPipeError``, ``FileExistsError``,
``FileNotFoundError``, ``ValueError``, ``TypeError``); everything specific to
shmring derives from :class:`ShmringError`.
"""

from __future__ import annotations


class ShmringError(Exception):
    """Base class of every shmring-specific error."""


class LayoutError(ShmringError, ValueError):
    """A region is not a valid shmring region of this format version.

    Raised on attach when the magic, version, kind, checksum or geometry is
    wrong, and by the core whenever an index read from shared memory breaks
    the structure's invariants (a corrupt or hostile segment).
    """


class RoleError(ShmringError):
    """A single-producer (or single-consumer) ring already has a live one."""


class ClosedError(ShmringError, ValueError, OSError):
    """A Queue handle used after close(): a ``ValueError`` for put/get and an
    ``OSError`` for empty/qsize, as multiprocessing.Queue raises there."""
