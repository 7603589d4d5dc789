"""The command line: ``shmring bench [--quick] [--sizes LIST] [--duration S]
[--json PATH] [--plot FILE.png]`` (also ``python -m shmring.bench``) turns
its flags into ``Settings``, runs them, and writes ``--json`` and ``--plot``;
``shmring bench --from-json PATH --plot FILE.png`` only plots a saved run.

Every mistake that can be seen before the run (a bad flag, a path that
cannot be written, matplotlib missing for ``--plot``) ends it before the
run, with one line on stderr and exit status 2: the full run takes minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import sys
from collections.abc import Callable, Sequence

from .config import DEFAULT, MAX_SIZE, QUICK, KiB, MiB, fmt_size
from .results import BenchError, Report, read_json
from .runner import run

PLOT_FORMATS = ("png", "svg", "pdf")


def parse_size(text: str) -> int:
    """'8', '64B', '1K', '1KiB', '16M', '16MiB' -> bytes (K and M are 1024-based)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:([kKmM])(?:i?[bB])?|[bB])?\s*", text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (examples: 8, 64B, 1K, 64KiB, 16M)")
    size = int(match.group(1)) * {None: 1, "k": KiB, "m": MiB}[match.group(2) and match.group(2).lower()]
    if size < 8 or size % 8 or size > MAX_SIZE:
        raise ValueError(f"sizes must be multiples of 8 bytes from 8 B to {fmt_size(MAX_SIZE)}, not {text!r}")
    return size


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(parse_size(part) for part in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shmring bench",
        description="Throughput, latency, copy floor and idle CPU of shmring.Ring against "
        "multiprocessing.Queue, multiprocessing.Pipe, os.pipe and faster-fifo (when installed), between processes.",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny run of a few seconds (for tests)")
    parser.add_argument(
        "--sizes",
        type=_sizes,
        help="comma-separated item sizes in bytes, K or M (1024-based), multiples of 8; "
        "default 8,64,1K,64K,1M,16M (--quick: 8,64K,1M)",
    )
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="sending time per throughput cell")
    parser.add_argument("--json", metavar="PATH", help="also write every figure and the machine as JSON to PATH")
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw messages/s and GB/s against message size to FILE (.png, .svg or .pdf; "
        "needs matplotlib: pip install 'shmring[plot]')",
    )
    parser.add_argument(
        "--from-json",
        metavar="PATH",
        help="do not run: read the results of an earlier --json PATH and only draw --plot",
    )
    return parser


def _error(message: str) -> int:
    """One line on stderr; the exit status of bad usage."""
    print(f"shmring bench: {message}", file=sys.stderr)
    return 2


def _writable(path: str) -> bool:
    return os.access(os.path.dirname(os.path.abspath(path)), os.W_OK)


def _plotter() -> Callable[[Report, str], None] | str:
    """``plot.save``, or the one-line reason it cannot be had (matplotlib missing)."""
    try:
        from . import plot  # imports matplotlib: the optional extra shmring[plot]
    except ImportError as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        return f"--plot needs matplotlib: pip install 'shmring[plot]' ({reason})"
    return plot.save


def main(argv: Sequence[str] | None = None) -> int:
    """``shmring bench [--quick] [--sizes LIST] [--duration S] [--json PATH]
    [--plot FILE.png]`` or ``shmring bench --from-json PATH --plot FILE.png``;
    returns the exit status: 0, 1 when a measurement failed, 2 for bad usage."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    if args.from_json is not None:
        given = {"--quick": args.quick, "--sizes": args.sizes, "--duration": args.duration, "--json": args.json}
        run_flags = [flag for flag, value in given.items() if value not in (None, False)]
        if args.plot is None or run_flags:
            parser.print_usage(sys.stderr)
            return _error(
                "--from-json only plots: it takes --plot FILE.png"
                + (f", not {', '.join(run_flags)}" if run_flags else "")
            )
    settings = QUICK if args.quick else DEFAULT
    if args.sizes is not None:
        settings = dataclasses.replace(settings, sizes=args.sizes)
    if args.duration is not None:
        if not 0 < args.duration <= 60:
            parser.print_usage(sys.stderr)
            return _error("--duration must be in (0, 60] seconds")
        settings = dataclasses.replace(settings, cell_seconds=args.duration)
    if args.json is not None and not _writable(args.json):
        return _error(f"cannot write --json {args.json!r}")
    save_plot = None
    if args.plot is not None:
        if os.path.splitext(args.plot)[1].lower().lstrip(".") not in PLOT_FORMATS:
            return _error(f"--plot {args.plot!r}: the file name must end in .png, .svg or .pdf")
        if not _writable(args.plot):
            return _error(f"cannot write --plot {args.plot!r}")
        plotter = _plotter()
        if isinstance(plotter, str):
            return _error(plotter)
        save_plot = plotter
    if args.from_json is not None:
        assert save_plot is not None
        try:
            report = read_json(args.from_json)
        except OSError as exc:
            return _error(f"--from-json: cannot read {args.from_json!r}: {exc.strerror or exc}")
        except ValueError as exc:
            return _error(f"--from-json {args.from_json!r} is not a shmring bench --json file: {exc}")
        return _plot(save_plot, report, args.plot)
    try:
        report = run(settings, command=shlex.join(["shmring", "bench", *argv]))
    except BenchError as exc:
        sys.stdout.flush()
        print(f"\nshmring bench: FAILED: {exc}", file=sys.stderr)
        return 1
    if args.json is not None:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report.to_json(), f, indent=2)
            f.write("\n")
    return 0 if save_plot is None else _plot(save_plot, report, args.plot)


def _plot(save: Callable[[Report, str], None], report: Report, path: str) -> int:
    """Draw ``report`` to ``path``; 2 with one line if it cannot be drawn or written."""
    try:
        save(report, path)
    except (OSError, ValueError) as exc:
        return _error(f"cannot draw --plot {path!r}: {exc}")
    return 0
