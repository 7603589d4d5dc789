"""What /proc says about a process, and what the run left in /dev/shm."""

from __future__ import annotations

import os

SHM_DIR = "/dev/shm"
_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def cpu_ns(pid: int) -> int | None:
    """CPU time used so far (user + system), or None if the process is gone.

    /proc/<pid>/schedstat counts nanoseconds; /proc/<pid>/stat (clock ticks)
    is the fallback on kernels without schedstats.
    """
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except (FileNotFoundError, ProcessLookupError):
        return None
    except (OSError, ValueError, IndexError):
        pass
    fields = stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) * _TICK_NS


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 onwards)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rfind(b")") + 2 :].decode().split()


def describe(pid: int) -> str:
    """State letter and kernel wait channel, for deadlock dumps."""
    fields = stat_fields(pid)
    if fields is None:
        return "gone"
    try:
        with open(f"/proc/{pid}/wchan") as f:
            wchan = f.read().strip() or "-"
    except OSError:
        wchan = "?"
    return f"state {fields[0]} wchan {wchan}"


def shm_entries(marker: str) -> list[str]:
    """Entries of /dev/shm whose name contains ``marker``."""
    try:
        return sorted(e for e in os.listdir(SHM_DIR) if marker in e)
    except FileNotFoundError:
        return []
