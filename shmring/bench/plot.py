"""``--plot FILE.png``: the throughput section as one figure.

Two panels side by side, messages/s and GB/s against the message size, on
log axes that share the sizes: one line per transport of the one-producer,
one-consumer throughput section (the Ring rows drawn bold, the peers thin),
and the hot ``np.copyto`` floor for reference on the GB/s side.  The title
says what ran on which machine and when, the footnote the exact command.

matplotlib is the optional extra ``shmring[plot]``: this module imports it,
so the CLI imports this module only for ``--plot`` (and fails early, before
the run, without it).  Drawing uses the Agg canvas directly, never pyplot:
no display, no global state.  ``figure`` returns the Figure (tests look at
its axes and lines); ``save`` writes it.
"""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Callable, Mapping
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from .config import fmt_size
from .report import fmt_machine
from .results import Report, Throughput

DPI = 150
NOISY_PERCENT = 3  # as the text report's footer: other processes' CPU that shows in the figures
TITLE = "shmring bench: one producer process \u2192 one consumer process, uint8 arrays of each size"
RATE_TITLE = "Messages per second"
GB_TITLE = "Gigabytes per second (10\u2079 bytes/s)"
FLOOR_LABEL = "np.copyto, one core (hot copy floor)"
ZERO_COPY_NOTE = " (zero-copy: GB/s nominal)"
OTHER_SECTIONS = (
    "Ratios, the copy floor's cold figures, many producers and consumers, Queue, Array, ping-pong "
    "and idle CPU: in the text report and --json."
)
# Ring rows: saturated colours, filled markers, thick lines; peers: muted, hollow, thin.
RING_STYLES = (("#0b57a4", "o"), ("#d1495b", "s"), ("#6a3d9a", "D"), ("#e08e0b", "P"))
PEER_STYLES = (("#7f7f7f", "v"), ("#a6803f", "^"), ("#4f9a86", "<"), ("#c27ba0", ">"))


def figure(report: Report) -> Figure:
    """The figure of ``report``'s throughput rows: left messages/s, right
    GB/s, against the message size; ValueError if it has no such rows."""
    if not report.throughput:
        raise ValueError("the report has no throughput rows to plot")
    machine = report.machine
    fig = Figure(figsize=(13.0, 6.6), dpi=DPI)
    FigureCanvasAgg(fig)
    rate_ax = fig.add_subplot(1, 2, 1)
    gb_ax = fig.add_subplot(1, 2, 2, sharex=rate_ax)
    fig.subplots_adjust(left=0.065, right=0.985, top=0.83, bottom=0.28, wspace=0.2)

    ring_styles, peer_styles = itertools.cycle(RING_STYLES), itertools.cycle(PEER_STYLES)
    rings: list[Line2D] = []
    peers: list[Line2D] = []
    for transport, rows in _by_transport(report.throughput).items():
        ring, zero_copy = rows[0].ring, rows[0].zero_copy
        color, marker = next(ring_styles if ring else peer_styles)
        style: dict[str, Any] = {
            "color": color,
            "marker": marker,
            "label": transport + (ZERO_COPY_NOTE if zero_copy else ""),
            "linestyle": "--" if zero_copy else "-",
            "linewidth": 2.6 if ring else 1.3,
            "markersize": 7.5 if ring else 6,
            "markerfacecolor": color if ring else "white",
            "markeredgewidth": 1.2 if ring else 1.4,
            "zorder": 3 if ring else 2,
        }
        sizes = [row.size for row in rows]
        (line,) = rate_ax.plot(sizes, [row.msgs_per_s for row in rows], **style)
        gb_ax.plot(sizes, [row.gb_per_s for row in rows], **style)
        (rings if ring else peers).append(line)
    floor = sorted(report.copy_floor, key=lambda f: f.size)
    if floor:
        (line,) = gb_ax.plot(
            [f.size for f in floor],
            [f.gb_per_s for f in floor],
            color="0.3",
            linestyle=":",
            linewidth=1.6,
            label=FLOOR_LABEL,
            zorder=1,
        )
        peers.append(line)

    sizes = sorted({row.size for row in report.throughput})
    _axes(rate_ax, RATE_TITLE, "messages/s", sizes, _fmt_count)
    _axes(gb_ax, GB_TITLE, "GB/s", sizes, _fmt_gb)
    # One legend row for the Ring rows, one for the peers and the floor.
    for handles, y in ((rings, 0.155), (peers, 0.105)):
        if handles:
            fig.legend(
                handles=handles,
                loc="center",
                bbox_to_anchor=(0.5, y),
                ncol=len(handles),
                frameon=False,
                fontsize=10,
                handlelength=3.2,
                columnspacing=2.2,
            )
    fig.suptitle(TITLE, x=0.5, y=0.975, fontsize=14, fontweight="bold")
    fig.text(0.5, 0.915, _subtitle(machine), ha="center", va="center", fontsize=11, color="0.2")
    command = machine.get("command") or "shmring.bench.run() from Python"
    fig.text(0.01, 0.052, f"$ {command}", family="monospace", fontsize=9.5)
    fig.text(0.01, 0.027, _footnote(machine), fontsize=8.5, color="0.3")
    fig.text(0.01, 0.006, OTHER_SECTIONS, fontsize=8.5, color="0.3")
    return fig


def save(report: Report, path: str) -> None:
    """Write ``figure(report)`` to ``path`` (its extension: png, svg or pdf)."""
    figure(report).savefig(path, dpi=DPI)


def _by_transport(rows: list[Throughput]) -> dict[str, list[Throughput]]:
    """Rows per transport, in the report's order (Ring rows first), by size."""
    grouped: dict[str, list[Throughput]] = {}
    for row in rows:
        grouped.setdefault(row.transport, []).append(row)
    return {transport: sorted(cells, key=lambda r: r.size) for transport, cells in grouped.items()}


def _axes(ax: Axes, title: str, ylabel: str, sizes: list[int], fmt: Callable[[float], str]) -> None:
    """Log-log axes with a tick at each size measured and plain-number y ticks."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: fmt_size(round(x))))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: fmt(y)))
    lo, hi = sizes[0], sizes[-1]
    ax.set_xlim(lo / 1.6, hi * 1.6)
    ax.set_title(title, fontsize=12, loc="left")
    ax.set_xlabel("message size (bytes; KiB, MiB = 1024, 1024\u00b2)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", color="0.88", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _fmt_count(value: float) -> str:
    """A y tick of messages/s: 100, 10k, 1M."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _fmt_gb(value: float) -> str:
    """A y tick of GB/s: 0.001, 0.1, 10."""
    return f"{value:g}"


def _subtitle(machine: Mapping[str, Any]) -> str:
    """The machine, the system and the date: the line under the title."""
    system = f"{machine.get('os', '')} {machine.get('kernel', '')}".strip()
    return " \u00b7 ".join(part for part in (fmt_machine(machine), system, _date(machine.get("date"))) if part)


def _date(text: object) -> str:
    """An ISO date as ``2026-12-05 19:08 UTC`` (as is if it does not parse)."""
    try:
        when = datetime.datetime.fromisoformat(str(text))
    except ValueError:
        return str(text)
    if when.utcoffset() is not None:
        when = when.astimezone(datetime.timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _footnote(machine: Mapping[str, Any]) -> str:
    """Versions, time per cell, and how busy the machine was."""
    parts = [
        f"shmring {machine.get('shmring')}, {machine.get('python_implementation', 'Python')} "
        f"{machine.get('python')}, numpy {machine.get('numpy')}"
    ]
    parts += [f"{name} {version}" for name, version in dict(machine.get("peers") or {}).items()]
    settings = machine.get("settings") or {}
    if "cell_seconds" in settings:
        parts.append(f"{settings['cell_seconds']:g} s of sending per point")
    known = [pct for pct in dict(machine.get("other_cpu_percent") or {}).values() if pct is not None]
    if known:
        parts.append(
            f"other processes took up to {max(known):.0f}% of the CPUs during the run"
            + (" (the figures are noisy)" if max(known) >= NOISY_PERCENT else "")
        )
    return "; ".join(parts) + "."
