"""The text report: its frame and the tools every section prints with.

The frame is the header (the machine and versions, what the peers are) and the
footer (the CPU that other processes took during each section: on a small
machine, more than a few percent shows in the numbers).  The tools are the
number formats and ``Table``, which lines up a section's column titles and
rows.  What each section's table holds is declared with the section
(sections.py), so a new section or a new row needs no change here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

# -- numbers -------------------------------------------------------------------------------


def fmt_rate(value: float) -> str:
    """Messages per second with a k/M suffix, 3 significant digits."""
    for suffix, scale in (("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{_sig(value / scale)} {suffix}"
    return f"{_sig(value)}  "


def _sig(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_gb(value: float) -> str:
    """GB/s, 3 significant digits (2 below 0.01)."""
    return f"{value:.2g}" if value < 0.01 else _sig(value)


def fmt_ratio(ratio: float) -> str:
    """A ratio as the comparison notes write it: x55, x4.5, x0.44."""
    return f"x{ratio:.0f}" if ratio >= 10 else f"x{ratio:.1f}" if ratio >= 1 else f"x{ratio:.2f}"


# -- tables --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of a table: its title, the text before it, and its width
    and alignment (``">"`` right, ``"<"`` left; width 0 for a free last column)."""

    title: str
    width: int = 0
    align: str = ">"
    before: str = "  "


class Table:
    """Columns that a section's heading and rows are lined up in."""

    def __init__(self, *columns: Column) -> None:
        self.columns = columns

    def heading(self) -> str:
        """The line of column titles."""
        return self.row([column.title for column in self.columns])

    def row(self, cells: Sequence[str]) -> str:
        """One line: each cell, already formatted, padded to its column."""
        return "".join(
            f"{column.before}{cell:{column.align}{column.width or ''}}"
            for column, cell in zip(self.columns, cells, strict=True)
        )


# -- frame ---------------------------------------------------------------------------------


def fmt_machine(machine: Mapping[str, Any]) -> str:
    """The CPU, cores and memory of ``Report.machine``: ``AMD EPYC, 2 CPUs
    (2 usable), 23.5 GiB``; what is unknown is left out."""
    parts = [machine.get("cpu_model") or "unknown CPU", f"{machine.get('logical_cpus') or '?'} CPUs"]
    usable = machine.get("usable_cpus")
    if usable is not None and usable != machine.get("logical_cpus"):
        parts[-1] += f" ({usable} usable)"
    if machine.get("memory_bytes"):
        parts.append(f"{machine['memory_bytes'] / 2**30:.1f} GiB")
    return ", ".join(parts)


def print_header(machine: Mapping[str, Any], peers: Sequence[tuple[str, str]], out: TextIO) -> None:
    """What ran where (``machine``: see machine.py), and one line per peer:
    (label, what it is and does)."""
    lines = [
        f"shmring bench {machine['shmring']}: 1 producer process -> 1 consumer process, "
        'but P producers -> C consumers in "Many producers and consumers"',
        f"{fmt_machine(machine)}; {machine['os']} {machine['kernel']} {machine['arch']}; {machine['date']}",
        f"{machine['python_implementation']} {machine['python']}, numpy {machine['numpy']}, "
        f'start method "{machine["settings"]["start_method"]}".  GB/s = 10^9 bytes/s.',
        "Items are uint8 arrays of shape (size,); each carries its sequence number (and producer) in its first and",
        "last 8 bytes, checked by the consumer on every message.",
    ]
    width = max((len(label) for label, _ in peers), default=0)
    lines += [f"{'Peers:' if i == 0 else '':<8}{label:<{width}}  {about}" for i, (label, about) in enumerate(peers)]
    lines.append("")
    print("\n".join(lines), file=out)


def print_other_load(other: Mapping[str, float | None], out: TextIO) -> None:
    """The footer: CPU taken by other processes during each section, where known."""
    known = {section: pct for section, pct in other.items() if pct is not None}
    if not known:
        return
    print(file=out)
    print(
        "CPU taken by other processes (% of all CPUs): "
        + ", ".join(f"{section} {pct:.0f}%" for section, pct in known.items())
        + ("; results are noisy when this is more than a few percent" if max(known.values()) >= 3 else ""),
        file=out,
    )
