"""``run``: one whole benchmark, section by section (sections.py), framed by
the report's header and footer (report.py), with what it ran on (machine.py)."""

from __future__ import annotations

import multiprocessing
import sys
import time
from typing import TextIO

from .config import START_METHOD, Settings
from .machine import describe, finish
from .measurements import OtherLoad
from .multi import multi_transports
from .report import print_header, print_other_load
from .results import Report
from .sections import SECTIONS
from .transports import PEER_TRANSPORTS


def run(settings: Settings, out: TextIO | None = None, command: str | None = None) -> Report:
    """Measure everything ``settings`` asks for, printing to ``out`` (default
    sys.stdout) as it goes; ``command`` is the command line recorded in
    ``report.machine`` (None when called from Python)."""
    out = sys.stdout if out is None else out
    ctx = multiprocessing.get_context(START_METHOD)
    report = Report(machine=describe(settings, command))
    start = time.monotonic()
    other: dict[str, float | None] = {}
    load = OtherLoad()
    peers = {kind.label: kind.about for kind in PEER_TRANSPORTS}
    peers.update({kind.label: kind.about for kind in multi_transports() if not kind.ring and kind.label not in peers})
    print_header(report.machine, list(peers.items()), out)
    for section in SECTIONS:
        section.run(ctx, settings, report, out)
        if section.load is not None:
            other[section.load], load = load.percent(), OtherLoad()
    finish(report.machine, other, time.monotonic() - start)
    print_other_load(other, out)
    return report
