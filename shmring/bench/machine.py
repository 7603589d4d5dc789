"""What a run ran on, and how: the ``machine`` object of ``--json``.

Figures from one box mean little without the box: its CPU, cores, memory,
kernel, the versions of everything measured, when, with which command, and
how busy the machine was meanwhile.  ``describe`` takes what is known at the
start of a run; the runner adds the load measured during it (``finish``).
Every field that cannot be read here is ``None`` rather than missing.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import os
import platform
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import __version__
from .config import START_METHOD, Settings
from .multi import FasterFifoMulti


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo ("model name" on x86, else
    "Hardware" or "Model"), or ``platform.processor()``; None if neither says."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    for key in ("model name", "Hardware", "Model"):
        if fields.get(key):
            return fields[key]
    return platform.processor() or None


def meminfo_bytes(field: str) -> int | None:
    """One line of /proc/meminfo (``MemTotal``, ``MemAvailable``) in bytes, or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name == field:
                    value, *unit = rest.split()
                    return int(value) * (1024 if unit == ["kB"] else 1)
    except (OSError, ValueError):
        pass
    return None


def usable_cpus() -> int | None:
    """How many CPUs this process may run on (its affinity mask), or None."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def peer_versions() -> dict[str, str]:
    """Versions of the peers' packages that are installed: faster-fifo.  The
    other peers (mp.Queue, mp.Pipe, os.pipe) are Python's standard library."""
    versions: dict[str, str] = {}
    if FasterFifoMulti.available():
        try:
            versions["faster-fifo"] = importlib.metadata.version("faster-fifo")
        except importlib.metadata.PackageNotFoundError:
            versions["faster-fifo"] = "unknown"
    return versions


def describe(settings: Settings, command: str | None) -> dict[str, Any]:
    """The machine and the run as they are at its start; ``command`` is the
    command line that started it (None when called from Python)."""
    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "memory_bytes": meminfo_bytes("MemTotal"),
        "memory_available_bytes": meminfo_bytes("MemAvailable"),
        "os": platform.system(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "shmring": __version__,
        "peers": peer_versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "settings": {**dataclasses.asdict(settings), "start_method": START_METHOD},
        "load_average": {"start": load_average(), "end": None},
        "other_cpu_percent": {},
        "seconds": None,
    }


def finish(machine: dict[str, Any], other_cpu_percent: Mapping[str, float | None], seconds: float) -> None:
    """Add what the run measured about the machine: the CPU other processes
    took during each section, the load average at the end, the run's length."""
    machine["other_cpu_percent"] = dict(other_cpu_percent)
    machine["load_average"]["end"] = load_average()
    machine["seconds"] = round(seconds, 3)
