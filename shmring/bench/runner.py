"""``run``: one whole benchmark, section by section (sections.py), framed by
the report's header and footer (report.py)."""

from __future__ import annotations

import multiprocessing
import sys
from typing import TextIO

from .config import START_METHOD, Settings
from .measurements import OtherLoad
from .multi import multi_transports
from .report import print_header, print_other_load
from .results import Report, meta
from .sections import SECTIONS
from .transports import PEER_TRANSPORTS


def run(settings: Settings, out: TextIO | None = None) -> Report:
    """Measure everything ``settings`` asks for, printing to ``out`` (default
    sys.stdout) as it goes."""
    out = sys.stdout if out is None else out
    ctx = multiprocessing.get_context(START_METHOD)
    report = Report(meta=meta(settings))
    other: dict[str, float | None] = {}
    load = OtherLoad()
    peers = {kind.label: kind.about for kind in PEER_TRANSPORTS}
    peers.update({kind.label: kind.about for kind in multi_transports() if not kind.ring and kind.label not in peers})
    print_header(list(peers.items()), out)
    for section in SECTIONS:
        section.run(ctx, settings, report, out)
        if section.load is not None:
            other[section.load], load = load.percent(), OtherLoad()
    report.meta["other_cpu_percent"] = other
    print_other_load(other, out)
    return report
