"""What every structure's handle shares: the region it maps, its name and
backend, unlink/flush, the context manager and the finalizer.  Ring and
Array inherit it; each closes in its own way (``close``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _layout as L
from . import _naming
from ._region import Region


class SharedHandle:
    """Mixin of the structure classes (no state of its own but the class
    defaults below, which keep close()/unlink()/__del__ safe on a
    half-built object)."""

    _region: Region | None = None
    _closed: bool = True
    _geo: L.Geometry  # the header's immutable part, decoded (set when opened)

    def close(self) -> None:
        raise NotImplementedError

    def _open(self, region: Region, geo: L.Geometry, holder: int) -> None:
        """Take over a mapped region whose holder entry is ``holder``."""
        raise NotImplementedError

    @classmethod
    def _attach_as(
        cls, name: str, backend: str, timeout: float, kind: int, check: Callable[[L.Geometry], Any] | None = None
    ) -> Any:
        """A new handle of ``cls`` on the existing region ``name`` (see _naming.attach)."""
        region, geo, holder = _naming.attach(name, backend, timeout, kind, check)
        try:
            handle = cls.__new__(cls)
            handle._open(region, geo, holder)
        except BaseException:
            region.close()
            raise
        return handle

    @property
    def name(self) -> str | None:
        """Name of the region (a path for file regions; None for anon ones)."""
        return self._region.name if self._region is not None else None

    @property
    def backend(self) -> str:
        """Where the bytes live: "shm", "anon" or "file"."""
        return self._region.backend if self._region is not None else "shm"

    @property
    def sync(self) -> str:
        """ "lockfree" or "semaphore": the flavour the region was created with
        (an attached handle reads it from the header)."""
        return "semaphore" if self._geo.sync == L.SYNC_SEMAPHORE else "lockfree"

    @property
    def closed(self) -> bool:
        """True once close() was called on this handle."""
        return self._closed

    def unlink(self) -> None:
        """Remove the name now (a file region's file too, and a semaphore
        flavour's semaphores).  Open handles keep working; a new ``attach``
        raises FileNotFoundError."""
        if self._region is not None:
            self._region.unlink()

    def flush(self) -> None:
        """msync a file region to disk (a no-op for shm and anon)."""
        if self._region is not None:
            self._region.flush()

    def _refuse_anon_pickle(self, what: str) -> None:
        if self.backend == "anon" or self.name is None:
            raise TypeError(
                f"an anon {what} cannot be pickled: it is shared only with fork children "
                "(use backend='shm' to pass it to spawned processes)"
            )

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass
